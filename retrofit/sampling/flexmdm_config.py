"""`FlexMDMSamplerConfig`: the settings of `retrofit.sampling.flexmdm.FlexMDMSampler`
(docs/method.md §4.2-§4.6)."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

from retrofit.sampling.fast_options import FastSamplingOptions

__all__ = ["CONFIDENCE_METHODS", "FlexMDMSamplerConfig"]

CONFIDENCE_METHODS = ("prob_diff", "top_prob", "entropy", "position", "random")
"""Confidence rules of docs/method.md §4.3 plus ``random`` (uniform choice of slots = plain ancestral)."""

_FILL_MODES = ("sample", "argmax")


@dataclass(frozen=True)
class FlexMDMSamplerConfig(FastSamplingOptions):
    """Settings of :class:`FlexMDMSampler` (docs/method.md §4.2-§4.6). Override with ``dataclasses.replace``.

    Attributes:
        steps: S, the number of tau-leaping steps (one forward pass each).
        max_length: cap on prompt + generation length in tokens (``sample``). Insertions that
            would exceed it are dropped (rightmost first) and counted.
        max_middle: cap on the middle length in tokens (``infill``).
        confidence: which masks to unmask first: prob_diff, top_prob, entropy, position, random.
        temperature: token temperature; 0 = argmax.
        top_k: sample only among the k most likely tokens (None = off).
        top_p: nucleus sampling mass in (0, 1] (None = off).
        sliding_window: restrict unmasking to the first w masks (docs/method.md §4.2 step 2.4).
        alpha_win: window factor, w = min(floor(alpha_win K), max_window, N).
        max_window: window cap.
        insertion_schedule: α spec for make_schedule; None = model.config.insertion_schedule.
        unmasking_schedule: β spec; None = model.config.unmasking_schedule.
        final_insertion: insert the pending mass at t = 1 (docs/method.md §7.3.5).
        fill: how the final pass unmasks the remaining masks: "sample" (temperature / top-k /
            top-p as in the steps) or "argmax".
        reference: research behaviour (docs/method.md §4.2): linear/linear hazards, the last step fills by
            argmax and inserts nothing, no final insertion. The top-K clamp and the vocab
            exclusion fixes stay on. The research code also wrote argmax tokens in every step:
            set temperature=0 for that.
        ban_pad: never emit the pad id (the mask id is never emitted; docs/method.md §4.7.3).
        banned_token_ids: further ids never emitted.
        mask_id: mask token id; None = model.config.mask_token_id.
        pad_id: pad id; None = model.config.pad_token_id.
        trim: run the model on the longest current row only. None = on unless
            model.config.pad_attention == "full" (then outputs depend on the canvas width).
        draw_at_full_width: no effect; kept so that configs and sampler_defaults that set it
            still load. Draws are per row and per column (``draws.RowRandom``, Poisson counts by
            inverse CDF) whatever the width, so trimmed and untrimmed runs, and a row alone or in
            any batch, always get the same numbers; their samples agree except where two
            confidences (or a CDF boundary) lie within float rounding of each other; such a
            near-tie changes only its own row.
        masked_logits: compute token logits only at the slots that can be unmasked, when the
            model's forward takes ``logits_mask`` (FlexMDMModel); saves the LM head elsewhere.
        unmask_threshold, prompt_cache, cache_refresh: fast sampling
            (`retrofit.sampling.fast_options.FastSamplingOptions`).
        trace: record the canvas after every step (SampleOutput.trace).
        progress: show a tqdm progress bar.
    """

    steps: int = 32
    max_length: int = 1024
    max_middle: int = 256
    confidence: str = "prob_diff"
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    sliding_window: bool = False
    alpha_win: float = 1.0
    max_window: int = 32
    insertion_schedule: str | dict | None = None
    unmasking_schedule: str | dict | None = None
    final_insertion: bool = True
    fill: str = "sample"
    reference: bool = False
    ban_pad: bool = True
    banned_token_ids: tuple[int, ...] = ()
    mask_id: int | None = None
    pad_id: int | None = None
    trim: bool | None = None
    draw_at_full_width: bool = False
    masked_logits: bool = True
    trace: bool = False
    progress: bool = False

    def __post_init__(self) -> None:
        checks = [
            (self.steps >= 1, "steps must be >= 1"),
            (self.max_length >= 1, "max_length must be >= 1"),
            (self.max_middle >= 0, "max_middle must be >= 0"),
            (self.confidence in CONFIDENCE_METHODS, f"confidence must be one of {CONFIDENCE_METHODS}"),
            (self.temperature >= 0 and math.isfinite(self.temperature), "temperature must be >= 0"),
            (self.top_k is None or self.top_k >= 1, "top_k must be >= 1 or None"),
            (self.top_p is None or 0 < self.top_p <= 1, "top_p must be in (0, 1] or None"),
            (self.alpha_win > 0 and self.max_window >= 1, "alpha_win must be > 0 and max_window >= 1"),
            (self.fill in _FILL_MODES, f"fill must be one of {_FILL_MODES}"),
        ]
        messages = [message for ok, message in checks if not ok] + self.fast_option_errors()
        if messages:
            raise ValueError(f"FlexMDMSamplerConfig: {messages[0]} (got {self})")

    @classmethod
    def from_model(cls, model: Any, **overrides: Any) -> FlexMDMSamplerConfig:
        """Defaults < max_length = ``model.config.canvas_width`` (if set) < ``model.config.sampler_defaults``
        (a dict) < ``overrides``.

        Raises:
            ValueError: a key of sampler_defaults or overrides is not a field of this config.
        """
        model_config = getattr(model, "config", None)
        width = getattr(model_config, "canvas_width", None)
        merged = {
            **({"max_length": int(width)} if width else {}),
            **dict(getattr(model_config, "sampler_defaults", None) or {}),
            **overrides,
        }
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(merged) - known)
        if unknown:
            raise ValueError(f"sampler settings {unknown} (config.json sampler_defaults or overrides) "
                             f"are not FlexMDMSamplerConfig fields; known: {sorted(known)}")  # fmt: skip
        if "banned_token_ids" in merged:
            merged["banned_token_ids"] = tuple(merged["banned_token_ids"])
        return cls(**merged)
