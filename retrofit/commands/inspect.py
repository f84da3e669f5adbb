"""`retrofit inspect DIR`: what a folder is (LLaDA / FlexMDM / training checkpoint / ZeRO
checkpoint / export), its parameter counts, dtypes and shards, and any problems. Exit code 1
when a problem is found. Reads safetensors headers only; never loads weights or pickles.

Example:
    retrofit inspect exports/flexmdm-gsm8k
"""

from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `retrofit inspect`."""
    parser.add_argument("path", help="folder to inspect")
    parser.add_argument("--json", action="store_true", help="print a JSON report instead of text")
    parser.add_argument("--no-hash", action="store_true", help="check file sizes only, skip sha256 (faster)")


def run(args: argparse.Namespace) -> int:
    """Print the report. Returns 0 when healthy, 1 when problems were found."""
    from retrofit.export.inspect import inspect_folder

    report = inspect_folder(args.path, check_hashes=not args.no_hash)
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.format())
    return 1 if report.problems else 0
