"""Evaluation: GSM8K answer extraction, sandboxed HumanEval-infilling execution, pass@k,
length statistics, results files, and the GSM8K / HumanEval-infilling / lm-eval runners.

Submodules are imported on demand (`from retrofit.evaluation.answers import extract_answer`)
so that importing this package stays cheap.
"""
