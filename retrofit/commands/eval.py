"""`retrofit eval`: GSM8K, HumanEval infilling, length statistics, and lm-eval with our models.

Usage:
    retrofit eval gsm8k MODEL_DIR [--limit N] [--num-fewshot K] [--steps S] [--via-lm-eval] [--out DIR]
    retrofit eval humaneval-infill MODEL_DIR [--benchmark single-line] [--limit N] [--num-samples n]
    retrofit eval length MODEL_DIR [MODEL_DIR ...] --data gsm8k|PATH [--per-prompt|--unconditional]
    retrofit eval lm-eval --model flexmdm --model_args pretrained=DIR --tasks gsm8k_flexmdm ...

Every run writes results.json (config, model hash, sampler settings, metrics with standard
errors, timings) and samples.jsonl under --out; the same machine and --seed give the same
numbers. Data parallel: `accelerate launch -m retrofit.cli eval ...` (rank r takes items r::world).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from retrofit.commands.arg_types import at_least, check_lengths, non_negative_float
from retrofit.commands.generate import (
    add_fast_sampling_arguments,
    add_prompt_template_argument,
    fast_sampling_options,
)
from retrofit.dtypes import dtype_argument

# Per-verb sampler defaults by model kind (docs/method.md §4.6, §6.1, §6.2); --steps etc. override them.
DEFAULTS: dict[str, dict[str, dict[str, Any]]] = {
    "gsm8k": {
        "flexmdm": {"steps": 256, "temperature": 0.0},
        "llada": {"steps": 128, "gen_length": 256, "block_length": 128},
    },
    "humaneval-infill": {
        "flexmdm": {
            "steps": 4096,
            "temperature": 0.0,
            "confidence": "top_prob",
            "sliding_window": True,
            "alpha_win": 15.0,
            "max_window": 32,
        },  # fmt: skip
        "llada": {"steps": 64, "gen_length": 64},
    },
    "length": {"flexmdm": {"steps": 256}, "llada": {"steps": 128, "gen_length": 256, "block_length": 128}},
}


def _defaults_text(verb: str, key: str) -> str:
    """ "FlexMDM 256, LLaDA 128": this verb's default of `key` per model kind (sampler default if unset)."""
    from retrofit.sampling import FlexMDMSamplerConfig, MDMSamplerConfig

    parts = []
    for kind, name, cls in (
        ("flexmdm", "FlexMDM", FlexMDMSamplerConfig),
        ("llada", "LLaDA", MDMSamplerConfig),
    ):
        value = DEFAULTS[verb][kind].get(key, getattr(cls, key, None))
        if value is not None:
            parts.append(f"{name} {value}")
    return ", ".join(parts)


