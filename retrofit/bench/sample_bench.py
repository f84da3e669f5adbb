"""Sampler benchmark: samples/s and forward passes per sample (issue #9).

Three samplers, the same prompts and the same number of steps S, on a freshly grafted model
(random weights: speed does not depend on them, lengths do):
  * ``flexmdm-trimmed``: `FlexMDMSampler` running each step on the longest current row only;
  * ``flexmdm-full``: the same sampler with every step at the full ``max_length`` canvas
    (``trim=False``; ``draw_at_full_width`` makes both give identical samples for a seed);
  * ``llada``: the LLaDA baseline `MDMSampler` on the bare LLaDA trunk, prompt + (max_length - P)
    masks in one block (docs/method.md §4.9), S steps.

An untrained length head predicts ~0.69 * length_scale insertions per gap (docs/method.md §7.4 item 5), so
untrained FlexMDM canvases fill up to max_length fast; the mean final length is reported, and the
trimmed / full ratio of a trained model (shorter canvases for most steps) is larger.

    retrofit bench sample --size tiny --steps 64 --max-length 256 --prompts 8
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch

from retrofit.bench.common import (
    autocast,
    machine_info,
    peak_memory,
    release_memory,
    resolve_dtype,
    summarize,
    time_calls,
    torch_threads,
)
from retrofit.bench.configs import SIZES, build_llada

__all__ = ["SAMPLERS", "SampleOptions", "run_sample"]

SAMPLERS = ("flexmdm-trimmed", "flexmdm-full", "llada")


@dataclass
class SampleOptions:
    """Settings of the sampler benchmark.

    Attributes:
        size, layers, device, dtype: model as in the training-step benchmark.
        prompts: rows sampled together (one batch). prompt_length: P tokens per prompt.
        max_length: prompt + generation cap (FlexMDM) / canvas (LLaDA: P + gen_length).
        steps: S for every sampler.
        warmup, repeats: untimed / timed batches per sampler.
        length_scale: graft's length-head scale (None = max_length, as in training).
        seed: weights / prompts / sampling seed. threads: torch CPU threads (None = unchanged).
    """

    size: str = "tiny"
    layers: int | None = None
    device: str = "cpu"
    dtype: str = "fp32"
    prompts: int = 8
    prompt_length: int = 32
    max_length: int = 256
    steps: int = 64
    warmup: int = 1
    repeats: int = 3
    length_scale: float | None = None
    seed: int = 0
    threads: int | None = None

    def validate(self) -> None:
        """Raise ValueError naming the option if a value is invalid."""
        if self.size not in SIZES:
            raise ValueError(f"--size must be one of {sorted(SIZES)}, got {self.size!r}")
        if min(self.prompts, self.prompt_length, self.steps, self.repeats) < 1 or self.warmup < 0:
            raise ValueError("--prompts, --prompt-length, --steps, --repeats must be >= 1, --warmup >= 0")
        if self.max_length <= self.prompt_length:
            raise ValueError(
                f"--max-length {self.max_length} must exceed --prompt-length {self.prompt_length}"
            )


def _samplers(opts: SampleOptions) -> dict[str, Any]:
    """name -> sampler, all sharing one LLaDA trunk (the graft reuses it; its new modules are extra)."""
    from retrofit.models.flexmdm import FlexMDMModel
    from retrofit.sampling import FlexMDMSampler, FlexMDMSamplerConfig, MDMSampler, MDMSamplerConfig

    device, dtype = torch.device(opts.device), resolve_dtype(opts.dtype)
    llada = build_llada(opts.size, layers=opts.layers, device=device, dtype=dtype, seed=opts.seed).eval()
    graft = {"canvas_width": opts.max_length, "length_scale": opts.length_scale}
    flex = FlexMDMModel.from_llada(llada, seed=opts.seed, **graft).to(device=device, dtype=dtype).eval()
    base = FlexMDMSamplerConfig(steps=opts.steps, max_length=opts.max_length, draw_at_full_width=True)
    gen_length = opts.max_length - opts.prompt_length
    llada_cfg = MDMSamplerConfig(gen_length=gen_length, block_length=gen_length, steps=opts.steps)
    return {
        "flexmdm-trimmed": FlexMDMSampler(flex, FlexMDMSamplerConfig(**{**asdict(base), "trim": True})),
        "flexmdm-full": FlexMDMSampler(flex, FlexMDMSamplerConfig(**{**asdict(base), "trim": False})),
        "llada": MDMSampler(llada, llada_cfg),
    }


def _time_sampler(name: str, sampler: Any, prompts: list[list[int]], opts: SampleOptions) -> dict[str, Any]:
    device, dtype = torch.device(opts.device), resolve_dtype(opts.dtype)
    outputs = []

    def run(i: int) -> None:
        with autocast(device, dtype):
            outputs.append(sampler.sample(prompts, generator=torch.Generator().manual_seed(opts.seed + i)))

    with peak_memory(device) as memory:
        times = time_calls(run, warmup=opts.warmup, repeats=opts.repeats, device=device)
    timed = outputs[opts.warmup :]
    lengths = torch.cat([o.lengths.double() for o in timed])
    row = {"sampler": name, **summarize(times), **memory}
    row["samples_per_s"] = len(prompts) / row["median_s"]
    row["forward_passes_per_sample"] = sum(o.num_forward_passes for o in timed) / len(timed)
    row["mean_final_length"] = float(lengths.mean())
    row["mean_generated"] = float(sum(len(g) for o in timed for g in o.generated) / lengths.numel())
    return row


def run_sample(opts: SampleOptions, log=print) -> dict[str, Any]:
    """Time the three samplers; returns the JSON payload with the ratios.

    Raises:
        ValueError: invalid options.
    """
    opts.validate()
    s = SIZES[opts.size]
    gen = torch.Generator().manual_seed(opts.seed)
    prompt_ids = torch.randint(min(s.mask_id, s.pad_id), (opts.prompts, opts.prompt_length), generator=gen)
    prompts = prompt_ids.tolist()
    rows = []
    with torch.no_grad(), torch_threads(opts.threads):
        machine = machine_info(opts.device)
        samplers = _samplers(opts)
        for name, sampler in samplers.items():
            rows.append(_time_sampler(name, sampler, prompts, opts))
            log(
                f"  sample {name}: {rows[-1]['samples_per_s']:.2f} samples/s, mean length {rows[-1]['mean_final_length']:.0f}"
            )
    del samplers
    release_memory(opts.device)
    by_name = {r["sampler"]: r for r in rows}
    trimmed = by_name["flexmdm-trimmed"]["samples_per_s"]
    return {
        "benchmark": "sample",
        "machine": machine,
        "options": asdict(opts),
        "samplers": rows,
        "ratios": {
            "trimmed_vs_full": trimmed / by_name["flexmdm-full"]["samples_per_s"],
            "flexmdm_trimmed_vs_llada": trimmed / by_name["llada"]["samples_per_s"],
            "flexmdm_full_vs_llada": by_name["flexmdm-full"]["samples_per_s"]
            / by_name["llada"]["samples_per_s"],
        },
        "notes": [
            "random (untrained) weights: FlexMDM final lengths differ from a trained model's (see mean_final_length)",
            "forward_passes_per_sample = batched model calls each row goes through (S steps + final passes)",
        ],
    }
