"""Benchmarks (issue #9): each one runs at the smallest size and writes the expected JSON.

No speed is asserted (CI machines differ); the checks are exact counts, closed forms and the
structure of the results.
"""

from __future__ import annotations

import json

import pytest
import torch

from retrofit.bench import all_suite
from retrofit.bench.closed_form import expected_max_slots, monte_carlo_computed_fraction
from retrofit.bench.configs import build_llada, parameter_counts
from retrofit.bench.interpolant_bench import InterpolantOptions
from retrofit.bench.lengths import gsm8k_length_table, make_features
from retrofit.bench.train_step import TrainStepOptions
from retrofit.cli import main


def _json(path):
    return json.loads(path.read_text())


def test_parameter_counts_of_the_shapes():
    # 100m: 2 V d + layers (4 d^2 + 3 d H + 2 d) + d with V 8192, d 768, H 2048, 12 layers
    counts = parameter_counts(build_llada("100m", device="meta"))
    assert counts == {"total": 97_536_768, "embedding": 6_291_456, "lm_head": 6_291_456, "trunk": 84_953_856}
    # the full LLaDA-8B shape (docs/method.md §2.9: 8 015 581 184 parameters)
    assert parameter_counts(build_llada("8b", device="meta"))["total"] == 8_015_581_184
    assert len(build_llada("8b", layers=2, device="meta").model.transformer.blocks) == 2


def test_expected_max_slots_exact_small_cases():
    # one row, l = 2, q = 1/2: n ~ Bin(2, 1/2); E[max(n, 1)] = 1/4 + 1/2 + 2/4 = 1.25
    q = torch.tensor([[0.5]], dtype=torch.float64)
    one = expected_max_slots(q, torch.tensor([[2]]), torch.tensor([[0]]))
    assert one.item() == pytest.approx(1.25, abs=1e-12)
    # two rows, q = 1/2, l = 1 each: P(max = 0) = 1/4 -> E[max(max n, 1)] = 1
    two = expected_max_slots(torch.full((1, 2), 0.5, dtype=torch.float64), torch.ones(1, 2, dtype=torch.long),
                             torch.zeros(1, 2, dtype=torch.long))  # fmt: skip
    assert two.item() == pytest.approx(1.0, abs=1e-12)
    # q = 0: only the protected prompt survives; q = 1: everything
    lengths, prompts = torch.tensor([[7, 5]]), torch.tensor([[3, 4]])
    assert expected_max_slots(
        torch.zeros(1, 2, dtype=torch.float64), lengths, prompts
    ).item() == pytest.approx(4.0)
    assert expected_max_slots(
        torch.ones(1, 2, dtype=torch.float64), lengths, prompts
    ).item() == pytest.approx(7.0)


def test_closed_form_matches_the_collator():
    """Closed form vs the mean of 384 real collator batches (B 4, L 64, banded over G 4 bands).

    The per-batch fraction has sd < 0.3, so the standard error of the mean is < 0.016; tolerance 0.05.
    """
    from retrofit.training.collator import FlexMDMCollator

    B, L, G, n = 4, 64, 4, 384
    collate = FlexMDMCollator(
        mask_id=511, pad_id=510, canvas_width=L, time_mode="banded", grad_accum=G, seed=3
    )
    gen = torch.Generator().manual_seed(0)
    computed = [int(collate(make_features("full", B, L, vocab_limit=500, generator=gen))["num_computed_tokens"])
                for _ in range(n)]  # fmt: skip
    measured = sum(computed) / (n * B * (L + 1))
    closed = monte_carlo_computed_fraction(batch=B, canvas=L, time_mode="banded", grad_accum=G)
    assert closed == pytest.approx(measured, abs=0.05)
    # the training module's quadrature (prompt-free only) agrees within this module's Monte Carlo error
    from retrofit.bench.trim_cost import expected_computed_fraction as quadrature

    assert closed == pytest.approx(quadrature("geometric", [L], L, "banded", B, 1, G), abs=0.005)
    assert monte_carlo_computed_fraction(batch=B, canvas=L, trim=False) == 1.0
    # banding narrows each micro-batch's t range, so it computes fewer positions than stratified
    stratified = monte_carlo_computed_fraction(batch=B, canvas=L, time_mode="stratified", grad_accum=G)
    assert closed < stratified < 1.0


