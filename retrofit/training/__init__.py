"""Training: recipe/args, collators (interpolant + trim + time bands), trainer, LoRA, checkpoints.

Import the submodules directly (e.g. ``from retrofit.training.collator import FlexMDMCollator``);
this package file imports nothing so that light users do not pay for transformers / peft.
"""
