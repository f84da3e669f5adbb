"""`retrofit bench sample --repro / --workload`: counting, summaries and agreement (issue #14)."""

from __future__ import annotations

import pytest
import torch

from retrofit.bench.sample_settings import EXACT, SETTINGS, chosen_settings, count_calls, summarize_settings
from retrofit.bench.sample_workload import run_workload, token_agreement


def test_count_calls_sums_trunk_positions(tiny_llada_dir):
    from retrofit.models import LLaDAModelLM

    model = LLaDAModelLM.from_pretrained(tiny_llada_dir).eval()
    with torch.no_grad(), count_calls(model) as count:
        model(input_ids=torch.zeros(3, 7, dtype=torch.long))
        model(input_ids=torch.zeros(2, 5, dtype=torch.long))
    assert (count.calls, count.rows, count.trunk_positions) == (2, 5, 3 * 7 + 2 * 5)
    with torch.no_grad():
        model(input_ids=torch.zeros(1, 4, dtype=torch.long))  # the hook is gone after the block
    assert count.calls == 2


def test_summary_compares_with_the_exact_setting():
    rec = dict(task="maze", model="mdm", seed=0, forward_passes_per_sample=1.0, seconds_per_sample=1.0)
    records = [
        {**rec, "setting": EXACT, "level": "easy", "trunk_position_layers_per_sample": 800.0, "success": 0.5},
        {
            **rec,
            "setting": EXACT,
            "level": "hard",
            "trunk_position_layers_per_sample": 800.0,
            "success": 0.25,
        },
        {
            **rec,
            "setting": "fast-64",
            "level": "easy",
            "trunk_position_layers_per_sample": 100.0,
            "success": 0.5,
        },
        {
            **rec,
            "setting": "fast-64",
            "level": "hard",
            "trunk_position_layers_per_sample": 100.0,
            "success": 0.0,
        },
    ]
    rows = {r["setting"]: r for r in summarize_settings(records)}
    fast = rows["fast-64"]
    assert fast["flops_reduction"] == 8.0 and fast["success"] == 0.25 and fast["success_hard"] == 0.0
    assert fast["d_success"] == pytest.approx(-0.125) and fast["d_success_hard"] == -0.25
    assert rows[EXACT]["flops_reduction"] == 1.0


def test_settings_names_and_the_reference_first():
    assert list(chosen_settings(["fast-64"])) == [EXACT, "fast-64"]
    assert SETTINGS[EXACT] == {"steps": 256, "unmask_threshold": None, "prompt_cache": False}
    with pytest.raises(ValueError, match="choose among"):
        chosen_settings(["warp-9"])


def test_token_agreement():
    assert token_agreement([[1, 2, 3]], [[1, 2, 3]]) == 1.0
    assert token_agreement([[1, 2, 3, 4]], [[1, 9, 3]]) == 0.5  # 2 equal of the longer 4
    assert token_agreement([[], [5]], [[], [6]]) == 0.5


def test_workload_runs_every_setting_on_one_shape(tiny_flexmdm_dir, data_dir):
    settings = {EXACT: {"steps": 8, "unmask_threshold": None, "prompt_cache": False}, "fast": {"steps": 4, "unmask_threshold": 0.5, "prompt_cache": True,
                                               "cache_refresh": 2}}  # fmt: skip
    payload = run_workload(tiny_flexmdm_dir, settings, prompts=2, prompt_tokens=40, gen_tokens=8,
                           data_dir=str(data_dir), log=lambda _: None)  # fmt: skip
    assert payload["prompt_lengths"] == [40, 40]
    exact, fast = payload["rows"]
    assert exact["token_agreement"] == 1.0 and exact["flops_reduction"] == 1.0
    assert fast["flops_reduction"] > 1.0 and 0.0 <= fast["token_agreement"] <= 1.0
    assert fast["forward_passes_per_sample"] < exact["forward_passes_per_sample"]