def test_features_full_and_gsm8k(data_dir):
    gen = torch.Generator().manual_seed(0)
    full = make_features("full", 3, 16, vocab_limit=10, generator=gen)
    assert [len(f["input_ids"]) for f in full] == [16] * 3 and all(f["prompt_length"] == 0 for f in full)
    assert max(max(f["input_ids"]) for f in full) < 10
    table = gsm8k_length_table(data_dir)
    summary = table.summary()
    assert summary["examples"] == 7473 and 150 < summary["mean_total"] < 300
    assert bool((table.prompt < table.total).all())
    rows = make_features("gsm8k", 64, 160, vocab_limit=10, table=table, generator=gen)
    assert all(0 < f["prompt_length"] < len(f["input_ids"]) <= 160 for f in rows)
    with pytest.raises(ValueError, match="--lengths"):
        make_features("long", 1, 8, vocab_limit=10)


def test_train_step_cli_all_variants(tmp_path):
    B, L, G = 2, 24, 2
    argv = ["bench", "train-step", "--size", "tiny", "--canvas", str(L), "--batch", str(B), "--accum", str(G),
            "--warmup", "1", "--repeats", "1", "--out", str(tmp_path), "--name", "ts"]  # fmt: skip
    assert main(argv) == 0
    payload = _json(tmp_path / "ts.json")
    assert payload["benchmark"] == "train-step" and payload["machine"]["threads"] >= 1
    rows = {r["variant"]: r for r in payload["variants"]}
    assert list(rows) == ["full-width", "trimmed", "banded", "packed", "mdm"]
    for r in rows.values():
        assert r["median_s"] > 0 and r["repeats"] == 1 and r["x1_tokens"] == B * L * G
        assert r["x1_tokens_per_s"] > 0 and r["peak_mib"] >= 0 and r["mfu"] is None  # no MFU on CPU
        assert r["params"]["trainable"] > 0 and r["cpu_median_s"] > 0
        assert r["resident_mib"] > 0 and r["peak_mib"] == pytest.approx(
            r["resident_mib"] + r["transient_mib"]
        )
    assert rows["full-width"]["computed_fraction"] == 1.0 and rows["full-width"]["ratio_vs_full_width"] == 1.0
    assert rows["full-width"]["cpu_ratio_vs_full_width"] == 1.0 and rows["mdm"]["row_length_fraction"] is None
    # full-length x1, no prompt: n_b = l q(t) on average, so rows are shorter than the canvas
    assert 0 < rows["trimmed"]["row_length_fraction"] <= rows["trimmed"]["computed_fraction"]
    assert rows["full-width"]["closed_form_fraction"] == 1.0
    assert rows["mdm"]["computed_fraction"] == pytest.approx(L / (L + 1))
    for name in ("trimmed", "banded"):
        assert 0 < rows[name]["computed_fraction"] <= 1 and 0 < rows[name]["closed_form_fraction"] <= 1
        assert rows[name]["expected_ratio"] == pytest.approx(1 / rows[name]["closed_form_fraction"])
    # packed: the same banded rows, each at its own length (n_b + 1): exactly the row-length floor
    packed = rows["packed"]
    assert packed["computed_fraction"] == pytest.approx(packed["row_length_fraction"])
    assert packed["row_length_fraction"] == pytest.approx(rows["banded"]["row_length_fraction"])
    assert packed["computed_fraction"] < rows["banded"]["computed_fraction"]
    assert packed["closed_form_fraction"] is None and rows["banded"]["cpu_ratio_vs_banded"] == 1.0


def test_train_step_gsm8k_lengths_with_checkpointing(tmp_path, data_dir):
    argv = ["bench", "train-step", "--size", "tiny", "--canvas", "256", "--lengths", "gsm8k", "--batch", "2",
            "--accum", "2", "--warmup", "1", "--repeats", "1", "--grad-ckpt", "on", "--variants", "banded", "mdm",
            "--data-dir", str(data_dir), "--out", str(tmp_path)]  # fmt: skip
    assert main(argv) == 0
    payload = _json(tmp_path / "train-step.json")
    assert payload["options"]["grad_ckpt"] is True and payload["x1_lengths"]["examples"] == 7473
    banded, mdm = payload["variants"]
    assert banded["x1_tokens"] == mdm["x1_tokens"] < 2 * 2 * 256  # same x1 draws, shorter than the canvas
    assert banded["ratio_vs_full_width"] is None  # no full-width run to compare with
    assert 0 < banded["computed_fraction"] <= 1 and banded["closed_form_fraction"] < 0.9  # ~208 of 256 tokens


