"""Training arguments and recipe dataclasses of `retrofit train` (spec §2.8-2.9, §3.3, §5).

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

__all__ = [
    "DEFAULT_LORA_TARGETS",
    "MODES",
    "LOSSES",
    "DataRecipe",
    "LoraRecipe",
    "ModelRecipe",
    "ObjectiveRecipe",
    "Recipe",
    "RetrofitTrainingArguments",
]

DEFAULT_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "transformer.ff_out")
"""LoRA target suffixes of the retrofit (spec §2.8): 96 attention projections + the LM head."""

MODES = ("retrofit", "pretrain")
LOSSES = ("flexmdm", "mdm")
TIME_SAMPLING = ("banded", "stratified", "uniform")
INIT_LORA = ("continue", "merge")
DTYPES = ("float32", "bfloat16", "float16")


def _check_choice(where: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"recipe {where}={value!r} is not one of {', '.join(choices)}")


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

    Param groups (spec §2.9): "lora" (LoRA A/B), "token_head" (the LM head `transformer.ff_out` when
    trained fully) and "new_modules" (graft modules: time MLP, AdaLN, length head; in
    `mode: pretrain` every non-head weight). `learning_rate` / `weight_decay` are the new-module
    values. The LR schedule multiplies every group's own lr.

    Raises:
        ValueError: from `__post_init__` when a field is out of range; the message names the field.
    """

    loss: str = field(
        default="flexmdm", metadata={"help": "flexmdm (spec §3.2) | mdm (LLaDA baseline, spec §3.6)"}
    )
    loss_normalizer: float = field(
        default=1024.0,
        metadata={"help": "loss = sum / (B_micro * loss_normalizer) (spec §3.3: 1024; LLaDA baseline 4096)"},
    )
    lora_learning_rate: float | None = field(
        default=None, metadata={"help": "lr of the LoRA group (spec §2.9 lora_lr); None = learning_rate"}
    )
    lora_weight_decay: float = field(default=0.0, metadata={"help": "weight decay of the LoRA group"})
    head_learning_rate: float | None = field(
        default=None, metadata={"help": "lr of a fully trained token head; None = lora lr / 4 (spec §2.9)"}
    )
    head_weight_decay: float | None = field(
        default=None, metadata={"help": "weight decay of the token head group; None = weight_decay"}
    )
    save_on_interrupt: bool = field(
        default=True, metadata={"help": "save a checkpoint and stop cleanly on SIGTERM / Ctrl-C"}
    )
    # Defaults that differ from transformers' (spec §5.1): cosine schedule, no column pruning
    # (the collator needs the raw columns), gradient clipping at 1.0.
    lr_scheduler_type: str = field(
        default="cosine", metadata={"help": "HF scheduler name (spec §5.1: cosine)"}
    )
    remove_unused_columns: bool = field(
        default=False, metadata={"help": "must stay False (collator columns)"}
    )
    max_grad_norm: float = field(default=1.0, metadata={"help": "gradient clipping norm (spec §3.3)"})
    dataloader_drop_last: bool = field(
        default=True, metadata={"help": "full micro-batches only (banded time strata assume B rows)"}
    )

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
        _check_choice("training.loss", self.loss, LOSSES)
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
        """Effective token-head learning rate (spec §2.9: lora_lr / 4 unless set)."""
        return self.lora_lr / 4 if self.head_learning_rate is None else self.head_learning_rate

    @property
    def head_wd(self) -> float:
        """Effective token-head weight decay."""
        return self.weight_decay if self.head_weight_decay is None else self.head_weight_decay


