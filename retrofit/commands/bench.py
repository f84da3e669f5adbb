"""`retrofit bench all|train-step|sample|interpolant|token-head|computed-fraction [options] [--out bench-out]` (issue #9).

Every benchmark prints a table and writes ``<out>/<name>.json`` (machine, options, timings:
median and spread over the repeats, throughput, peak memory). ``all`` is what `make bench` runs:
the CPU suite (collator, tiny sampler, ~100M-parameter training step in two length regimes).
`eval/bench/gpu.sh` runs the 8B-shaped variants on one CUDA GPU.

    retrofit bench train-step --size 100m --canvas 512 --lengths full --batch 4 --accum 8
    retrofit bench sample --size tiny --steps 64
    retrofit bench interpolant --batch 64 --canvas 1024
    retrofit bench token-head --device cuda --dtype bf16 --chunks 256 512 1024
    retrofit bench computed-fraction --lengths full --canvas 1024 --batch 4 --accum 2 --world-size 16
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from retrofit.bench import TRAIN_STEP_VARIANTS


def _common(p: argparse.ArgumentParser, name: str) -> None:
    p.add_argument("--out", default="bench-out", help="folder of the JSON results (default bench-out)")
    p.add_argument("--name", default=name, help=f"JSON file name without .json (default {name})")
    p.add_argument("--seed", type=int, default=0, help="seed of data, times, weights and sampling")


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--size", choices=["tiny", "100m", "8b"], default="tiny", help="model shape (8b: use --layers)"
    )
    p.add_argument("--layers", type=int, default=None, help="number of blocks (default: the size's own)")
    p.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:1 ...")
    p.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32", help="base weight dtype / autocast")
    p.add_argument("--warmup", type=int, default=1, help="untimed runs before timing")
    p.add_argument("--repeats", type=int, default=3, help="timed runs (median and spread reported)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: unchanged)")


def _recipe_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--recipe", default=None, metavar="YAML",
                   help="the examples of this training recipe (and its canvas) instead of --lengths")  # fmt: skip
    p.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                   help="recipe override (repeatable), e.g. --override model.base=demo-out/flexmdm-init")  # fmt: skip


def _train_step_args(p: argparse.ArgumentParser) -> None:
    _model_args(p)
    p.add_argument("--grad-ckpt", choices=["on", "off"], default="off", help="gradient checkpointing")
    p.add_argument("--batch", type=int, default=4, help="B: sequences per micro-batch")
    p.add_argument("--accum", type=int, default=8, help="G: micro-steps per optimizer step (= bands)")
    p.add_argument("--canvas", type=int, default=512, help="L: canvas width")
    p.add_argument(
        "--lengths", choices=["full", "gsm8k"], default="full", help="x1 lengths (see retrofit.bench.lengths)"
    )
    p.add_argument("--lora-r", type=int, default=None, help="LoRA rank, alpha = r (default: per size)")
    p.add_argument(
        "--variants",
        nargs="+",
        choices=TRAIN_STEP_VARIANTS,
        default=list(TRAIN_STEP_VARIANTS),
        help="variants to run",
    )
    p.add_argument(
        "--data-dir", default=None, help="GSM8K folder for --lengths gsm8k (default $RETROFIT_DATA_DIR)"
    )
    _recipe_args(p)
    _common(p, "train-step")


def _sample_args(p: argparse.ArgumentParser) -> None:
    _model_args(p)
    p.add_argument("--prompts", type=int, default=8, help="rows sampled together")
    p.add_argument("--prompt-length", type=int, default=32, help="P: prompt tokens")
    p.add_argument("--max-length", type=int, default=256, help="prompt + generation cap (LLaDA: its canvas)")
    p.add_argument("--steps", type=int, default=64, help="S: sampling steps of every sampler")
    p.add_argument("--length-scale", type=float, default=None, help="length-head scale (default max-length)")
    p.add_argument("--repro", default=None, metavar="DIR",
                   help="instead: sampler settings on the trained models of a `retrofit repro --out DIR` run "
                   "(trunk FLOPs, passes, time and quality vs the exact sampler at 256 steps)")  # fmt: skip
    p.add_argument("--workload", choices=["gsm8k"], default=None,
                   help="instead: the GSM8K-shaped workload (~900-token few-shot prompts, up to 256 generated) "
                   "on --model, every setting vs the exact sampler (token agreement)")  # fmt: skip
    p.add_argument("--model", default=None, metavar="DIR",
                   help="with --workload: a FlexMDM or LLaDA folder (default: a random model of --size, random prompts)")  # fmt: skip
    p.add_argument("--kind", choices=["flexmdm", "llada"], default="flexmdm",
                   help="with --workload and no --model: which random model (default flexmdm)")  # fmt: skip
    p.add_argument("--tasks", nargs="+", default=["brackets", "maze"], help="with --repro (default both)")
    p.add_argument("--settings", nargs="+", default=None,
                   help="with --repro: setting names of retrofit.bench.sample_settings.SETTINGS (default all)")  # fmt: skip
    _common(p, "sample")


def _interpolant_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--batch", type=int, default=64, help="B: rows per collator call")
    p.add_argument("--canvas", type=int, default=1024, help="L: canvas width")
    p.add_argument("--lengths", choices=["full", "gsm8k"], default="full", help="x1 lengths")
    p.add_argument("--time-mode", choices=["stratified", "banded", "uniform"], default="stratified")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: unchanged)")
    p.add_argument("--warmup", type=int, default=2, help="untimed calls")
    p.add_argument("--repeats", type=int, default=10, help="timed calls")
    p.add_argument("--data-dir", default=None, help="GSM8K folder for --lengths gsm8k")
    _common(p, "interpolant")


def _token_head_args(p: argparse.ArgumentParser) -> None:
    # defaults = retrofit.bench.token_head.TokenHeadOptions (literal here: --help imports no torch)
    p.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:1 ...")
    p.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32", help="head weight and states dtype")
    p.add_argument("--slots", type=int, default=1229,
                   help="N: masked slots (default 1229, ~30%% of 4 x 1024 positions)")  # fmt: skip
    p.add_argument(
        "--vocab", type=int, default=126_464, help="V: vocabulary size (default LLaDA-8B's 126464)"
    )
    p.add_argument("--d-model", type=int, default=4096, help="D: hidden size (default LLaDA-8B's 4096)")
    p.add_argument("--chunks", type=int, nargs="+", default=[256, 512, 1024],
                   help="slots per chunk of the chunked variants (the plain path, chunk 0, always runs first)")  # fmt: skip
    p.add_argument("--head-grad", action="store_true",
                   help="also the head weight's gradient (default: frozen base head, as under LoRA)")  # fmt: skip
    p.add_argument("--warmup", type=int, default=1, help="untimed calls per variant")
    p.add_argument(
        "--repeats", type=int, default=3, help="timed calls per variant (median and spread reported)"
    )
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: unchanged)")
    _common(p, "token-head")


def _fraction_args(p: argparse.ArgumentParser) -> None:
    # defaults = retrofit.bench.computed_fraction.FractionOptions (literal here: --help imports no torch)
    p.add_argument(
        "--lengths", choices=["full", "gsm8k"], default="full", help="x1 lengths (without --recipe)"
    )
    p.add_argument("--canvas", type=int, default=1024, help="L: canvas width (without --recipe)")
    p.add_argument(
        "--batch", type=int, default=4, help="B: examples per micro-batch and rank (without --recipe)"
    )
    p.add_argument(
        "--accum", type=int, default=2, help="G: micro-steps per optimizer step (without --recipe)"
    )
    p.add_argument("--world-size", type=int, default=16, help="W: emulated data-parallel ranks (default 16)")
    p.add_argument("--steps", type=int, default=16, help="optimizer steps measured (default 16)")
    p.add_argument("--pack-tokens", type=int, default=None, help="packed row budget (default: one row)")
    p.add_argument("--layouts", nargs="+", choices=["trimmed", "packed", "group_by_length"],
                   default=["trimmed", "packed", "group_by_length"], help="batch layouts to measure")  # fmt: skip
    p.add_argument(
        "--data-dir", default=None, help="GSM8K folder for --lengths gsm8k (default $RETROFIT_DATA_DIR)"
    )
    _recipe_args(p)
    _common(p, "computed-fraction")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Sub-commands all / train-step / sample / interpolant / token-head with their options."""
    sub = parser.add_subparsers(dest="benchmark", required=True, metavar="BENCHMARK")
    p_all = sub.add_parser("all", help="the CPU suite of `make bench` (< 10 min on 2 cores)")
    p_all.add_argument("--out", default="bench-out", help="folder of the JSON results")
    p_all.add_argument("--quick", action="store_true", help="tiny sizes only (a smoke run, ~1 min)")
    _train_step_args(sub.add_parser("train-step", help="training step: x1 tokens/s, peak memory, ratios"))
    _sample_args(sub.add_parser("sample", help="sampler: samples/s, forward passes, FlexMDM vs LLaDA"))
    _interpolant_args(sub.add_parser("interpolant", help="collator throughput vs a GPU step's need"))
    _fraction_args(
        sub.add_parser(
            "computed-fraction",
            help="positions fed to the trunk: trimmed vs packed batches, W emulated ranks",
        )
    )
    _token_head_args(
        sub.add_parser(
            "token-head", help="LM head + CE at the masked slots: peak memory, time, plain vs chunked"
        )
    )


