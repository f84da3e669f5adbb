"""`retrofit generate`: sample continuations from a FlexMDM or LLaDA checkpoint folder.

The sampler is picked from config.json model_type: FlexMDM (variable length, docs/method.md §4.2) or the
LLaDA baseline (fixed length, docs/method.md §4.9). Prompts are formatted as the model was trained
(``prompt_template`` recorded at export: the tokenizer's chat template, or the raw text);
``--prompt-template chat|plain`` overrides it.

Examples:
    retrofit generate runs/flexmdm-ift --prompt "What is 3 + 4?" --steps 256 --trace-png trace.png
    retrofit generate LLaDA-8B-Instruct --prompts-file prompts.txt --gen-length 256 --block-length 32

The option helpers here are shared with `retrofit infill`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from retrofit.commands.arg_types import at_least, check_lengths, non_negative_float, probability
from retrofit.dtypes import dtype_argument


def add_sampler_arguments(parser: argparse.ArgumentParser) -> None:
    """Model, device and sampler options common to `generate` and `infill` (None = default).

    Numbers are bounded in the parser (exit 2 before any model loads); the help shows the
    samplers' real defaults (a model's config.json `sampler_defaults` override them).
    """
    from retrofit.sampling import FlexMDMSamplerConfig as Flex
    from retrofit.sampling import MDMSamplerConfig as Mdm
    from retrofit.sampling.flexmdm_config import CONFIDENCE_METHODS

    parser.add_argument(
        "model_dir", metavar="MODEL_DIR", help="FlexMDM or LLaDA model folder (retrofit export output)"
    )
    parser.add_argument("--steps", type=at_least(1), default=None,
                        help=f"sampling steps (default: the model's sampler_defaults, else FlexMDM {Flex.steps}, "
                        f"LLaDA {Mdm.steps})")  # fmt: skip
    parser.add_argument("--temperature", type=non_negative_float, default=None,
                        help=f"token temperature; 0 = argmax (default FlexMDM {Flex.temperature}, "
                        f"LLaDA {Mdm.temperature})")  # fmt: skip
    parser.add_argument("--confidence", default=None, choices=CONFIDENCE_METHODS,
                        help=f"FlexMDM: which masks to unmask first (default {Flex.confidence}; "
                        "random = plain ancestral)")  # fmt: skip
    parser.add_argument(
        "--reference",
        action="store_true",
        help="FlexMDM: the research code's sampler behaviour (see FlexMDMSamplerConfig.reference)",
    )
    parser.add_argument("--gen-length", type=at_least(1), default=None,
                        help=f"LLaDA: generated tokens (default {Mdm.gen_length})")  # fmt: skip
    parser.add_argument("--block-length", type=at_least(1), default=None,
                        help=f"LLaDA: semi-autoregressive block size (default: --gen-length when given, else {Mdm.block_length})")  # fmt: skip
    parser.add_argument("--remasking", default=None, choices=("low_confidence", "random"),
                        help=f"LLaDA: which masks to reveal first (default {Mdm.remasking})")  # fmt: skip
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of every random draw (default 0); sample j of prompt i draws from its own "
                        "stream keyed by (seed, i, j), so it does not depend on the other prompts")  # fmt: skip
    parser.add_argument("--num-samples", type=at_least(1), default=1, help="samples per prompt (default 1)")
    add_prompt_template_argument(parser)
    add_fast_sampling_arguments(parser)
    parser.add_argument("--trace-png", default=None, help="FlexMDM: plot length / clean tokens per step here")
    parser.add_argument("--device", default=None, help='e.g. "cpu", "cuda" (default: cuda if available)')
    parser.add_argument(
        "--dtype",
        type=dtype_argument(allowed=("float32", "bfloat16")),
        default=None,
        help="bf16 or fp32, any spelling (default: bf16 on GPU, fp32 on CPU)",
    )
    parser.add_argument("--output", default=None, help="also write one JSON line per sample here")


def add_fast_sampling_arguments(parser: argparse.ArgumentParser) -> None:
    """`--unmask-threshold`, `--prompt-cache` / `--no-prompt-cache`, `--cache-refresh` (both samplers;
    shared by generate, infill and eval). None = the model's sampler defaults."""
    from retrofit.sampling.fast_options import FastSamplingOptions as Fast

    parser.add_argument("--unmask-threshold", type=probability, default=None, metavar="TAU",
                        help="also unmask, in every step, each slot whose top token probability is >= TAU "
                        f"(default {Fast.unmask_threshold}: the model's sampler defaults)")  # fmt: skip
    parser.add_argument("--prompt-cache", action=argparse.BooleanOptionalAction, default=None,
                        help="reuse the prompt's keys / values between refreshes "
                        f"(default {'on' if Fast.prompt_cache else 'off'}; with --cache-refresh > 1 a row's sample "
                        "depends on the shortest prompt in its batch)")  # fmt: skip
    parser.add_argument("--exact", action="store_true",
                        help="the exact sampler: no threshold unmasking, no prompt cache (steps as given)")  # fmt: skip
    parser.add_argument("--cache-refresh", type=at_least(1), default=None, metavar="K",
                        help=f"with the prompt cache: recompute it every K model calls (default {Fast.cache_refresh}; "
                        "1 = exact)")  # fmt: skip


