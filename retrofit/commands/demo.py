"""`retrofit demo [--smoke] [--out demo-out]`: run the whole pipeline on CPU and print the table."""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `retrofit demo`."""
    parser.add_argument("--out", type=Path, default=Path("demo-out"), help="output folder (default demo-out)")
    parser.add_argument("--smoke", action="store_true", help="same stages, minimal steps (CI; a few minutes)")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="local data (gsm8k/, humaneval-infilling/); default RETROFIT_DATA_DIR")  # fmt: skip
    parser.add_argument("--seed", type=int, default=0, help="seed of every stage")
    parser.add_argument("--quiet", action="store_true", help="only stage banners; full output goes to logs/")


def run(args: argparse.Namespace) -> int:
    """Run every demo stage, write `<out>/results.md`, print it. Returns 0, or 1 if a stage fails."""
    from retrofit.demo.plan import FULL, SMOKE, base_model_dir, build_plan, default_data_dir, demo_models
    from retrofit.demo.report import write_report
    from retrofit.demo.runner import StageError, ensure_data_dir, reset_outputs, run_plan

    start = time.perf_counter()
    out = args.out.resolve()
    sizes = SMOKE if args.smoke else FULL
    reset_outputs(out)
    data_dir = ensure_data_dir((args.data_dir or default_data_dir()).resolve(), out)
    env = {
        **os.environ,
        "RETROFIT_DATA_DIR": str(data_dir),
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONUNBUFFERED": "1",
    }
    stages = build_plan(out, sizes, data_dir, seed=args.seed)
    try:
        timings = run_plan(stages, out, env, echo=not args.quiet)
    except StageError as err:
        print(f"[demo] {err}")
        return 1
    base = base_model_dir(out, sizes)
    text = write_report(out, timings, demo_models(out, base), time.perf_counter() - start, args.smoke)
    print("\n" + text)
    print(f"\n[demo] wrote {out / 'results.md'}")
    return 0
