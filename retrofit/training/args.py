"""Training arguments and recipe dataclasses of `retrofit train` (docs/method.md §2.8-2.9, §3.3, §5).

A recipe YAML (see `recipes/`) maps one-to-one onto :class:`Recipe`::

    mode: retrofit          # retrofit (LoRA + graft) | pretrain (full-parameter MDM, or FlexMDM from scratch)
    model: {...}            # ModelRecipe
    lora: {...}             # LoraRecipe
    data: {...}             # DataRecipe
    objective: {...}        # ObjectiveRecipe
    training: {...}         # RetrofitTrainingArguments (any transformers.TrainingArguments field too)

`retrofit.training.recipe.load_recipe` parses and validates it; every field documented here can
be overridden on the command line as a dotted `key=value` (e.g. `training.max_steps=20`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import TrainingArguments

from retrofit.models.packed_attention import PACKED_BACKENDS
from retrofit.training.sections import (
    TRAINING_FIELDS,
    DataRecipe,
    LoraRecipe,
    ModelRecipe,
    ObjectiveRecipe,
    check_choice,
)

__all__ = ["LOSSES", "MODES", "Recipe", "RetrofitTrainingArguments"]

MODES = ("retrofit", "pretrain")
LOSSES = ("flexmdm", "mdm")


def _field(name: str) -> Any:
    """A dataclass field with the default and help of `TRAINING_FIELDS[name]`."""
    default, help_text = TRAINING_FIELDS[name]
    return field(default=default, metadata={"help": help_text})


def _configure_cpu_backend(args: TrainingArguments) -> None:
    """Multi-process runs without CUDA use gloo (environment-notes: DDP and DeepSpeed on CPU).

    Plain DDP needs ACCELERATE_USE_CPU; DeepSpeed must not see it (accelerate would silently fall
    back to plain data parallel) and initialises its own gloo process group instead.
    """
    if torch.cuda.is_available() or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return
    if os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true":
        os.environ.pop("ACCELERATE_USE_CPU", None)
    else:
        os.environ.setdefault("ACCELERATE_USE_CPU", "true")
    if args.ddp_backend is None:
        args.ddp_backend = "gloo"


@dataclass
class RetrofitTrainingArguments(TrainingArguments):
    """`transformers.TrainingArguments` plus the retrofit's optimiser / loss fields (recipe `training:`).

    Param groups (docs/method.md §2.9): "lora" (LoRA A/B), "token_head" (the LM head `transformer.ff_out` when
    trained fully) and "new_modules" (graft modules: time MLP, AdaLN, length head; in
    `mode: pretrain` every non-head weight). `learning_rate` / `weight_decay` are the new-module
    values. The LR schedule multiplies every group's own lr.

    Raises:
        ValueError: from `__post_init__` when a field is out of range; the message names the field.
    """

    loss: str = _field("loss")
    loss_normalizer: float = _field("loss_normalizer")
    lora_learning_rate: float | None = _field("lora_learning_rate")
    lora_weight_decay: float = _field("lora_weight_decay")
    head_learning_rate: float | None = _field("head_learning_rate")
    head_weight_decay: float | None = _field("head_weight_decay")
    save_on_interrupt: bool = _field("save_on_interrupt")
    token_head_chunk: int = _field("token_head_chunk")
    packed_attention: str = _field("packed_attention")
    # defaults that differ from transformers' (docs/method.md §5.1)
    lr_scheduler_type: str = _field("lr_scheduler_type")
    remove_unused_columns: bool = _field("remove_unused_columns")
    max_grad_norm: float = _field("max_grad_norm")
    dataloader_drop_last: bool = _field("dataloader_drop_last")

    def __post_init__(self) -> None:
        _configure_cpu_backend(self)  # before the parent sets up devices / the process group
        # non-reentrant checkpointing: grads reach LoRA even when a block's inputs need none
        ckpt_kwargs = next(
            k
            for k in ("activation_checkpointing_kwargs", "gradient_checkpointing_kwargs")
            if hasattr(self, k)
        )
        if getattr(self, ckpt_kwargs) is None:
            setattr(self, ckpt_kwargs, {"use_reentrant": False})
        super().__post_init__()
        check_choice("training.loss", self.loss, LOSSES)
        check_choice("training.packed_attention", self.packed_attention, ("auto", *PACKED_BACKENDS))
        if self.token_head_chunk < 0:
            raise ValueError(
                f"recipe training.token_head_chunk must be >= 0 (0 = off), got {self.token_head_chunk}"
            )
        if not self.loss_normalizer > 0:
            raise ValueError(f"recipe training.loss_normalizer must be > 0, got {self.loss_normalizer}")
        for name in ("learning_rate", "lora_learning_rate", "head_learning_rate"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"recipe training.{name} must be >= 0, got {value}")
        for name in ("weight_decay", "lora_weight_decay", "head_weight_decay"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"recipe training.{name} must be >= 0, got {value}")
        if self.remove_unused_columns:
            raise ValueError(
                "recipe training.remove_unused_columns must be false: the collator reads the raw dataset columns"
            )
        if self.dataloader_num_workers != 0:
            raise ValueError(
                "recipe training.dataloader_num_workers must be 0: the collator's time-band counter runs in the "
                "main process (a worker would replay it); collation is cheap next to the model step"
            )

    @property
    def lora_lr(self) -> float:
        """Effective LoRA learning rate."""
        return self.learning_rate if self.lora_learning_rate is None else self.lora_learning_rate

    @property
    def head_lr(self) -> float:
        """Effective token-head learning rate (docs/method.md §2.9: lora_lr / 4 unless set)."""
        return self.lora_lr / 4 if self.head_learning_rate is None else self.head_learning_rate

    @property
    def head_wd(self) -> float:
        """Effective token-head weight decay."""
        return self.weight_decay if self.head_weight_decay is None else self.head_weight_decay


@dataclass
class Recipe:
    """A whole training recipe.

    `mode: pretrain` trains every parameter, no LoRA: with `training.loss: mdm` the LLaDA model
    itself (an MDM), with `training.loss: flexmdm` a FlexMDM grafted onto `model.base` and trained
    whole (a FlexMDM from scratch when the base is a freshly initialised LLaDA).
    """

    model: ModelRecipe
    data: DataRecipe
    training: RetrofitTrainingArguments
    lora: LoraRecipe = field(default_factory=LoraRecipe)
    objective: ObjectiveRecipe = field(default_factory=ObjectiveRecipe)
    mode: str = "retrofit"
    source: str = ""  # path of the YAML file (set by load_recipe)
    training_keys: list[str] = field(default_factory=list)  # training keys the recipe set (for printing)

    def __post_init__(self) -> None:
        check_choice("mode", self.mode, MODES)
        if self.model.init_from and self.mode == "pretrain":
            raise ValueError(
                "recipe model.init_from is for LoRA stages; mode: pretrain starts from model.base"
            )