def fast_sampling_options(args: argparse.Namespace) -> dict[str, Any]:
    """The fast-sampling flags as sampler config overrides (None = not given)."""
    return {"unmask_threshold": args.unmask_threshold, "prompt_cache": args.prompt_cache,
            "cache_refresh": args.cache_refresh}  # fmt: skip


def add_prompt_template_argument(parser: argparse.ArgumentParser) -> None:
    """`--prompt-template auto|chat|plain` (shared by generate, infill and eval)."""
    parser.add_argument(
        "--prompt-template", default="auto", choices=("auto", "chat", "plain"),
        help="how prompts are formatted: auto (default) = as the model was trained (recorded at export; "
        "else the chat template when the tokenizer has one), chat = the tokenizer's chat template, "
        "plain = the raw text",
    )  # fmt: skip


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `retrofit generate`."""
    add_sampler_arguments(parser)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--prompt", action="append", help="prompt text (repeat for several)")
    source.add_argument(
        "--prompts-file", help="text file, one prompt per line; .jsonl: a 'prompt' field per line"
    )
    parser.add_argument("--max-length", type=at_least(1), default=None,
                        help="FlexMDM: cap on prompt + generation tokens (default: the model's canvas width; "
                        "at most its max_sequence_length)")  # fmt: skip
    parser.add_argument("--no-chat-template", action="store_true", help="same as --prompt-template plain")
    parser.add_argument("--batch-size", type=at_least(1), default=None,
                        help="rows (prompt x sample) per sampler call, grouped by prompt length (default: all "
                        "in one call); the samples do not depend on it")  # fmt: skip


def read_prompts(path: str | Path) -> list[str]:
    """Prompts of a text file (one per non-empty line) or a .jsonl file ("prompt" field or a string).

    Raises:
        ValueError: a .jsonl line is neither a string nor an object with "prompt"; or no prompts.
    """
    lines = [line for line in Path(path).read_text().splitlines() if line.strip()]
    if str(path).endswith(".jsonl"):
        prompts = []
        for i, line in enumerate(lines, 1):
            obj = json.loads(line)
            if isinstance(obj, dict) and isinstance(obj.get("prompt"), str):
                obj = obj["prompt"]
            if not isinstance(obj, str):
                raise ValueError(f"{path}:{i}: expected a JSON string or an object with a 'prompt' string")
            prompts.append(obj)
        lines = prompts
    if not lines:
        raise ValueError(f"{path}: no prompts found")
    return lines


def load_sampler(args: argparse.Namespace, **extra: Any) -> tuple[Any, Any, str]:
    """Load MODEL_DIR and build its sampler from the options -> (sampler, tokenizer, kind).

    Raises:
        FileNotFoundError: the folder has no tokenizer files.
        ValueError: a sampler option is invalid, or a length exceeds the model's max_sequence_length.
    """
    from retrofit.evaluation.generation import load_model_dir
    from retrofit.sampling.fast_options import exact_sampler
    from retrofit.sampling.load import make_sampler

    check_lengths(args.model_dir, max_length=extra.get("max_length"), gen_length=args.gen_length)
    template = "plain" if getattr(args, "no_chat_template", False) else args.prompt_template
    model, tokenizer, kind = load_model_dir(
        args.model_dir, device=args.device, dtype=args.dtype, prompt_template=template
    )
    options = dict(steps=args.steps, temperature=args.temperature, confidence=args.confidence,
                   gen_length=args.gen_length, block_length=args.block_length, remasking=args.remasking,
                   progress=True, trace=bool(args.trace_png) or None, **fast_sampling_options(args), **extra)  # fmt: skip
    if args.reference:
        options["reference"] = True
    sampler = make_sampler(model, tokenizer, kind, **options)
    return (exact_sampler(sampler) if args.exact else sampler), tokenizer, kind


def encode_prompt(tokenizer: Any, text: str) -> list[int]:
    """Ids of one prompt: through the tokenizer's chat template (user turn + generation prompt)
    when it has one (`--prompt-template plain` switched it off), then tokenized with
    add_special_tokens=False (the template writes BOS itself)."""
    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
        )
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def report(out: Any, tokenizer: Any, labels: list[str], args: argparse.Namespace, kind: str) -> None:
    """Print each sample's decoded generation; optional JSON lines and trace plot."""
    rows = []
    for b, ids in enumerate(out.generated):
        text = tokenizer.decode(ids, skip_special_tokens=True)
        print(f"=== {labels[b]} ({len(ids)} tokens, dropped insertions {int(out.dropped_insertions[b])}) ===")
        print(text)
        rows.append({"label": labels[b], "text": text, "token_ids": ids, "num_tokens": len(ids)})
    print(f"[{kind}] {out.num_forward_passes} forward passes", file=sys.stderr)
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text("".join(json.dumps(r) + "\n" for r in rows))
    if args.trace_png:
        if out.trace is None:
            why = "records no trace" if kind != "flexmdm" else "keeps a trace only without --batch-size"
            print(f"--trace-png: the {kind} sampler {why}; nothing plotted", file=sys.stderr)
        else:
            from retrofit.sampling.trace import plot_trace

            print(f"trace plot: {plot_trace(out.trace, args.trace_png)}", file=sys.stderr)


