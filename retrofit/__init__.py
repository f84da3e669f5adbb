"""retrofit: turn pretrained LLaDA masked-diffusion LMs into FlexMDMs."""

__version__ = "0.1.0"