@dataclass
class ModelRecipe:
    """Recipe `model:` section.

    Attributes:
        base: LLaDA folder (or Hub id when online) to start from.
        init_from: optional training checkpoint of an earlier stage whose trainable weights (LoRA +
            graft modules) initialise this run (weights only: fresh optimizer and schedule).
        init_lora: with init_from, "continue" trains the same LoRA further; "merge" folds it into
            the base weights and adds a fresh LoRA (B = 0).
        graft: keyword arguments of `FlexMDMModel.from_llada` (canvas width, schedules, ...).
        dtype: dtype of the frozen base weights (float32 on CPU, bfloat16 on GPUs).
        trainable_dtype: dtype of trainable tensors (LoRA, graft modules); spec §2.9 recommends fp32.
    """

    base: str = ""
    init_from: str | None = None
    init_lora: str = "continue"
    graft: dict[str, Any] = field(default_factory=dict)
    dtype: str = "float32"
    trainable_dtype: str = "float32"

    def __post_init__(self) -> None:
        if not self.base:
            raise ValueError("recipe model.base is required (a LLaDA folder or Hub id)")
        _check_choice("model.init_lora", self.init_lora, INIT_LORA)
        _check_choice("model.dtype", self.dtype, DTYPES)
        _check_choice("model.trainable_dtype", self.trainable_dtype, DTYPES)


@dataclass
class LoraRecipe:
    """Recipe `lora:` section (spec §2.8 defaults).

    Attributes:
        r, alpha, dropout: LoRA rank, alpha (scaling alpha / r) and input dropout.
        target_modules: module-name suffixes that get LoRA.
        train_token_head: train the LM head `transformer.ff_out` fully (peft modules_to_save)
            instead of adapting it with LoRA (spec §9.2).
    """

    r: int = 128
    alpha: int = 128
    dropout: float = 0.1
    target_modules: list[str] = field(default_factory=lambda: list(DEFAULT_LORA_TARGETS))
    train_token_head: bool = False

    def __post_init__(self) -> None:
        if self.r < 1 or self.alpha <= 0:
            raise ValueError(
                f"recipe lora.r must be >= 1 and lora.alpha > 0, got r={self.r}, alpha={self.alpha}"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"recipe lora.dropout must be in [0, 1), got {self.dropout}")
        if not self.target_modules:
            raise ValueError("recipe lora.target_modules is empty")


@dataclass
class DataRecipe:
    """Recipe `data:` section.

    Attributes:
        train: dataset specs for `retrofit.data.build_dataset` (several = a mixture).
        eval: optional eval specs (loss monitoring).
        max_length: x1 length limit in tokens (the canvas width; spec §1.1 L_max).
        mixture: "concatenate" or "interleave" (weights from each spec's `weight`).
    """

    train: list[dict[str, Any]] = field(default_factory=list)
    eval: list[dict[str, Any]] = field(default_factory=list)
    max_length: int = 1024
    mixture: str = "concatenate"

    def __post_init__(self) -> None:
        if not self.train:
            raise ValueError("recipe data.train needs at least one dataset spec (format, source, ...)")
        if self.max_length < 2:
            raise ValueError(f"recipe data.max_length must be >= 2, got {self.max_length}")
        _check_choice("data.mixture", self.mixture, ("concatenate", "interleave"))


@dataclass
class ObjectiveRecipe:
    """Recipe `objective:` section: the interpolant the collator samples (spec §1.2-1.5, §3.5).

    Attributes:
        insertion_schedule: `make_schedule` spec of alpha (retrofit: geometric(10, 0.01)).
        unmasking_schedule: `make_schedule` spec of beta (retrofit: linear).
        time_sampling: "banded" (stratified over the global batch, one band per micro-step),
            "stratified" (per micro-batch, spec §3.5) or "uniform".
        trim: trim each micro-batch to its longest x_t (exact; saves compute).
    """

    insertion_schedule: Any = field(default_factory=lambda: {"name": "geometric", "min": 10.0, "max": 0.01})
    unmasking_schedule: Any = "linear"
    time_sampling: str = "banded"
    trim: bool = True

    def __post_init__(self) -> None:
        _check_choice("objective.time_sampling", self.time_sampling, TIME_SAMPLING)


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
        _check_choice("mode", self.mode, MODES)
        if self.model.init_from and self.mode == "pretrain":
            raise ValueError(
                "recipe model.init_from is for LoRA stages; mode: pretrain starts from model.base"
            )
