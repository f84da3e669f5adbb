"""`retrofit repro TASK [--out DIR] [--seeds N] [--quick]`: the paper's small-scale claims, on CPU.

TASK is `brackets` (unconditional balanced brackets with a multimodal length law), `maze`
(subgoal-conditioned shortest-path planning, three levels) or `all`. For each seed it trains an
MDM from scratch, a FlexMDM from scratch and the retrofit (the MDM's halfway checkpoint grafted
and fine-tuned with the FlexMDM loss) at equal training compute, exports and reloads them, samples
the test cases and scores them with exact checkers (`retrofit.repro`). Writes results.json,
results.md, PNGs and samples/<task>-<model>-seed<k>.jsonl under --out.
"""

from __future__ import annotations

import argparse
from pathlib import Path

TASK_CHOICES = ("brackets", "maze", "all")


def count(text: str) -> int:
    """A number of seeds (>= 1); argparse names this function in its errors."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(
            f"a number of seeds must be >= 1 (--seeds 3 runs seeds 0, 1, 2), got {value}"
        )
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `retrofit repro`."""
    parser.add_argument("task", choices=TASK_CHOICES, help="which reproduction to run")
    parser.add_argument(
        "--out", type=Path, default=Path("repro-out"), help="output folder (default repro-out)"
    )
    parser.add_argument("--seeds", type=count, default=1,
                        help="how many seeds: runs seeds 0..N-1, each a full train + sample run (default 1; the "
                             "README's table: 3)")  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks the pipeline in ~20 s")
    parser.add_argument("--recipes", type=Path, default=None,
                        help="folder of <task>-<model>.yaml recipes (default the checkout's recipes/repro)")  # fmt: skip


def run(args: argparse.Namespace) -> int:
    """Run the reproduction and print results.md. Returns 0."""
    from retrofit.repro.report import render_tables
    from retrofit.repro.runner import RECIPES_DIR, run_repro

    tasks = ["brackets", "maze"] if args.task == "all" else [args.task]
    results = run_repro(
        tasks, args.out, seeds=args.seeds, quick=args.quick, recipes_dir=args.recipes or RECIPES_DIR
    )
    print("\n" + render_tables(results))
    print(f"\n[repro] wrote {args.out / 'results.md'} ({results['config']['wall_seconds'] / 60:.1f} min)")
    return 0
