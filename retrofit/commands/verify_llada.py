"""`retrofit verify-llada DIR`: check that a LLaDA folder loads natively; print tokenizer facts.

Exits 1 when a problem is found (see retrofit.models.verify). Running the folder's own
modeling_llada.py executes code from that folder: pass --no-remote-code to skip it.

Usage:
    $ retrofit verify-llada path/to/LLaDA-8B-Base --dtype bfloat16 --device cuda
"""

from __future__ import annotations

import argparse
from pathlib import Path

from retrofit.dtypes import dtype_argument


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Positional folder plus loading options."""
    parser.add_argument("path", type=Path, help="LLaDA checkpoint folder")
    parser.add_argument("--dtype", type=dtype_argument(allow_auto=True), default="auto",
                        help="load dtype: auto (default: as stored), or bf16 / fp32 / fp16, any spelling")  # fmt: skip
    parser.add_argument("--device", default=None, help="e.g. cuda:0 (default: CPU)")
    parser.add_argument("--probe-length", type=int, default=16, help="probe batch length (default 16)")
    parser.add_argument(
        "--no-remote-code", action="store_true", help="do not run the folder's modeling_llada.py"
    )
    parser.add_argument("--trust-bin", action="store_true", help="accept .bin weights (weights_only load)")


def run(args: argparse.Namespace) -> int:
    """Print the verification report; returns 0 if no problem was found, else 1."""
    import torch

    from retrofit.models.verify import verify_llada

    report = verify_llada(
        args.path,
        remote_code=not args.no_remote_code,
        dtype=None if args.dtype == "auto" else getattr(torch, args.dtype),
        device=args.device,
        probe_length=args.probe_length,
        trust_bin=args.trust_bin,
    )
    print(report.format())
    return 0 if report.ok else 1
