"""`retrofit bench all`: the CPU benchmark suite of `make bench` (< 10 min on 2 cores).

Runs, in order, writing ``<out>/<name>.json`` for each and a summary table at the end:
  1. ``interpolant``: collator throughput, B = 64, L = 1024, 1 thread (the collator runs in the
     training process: the trainer's DataLoader has 0 workers), vs a GPU step's need;
  2. ``sample-tiny``: FlexMDM trimmed / full-length vs the LLaDA sampler, tiny model, 1 thread
     (tiny matmuls only lose to OpenMP synchronisation with more);
  3. ``train-step-100m-full512``: the ~100M-parameter shape cut to ``CPU_LAYERS`` blocks,
     full-length x1 at L = 512, B = 4, G = 4 bands, 2 timed optimizer steps, 1 thread (read the
     CPU-time ratios: they hardly depend on other processes);
  4. ``train-step-100m-gsm8k1024``: GSM8K-length x1 in a 1024 canvas, B = 2, G = 4 (skipped, with
     a note, when RETROFIT_DATA_DIR does not hold GSM8K).

The full 12-block `100m` runs take ~13 min (L 512) and ~10 min (GSM8K, L 1024) here on 1 thread:
`retrofit bench train-step --size 100m --batch 4 --accum 8 --threads 1 ...`.
``--quick`` runs everything at tiny sizes (a smoke test, ~1 min).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from retrofit.bench.common import format_table, write_json
from retrofit.bench.interpolant_bench import InterpolantOptions, run_interpolant
from retrofit.bench.report import print_payload, summary_rows
from retrofit.bench.sample_bench import SampleOptions, run_sample
from retrofit.bench.train_step import TrainStepOptions, run_train_step

__all__ = ["CPU_LAYERS", "cpu_suite", "run_all"]

CPU_LAYERS = 2
"""Blocks of the `100m` shape in `make bench` (per-block cost is the full model's; time is not)."""

_RUNNERS = {"interpolant": run_interpolant, "sample": run_sample, "train-step": run_train_step}


def cpu_suite(quick: bool = False) -> list[tuple[str, str, Any]]:
    """(name, benchmark, options) of each run; ``quick`` = tiny shapes for a smoke test."""
    if quick:
        train = dict(size="tiny", batch=2, accum=2, warmup=1, repeats=1)
        return [
            ("interpolant", "interpolant", InterpolantOptions(batch=8, canvas=128, warmup=1, repeats=2)),
            (
                "sample-tiny",
                "sample",
                SampleOptions(size="tiny", prompts=2, prompt_length=8, max_length=48, steps=8, repeats=1),
            ),
            ("train-step-tiny-full", "train-step", TrainStepOptions(canvas=64, lengths="full", **train)),
            ("train-step-tiny-gsm8k", "train-step", TrainStepOptions(canvas=256, lengths="gsm8k", **train)),
        ]
    train = dict(size="100m", layers=CPU_LAYERS, accum=4, warmup=1, repeats=2, threads=1)
    return [
        (
            "interpolant",
            "interpolant",
            InterpolantOptions(batch=64, canvas=1024, warmup=2, repeats=10, threads=1),
        ),
        (
            "sample-tiny",
            "sample",
            SampleOptions(size="tiny", prompts=8, prompt_length=32, max_length=256, steps=64, threads=1),
        ),
        (
            "train-step-100m-full512",
            "train-step",
            TrainStepOptions(canvas=512, lengths="full", batch=4, **train),
        ),
        (
            "train-step-100m-gsm8k1024",
            "train-step",
            TrainStepOptions(canvas=1024, lengths="gsm8k", batch=2, **train),
        ),
    ]


def _has_gsm8k(opts: Any) -> bool:
    data_dir = getattr(opts, "data_dir", None) or os.environ.get("RETROFIT_DATA_DIR") or ""
    return bool(data_dir) and (Path(data_dir) / "gsm8k" / "train.jsonl").is_file()


def run_all(out: Path, quick: bool = False, log=print) -> dict[str, dict[str, Any]]:
    """Run the suite, write one JSON per run and print a summary; returns {name: payload}.

    Runs needing GSM8K lengths are skipped (with a note) when no local GSM8K data is found.
    """
    payloads, summary = {}, []
    start = time.perf_counter()
    for name, benchmark, opts in cpu_suite(quick):
        if getattr(opts, "lengths", "full") == "gsm8k" and not _has_gsm8k(opts):
            log(f"skip {name}: no gsm8k/train.jsonl under RETROFIT_DATA_DIR")
            continue
        log(f"-- {name} ({time.perf_counter() - start:.0f} s elapsed)")
        payload = _RUNNERS[benchmark](opts, log=log)
        print_payload(payload, log=log)
        log(f"wrote {write_json(out / f'{name}.json', payload)}")
        payloads[name] = payload
        summary += summary_rows(name, payload)
    log(f"\n== bench all summary ({time.perf_counter() - start:.0f} s)")
    log(format_table(summary, ["run", "what", "value"]))
    return payloads
