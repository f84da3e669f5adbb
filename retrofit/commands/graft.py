"""`retrofit graft`: LLaDA folder -> initial FlexMDM checkpoint folder (docs/method.md §2.4-2.6).

Example:
    retrofit graft --base path/to/LLaDA-8B-Base --out runs/flexmdm-init   # dtype: as the base stores it

Prints the dtype written, then the output folder (last line).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from retrofit.commands.arg_types import at_least, check_lengths
from retrofit.dtypes import dtype_argument, torch_dtype


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `retrofit graft`."""
    parser.add_argument("--base", required=True, help="local LLaDA checkpoint folder")
    parser.add_argument("--out", required=True, help="output folder (must not exist unless --overwrite)")
    parser.add_argument("--canvas-width", type=at_least(2), default=1024,
                        help="training canvas width L_max in tokens (default 1024; at most the base's "
                        "max_sequence_length)")  # fmt: skip
    parser.add_argument("--adaln-group-size", type=at_least(1), default=8,
                        help="blocks sharing one AdaLN modulator (default 8)")  # fmt: skip
    parser.add_argument(
        "--insertion-schedule",
        default="geometric",
        help='insertion schedule alpha (default "geometric" = geometric:10,0.01; or "linear")',
    )
    parser.add_argument(
        "--unmasking-schedule", default="linear", help="unmasking schedule beta (default linear)"
    )
    parser.add_argument(
        "--pad-attention",
        choices=("slots", "full"),
        default="slots",
        help='"slots" (default): row b attends to its n_b slots + the length slot; "full": research behaviour',
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the new modules' init (default 0)")
    parser.add_argument(
        "--dtype",
        type=dtype_argument(allow_auto=True),
        default="auto",
        help="dtype of the saved tensors (default auto: the base's stored dtype, read from its "
        "safetensors headers or config.json; bf16 for LLaDA-8B, fp32 keeps an fp32 base exact; any "
        "spelling: bf16, bfloat16, fp32, float32, ...)",
    )
    parser.add_argument("--max-shard-size", default="5GB", help='safetensors shard size (default "5GB")')
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")


def run(args: argparse.Namespace) -> int:
    """Graft and save; prints the output folder. Returns 0, or 1 with a message on stderr."""
    if Path(args.out).exists() and not args.overwrite:  # refuse before the slow imports
        print(f"retrofit graft: error: --out {args.out} already exists; pass --overwrite", file=sys.stderr)
        return 1
    try:
        check_lengths(args.base, canvas_width=args.canvas_width)
    except ValueError as err:
        print(f"retrofit graft: error: {err}", file=sys.stderr)
        return 1

    from retrofit.graft import graft_checkpoint, stored_dtype

    try:
        out = graft_checkpoint(
            args.base,
            args.out,
            dtype=None if args.dtype == "auto" else torch_dtype(args.dtype),
            seed=args.seed,
            max_shard_size=args.max_shard_size,
            overwrite=args.overwrite,
            canvas_width=args.canvas_width,
            adaln_group_size=args.adaln_group_size,
            insertion_schedule=args.insertion_schedule,
            unmasking_schedule=args.unmasking_schedule,
            pad_attention=args.pad_attention,
        )
    except (FileNotFoundError, FileExistsError, ValueError) as err:
        print(f"retrofit graft: error: {err}", file=sys.stderr)
        return 1
    written = str(stored_dtype(out)).removeprefix("torch.")
    how = "the base's stored dtype" if args.dtype == "auto" else f"--dtype {args.dtype}"
    print(f"retrofit graft: wrote {written} weights ({how})")
    print(out)
    return 0
