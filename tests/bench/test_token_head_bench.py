"""`retrofit bench token-head` (#15 item 3): analytic bytes, measured saved bytes, plain == chunked.

Tiny shapes on CPU; no speed or RSS is asserted (machines differ), only exact byte counts and
the agreement of the two paths.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import fields

import pytest
import torch

from retrofit.bench.token_head import (
    TokenHeadOptions,
    _check,
    _inputs,
    _step,
    analytic_bytes,
    compare_paths,
)
from retrofit.cli import main
from retrofit.commands import bench as bench_command


def test_analytic_bytes_at_the_8b_shape():
    n, v = 1229, 126_464
    plain = analytic_bytes(n, v, 0)
    # float32 log-probs kept for backward: 4 N V = 621,697,024 bytes (~593 MiB)
    assert plain == {"rows": 1229, "saved": 621_697_024, "peak": 1_865_091_072}
    # chunk 256: nothing of size V kept; backward peak 12 x 256 x V = 388,497,408 bytes (~370 MiB)
    assert analytic_bytes(n, v, 256) == {"rows": 256, "saved": 0, "peak": 388_497_408}
    # a chunk >= N is one plain call
    assert analytic_bytes(n, v, 2048) == plain
    with pytest.raises(ValueError, match="chunk >= 0"):
        analytic_bytes(n, v, -1)


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_saved_bytes_match_the_analytic_count(dtype):
    """Autograd keeps 4 N V bytes of log-probs on the plain path and nothing of size V chunked."""
    n, v = 50, 1000
    opts = TokenHeadOptions(dtype=dtype, slots=n, vocab=v, d_model=16)
    inputs = _inputs(opts)
    for chunk in (0, 16):
        saved: dict[int, int] = {}
        _step(inputs, chunk, saved)
        extra = sum(saved.values()) - analytic_bytes(n, v, chunk)["saved"]
        # beyond the [N, V] log-probs only O(N) bytes (the per-slot CE saved by the weighting)
        assert 0 <= extra <= 16 * n, (chunk, extra)
        assert inputs["states"].grad is not None and inputs["states"].grad.shape == (n, 16)
        inputs["states"].grad = None


@pytest.mark.parametrize("head_grad", [False, True])
def test_chunked_equals_plain_loss_and_grads(head_grad):
    # N = 50 is not a multiple of the chunk: the last chunk is short
    opts = TokenHeadOptions(slots=50, vocab=300, d_model=24, head_grad=head_grad, seed=3)
    inputs = _inputs(opts)
    for chunk in (7, 16, 49):
        result = compare_paths(inputs, chunk)
        assert result["loss"] > 0
        assert result["max_abs_diff_loss"] <= 1e-6 * result["loss"]
        assert result["max_abs_diff_grad"] <= 1e-6 * result["max_abs_grad"]
    assert inputs["head"].weight.requires_grad is head_grad


def test_disagreement_raises_naming_the_variant():
    row = {"variant": "chunk-8", "max_abs_diff_loss": 1.0, "max_abs_diff_grad": 0.0}
    with pytest.raises(RuntimeError, match="token-head chunk-8: chunked and plain paths disagree"):
        _check(row, 10.0, [torch.ones(3)], torch.float32)
    _check({**row, "max_abs_diff_loss": 1e-6}, 10.0, [torch.ones(3)], torch.float32)  # within 1e-4


def test_invalid_options_name_the_flag():
    with pytest.raises(ValueError, match="--slots must be >= 1, got 0"):
        TokenHeadOptions(slots=0).validate()
    with pytest.raises(ValueError, match=r"--chunks must be >= 0 \(0 = plain\), got \[-4\]"):
        TokenHeadOptions(chunks=(8, -4)).validate()
    assert TokenHeadOptions(chunks=(512, 0, 256, 256)).chunk_sizes() == [0, 256, 512]


def test_parser_defaults_are_the_options_defaults():
    parser = argparse.ArgumentParser()
    bench_command.add_arguments(parser)
    args = parser.parse_args(["token-head"])
    defaults = TokenHeadOptions()
    for f in fields(TokenHeadOptions):
        expected = getattr(defaults, f.name)
        assert tuple(args.chunks) == expected if f.name == "chunks" else getattr(args, f.name) == expected
    assert (args.slots, args.vocab, args.d_model) == (1229, 126_464, 4096)


def test_token_head_cli_writes_json(tmp_path, capsys):
    argv = ["bench", "token-head", "--slots", "40", "--vocab", "300", "--d-model", "16", "--chunks", "16", "64",
            "--warmup", "0", "--repeats", "1", "--out", str(tmp_path), "--name", "th"]  # fmt: skip
    assert main(argv) == 0
    payload = json.loads((tmp_path / "th.json").read_text())
    assert payload["benchmark"] == "token-head" and payload["options"]["slots"] == 40
    rows = {r["variant"]: r for r in payload["variants"]}
    assert list(rows) == ["plain", "chunk-16", "chunk-64"]
    mib = 2**20
    assert rows["plain"]["analytic_saved_mib"] == pytest.approx(4 * 40 * 300 / mib)
    assert rows["chunk-16"]["analytic_saved_mib"] == 0 and rows["chunk-16"]["logit_rows"] == 16
    assert rows["chunk-16"]["analytic_peak_mib"] == pytest.approx(12 * 16 * 300 / mib)
    assert rows["chunk-64"]["logit_rows"] == 40  # chunk >= N: one plain call
    # measured saved bytes: the plain log-probs, only O(N) bytes when chunked
    assert rows["plain"]["saved_mib"] >= rows["plain"]["analytic_saved_mib"]
    assert rows["chunk-16"]["saved_mib"] * mib <= 16 * 40
    for r in rows.values():
        assert r["max_abs_diff_loss"] <= 1e-6 * r["loss"] and r["max_abs_diff_grad"] <= 1e-4
        assert r["median_s"] > 0 and r["repeats"] == 1
    assert "chunk-16" in capsys.readouterr().out
