"""Training: recipe/args, model builder, collators (interpolant + trim + time bands), trainer,
LoRA, checkpoints and resume. The entry point that runs a recipe is `retrofit.train`.

Import the submodules directly (e.g. ``from retrofit.training.collator import FlexMDMCollator``);
this package file imports nothing so that light users do not pay for transformers / peft.
"""
