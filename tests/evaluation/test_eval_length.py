"""Tests of the length-statistics runner and `retrofit eval length` (docs/method.md §6.4)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from retrofit.cli import main as cli_main
from retrofit.data.gsm8k_format import build_prompt, build_target, load_gsm8k
from retrofit.evaluation.generation import TextGenerator, load_model_dir
from retrofit.evaluation.length import model_lengths, reference_rows, run_length
from retrofit.sampling.load import make_sampler

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def read_run(out: Path) -> tuple[dict, list[dict]]:
    results = json.loads((out / "results.json").read_text())
    return results, [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]


def test_reference_rows_gsm8k_and_jsonl(data_dir, tmp_path) -> None:
    rows = reference_rows("gsm8k", data_dir)
    first = load_gsm8k("test", data_dir)[0]
    assert len(rows) == 1319 and rows[0] == {
        "question": first["question"],
        "response": build_target(first["answer"]),
    }
    path = tmp_path / "ref.jsonl"
    path.write_text('{"prompt": "Say hi", "response": "hi there"}\n\n{"text": "plain"}\n')
    assert reference_rows(str(path)) == [
        {"prompt": "Say hi", "question": None, "response": "hi there"},
        {"prompt": None, "question": None, "response": "plain"},
    ]
    path.write_text('{"other": 1}\n')
    with pytest.raises(ValueError, match=r"ref.jsonl:1"):
        reference_rows(str(path))
    with pytest.raises(FileNotFoundError):
        reference_rows(str(tmp_path / "missing.jsonl"))


class EosFrom(nn.Module):
    """Wraps a LLaDA: EOS is forbidden before canvas position k and overwhelmingly likely from k on."""

    def __init__(self, model, k: int, eos: int):
        super().__init__()
        self.inner, self.k, self.eos, self.config = model, k, eos, model.config

    def forward(self, input_ids, attention_mask=None):
        logits = self.inner(input_ids, attention_mask=attention_mask).logits.clone()  # [B, L, V]
        late = torch.arange(input_ids.shape[1]) >= self.k  # [L]
        logits[:, :, self.eos] = torch.where(late, 1e4, float("-inf"))
        return SimpleNamespace(logits=logits)


@pytest.fixture(scope="module")
def llada(tiny_llada_dir):
    return load_model_dir(tiny_llada_dir, device="cpu")


@pytest.mark.parametrize("k", [0, 3, 8])
def test_llada_length_is_first_eos_position(llada, k) -> None:
    model, tok, kind = llada
    sampler = make_sampler(EosFrom(model, k, tok.eos_token_id), tok, kind, steps=4, gen_length=8)
    gen = TextGenerator(sampler, tok, kind, batch_size=2)
    assert model_lengths(gen, [], "unconditional", 3, seed=0) == [k, k, k]  # 8 = no EOS in the canvas


def test_two_models_one_plot_and_same_seed_same_numbers(
    tiny_flexmdm_dir, tiny_llada_dir, data_dir, tmp_path
) -> None:
    def load(folder: str) -> TextGenerator:
        model, tok, kind = load_model_dir(folder, device="cpu")
        opts = {"max_length": 24} if kind == "flexmdm" else {"gen_length": 8}
        return TextGenerator(make_sampler(model, tok, kind, steps=2, **opts), tok, kind, batch_size=4)

    dirs = [tiny_flexmdm_dir, tiny_llada_dir]
    targets = [build_target(r["answer"]) for r in load_gsm8k("test", data_dir)]
    data_mean = sum(len(t.encode()) for t in targets) / len(targets)
    kwargs = dict(load=load, data="gsm8k", mode="unconditional", num_samples=4, seed=0, data_dir=data_dir)
    metrics = run_length(dirs, tmp_path / "a", **kwargs)
    png = tmp_path / "a" / "length_hist.png"
    assert png.read_bytes()[:8] == PNG_MAGIC and png.stat().st_size > 5000
    results, samples = read_run(tmp_path / "a")
    assert set(results["config"]["models"]) == {"flexmdm", "llada"}
    assert results["config"]["models"]["llada"]["kind"] == "llada"
    for label in ("flexmdm", "llada"):
        assert {f"{label}/{k}" for k in ("mean", "std", "wasserstein1", "ks", "mean_stderr")} <= set(metrics)
        lengths = [s["length"] for s in samples if s["model"] == label]
        assert len(lengths) == 4 and metrics[f"{label}/n"] == 4
        assert metrics[f"{label}/mean"] == pytest.approx(sum(lengths) / 4)
        assert metrics[f"{label}/data_mean"] == pytest.approx(data_mean)  # byte tokenizer: UTF-8 bytes
    assert metrics["flexmdm/data_n"] == 1319 and all(
        s["length"] <= 24 for s in samples if s["model"] == "flexmdm"
    )
    assert run_length(dirs, tmp_path / "b", **kwargs) == metrics


def test_cli_per_prompt_jsonl(tiny_flexmdm_dir, tmp_path, capsys) -> None:
    ref = tmp_path / "ref.jsonl"
    ref.write_text(
        "".join(
            json.dumps({"prompt": f"Count to {i}:", "response": " 1 2 3"[: 2 * i]}) + "\n" for i in (1, 2, 3)
        )
    )
    out = tmp_path / "run"
    argv = ["eval", "length", str(tiny_flexmdm_dir), "--data", str(ref), "--num-samples", "2", "--steps", "2",
            "--max-length", "20", "--out", str(out)]  # fmt: skip
    assert cli_main(argv) == 0
    assert "flexmdm/mean:" in capsys.readouterr().out
    results, samples = read_run(out)
    assert results["config"]["mode"] == "per-prompt" and results["metrics"]["flexmdm/data_n"] == 2
    assert results["metrics"]["flexmdm/data_mean"] == pytest.approx(3.0)  # " 1" and " 1 2": 2 and 4 bytes
    assert len(samples) == 2 and (out / "length_hist.png").is_file()


def test_per_prompt_gsm8k_prompts_are_the_training_prompts(data_dir) -> None:
    from retrofit.evaluation.length import prompt_text
    from retrofit.models.tokenizer import build_tokenizer

    tok = build_tokenizer()
    row = reference_rows("gsm8k", data_dir)[0]
    assert prompt_text(row, tok) == build_prompt(row["question"], tok)
    with pytest.raises(ValueError, match="--unconditional"):
        prompt_text({"prompt": None, "response": "x"}, tok)
