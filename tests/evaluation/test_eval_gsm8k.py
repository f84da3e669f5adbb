"""Tests of the GSM8K runner (retrofit.evaluation.gsm8k) and `retrofit eval gsm8k`
(docs/method.md §5.2, §6.1)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from retrofit.cli import main as cli_main
from retrofit.data.gsm8k_format import REASONING_OPEN, build_prompt, build_target, load_gsm8k, user_turn
from retrofit.evaluation.generation import TextGenerator, load_model_dir
from retrofit.evaluation.gsm8k import fewshot_prompt, run_gsm8k, run_gsm8k_lm_eval, score, summarize
from retrofit.evaluation.passk import mean_and_stderr
from retrofit.models.tokenizer import build_tokenizer
from retrofit.sampling.load import make_sampler

SAMPLE_FIELDS = {"index", "question", "prompt", "generation", "extracted", "gold", "correct", "num_tokens"}


@pytest.fixture(scope="module")
def flex_generator(tiny_flexmdm_dir) -> TextGenerator:
    model, tokenizer, kind = load_model_dir(tiny_flexmdm_dir, device="cpu")
    # max_length: byte-tokenized GSM8K prompts (~600 tokens) exceed the tiny canvas (the default cap)
    sampler = make_sampler(model, tokenizer, kind, steps=2, temperature=1.0, max_length=1024)  # sampled
    return TextGenerator(sampler, tokenizer, kind, batch_size=3)


def read_run(out: Path) -> tuple[dict, list[dict]]:
    results = json.loads((out / "results.json").read_text())
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    return results, samples


def test_fewshot_prompt_zero_shot_is_build_prompt_and_shots_are_chat_turns() -> None:
    tok = build_tokenizer()
    rows = load_gsm8k("train")[:2]
    assert fewshot_prompt("What is 1+1?", tok, []) == build_prompt("What is 1+1?", tok)
    text = fewshot_prompt("What is 1+1?", tok, rows)
    assert text.endswith(build_prompt("What is 1+1?", tok).removeprefix(tok.bos_token))
    assert text.count("<|start_header_id|>assistant") == 3 and text.count(tok.bos_token) == 1
    assert REASONING_OPEN + build_target(rows[0]["answer"]) in text
    plain = fewshot_prompt("Q?", None, rows[:1])
    assert (
        plain
        == f"{user_turn(rows[0]['question'])}\n\n{REASONING_OPEN}{build_target(rows[0]['answer'])}\n\n"
        + (build_prompt("Q?", None))
    )


def test_score_and_summarize_exact_values() -> None:
    rows = [{"question": "a", "answer": "x\n#### 18"}, {"question": "b", "answer": "y\n#### 1,200"}]
    texts = ["so \\boxed{18}</answer>", "<answer>about 1199</answer>"]
    records = score(rows, ["p0", "p1"], texts, [5, 7])
    assert [(r["extracted"], r["gold"], r["correct"]) for r in records] == [
        ("18", "18", True),
        ("1199", "1200", False),
    ]
    metrics = summarize(records)
    assert metrics["accuracy"] == 0.5 and metrics["accuracy_stderr"] == pytest.approx(
        mean_and_stderr([1, 0])[1]
    )
    assert metrics["no_answer_rate"] == 0.0 and metrics["mean_response_tokens"] == 6.0


def test_runner_writes_results_and_same_seed_same_numbers(
    flex_generator, tiny_flexmdm_dir, data_dir, tmp_path
) -> None:
    def run(out: Path, seed: int) -> dict:
        return run_gsm8k(
            flex_generator, out, model_dir=tiny_flexmdm_dir, limit=3, seed=seed, data_dir=data_dir
        )

    metrics = run(tmp_path / "a", 0)
    results, samples = read_run(tmp_path / "a")
    assert set(results) >= {"config", "model_hash", "sampler", "metrics", "timings"}
    assert results["model_hash"].startswith("sha256:") and results["sampler"]["steps"] == 2
    assert results["config"]["limit"] == 3 and results["config"]["num_fewshot"] == 0
    assert results["metrics"] == metrics and set(metrics) >= {"accuracy", "accuracy_stderr"}
    assert len(samples) == 3 and all(set(s) == SAMPLE_FIELDS for s in samples)
    questions = load_gsm8k("test", data_dir)[:3]
    assert [s["prompt"] for s in samples] == [
        build_prompt(q["question"], flex_generator.tokenizer) for q in questions
    ]
    assert [s["gold"] for s in samples] == ["18", "3", "70000"]
    assert all(isinstance(s["correct"], bool) and s["num_tokens"] >= 0 for s in samples)
    assert math.isfinite(results["timings"]["generate_s"])
    assert run(tmp_path / "b", 0) == metrics
    assert [s["generation"] for s in read_run(tmp_path / "b")[1]] == [s["generation"] for s in samples]
    run(tmp_path / "c", 1)
    assert [s["generation"] for s in read_run(tmp_path / "c")[1]] != [s["generation"] for s in samples]


def test_runner_via_lm_eval_records_task_metrics(
    flex_generator, tiny_flexmdm_dir, data_dir, tmp_path
) -> None:
    metrics = run_gsm8k_lm_eval(flex_generator, tmp_path, model_dir=tiny_flexmdm_dir, limit=2, data_dir=data_dir,
                                tasks=("gsm8k_flexmdm",))  # fmt: skip
    results, samples = read_run(tmp_path)
    assert results["config"]["protocol"] == "lm-eval"
    assert metrics["accuracy"] == metrics["gsm8k_flexmdm/exact_match,none"]
    assert "gsm8k_flexmdm/exact_match_stderr,none" in metrics
    assert len(samples) == 2 and {s["task"] for s in samples} == {"gsm8k_flexmdm"}
    first = load_gsm8k("test", data_dir)[0]["question"]
    assert samples[0]["prompt"] == build_prompt(first, flex_generator.tokenizer)  # chat template + prefill


def test_cli_gsm8k_llada_baseline(tiny_llada_dir, data_dir, tmp_path, capsys) -> None:
    out = tmp_path / "llada"
    argv = ["eval", "gsm8k", str(tiny_llada_dir), "--limit", "2", "--steps", "2", "--gen-length", "8",
            "--out", str(out), "--data-dir", str(data_dir), "--seed", "3"]  # fmt: skip
    assert cli_main(argv) == 0
    printed = capsys.readouterr().out
    assert "accuracy: 0.0000 ± 0.0000" in printed and "results.json" in printed
    results, samples = read_run(out)
    assert results["sampler"]["kind"] == "llada" and results["sampler"]["gen_length"] == 8
    assert results["sampler"]["block_length"] == 8 and results["config"]["seed"] == 3
    assert len(samples) == 2 and all(s["num_tokens"] <= 8 for s in samples)
    assert cli_main(["eval", "gsm8k", str(tmp_path / "missing"), "--out", str(tmp_path / "x")]) == 2
