"""Collator throughput on CPU: can data preparation keep a GPU training step fed? (issue #9)

Times, per batch of B sequences on a width-L canvas:
  * ``interpolant``: `sample_times` + `sample_interpolant` + `trim_to_longest` on ready tensors
    (docs/method.md §1.3-1.5, §3.5);
  * ``collator``: the full `FlexMDMCollator` call (python lists -> padded x1 -> times ->
    interpolant -> trim -> dict), what a DataLoader runs per micro-batch.

The need: the paper's transfer run processed ~6.3k tokens/s/GPU (docs/method.md §5.1), i.e. one 4 x 1024
micro-batch every ~0.65 s, ~6.2 samples/s/GPU of 1024 tokens. The margin is measured / needed.

    retrofit bench interpolant --batch 64 --canvas 1024
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch

from retrofit.bench.common import machine_info, summarize, time_calls, torch_threads
from retrofit.bench.configs import SIZES
from retrofit.bench.lengths import gsm8k_length_table, make_features

__all__ = ["PAPER_TOKENS_PER_S_PER_GPU", "InterpolantOptions", "run_interpolant"]

PAPER_TOKENS_PER_S_PER_GPU = 6.3e3
"""x1 tokens per second per GPU implied by the paper's transfer run (docs/method.md §5.1)."""


@dataclass
class InterpolantOptions:
    """Settings of the collator benchmark.

    Attributes:
        batch: B rows per call. canvas: L. lengths: "full" | "gsm8k".
        warmup, repeats: untimed / timed calls per variant.
        time_mode: the collator's "stratified" | "banded" | "uniform".
        threads: torch CPU threads (None = leave as is; DataLoader workers usually run 1).
        seed: data seed. data_dir: GSM8K folder (None = RETROFIT_DATA_DIR).
    """

    batch: int = 64
    canvas: int = 1024
    lengths: str = "full"
    warmup: int = 2
    repeats: int = 10
    time_mode: str = "stratified"
    threads: int | None = None
    seed: int = 0
    data_dir: str | None = None


def _variant_fns(opts: InterpolantOptions, features: list[dict[str, Any]]) -> dict[str, Any]:
    from retrofit.interpolant import sample_interpolant, trim_to_longest
    from retrofit.time_sampling import sample_times
    from retrofit.training.collator import FlexMDMCollator, pad_x1

    s = SIZES["8b"]  # LLaDA ids; the work does not depend on them
    x1, x1_mask = pad_x1(features, s.pad_id, opts.canvas)
    protected = torch.arange(opts.canvas) < torch.tensor([f["prompt_length"] for f in features])[:, None]
    collate = FlexMDMCollator(
        mask_id=s.mask_id, pad_id=s.pad_id, canvas_width=opts.canvas, time_mode=opts.time_mode, seed=opts.seed
    )

    def interpolant(i: int) -> None:
        gen = torch.Generator().manual_seed(opts.seed + i)
        t = sample_times(opts.batch, generator=gen)
        trim_to_longest(
            sample_interpolant(x1, x1_mask, t, protected, "geometric", "linear", s.mask_id, s.pad_id, gen)
        )

    return {"interpolant": interpolant, "collator": lambda i: collate(features)}


def run_interpolant(opts: InterpolantOptions, log=print) -> dict[str, Any]:
    """Time both variants; returns the JSON payload with samples/s, tokens/s and the GPU margin.

    Raises:
        ValueError: batch / canvas / repeats < 1. FileNotFoundError: "gsm8k" without local data.
    """
    if min(opts.batch, opts.canvas, opts.repeats) < 1:
        raise ValueError("--batch, --canvas and --repeats must be >= 1")
    with torch_threads(opts.threads):
        table = gsm8k_length_table(opts.data_dir) if opts.lengths == "gsm8k" else None
        gen = torch.Generator().manual_seed(opts.seed)
        features = make_features(
            opts.lengths, opts.batch, opts.canvas, vocab_limit=126000, table=table, generator=gen
        )
        x1_tokens = sum(len(f["input_ids"]) for f in features)
        machine = machine_info("cpu")
        rows = []
        for name, fn in _variant_fns(opts, features).items():
            times = time_calls(fn, warmup=opts.warmup, repeats=opts.repeats, device=torch.device("cpu"))
            row = {"variant": name, **summarize(times)}
            row["samples_per_s"] = opts.batch / row["median_s"]
            row["x1_tokens_per_s"] = x1_tokens / row["median_s"]
            row["margin_vs_paper_gpu"] = row["x1_tokens_per_s"] / PAPER_TOKENS_PER_S_PER_GPU
            rows.append(row)
            log(
                f"  interpolant {name}: {row['samples_per_s']:.0f} samples/s ({row['margin_vs_paper_gpu']:.1f}x a GPU's need)"
            )
    return {
        "benchmark": "interpolant",
        "machine": machine,
        "options": asdict(opts),
        "x1_tokens_per_batch": x1_tokens,
        "need": {
            "x1_tokens_per_s_per_gpu": PAPER_TOKENS_PER_S_PER_GPU,
            "samples_per_s_per_gpu": PAPER_TOKENS_PER_S_PER_GPU / (x1_tokens / opts.batch),
            "seconds_per_4x1024_micro_batch": 4 * 1024 / PAPER_TOKENS_PER_S_PER_GPU,
        },
        "variants": rows,
        "notes": [
            "need = the paper's ~6.3k x1 tokens/s/GPU (docs/method.md §5.1); "
            "margin = measured x1 tokens/s / need"
        ],
    }
