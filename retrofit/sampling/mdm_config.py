"""`MDMSamplerConfig`: the settings of `retrofit.sampling.mdm.MDMSampler` (docs/method.md §4.9).

Kept apart from the sampler (no torch import) so that `--help` can show the real defaults fast.
"""

from __future__ import annotations

from dataclasses import dataclass

from retrofit.sampling.fast_options import FastSamplingOptions

__all__ = ["MDMSamplerConfig"]

_REMASKING = ("low_confidence", "random")


@dataclass(frozen=True)
class MDMSamplerConfig(FastSamplingOptions):
    """Settings of :class:`MDMSampler` (docs/method.md §4.9). Override with ``dataclasses.replace``.

    Attributes:
        gen_length: G, generated tokens (a multiple of block_length).
        block_length: semi-autoregressive block size.
        steps: total steps, divisible by the number of blocks G / block_length.
        temperature: Gumbel-noise temperature; 0 = argmax.
        cfg_scale: classifier-free guidance w; logits = l_u + (w + 1)(l_c - l_u); 0 = off.
        remasking: "low_confidence" (probability of x̂) or "random".
        logits_eos_inf: never propose EOS (its logit is set to -inf).
        confidence_eos_eot_inf: EOS / EoT proposals get confidence -inf (revealed last).
        stop_at_eos: cut each generation at its first EOS (or EoT when eot_id is known).
        mask_id, eos_id, eot_id, pad_id: token ids; None = from model.config / the tokenizer
            (eot: the tokenizer's "<|eot_id|>", if any).
        unmask_threshold, prompt_cache, cache_refresh: fast sampling
            (`retrofit.sampling.fast_options.FastSamplingOptions`).
        progress: show a tqdm progress bar.

    Raises:
        ValueError: non-positive sizes, G not a multiple of block_length, steps not divisible
            by the number of blocks, or an unknown remasking rule.
    """

    gen_length: int = 128
    block_length: int = 32
    steps: int = 64
    temperature: float = 0.0
    cfg_scale: float = 0.0
    remasking: str = "low_confidence"
    logits_eos_inf: bool = False
    confidence_eos_eot_inf: bool = False
    stop_at_eos: bool = True
    mask_id: int | None = None
    eos_id: int | None = None
    eot_id: int | None = None
    pad_id: int | None = None
    progress: bool = False

    def __post_init__(self) -> None:
        if min(self.gen_length, self.block_length, self.steps) < 1:
            raise ValueError(f"MDMSamplerConfig: gen_length, block_length and steps must be >= 1 "
                             f"(got {self.gen_length}, {self.block_length}, {self.steps})")  # fmt: skip
        if self.gen_length % self.block_length:
            raise ValueError(
                f"MDMSamplerConfig: gen_length={self.gen_length} must be a multiple of "
                f"block_length={self.block_length}; e.g. gen_length={self.block_length * -(-self.gen_length // self.block_length)}"
            )
        blocks = self.gen_length // self.block_length
        if self.steps % blocks:
            raise ValueError(
                f"MDMSamplerConfig: steps={self.steps} must be divisible by the number of blocks "
                f"gen_length/block_length={blocks}; e.g. steps={blocks * max(1, round(self.steps / blocks))}"
            )
        if self.remasking not in _REMASKING:
            raise ValueError(
                f"MDMSamplerConfig: remasking must be one of {_REMASKING}, got {self.remasking!r}"
            )
        if self.temperature < 0 or self.cfg_scale < 0:
            raise ValueError("MDMSamplerConfig: temperature and cfg_scale must be >= 0")
        if self.fast_option_errors():
            raise ValueError(f"MDMSamplerConfig: {self.fast_option_errors()[0]}")
