"""Tests of retrofit.graft and `retrofit graft`: a loadable, sharded, atomically written FlexMDM folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import AutoModel, AutoTokenizer, PreTrainedTokenizerFast

from retrofit.graft import graft_checkpoint
from retrofit.models import FlexMDMModel, LLaDAConfig, LLaDAModelLM

REPO = Path(__file__).resolve().parents[2]
SPECIALS = ["<|startoftext|>", "<|endoftext|>", "<|mdm_mask|>"]


@pytest.fixture
def base_dir(tmp_path: Path) -> Path:
    """A tiny LLaDA folder: fp32 safetensors, config.json and a word-level tokenizer."""
    words = SPECIALS + ["a", "b", "c", "d"]
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="a")),
        bos_token=SPECIALS[0], eos_token=SPECIALS[1], pad_token=SPECIALS[1],
    )  # fmt: skip
    tokenizer.backend_tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    config = LLaDAConfig(
        d_model=32, n_heads=4, n_kv_heads=4, n_layers=2, mlp_hidden_size=64, vocab_size=64,
        embedding_size=64, mask_token_id=2, pad_token_id=1, eos_token_id=1, bos_token_id=0,
    )  # fmt: skip
    torch.manual_seed(0)
    path = tmp_path / "tiny-llada"
    LLaDAModelLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "retrofit.cli", "graft", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def test_cli_writes_a_sharded_loadable_checkpoint(base_dir: Path, tmp_path: Path) -> None:
    """Default --dtype auto on an fp32 base: fp32 tensors, and the graft is the base's identity."""
    out = tmp_path / "runs" / "flexmdm-init"
    done = run_cli(
        "--base", str(base_dir), "--out", str(out), "--canvas-width", "64",
        "--adaln-group-size", "1", "--max-shard-size", "40KB", "--insertion-schedule", "linear",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()  # (deepspeed may log a line first)
    assert lines[-2:] == ["retrofit graft: wrote float32 weights (the base's stored dtype)", str(out)]
    for shard in out.glob("*.safetensors"):
        with safe_open(str(shard), framework="pt") as f:
            assert {f.get_slice(key).get_dtype() for key in f.keys()} == {"F32"}  # noqa: SIM118
    assert sorted(p.name for p in out.parent.iterdir()) == ["flexmdm-init"]  # no temp folders left
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1  # sharded
    for name in ("tokenizer.json", "tokenizer_config.json"):
        assert (out / name).read_bytes() == (base_dir / name).read_bytes()
    assert AutoTokenizer.from_pretrained(out).pad_token_id == 1

    model = AutoModel.from_pretrained(out)
    assert isinstance(model, FlexMDMModel)
    assert (model.config.canvas_width, model.config.length_scale, len(model.adaln)) == (64, 64.0, 2)
    assert model.config.insertion_schedule == {"name": "linear"}
    assert model.config.base_model == str(base_dir)
    base = LLaDAModelLM.from_pretrained(base_dir)
    for name, tensor in base.state_dict().items():
        assert torch.equal(model.backbone.state_dict()[name], tensor), name
    assert all((p == 0).all() for p in model.adaln.parameters())
    ids = torch.tensor([[3, 4, 2, 5, 6, 1, 1]])
    logits = model.eval()(ids, 0.5, attention_mask=ids != 1).logits
    with torch.no_grad():
        reference = base(torch.tensor([[3, 4, 2, 5, 6, 1, 1, 1]]), attention_mask=torch.arange(8)[None] <= 5)
    assert (logits - reference.logits[:, :7]).abs().max().item() == 0.0


def test_cli_refuses_an_existing_output(base_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    done = run_cli("--base", str(base_dir), "--out", str(out))
    assert done.returncode == 1
    assert "--overwrite" in done.stderr
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken", "tiny-llada"]


def test_overwrite_replaces_the_folder_and_bf16_is_saved(base_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "flexmdm"
    graft_checkpoint(base_dir, out, dtype=torch.float32, seed=0)
    (out / "stale.txt").write_text("old")
    graft_checkpoint(base_dir, out, dtype=torch.bfloat16, seed=0, overwrite=True)
    assert not (out / "stale.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["flexmdm", "tiny-llada"]
    with safe_open(str(out / "model.safetensors"), framework="pt") as f:
        dtypes = {f.get_slice(key).get_dtype() for key in f.keys()}  # noqa: SIM118 (safe_open is not a dict)
    assert dtypes == {"BF16"}
    assert json.loads((out / "config.json").read_text())["model_type"] == "flexmdm"


def test_graft_rejects_a_missing_base_and_a_bad_field(base_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="--base"):
        graft_checkpoint(tmp_path / "nowhere", tmp_path / "out")
    with pytest.raises(ValueError, match="pad_attention"):
        graft_checkpoint(base_dir, tmp_path / "out", pad_attention="causal")
    assert not (tmp_path / "out").exists()
