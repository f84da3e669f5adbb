"""`generate` / `eval` fast-sampling flags reach the sampler (issue #14)."""

from __future__ import annotations

import re

from retrofit.cli import main


def _run(capsys, *argv: str) -> tuple[str, int]:
    assert main(list(argv)) == 0
    captured = capsys.readouterr()
    passes = int(re.search(r"\] (\d+) forward passes", captured.err).group(1))
    return captured.out, passes


def test_generate_threshold_and_cache_flags(capsys, tiny_llada_dir):
    common = ["generate", str(tiny_llada_dir), "--prompt", "a b c d", "--prompt", "e f", "--gen-length", "8",
              "--block-length", "4", "--steps", "8", "--temperature", "1", "--seed", "2"]  # fmt: skip
    exact, exact_passes = _run(capsys, *common, "--exact")
    assert exact_passes == 8  # schedule only: every step of both blocks
    no_cache, _ = _run(capsys, *common, "--no-prompt-cache")
    cached, _ = _run(capsys, *common, "--prompt-cache", "--cache-refresh", "1")
    assert cached == no_cache  # refresh 1 = no cache, exactly (threshold on by default)
    _, fast_passes = _run(capsys, *common, "--unmask-threshold", "1e-9")
    assert fast_passes == 2  # every slot clears the threshold: one pass per block


def test_eval_sampler_overrides_carry_the_flags():
    import argparse

    from retrofit.commands.eval import add_arguments, sampler_overrides

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(
        ["gsm8k", "m", "--unmask-threshold", "0.9", "--prompt-cache", "--cache-refresh", "4"]
    )
    out = sampler_overrides(args, "gsm8k", "flexmdm")
    assert out["unmask_threshold"] == 0.9 and out["prompt_cache"] is True and out["cache_refresh"] == 4
    args = parser.parse_args(["gsm8k", "m"])
    assert "unmask_threshold" not in sampler_overrides(args, "gsm8k", "flexmdm")
