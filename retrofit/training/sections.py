"""Recipe sections that need neither torch nor transformers: `model:`, `lora:`, `data:`, `objective:`.

They live apart from `retrofit.training.args` (which subclasses `transformers.TrainingArguments`)
so that `retrofit train --help` can list every recipe field with its default and help without
importing transformers. `TRAINING_FIELDS` holds the default and help of the retrofit's own
`training:` fields; `RetrofitTrainingArguments` builds its dataclass fields from it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from retrofit.dtypes import canonical_dtype

__all__ = [
    "DEFAULT_LORA_TARGETS",
    "DataRecipe",
    "LoraRecipe",
    "ModelRecipe",
    "ObjectiveRecipe",
    "TIME_SAMPLING_MODES",
    "TRAINING_FIELDS",
    "check_choice",
]

DEFAULT_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "transformer.ff_out")
"""LoRA target suffixes of the retrofit (docs/method.md §2.8): 96 attention projections + the LM head."""

TIME_SAMPLING_MODES = ("banded", "stratified", "uniform")
"""The collator's time-sampling modes (docs/method.md §3.5); `training.collator.TimeSampler` checks them."""
INIT_LORA = ("continue", "merge")

TRAINING_FIELDS: dict[str, tuple[Any, str]] = {
    "loss": ("flexmdm", "flexmdm (docs/method.md §3.2) | mdm (LLaDA baseline, §3.6)"),
    "loss_normalizer": (
        1024.0,
        "loss = sum / (B_micro * loss_normalizer) (docs/method.md §3.3: 1024; LLaDA baseline 4096)",
    ),
    "lora_learning_rate": (None, "lr of the LoRA group (docs/method.md §2.9 lora_lr); None = learning_rate"),
    "lora_weight_decay": (0.0, "weight decay of the LoRA group"),
    "head_learning_rate": (
        None,
        "lr of a fully trained token head; None = lora lr / 4 (docs/method.md §2.9)",
    ),
    "head_weight_decay": (None, "weight decay of the token head group; None = weight_decay"),
    "save_on_interrupt": (True, "save a checkpoint and stop cleanly on SIGTERM / Ctrl-C"),
    "token_head_chunk": (
        0,
        "mask slots per chunk of the token head + cross-entropy, recomputed in backward, so its "
        "memory is chunk x vocab instead of N x vocab (retrofit.models.token_head); 0 = one call",
    ),
    "packed_attention": (
        "auto",
        "attention of packed rows (data.packing): auto (FlexAttention on CUDA, segments on CPU) | "
        "segments | flex | mask (docs/method.md §3.7)",
    ),
    # defaults that differ from transformers' (docs/method.md §5.1)
    "lr_scheduler_type": ("cosine", "HF scheduler name (docs/method.md §5.1: cosine)"),
    "remove_unused_columns": (False, "must stay False (the collator reads the raw columns)"),
    "max_grad_norm": (1.0, "gradient clipping norm (docs/method.md §3.3)"),
    "dataloader_drop_last": (True, "full micro-batches only (banded time strata assume B rows)"),
}
"""{field: (default, help)} of the `training:` fields the retrofit adds or whose default it changes."""


def check_choice(where: str, value: Any, choices: tuple[str, ...]) -> None:
    """Raise ValueError naming the recipe key `where` when `value` is not one of `choices`."""
    if value not in choices:
        raise ValueError(f"recipe {where}={value!r} is not one of {', '.join(choices)}")


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
        trainable_dtype: dtype of trainable tensors (LoRA, graft modules); docs/method.md §2.9
            recommends fp32.
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
        check_choice("model.init_lora", self.init_lora, INIT_LORA)
        half_or_single = ("float32", "bfloat16", "float16")
        self.dtype = canonical_dtype(self.dtype, "recipe model.dtype", half_or_single)
        self.trainable_dtype = canonical_dtype(
            self.trainable_dtype, "recipe model.trainable_dtype", half_or_single
        )


@dataclass
class LoraRecipe:
    """Recipe `lora:` section (docs/method.md §2.8 defaults).

    Attributes:
        r, alpha, dropout: LoRA rank, alpha (scaling alpha / r) and input dropout.
        target_modules: module-name suffixes that get LoRA.
        train_token_head: train the LM head `transformer.ff_out` fully (peft modules_to_save)
            instead of adapting it with LoRA (docs/method.md §9.2).
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
        max_length: x1 length limit in tokens (the canvas width; docs/method.md §1.1 L_max).
        mixture: "concatenate" or "interleave" (weights from each spec's `weight`).
        packing: pack each micro-batch's examples (their x_t, trimmed, plus the length slot)
            side by side into rows, each example attending only to itself with its own t, so no
            position is spent on padding (docs/method.md §3.7; exact: same loss and gradients).
        pack_tokens: positions per packed row; None = one row holding the whole micro-batch
            (at most per_device_train_batch_size x (canvas width + 1) positions). Without
            packing, `training.train_sampling_strategy: group_by_length` (transformers'
            length-grouped sampler) puts examples of similar length in a micro-batch instead.
    """

    train: list[dict[str, Any]] = field(default_factory=list)
    eval: list[dict[str, Any]] = field(default_factory=list)
    max_length: int = 1024
    mixture: str = "concatenate"
    packing: bool = False
    pack_tokens: int | None = None

    def __post_init__(self) -> None:
        if not self.train:
            raise ValueError("recipe data.train needs at least one dataset spec (format, source, ...)")
        if self.max_length < 2:
            raise ValueError(f"recipe data.max_length must be >= 2, got {self.max_length}")
        check_choice("data.mixture", self.mixture, ("concatenate", "interleave"))
        if self.pack_tokens is not None and self.pack_tokens <= self.max_length:
            raise ValueError(
                f"recipe data.pack_tokens={self.pack_tokens} cannot hold a full-length example "
                f"(max_length {self.max_length} + 1 length slot): use >= {self.max_length + 1}, or null"
            )


@dataclass
class ObjectiveRecipe:
    """Recipe `objective:` section: the interpolant the collator samples (docs/method.md §1.2-1.5, §3.5).

    Attributes:
        insertion_schedule: `make_schedule` spec of alpha (retrofit: geometric(10, 0.01)).
        unmasking_schedule: `make_schedule` spec of beta (retrofit: linear).
        time_sampling: "banded" (stratified over the global batch, one band per micro-step),
            "stratified" (per micro-batch, docs/method.md §3.5) or "uniform".
        trim: trim each micro-batch to its longest x_t (exact; saves compute).
    """

    insertion_schedule: Any = field(default_factory=lambda: {"name": "geometric", "min": 10.0, "max": 0.01})
    unmasking_schedule: Any = "linear"
    time_sampling: str = "banded"
    trim: bool = True

    def __post_init__(self) -> None:
        check_choice("objective.time_sampling", self.time_sampling, TIME_SAMPLING_MODES)
