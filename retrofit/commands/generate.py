"""`retrofit generate`: sample continuations from a FlexMDM or LLaDA checkpoint folder.

The sampler is picked from config.json model_type: FlexMDM (variable length, spec §4.2) or the
LLaDA baseline (fixed length, spec §4.9). Prompts go through the tokenizer's chat template when it
has one (``--no-chat-template`` to send the raw text).

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


def add_sampler_arguments(parser: argparse.ArgumentParser) -> None:
    """Model, device and sampler options common to `generate` and `infill` (None = default)."""
    parser.add_argument("model_dir", metavar="MODEL_DIR", help="FlexMDM or LLaDA checkpoint folder")
    parser.add_argument("--steps", type=int, default=None, help="sampling steps (default: the sampler's)")
    parser.add_argument("--temperature", type=float, default=None, help="token temperature; 0 = argmax")
    parser.add_argument(
        "--confidence",
        default=None,
        choices=("prob_diff", "top_prob", "entropy", "position", "random"),
        help="FlexMDM: which masks to unmask first (random = plain ancestral)",
    )
    parser.add_argument(
        "--reference", action="store_true", help="FlexMDM: research sampler behaviour (spec §4.2)"
    )
    parser.add_argument("--gen-length", type=int, default=None, help="LLaDA: generated tokens (default 128)")
    parser.add_argument(
        "--block-length", type=int, default=None, help="LLaDA: block size (default: gen length)"
    )
    parser.add_argument("--remasking", default=None, choices=("low_confidence", "random"), help="LLaDA only")
    parser.add_argument("--seed", type=int, default=0, help="seed of every random draw")
    parser.add_argument("--num-samples", type=int, default=1, help="samples per prompt")
    parser.add_argument("--trace-png", default=None, help="FlexMDM: plot length / clean tokens per step here")
    parser.add_argument("--device", default=None, help='e.g. "cpu", "cuda" (default: cuda if available)')
    parser.add_argument(
        "--dtype", default=None, choices=("bf16", "fp32"), help="default: bf16 on GPU, fp32 on CPU"
    )
    parser.add_argument("--output", default=None, help="also write one JSON line per sample here")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `retrofit generate`."""
    add_sampler_arguments(parser)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--prompt", action="append", help="prompt text (repeat for several)")
    source.add_argument(
        "--prompts-file", help="text file, one prompt per line; .jsonl: a 'prompt' field per line"
    )
    parser.add_argument(
        "--max-length", type=int, default=None, help="FlexMDM: cap on prompt + generation tokens"
    )
    parser.add_argument("--no-chat-template", action="store_true", help="send the raw prompt text")


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
        ValueError: the folder has no tokenizer, or a sampler option is invalid.
    """
    from retrofit.sampling.load import load_model, make_sampler

    model, tokenizer, kind = load_model(args.model_dir, device=args.device, dtype=args.dtype)
    if tokenizer is None:
        raise ValueError(f"{args.model_dir} has no tokenizer files (tokenizer.json / tokenizer_config.json)")
    options = dict(steps=args.steps, temperature=args.temperature, confidence=args.confidence,
                   gen_length=args.gen_length, block_length=args.block_length, remasking=args.remasking,
                   progress=True, trace=bool(args.trace_png) or None, **extra)  # fmt: skip
    if args.reference:
        options["reference"] = True
    return make_sampler(model, tokenizer, kind, **options), tokenizer, kind


def encode_prompt(tokenizer: Any, text: str, chat_template: bool) -> list[int]:
    """Ids of one prompt: through the chat template (user turn + generation prompt) if asked and
    available, then tokenized with add_special_tokens=False (the template writes BOS itself)."""
    if chat_template and getattr(tokenizer, "chat_template", None):
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
            print(f"--trace-png: the {kind} sampler records no trace; nothing plotted", file=sys.stderr)
        else:
            from retrofit.sampling.trace import plot_trace

            print(f"trace plot: {plot_trace(out.trace, args.trace_png)}", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    """Generate and print; returns 0, or 1 with a message on stderr."""
    import torch

    try:
        texts = args.prompt or read_prompts(args.prompts_file)
        sampler, tokenizer, kind = load_sampler(args, max_length=args.max_length)
        prompts = [encode_prompt(tokenizer, t, not args.no_chat_template) for t in texts]
        out = sampler.sample(prompts, args.num_samples, torch.Generator().manual_seed(args.seed))
    except (FileNotFoundError, ValueError) as e:
        print(f"retrofit generate: error: {e}", file=sys.stderr)
        return 1
    labels = [
        f"prompt {i // args.num_samples}, sample {i % args.num_samples}" for i in range(len(out.generated))
    ]
    report(out, tokenizer, labels, args, kind)
    return 0
