"""`retrofit infill`: fill the middle between a prefix and a suffix (docs/method.md §4.4, §4.9, §6.2).

FlexMDM: the canvas starts as prefix + "<infill-boundary>" | "<infill-boundary>" + suffix and the
model inserts and unmasks the middle; its length is the model's choice, at most --max-middle.
LLaDA: the baseline's FIM prompt (instruction + <prefix>…</prefix><suffix>…</suffix>) followed by
--gen-length generated tokens cut at the first EOS; or, with --middle-length N, N masks in place.

Examples:
    retrofit infill runs/flexmdm-code --prefix "def add(a, b):\\n" --suffix "\\n" --max-middle 64
    retrofit infill LLaDA-8B-Base --prefix "x = " --suffix "\\nprint(x)" --middle-length 8
"""

from __future__ import annotations

import argparse
import sys

from retrofit.commands.arg_types import at_least
from retrofit.commands.generate import add_sampler_arguments, load_sampler, report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `retrofit infill`."""
    from retrofit.sampling import FlexMDMSamplerConfig

    add_sampler_arguments(parser)
    parser.add_argument("--prefix", required=True, help='code before the hole ("\\n" and "\\t" are decoded)')
    parser.add_argument("--suffix", required=True, help="code after the hole")
    parser.add_argument("--max-middle", type=at_least(0), default=None,
                        help=f"FlexMDM: cap on the middle length in tokens (default {FlexMDMSamplerConfig.max_middle})")  # fmt: skip
    parser.add_argument(
        "--middle-length", type=at_least(1), default=None, help="LLaDA: fill exactly N masks in place"
    )
    parser.add_argument("--show-full", action="store_true", help="also print prefix + middle + suffix")
    parser.add_argument(
        "--no-unescape", action="store_true", help='keep "\\n" / "\\t" in --prefix/--suffix as typed'
    )


def _unescape(text: str) -> str:
    return text.replace("\\n", "\n").replace("\\t", "\t")


def run(args: argparse.Namespace) -> int:
    """Infill and print the middle(s); returns 0, or 1 with a message on stderr."""
    from retrofit.data.infill_format import encode_segments, infill_prompt_ids

    prefix, suffix = args.prefix, args.suffix
    if not args.no_unescape:
        prefix, suffix = _unescape(prefix), _unescape(suffix)
    try:
        sampler, tokenizer, kind = load_sampler(args, max_middle=args.max_middle)
        if kind == "flexmdm":
            pre_ids, suf_ids = infill_prompt_ids(tokenizer, prefix, suffix)
            out = sampler.infill([pre_ids], [suf_ids], args.num_samples, seed=args.seed)
        else:
            pre_ids, suf_ids = encode_segments(tokenizer, [prefix]), encode_segments(tokenizer, [suffix])
            out = sampler.infill(
                [pre_ids], [suf_ids], args.num_samples, seed=args.seed, middle_length=args.middle_length
            )
    except (FileNotFoundError, ValueError) as e:
        print(f"retrofit infill: error: {e}", file=sys.stderr)
        return 1
    report(out, tokenizer, [f"middle, sample {i}" for i in range(len(out.generated))], args, kind)
    if args.show_full:
        for b, ids in enumerate(out.generated):
            print(f"=== full {b} ===\n{prefix}{tokenizer.decode(ids, skip_special_tokens=True)}{suffix}")
    return 0