def _options(cls: type, args: argparse.Namespace, **renamed: Any) -> Any:
    """Dataclass ``cls`` from the parsed arguments whose names match its fields."""
    from dataclasses import fields

    values = {f.name: getattr(args, f.name) for f in fields(cls) if hasattr(args, f.name)}
    return cls(**{**values, **renamed})


def run_one(args: argparse.Namespace) -> dict[str, Any]:
    """Run the benchmark named by ``args.benchmark`` (not "all"); returns its payload."""
    if args.benchmark == "train-step":
        from retrofit.bench.train_step import TrainStepOptions, run_train_step

        opts = _options(
            TrainStepOptions, args, grad_ckpt=args.grad_ckpt == "on", variants=tuple(args.variants),
            overrides=tuple(args.override),
        )  # fmt: skip
        return run_train_step(opts)
    if args.benchmark == "computed-fraction":
        from retrofit.bench.computed_fraction import run_fraction_command

        return run_fraction_command(args)
    if args.benchmark == "token-head":
        from retrofit.bench.token_head import TokenHeadOptions, run_token_head

        return run_token_head(_options(TokenHeadOptions, args, chunks=tuple(args.chunks)))
    if args.benchmark == "sample" and args.workload:
        from retrofit.bench.sample_settings import SETTINGS, chosen_settings
        from retrofit.bench.sample_workload import run_workload

        return run_workload(args.model, chosen_settings(args.settings or list(SETTINGS)), prompts=args.prompts,
                            seed=args.seed, size=args.size, layers=args.layers, kind=args.kind, device=args.device,
                            dtype=args.dtype)  # fmt: skip
    if args.benchmark == "sample" and args.repro:
        from retrofit.bench.sample_settings import SETTINGS, run_sample_settings

        return run_sample_settings(Path(args.repro), args.settings or list(SETTINGS), args.tasks)
    if args.benchmark == "sample":
        from retrofit.bench.sample_bench import SampleOptions, run_sample

        return run_sample(_options(SampleOptions, args))
    from retrofit.bench.interpolant_bench import InterpolantOptions, run_interpolant

    return run_interpolant(_options(InterpolantOptions, args))


def run(args: argparse.Namespace) -> int:
    """Entry point of `retrofit bench`; returns 0 (errors raise with a message naming the option)."""
    from retrofit.bench.all_suite import run_all
    from retrofit.bench.common import write_json
    from retrofit.bench.report import print_payload

    start = time.perf_counter()
    if args.benchmark == "all":
        run_all(Path(args.out), quick=args.quick)
    else:
        payload = run_one(args)
        if args.benchmark == "token-head":  # its table is not in retrofit.bench.report.COLUMNS
            from retrofit.bench.token_head import print_token_head

            print_token_head(payload)
        else:
            print_payload(payload)
        path = write_json(Path(args.out) / f"{args.name}.json", payload)
        print(f"wrote {path}")
    print(f"bench {args.benchmark}: {time.perf_counter() - start:.0f} s")
    return 0
