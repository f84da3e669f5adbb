"""Data: the GSM8K format, text / SFT / infilling builders and their sources."""
