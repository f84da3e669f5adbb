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

# Per-verb sampler defaults by model kind (spec §4.6, §6.1, §6.2); --steps etc. override them.
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


def _sampler_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--steps", type=int, default=None, help="sampler steps (default: per verb and model kind)")
    p.add_argument("--batch-size", type=int, default=8, help="rows per sampler call")
    p.add_argument("--seed", type=int, default=0, help="sampling seed")
    p.add_argument("--temperature", type=float, default=None, help="token temperature (0 = argmax)")
    p.add_argument("--gen-length", type=int, default=None, help="LLaDA: generated canvas (mask budget)")
    p.add_argument("--block-length", type=int, default=None, help="LLaDA: semi-AR block size")
    p.add_argument("--max-length", type=int, default=None, help="FlexMDM: cap on prompt + generation tokens")
    p.add_argument("--device", default=None, help='e.g. "cuda", "cpu" (default: cuda if available)')
    p.add_argument(
        "--dtype", choices=("bf16", "fp32"), default=None, help="default: bf16 on GPU, fp32 on CPU"
    )
    p.add_argument("--sampler-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="any other sampler config field, e.g. confidence=top_prob (repeatable)")  # fmt: skip
    p.add_argument(
        "--data-dir", default=None, help="local data folder (default: $RETROFIT_DATA_DIR, else Hub)"
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Sub-commands gsm8k, humaneval-infill, length, lm-eval."""
    sub = parser.add_subparsers(dest="task", metavar="TASK", required=True)
    g = sub.add_parser("gsm8k", help="GSM8K accuracy (spec §6.1)")
    g.add_argument("model_dir", help="FlexMDM or LLaDA checkpoint folder")
    g.add_argument("--limit", type=int, default=None, help="first N test questions")
    g.add_argument("--num-fewshot", type=int, default=None,
                   help="solved examples before each question (direct: 0; stock lm-eval gsm8k: 5)")  # fmt: skip
    g.add_argument("--out", default=None, help="output folder (default eval-out/gsm8k/<model>)")
    g.add_argument("--via-lm-eval", action="store_true", help="score through lm-eval's simple_evaluate")
    g.add_argument("--lm-eval-tasks", default="gsm8k_flexmdm,gsm8k", help="with --via-lm-eval")
    _sampler_options(g)
    h = sub.add_parser("humaneval-infill", help="HumanEval infilling pass@k (spec §6.2)")
    h.add_argument("model_dir", help="FlexMDM or LLaDA checkpoint folder")
    h.add_argument("--benchmark", default="single-line",
                   choices=("single-line", "multi-line", "random-span", "random-span-light"))  # fmt: skip
    h.add_argument("--limit", type=int, default=None, help="first N tasks")
    h.add_argument("--num-samples", type=int, default=1, help="samples per task (pass@k for k <= n)")
    h.add_argument("--max-middle", type=int, default=None, help="FlexMDM: cap on the middle length (tokens)")
    h.add_argument("--workers", type=int, default=2, help="sandboxed programs run at once")
    h.add_argument("--timeout", type=float, default=3.0, help="seconds per program")
    h.add_argument("--out", default=None, help="output folder (default eval-out/humaneval-infill/<model>)")
    _sampler_options(h)
    n = sub.add_parser("length", help="generated vs data length statistics (spec §6.4)")
    n.add_argument("model_dirs", nargs="+", help="checkpoint folders, one curve each")
    n.add_argument("--data", default="gsm8k", help='"gsm8k" or a JSONL file with response/text fields')
    n.add_argument("--num-samples", type=int, default=64, help="sequences per model")
    mode = n.add_mutually_exclusive_group()
    mode.add_argument("--per-prompt", dest="mode", action="store_const", const="per-prompt",
                      help="one sample per data prompt (default)")  # fmt: skip
    mode.add_argument("--unconditional", dest="mode", action="store_const", const="unconditional")
    n.set_defaults(mode="per-prompt")
    n.add_argument("--out", default="eval-out/length", help="output folder")
    _sampler_options(n)
    # prefix_chars without "-": every following argument (options included) goes to lm-eval.
    m = sub.add_parser("lm-eval", help="lm-eval's CLI with --model flexmdm|llada available", add_help=False,
                       prefix_chars="+")  # fmt: skip
    m.add_argument(
        "lm_eval_args", nargs=argparse.REMAINDER, help="arguments for lm-eval (see lm-eval --help)"
    )


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
    flags = {"steps": args.steps, "temperature": args.temperature}
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
    from retrofit.sampling.load import make_sampler

    model, tokenizer, kind = load_model_dir(
        model_dir, device=process_device() or args.device, dtype=args.dtype
    )
    sampler = make_sampler(model, tokenizer, kind, **sampler_overrides(args, verb, kind))
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

    def infill_fn(prefixes, suffixes, num_samples, seed):
        return generator.infill(prefixes, suffixes, num_samples=num_samples, seed=seed)

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