def test_sample_cli(tmp_path):
    steps = 4
    argv = ["bench", "sample", "--size", "tiny", "--prompts", "2", "--prompt-length", "4", "--max-length", "24",
            "--steps", str(steps), "--warmup", "0", "--repeats", "1", "--out", str(tmp_path)]  # fmt: skip
    assert main(argv) == 0
    payload = _json(tmp_path / "sample.json")
    rows = {r["sampler"]: r for r in payload["samplers"]}
    assert set(rows) == {"flexmdm-trimmed", "flexmdm-full", "llada"}
    assert rows["llada"]["forward_passes_per_sample"] == steps
    assert rows["llada"]["mean_final_length"] == 24
    trimmed, full = rows["flexmdm-trimmed"], rows["flexmdm-full"]
    # draw_at_full_width: trimmed and full-length runs produce the same samples
    assert trimmed["mean_final_length"] == full["mean_final_length"] <= 24
    assert trimmed["forward_passes_per_sample"] == full["forward_passes_per_sample"] in (steps + 1, steps + 2)
    assert set(payload["ratios"]) == {"trimmed_vs_full", "flexmdm_trimmed_vs_llada", "flexmdm_full_vs_llada"}


def test_interpolant_cli(tmp_path):
    argv = ["bench", "interpolant", "--batch", "4", "--canvas", "32", "--warmup", "0", "--repeats", "2",
            "--threads", "1", "--out", str(tmp_path)]  # fmt: skip
    assert main(argv) == 0
    payload = _json(tmp_path / "interpolant.json")
    assert [r["variant"] for r in payload["variants"]] == ["interpolant", "collator"]
    assert payload["x1_tokens_per_batch"] == 4 * 32 and payload["machine"]["threads"] == 1
    assert payload["need"]["samples_per_s_per_gpu"] == pytest.approx(6300 / 32)
    assert payload["need"]["seconds_per_4x1024_micro_batch"] == pytest.approx(4096 / 6300)
    for r in payload["variants"]:
        assert r["samples_per_s"] > 0 and r["margin_vs_paper_gpu"] == pytest.approx(
            r["x1_tokens_per_s"] / 6300
        )


def test_all_suite_writes_and_skips(tmp_path, monkeypatch, capsys):
    suite = [
        ("interp", "interpolant", InterpolantOptions(batch=2, canvas=8, warmup=0, repeats=1)),
        ("needs-data", "train-step", TrainStepOptions(lengths="gsm8k", data_dir=str(tmp_path / "none"))),
    ]
    monkeypatch.setattr(all_suite, "cpu_suite", lambda quick=False: suite)
    payloads = all_suite.run_all(tmp_path, quick=True)
    assert list(payloads) == ["interp"] and (tmp_path / "interp.json").is_file()
    out = capsys.readouterr().out
    assert "skip needs-data" in out and "bench all summary" in out


def test_cpu_suite_shapes():
    full = {name: (kind, opts) for name, kind, opts in all_suite.cpu_suite()}
    assert set(full) == {"interpolant", "sample-tiny", "train-step-100m-full512", "train-step-100m-gsm8k1024"}
    assert (full["interpolant"][1].batch, full["interpolant"][1].canvas) == (64, 1024)
    assert (
        full["train-step-100m-full512"][1].canvas == 512
        and full["train-step-100m-gsm8k1024"][1].lengths == "gsm8k"
    )
    assert all(kind in ("interpolant", "sample", "train-step") for kind, _ in full.values())


def test_invalid_options_name_the_flag():
    with pytest.raises(ValueError, match="--variants"):
        TrainStepOptions(variants=("fast",)).validate()
    with pytest.raises(ValueError, match="--size"):
        TrainStepOptions(size="70b").validate()
