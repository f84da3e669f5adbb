"""FlexMDM configuration: the LLaDA backbone's config plus the graft's fields (docs/method.md §2, §9.7).

`model_type` "flexmdm"; `FlexMDMModel` (retrofit.models.flexmdm) is built from it.
"""

from __future__ import annotations

import math
from typing import Any

from transformers import PretrainedConfig

from retrofit.models.llada import LLaDAConfig
from retrofit.schedules import make_schedule

__all__ = ["PAD_ATTENTION_MODES", "FlexMDMConfig"]

PAD_ATTENTION_MODES = ("slots", "full")
_UNSTORED_BACKBONE_KEYS = ("_name_or_path", "transformers_version")


class FlexMDMConfig(PretrainedConfig):
    """Configuration of a FlexMDM retrofit of LLaDA (`model_type` "flexmdm"; docs/method.md §2, §9.7).

    The sampler defaults to the *training* schedules stored here (`insertion_schedule`,
    `unmasking_schedule`), unlike the research code, which trains with geometric insertion and
    samples with linear (docs/method.md §4.5, §9.3); `sampler_defaults` may record other sampler settings.

    Args:
        backbone: the LLaDA config (dict or LLaDAConfig); None = LLaDA-8B defaults.
        time_embed_dim: sinusoidal feature size E (even); default d_model.
        time_hidden_size: time-MLP hidden width; default 4 * d_model.
        adaln_group_size: consecutive blocks sharing one AdaLN modulator (docs/method.md §2.5); default 8.
            Number of groups = ceil(n_layers / adaln_group_size).
        length_head_hidden: length-head hidden width; default d_model.
        length_scale: multiplier of the length head's softplus; default `canvas_width` (docs/method.md §2.6).
        canvas_width: training canvas width L_max (1024 in the 8B recipe).
        loss_normalizer: divisor of the summed loss (docs/method.md §3.4); default `canvas_width`.
        pad_attention: "slots" (row b attends to keys 0..n_b: exact under trimming) or "full"
            (all L+1 columns attend to each other, the research retrofit; docs/method.md §2.2).
        insertion_schedule: alpha, a `make_schedule` description; default geometric(10, 0.01).
        unmasking_schedule: beta; default linear.
        mask_token_id: mask id M; default the backbone's.
        pad_token_id: pad id (the appended column and canvas tail); default the backbone's.
        base_model: name or path of the LLaDA it was grafted from (informational).
        sampler_defaults: optional sampler settings (e.g. {"steps": 256}).
        time_max_period: sinusoid period base (docs/method.md §2.4), 10 000.

    Raises:
        ValueError: invalid value; the message names the field.
    """

    model_type = "flexmdm"

    def __init__(
        self,
        backbone: dict[str, Any] | LLaDAConfig | None = None,
        time_embed_dim: int | None = None,
        time_hidden_size: int | None = None,
        adaln_group_size: int = 8,
        length_head_hidden: int | None = None,
        length_scale: float | None = None,
        canvas_width: int = 1024,
        loss_normalizer: float | None = None,
        pad_attention: str = "slots",
        insertion_schedule: dict[str, Any] | str | None = None,
        unmasking_schedule: dict[str, Any] | str | None = None,
        mask_token_id: int | None = None,
        pad_token_id: int | None = None,
        base_model: str | None = None,
        sampler_defaults: dict[str, Any] | None = None,
        time_max_period: float = 10000.0,
        **kwargs,
    ):
        llada = backbone if isinstance(backbone, LLaDAConfig) else LLaDAConfig.from_dict(dict(backbone or {}))
        self.backbone = {k: v for k, v in llada.to_diff_dict().items() if k not in _UNSTORED_BACKBONE_KEYS}
        d = llada.d_model
        self.time_embed_dim = time_embed_dim or d
        self.time_hidden_size = time_hidden_size or 4 * d
        self.adaln_group_size = adaln_group_size
        self.length_head_hidden = length_head_hidden or d
        self.canvas_width = canvas_width
        self.length_scale = float(canvas_width if length_scale is None else length_scale)
        self.loss_normalizer = float(canvas_width if loss_normalizer is None else loss_normalizer)
        self.pad_attention = pad_attention
        self.insertion_schedule = make_schedule(insertion_schedule or "geometric").to_dict()
        self.unmasking_schedule = make_schedule(unmasking_schedule or "linear").to_dict()
        self.mask_token_id = llada.mask_token_id if mask_token_id is None else mask_token_id
        self.base_model = base_model
        self.sampler_defaults = dict(sampler_defaults or {})
        self.time_max_period = time_max_period
        kwargs.setdefault("tie_word_embeddings", False)
        pad = llada.pad_token_id if pad_token_id is None else pad_token_id
        super().__init__(pad_token_id=pad, **kwargs)
        self.validate_flexmdm()

    @property
    def backbone_config(self) -> LLaDAConfig:
        """The backbone's LLaDAConfig (built from the stored `backbone` dict)."""
        return LLaDAConfig.from_dict(dict(self.backbone))

    @property
    def hidden_size(self) -> int:  # read by DeepSpeed "auto" bucket sizes and peft helpers
        return int(self.backbone["d_model"])

    @property
    def num_hidden_layers(self) -> int:
        return int(self.backbone["n_layers"])

    @property
    def num_adaln_groups(self) -> int:
        """ceil(n_layers / adaln_group_size): 4 for LLaDA-8B with groups of 8 (docs/method.md §2.5)."""
        return math.ceil(self.num_hidden_layers / self.adaln_group_size)

    def validate_flexmdm(self) -> None:
        """Raise ValueError naming the config field if a value is invalid."""
        checks = [
            ("pad_attention", self.pad_attention in PAD_ATTENTION_MODES, f"one of {PAD_ATTENTION_MODES}"),
            ("adaln_group_size", self.adaln_group_size >= 1, "an integer >= 1"),
            ("canvas_width", self.canvas_width >= 1, "an integer >= 1"),
            ("time_embed_dim", self.time_embed_dim > 0 and self.time_embed_dim % 2 == 0, "positive and even"),
            ("length_scale", self.length_scale > 0, "> 0"),
            ("loss_normalizer", self.loss_normalizer > 0, "> 0"),
            ("pad_token_id", self.pad_token_id is not None, "set (LLaDA uses <|endoftext|>)"),
            ("mask_token_id", self.mask_token_id is not None, "set (LLaDA uses <|mdm_mask|>)"),
        ]
        for field, ok, need in checks:
            if not ok:
                raise ValueError(
                    f"FlexMDMConfig.{field}={getattr(self, field)!r} is invalid: it must be {need}"
                )
        if self.pad_token_id == self.mask_token_id:
            raise ValueError(f"FlexMDMConfig: pad_token_id and mask_token_id are both {self.pad_token_id}")
