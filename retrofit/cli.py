"""The `retrofit` console script: one verb per module in `retrofit.commands`.

Usage: `retrofit VERB --help`. Verbs are imported lazily so that `retrofit env` or
`retrofit inspect` start in well under a second, without importing deepspeed, peft or lm-eval.
Each verb module exposes `add_arguments(parser)` and `run(args) -> int`. An exception from a verb
is printed as one error line (exit 1); `RETROFIT_DEBUG=1` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

# verb -> (module under retrofit.commands, one-line help)
VERBS: dict[str, tuple[str, str]] = {
    "env": ("env", "print library versions (for bug reports)"),
    "tiny-llada": ("tiny_llada", "write a tiny random LLaDA checkpoint in the official layout"),
    "verify-llada": ("verify_llada", "check that a LLaDA checkpoint loads natively; print tokenizer facts"),
    "graft": ("graft", "graft time conditioning + length head onto a LLaDA checkpoint -> FlexMDM"),
    "train": (
        "train",
        "fine-tune from a YAML recipe on one process (accelerate launch -m retrofit.train for many)",
    ),
    "export": ("export", "training checkpoint -> merged, verified safetensors folder"),
    "inspect": ("inspect", "say what a checkpoint folder is and what is wrong with it"),
    "generate": ("generate", "sample from a FlexMDM or LLaDA folder"),
    "infill": ("infill", "fill the middle between a prefix and a suffix"),
    "eval": ("eval", "evaluate: gsm8k, humaneval-infill, length, lm-eval"),
    "demo": ("demo", "the whole pipeline on a tiny model, on CPU"),
    "repro": ("repro", "the paper's small-scale claims (brackets, maze): MDM vs FlexMDM vs retrofit, on CPU"),
    "bench": ("bench", "training-step / sampler / collator benchmarks"),
}


def build_parser() -> argparse.ArgumentParser:
    """Top-level parser with one sub-parser per verb (verb arguments are added lazily)."""
    parser = argparse.ArgumentParser(
        prog="retrofit", description="Turn LLaDA masked-diffusion LMs into FlexMDMs."
    )
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    for verb, (_, help_text) in VERBS.items():
        sub.add_parser(verb, help=help_text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `retrofit` console script. Returns the process exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in VERBS:
        parser = build_parser()
        if argv and argv[0] not in ("-h", "--help"):
            parser.error(f"unknown verb {argv[0]!r}; choose one of: {', '.join(VERBS)}")
        parser.print_help()
        return 0 if argv else 2
    verb, rest = argv[0], argv[1:]
    module = importlib.import_module(f"retrofit.commands.{VERBS[verb][0]}")
    parser = argparse.ArgumentParser(prog=f"retrofit {verb}", description=VERBS[verb][1])
    module.add_arguments(parser)
    # intermixed: `retrofit train RECIPE --dry-run key=value` keeps the overrides after the flag
    # (argparse's intermixed parsing does not support sub-commands; eval and bench have them)
    has_subcommands = any(isinstance(a, argparse._SubParsersAction) for a in parser._actions)
    args = parser.parse_args(rest) if has_subcommands else parser.parse_intermixed_args(rest)
    try:
        return int(module.run(args) or 0)
    except KeyboardInterrupt:
        print(f"retrofit {verb}: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # user-facing errors: one paragraph, traceback on request
        if os.environ.get("RETROFIT_DEBUG", "0") not in ("0", ""):
            raise
        print(f"retrofit {verb}: error: {type(err).__name__}: {err}", file=sys.stderr)
        print("(set RETROFIT_DEBUG=1 to see the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
