"""`retrofit --help`, `retrofit VERB --help` and argument errors import no heavy library (#16 item 5).

Timing is not tested (machines differ); what makes start-up slow is: importing torch,
transformers, deepspeed, peft or lm-eval before a verb runs. `python -X importtime` lists every
module a command imported, so the tests assert on that list.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from retrofit.cli import VERBS

HEAVY = ("torch", "transformers", "deepspeed", "peft", "lm_eval", "datasets", "accelerate")


def imported(*argv: str) -> tuple[int, set[str], str]:
    """(exit code, top-level modules imported, stdout) of `python -m retrofit.cli ARGV`."""
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "retrofit.cli", *argv],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    names = {
        line.rsplit("|", 1)[-1].strip().split(".")[0] for line in proc.stderr.splitlines() if "|" in line
    }
    return proc.returncode, names, proc.stdout + proc.stderr


HELP_COMMANDS = [[], *([verb] for verb in VERBS if verb != "eval")]
HELP_COMMANDS += [["eval", task] for task in ("gsm8k", "humaneval-infill", "length")]
HELP_COMMANDS += [
    ["bench", name]
    for name in ("all", "train-step", "sample", "interpolant", "token-head", "computed-fraction")
]
HELP_COMMANDS += [["eval"]]


@pytest.mark.parametrize("argv", HELP_COMMANDS, ids=lambda a: " ".join(a) or "retrofit")
def test_help_imports_no_heavy_library(argv):
    code, names, _ = imported(*argv, "--help")
    assert code == 0
    assert not names & set(HEAVY), f"retrofit {' '.join(argv)} --help imported {sorted(names & set(HEAVY))}"


def test_lm_eval_help_names_our_models_without_torch():
    code, names, out = imported("eval", "lm-eval", "--help")
    assert code == 0 and "--model flexmdm" in out and "--model llada" in out and "gsm8k_flexmdm" in out
    assert "usage: lm-eval" in out  # lm-eval's own help follows ours
    assert not names & {"torch", "transformers", "deepspeed"}


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["generate", "nowhere", "--prompt", "x", "--steps", "0"], "argument --steps: must be an integer >= 1, got 0"),
        (["generate", "nowhere", "--prompt", "x", "--temperature", "-1"], "argument --temperature: must be a finite"),
        (["generate", "nowhere", "--prompt", "x", "--temperature", "nan"], "argument --temperature: must be a finite"),
        (["generate", "nowhere", "--prompt", "x", "--num-samples", "0"], "argument --num-samples: must be an integer"),
        (["generate", "nowhere", "--prompt", "x", "--max-length", "0"], "argument --max-length: must be an integer"),
        (["infill", "nowhere", "--prefix", "a", "--suffix", "b", "--max-middle", "-1"], "argument --max-middle"),
        (["eval", "gsm8k", "nowhere", "--steps", "-5"], "argument --steps: must be an integer >= 1, got -5"),
        (["eval", "gsm8k", "nowhere", "--batch-size", "0"], "argument --batch-size"),
        (["eval", "humaneval-infill", "nowhere", "--num-samples", "0"], "argument --num-samples"),
        (["generate", "nowhere", "--prompt", "x", "--unmask-threshold", "0"], "argument --unmask-threshold: must be a number in (0, 1]"),
        (["eval", "gsm8k", "nowhere", "--cache-refresh", "0"], "argument --cache-refresh: must be an integer >= 1"),
        (["graft", "--base", "b", "--out", "o", "--canvas-width", "1"], "argument --canvas-width: must be an integer >= 2"),
        (["graft", "--base", "b", "--out", "o", "--adaln-group-size", "0"], "argument --adaln-group-size"),
        (["eval", "length", "nowhere", "--num-samples", "x"], "argument --num-samples: must be an integer >= 1, got 'x'"),
    ],
)  # fmt: skip
def test_bad_numbers_fail_in_the_parser(argv, message):
    code, names, out = imported(*argv)
    assert code == 2 and message in out
    assert not names & set(HEAVY)