def sample_in_batches(sampler: Any, prompts: list[list[int]], num_samples: int, seed: int,
                      batch_size: int | None) -> Any:  # fmt: skip
    """``sampler.sample(prompts, num_samples, seed=seed)``, in length-sorted calls of at most
    ``batch_size`` rows (None: one call). Row (prompt i, sample j) is keyed by (seed, i, j) either
    way, so the samples are the same; a trace is kept only from a single call.

    Returns:
        a SampleOutput with the rows in prompt-major order.
    """
    import torch

    from retrofit.evaluation.generation import length_sorted_batches
    from retrofit.sampling.draws import row_seeds
    from retrofit.sampling.trace import SampleOutput

    n_rows = len(prompts) * num_samples
    if batch_size is None or batch_size >= n_rows:
        return sampler.sample(prompts, num_samples, seed=seed)
    rows = [p for p in prompts for _ in range(num_samples)]
    keys = row_seeds(seed, list(range(len(prompts))), num_samples)
    parts: dict[int, tuple] = {}
    passes = 0
    for idx in length_sorted_batches([len(r) for r in rows], batch_size):
        out = sampler.sample([rows[i] for i in idx], row_keys=[keys[i] for i in idx])
        passes += out.num_forward_passes
        for k, i in enumerate(idx):
            parts[i] = (out.sequences[k], out.generated[k], int(out.prompt_lengths[k]),
                        int(out.suffix_lengths[k]), int(out.dropped_insertions[k]))  # fmt: skip
    seqs, gen, pre, suf, dropped = (list(col) for col in zip(*(parts[i] for i in range(n_rows))))
    as_tensor = lambda xs: torch.tensor(xs, dtype=torch.long)  # noqa: E731
    return SampleOutput(seqs, gen, as_tensor([len(x) for x in seqs]), as_tensor(pre), as_tensor(suf),
                        as_tensor(dropped), passes)  # fmt: skip


def run(args: argparse.Namespace) -> int:
    """Generate and print; returns 0, or 1 with a message on stderr."""
    try:
        texts = args.prompt or read_prompts(args.prompts_file)
        sampler, tokenizer, kind = load_sampler(args, max_length=args.max_length)
        prompts = [encode_prompt(tokenizer, t) for t in texts]
        out = sample_in_batches(sampler, prompts, args.num_samples, args.seed, args.batch_size)
    except (FileNotFoundError, ValueError) as e:
        print(f"retrofit generate: error: {e}", file=sys.stderr)
        return 1
    labels = [
        f"prompt {i // args.num_samples}, sample {i % args.num_samples}" for i in range(len(out.generated))
    ]
    report(out, tokenizer, labels, args, kind)
    return 0