def _sampler_options(p: argparse.ArgumentParser, verb: str) -> None:
    p.add_argument("--steps", type=at_least(1), default=None,
                   help=f"sampler steps (default {_defaults_text(verb, 'steps')})")  # fmt: skip
    p.add_argument("--batch-size", type=at_least(1), default=8, help="rows per sampler call (default 8)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    p.add_argument("--temperature", type=non_negative_float, default=None,
                   help=f"token temperature, 0 = argmax (default {_defaults_text(verb, 'temperature')})")  # fmt: skip
    p.add_argument("--gen-length", type=at_least(1), default=None,
                   help=f"LLaDA: generated canvas, the mask budget (default {DEFAULTS[verb]['llada']['gen_length']})")  # fmt: skip
    p.add_argument("--block-length", type=at_least(1), default=None,
                   help="LLaDA: semi-AR block size (default: " + str(DEFAULTS[verb]["llada"].get("block_length", "--gen-length")) + ")")  # fmt: skip
    p.add_argument("--max-length", type=at_least(1), default=None,
                   help="FlexMDM: cap on prompt + generation tokens (default: the model's canvas width)")  # fmt: skip
    p.add_argument("--device", default=None, help='e.g. "cuda", "cpu" (default: cuda if available)')
    p.add_argument(
        "--dtype",
        type=dtype_argument(allowed=("float32", "bfloat16")),
        default=None,
        help="bf16 or fp32, any spelling (default: bf16 on GPU, fp32 on CPU)",
    )
    add_prompt_template_argument(p)
    add_fast_sampling_arguments(p)
    p.add_argument("--sampler-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="any other sampler config field, e.g. confidence=top_prob (repeatable)")  # fmt: skip
    p.add_argument(
        "--data-dir", default=None, help="local data folder (default: $RETROFIT_DATA_DIR, else Hub)"
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Sub-commands gsm8k, humaneval-infill, length, lm-eval."""
    sub = parser.add_subparsers(dest="task", metavar="TASK", required=True)
    g = sub.add_parser("gsm8k", help="GSM8K accuracy (docs/method.md §6.1)", description=GSM8K_DESCRIPTION)
    g.add_argument("model_dir", help="FlexMDM or LLaDA model folder (retrofit export output)")
    g.add_argument(
        "--limit", type=at_least(1), default=None, help="first N test questions (default: all 1319)"
    )
    g.add_argument("--num-fewshot", type=at_least(0), default=None,
                   help="solved examples before each question (default: direct 0; --via-lm-eval: the task's own)")  # fmt: skip
    g.add_argument("--out", default=None, help="output folder (default eval-out/gsm8k/<model>)")
    g.add_argument("--via-lm-eval", action="store_true", help="score through lm-eval's simple_evaluate")
    g.add_argument("--lm-eval-tasks", default="gsm8k_flexmdm,gsm8k",
                   help="with --via-lm-eval (default gsm8k_flexmdm,gsm8k)")  # fmt: skip
    _sampler_options(g, "gsm8k")
    h = sub.add_parser("humaneval-infill", help="HumanEval infilling pass@k (docs/method.md §6.2)",
                       description=HUMANEVAL_DESCRIPTION)  # fmt: skip
    h.add_argument("model_dir", help="FlexMDM or LLaDA model folder (retrofit export output)")
    h.add_argument("--benchmark", default="single-line",
                   choices=("single-line", "multi-line", "random-span", "random-span-light"),
                   help="HumanEval-Infilling split (default single-line)")  # fmt: skip
    h.add_argument("--limit", type=at_least(1), default=None, help="first N tasks (default: all)")
    h.add_argument("--num-samples", type=at_least(1), default=1,
                   help="samples per task, pass@k for k <= n (default 1)")  # fmt: skip
    h.add_argument("--max-middle", type=at_least(0), default=None,
                   help="FlexMDM: cap on the middle length in tokens (default: the sampler's max_middle)")  # fmt: skip
    h.add_argument(
        "--workers", type=at_least(1), default=2, help="sandboxed programs run at once (default 2)"
    )
    h.add_argument("--timeout", type=non_negative_float, default=3.0, help="seconds per program (default 3)")
    h.add_argument("--out", default=None, help="output folder (default eval-out/humaneval-infill/<model>)")
    _sampler_options(h, "humaneval-infill")
    n = sub.add_parser("length", help="generated vs data length statistics (docs/method.md §6.4)",
                       description=LENGTH_DESCRIPTION)  # fmt: skip
    n.add_argument("model_dirs", nargs="+", help="model folders, one curve each")
    n.add_argument(
        "--data", default="gsm8k", help='"gsm8k" (default) or a JSONL file with response/text fields'
    )
    n.add_argument("--num-samples", type=at_least(1), default=64, help="sequences per model (default 64)")
    mode = n.add_mutually_exclusive_group()
    mode.add_argument("--per-prompt", dest="mode", action="store_const", const="per-prompt",
                      help="one sample per data prompt (default)")  # fmt: skip
    mode.add_argument("--unconditional", dest="mode", action="store_const", const="unconditional",
                      help="samples from an empty prompt")  # fmt: skip
    n.set_defaults(mode="per-prompt")
    n.add_argument("--out", default="eval-out/length", help="output folder (default eval-out/length)")
    _sampler_options(n, "length")
    # prefix_chars without "-": every following argument (options included) goes to lm-eval.
    m = sub.add_parser("lm-eval", help="lm-eval's CLI with --model flexmdm|llada and our gsm8k_flexmdm task",
                       add_help=False, prefix_chars="+")  # fmt: skip
    m.add_argument(
        "lm_eval_args",
        nargs=argparse.REMAINDER,
        help="arguments for lm-eval (see retrofit eval lm-eval --help)",
    )


GSM8K_DESCRIPTION = """GSM8K test accuracy of a FlexMDM or LLaDA folder (exact match of the final number).
Writes results.json (accuracy ± stderr, sampler settings, timings) and samples.jsonl under --out.
Direct path by default (our prompt and answer extraction); --via-lm-eval scores through lm-eval."""
HUMANEVAL_DESCRIPTION = """HumanEval-Infilling pass@k: the model fills the middle of each function between
its prefix and suffix; the programs run in a sandboxed subprocess with --timeout seconds each.
Writes results.json and samples.jsonl under --out."""
LENGTH_DESCRIPTION = """Generated-length statistics of one or more models against the data's lengths
(mean, quantiles, Wasserstein-1, histogram PNG). Writes results.json under --out."""


def _parse_value(text: str) -> Any:
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"true": True, "false": False, "none": None}.get(text.lower(), text)


def sampler_overrides(args: argparse.Namespace, verb: str, kind: str) -> dict[str, Any]:
    """Per-verb defaults for the model kind < explicit flags < --sampler-arg KEY=VALUE."""
    out = dict(DEFAULTS[verb][kind])
    flags = {"steps": args.steps, "temperature": args.temperature, **fast_sampling_options(args)}
    if kind == "llada":
        flags.update(gen_length=args.gen_length, block_length=args.block_length)
        if args.gen_length is not None and args.block_length is None:
            out.pop("block_length", None)  # one block of gen_length
    else:
        flags.update(max_length=args.max_length, max_middle=getattr(args, "max_middle", None))
    out.update({k: v for k, v in flags.items() if v is not None})
    known = _sampler_fields()
    for item in args.sampler_arg:
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in known:
            raise ValueError(f"--sampler-arg {item!r}: expected KEY=VALUE with KEY among {sorted(known)}")
        out[key] = _parse_value(value.strip())
    return out


def _sampler_fields() -> set[str]:
    """Field names of FlexMDMSamplerConfig and MDMSamplerConfig (each sampler ignores the other's)."""
    from dataclasses import fields

    from retrofit.sampling import FlexMDMSamplerConfig, MDMSamplerConfig

    return {f.name for cls in (FlexMDMSamplerConfig, MDMSamplerConfig) for f in fields(cls)}


def load_generator(model_dir: str, args: argparse.Namespace, verb: str):
    """TextGenerator for `model_dir` with this verb's sampler settings."""
    from retrofit.evaluation.generation import TextGenerator, load_model_dir, process_device
    from retrofit.sampling.fast_options import exact_sampler
    from retrofit.sampling.load import make_sampler

    check_lengths(model_dir, max_length=args.max_length, gen_length=args.gen_length)
    model, tokenizer, kind = load_model_dir(
        model_dir,
        device=process_device() or args.device,
        dtype=args.dtype,
        prompt_template=args.prompt_template,
    )
    sampler = make_sampler(model, tokenizer, kind, **sampler_overrides(args, verb, kind))
    if args.exact:
        sampler = exact_sampler(sampler)
    return TextGenerator(sampler, tokenizer, kind, batch_size=args.batch_size)


def _out_dir(args: argparse.Namespace, verb: str) -> Path:
    return Path(args.out) if args.out else Path("eval-out") / verb / Path(args.model_dir).resolve().name


def _stderr_key(key: str) -> str:
    """ "accuracy" -> "accuracy_stderr"; lm-eval's "task/exact_match,filter" -> "task/exact_match_stderr,filter"."""
    name, sep, rest = key.partition(",")
    return f"{name}_stderr{sep}{rest}"


def _print_metrics(metrics: dict[str, Any]) -> None:
    """One line per metric, "value ± stderr" where a standard error is stored."""
    for key, value in metrics.items():
        if "_stderr" in key or not isinstance(value, (int, float)):
            continue
        se = metrics.get(_stderr_key(key))
        print(f"{key}: {value:.4f}" + (f" ± {se:.4f}" if isinstance(se, (int, float)) else ""))


def run_gsm8k(args: argparse.Namespace) -> int:
    from retrofit.evaluation.gsm8k import run_gsm8k as direct
    from retrofit.evaluation.gsm8k import run_gsm8k_lm_eval

    generator = load_generator(args.model_dir, args, "gsm8k")
    common = dict(model_dir=args.model_dir, limit=args.limit, seed=args.seed, data_dir=args.data_dir)
    out = _out_dir(args, "gsm8k")
    if args.via_lm_eval:
        tasks = tuple(t.strip() for t in args.lm_eval_tasks.split(",") if t.strip())
        metrics = run_gsm8k_lm_eval(generator, out, num_fewshot=args.num_fewshot, tasks=tasks, **common)
    else:
        metrics = direct(generator, out, num_fewshot=args.num_fewshot or 0, **common)
    if metrics is not None:
        _print_metrics(metrics)
        print(f"wrote {out / 'results.json'}")
    return 0


def run_humaneval(args: argparse.Namespace) -> int:
    from retrofit.evaluation.generation import rank_and_world, time_forward_pass
    from retrofit.evaluation.humaneval_data import read_problems
    from retrofit.evaluation.humaneval_infill import cost_estimate, run_humaneval_infill

    generator = load_generator(args.model_dir, args, "humaneval-infill")
    num_tasks = len(read_problems(args.benchmark, args.data_dir)) if args.limit is None else args.limit
    if rank_and_world()[0] == 0:
        per_pass = time_forward_pass(generator, width=512, rows=args.batch_size)
        print(
            cost_estimate(num_tasks, args.num_samples, generator.steps(), args.batch_size, per_pass),
            flush=True,
        )
    out = _out_dir(args, "humaneval-infill")

    def infill_fn(prefixes, suffixes, num_samples, seed, example_ids):
        return generator.infill(
            prefixes, suffixes, num_samples=num_samples, seed=seed, example_ids=example_ids
        )

    metrics = run_humaneval_infill(
        infill_fn, generator.tokenizer, out, benchmark=args.benchmark, limit=args.limit,
        num_samples=args.num_samples, seed=args.seed, data_dir=args.data_dir, model_dir=args.model_dir,
        sampler=generator.settings(), n_workers=args.workers, timeout_s=args.timeout,
        config={"forward_passes_rank0": generator.forward_passes},
    )  # fmt: skip
    if metrics is not None:
        _print_metrics(metrics)
        print(f"wrote {out / 'results.json'}")
    return 0


def run_length(args: argparse.Namespace) -> int:
    from retrofit.evaluation.length import run_length as runner

    metrics = runner(args.model_dirs, args.out, load=lambda d: load_generator(d, args, "length"), data=args.data,
                     mode=args.mode, num_samples=args.num_samples, seed=args.seed, data_dir=args.data_dir)  # fmt: skip
    _print_metrics(metrics)
    print(f"wrote {Path(args.out) / 'results.json'}")
    return 0


def run(args: argparse.Namespace) -> int:
    """Dispatch to the task; returns 0, or 2 with a message on stderr for bad inputs."""
    if args.task == "lm-eval":
        from retrofit.evaluation.lm_eval_runner import lm_eval_cli

        return lm_eval_cli(args.lm_eval_args)
    runners = {"gsm8k": run_gsm8k, "humaneval-infill": run_humaneval, "length": run_length}
    try:
        return runners[args.task](args)
    except (FileNotFoundError, ValueError) as err:
        print(f"retrofit eval {args.task}: error: {err}", file=sys.stderr)
        return 2
