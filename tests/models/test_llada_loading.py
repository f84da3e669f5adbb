"""Checkpoint I/O: round trips, Auto classes with the official auto_map, clear errors for broken
folders, mask-id resolution, and `verify_llada` on tiny checkpoints (docs/method.md §8)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import transformers
from safetensors.torch import load_file, save_file
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer

import retrofit.models.verify
from retrofit.models import LLaDAConfig, LLaDAModelLM
from retrofit.models.loading import CheckpointError, load_llada, resolve_mask_id
from retrofit.models.verify import verify_llada

SHARD = r"\S+/model-0000\d-of-0000\d\.safetensors"
CFG = r"\S+/config\.json"
PROBE = torch.tensor([[1, 5, 9, 258, 100, 42, 7, 3], [256, 2, 2, 258, 258, 11, 300, 319]])


def _copy(src: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(src, tmp_path / "ckpt"))


def _edit_config(path: Path, **changes) -> None:
    cfg = json.loads((path / "config.json").read_text())
    cfg.update(changes)
    (path / "config.json").write_text(json.dumps(cfg))


def _shards(path: Path) -> list[Path]:
    return sorted(path.glob("model-*.safetensors"))


def _logits(model: LLaDAModelLM) -> torch.Tensor:
    with torch.no_grad():
        return model(PROBE).logits


# --- round trips ------------------------------------------------------------------------------


def test_tiny_checkpoint_equals_seeded_model(tiny_llada_dir):
    model = load_llada(tiny_llada_dir)
    torch.manual_seed(0)  # write_tiny_llada's seed: same weights when rebuilt in memory
    rebuilt = LLaDAModelLM(model.config).eval()
    assert model.dtype == torch.float32 and not model.training
    torch.testing.assert_close(_logits(model), _logits(rebuilt), atol=0, rtol=0)


def test_save_then_automodel_gives_identical_logits_and_strict_keys(tiny_llada_dir, tmp_path):
    model = load_llada(tiny_llada_dir)
    model.save_pretrained(tmp_path / "saved")
    loaded, info = AutoModel.from_pretrained(tmp_path / "saved", output_loading_info=True)
    assert isinstance(loaded, LLaDAModelLM)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    torch.testing.assert_close(_logits(loaded.eval()), _logits(model), atol=0, rtol=0)


def test_official_auto_map_loads_without_trust_remote_code(tiny_llada_dir):
    cfg = json.loads((tiny_llada_dir / "config.json").read_text())
    assert cfg["auto_map"]["AutoModelForCausalLM"] == "modeling_llada.LLaDAModelLM"
    assert isinstance(AutoConfig.from_pretrained(tiny_llada_dir), LLaDAConfig)
    model, info = AutoModelForCausalLM.from_pretrained(tiny_llada_dir, output_loading_info=True)
    assert type(model) is LLaDAModelLM
    assert not info["missing_keys"] and not info["unexpected_keys"]
    torch.testing.assert_close(_logits(model.eval()), _logits(load_llada(tiny_llada_dir)), atol=0, rtol=0)


def test_dtype_none_keeps_stored_dtype(tiny_llada_dir, tmp_path):
    path = _copy(tiny_llada_dir, tmp_path)
    for shard in _shards(path):
        tensors = {k: v.bfloat16() for k, v in load_file(shard).items()}
        save_file(tensors, shard, metadata={"format": "pt"})
    assert load_llada(path).dtype == torch.bfloat16
    assert load_llada(path, dtype=torch.float32).dtype == torch.float32


def test_bin_only_folder_needs_trust(tiny_llada_dir, tmp_path):
    model = load_llada(tiny_llada_dir)
    path = tmp_path / "bin"
    path.mkdir()
    shutil.copy(tiny_llada_dir / "config.json", path)
    torch.save(model.state_dict(), path / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match=r"only \.bin .*trust_bin=True"):
        load_llada(path)
    trusted = load_llada(path, trust_bin=True)  # read with weights_only=True
    torch.testing.assert_close(_logits(trusted), _logits(model), atol=0, rtol=0)


# --- broken folders ---------------------------------------------------------------------------


def test_missing_shard_names_the_file(tiny_llada_dir, tmp_path):
    path = _copy(tiny_llada_dir, tmp_path)
    gone = _shards(path)[1]
    gone.unlink()
    with pytest.raises(FileNotFoundError, match=rf"{gone.name} is missing .*re-download"):
        load_llada(path)


def test_truncated_shard_names_the_file(tiny_llada_dir, tmp_path):
    path = _copy(tiny_llada_dir, tmp_path)
    shard = _shards(path)[0]
    shard.write_bytes(shard.read_bytes()[:-100])
    with pytest.raises(
        CheckpointError, match=rf"{shard.name} is not a readable safetensors file.*re-download"
    ):
        load_llada(path)


def test_tensor_listed_in_index_but_absent_from_shard(tiny_llada_dir, tmp_path):
    path = _copy(tiny_llada_dir, tmp_path)
    index = json.loads((path / "model.safetensors.index.json").read_text())
    index["weight_map"]["model.transformer.extra.weight"] = _shards(path)[0].name
    (path / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match=r"model\.transformer\.extra\.weight is listed"):
        load_llada(path)


@pytest.mark.parametrize(
    ("changes", "pattern"),
    [
        ({"mlp_hidden_size": 96}, rf"blocks\.0\.ff_proj\.weight in {SHARD} has shape \[192, 64\] but {CFG} implies \[96, 64\]; fix config\.json key\(s\) mlp_hidden_size"),
        ({"n_kv_heads": 2}, rf"blocks\.0\.k_proj\.weight in {SHARD} has shape \[64, 64\] but {CFG} implies \[32, 64\]; fix config\.json key\(s\) n_kv_heads"),
        ({"embedding_size": 384, "vocab_size": 384}, rf"wte\.weight in {SHARD} has shape \[320, 64\] but {CFG} implies \[384, 64\]; fix config\.json key\(s\) embedding_size"),
        ({"n_layers": 3}, r"missing \['model\.transformer\.blocks\.2\..*n_layers"),
        ({"n_layers": 1}, r"unexpected \['model\.transformer\.blocks\.1\..*n_layers"),
    ],
)  # fmt: skip
def test_config_weight_shape_mismatch_names_tensor_file_and_key(tiny_llada_dir, tmp_path, changes, pattern):
    path = _copy(tiny_llada_dir, tmp_path)
    _edit_config(path, **changes)
    with pytest.raises(CheckpointError, match=pattern):
        load_llada(path)


@pytest.mark.parametrize(
    ("changes", "key"),
    [
        ({"alibi": True}, "alibi"),
        ({"block_type": "sequential"}, "block_type"),
        ({"include_bias": True}, "include_bias"),
    ],
)
def test_unsupported_config_key_names_the_file_and_key(tiny_llada_dir, tmp_path, changes, key):
    path = _copy(tiny_llada_dir, tmp_path)
    _edit_config(path, **changes)
    with pytest.raises(CheckpointError, match=rf"config\.json: {key}=.* is not supported"):
        load_llada(path)


def test_missing_or_invalid_config_json(tiny_llada_dir, tmp_path):
    path = _copy(tiny_llada_dir, tmp_path)
    (path / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match=r"config\.json is not valid JSON"):
        load_llada(path)
    (path / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"config\.json is missing"):
        load_llada(path)


def test_unknown_hub_id_offline_mentions_hf_hub_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(OSError, match="HF_HUB_OFFLINE"):
        load_llada("retrofit-tests/no-such-model")
    with pytest.raises(FileNotFoundError, match=r"^no such folder: \./no/such/folder$"):
        load_llada("./no/such/folder")


# --- mask id ----------------------------------------------------------------------------------


def test_resolve_mask_id_sources(tiny_llada_dir):
    config = AutoConfig.from_pretrained(tiny_llada_dir)
    tok = AutoTokenizer.from_pretrained(tiny_llada_dir)
    assert resolve_mask_id(config) == 258
    assert resolve_mask_id(config, tok) == 258
    assert resolve_mask_id({"mask_token_id": None, "embedding_size": 320}, tok) == 258  # from the vocab


def test_resolve_mask_id_errors(tiny_llada_dir):
    tok = AutoTokenizer.from_pretrained(tiny_llada_dir)
    with pytest.raises(CheckpointError, match=r"config\.json `mask_token_id`=5 but .*tokenizer\.json maps"):
        resolve_mask_id({"mask_token_id": 5}, tok)
    with pytest.raises(CheckpointError, match=r"no `mask_token_id` and \(no tokenizer given\)"):
        resolve_mask_id({"mask_token_id": None})
    with pytest.raises(CheckpointError, match=r"outside the embedding \(size 320\)"):
        resolve_mask_id({"mask_token_id": 400, "embedding_size": 320})


# --- verify-llada logic -----------------------------------------------------------------------


def test_verify_tiny_checkpoint_reports_tokenizer_facts(tiny_llada_dir):
    report = verify_llada(tiny_llada_dir)
    assert report.ok, report.format()
    assert report.facts["mask id"] == 258
    assert report.facts["bos / eos / pad ids"] == "256 / 257 / 257"
    assert report.facts["tokenizer(text) adds BOS"] is False
    assert report.facts["chat template"] == "present"
    assert report.facts["'<infill-boundary>' tokenizes to"].startswith("17 token(s) [60, 105,")
    assert report.remote == (
        "skipped: config.json auto_map names configuration_llada.py, modeling_llada.py, "
        "which the folder does not ship"
    )
    assert report.format().endswith("OK")


def test_verify_flags_broken_folders(tiny_llada_dir, tmp_path):
    path = _copy(tiny_llada_dir, tmp_path)
    _edit_config(path, mask_token_id=5)
    report = verify_llada(path)
    assert not report.ok and any("mask id disagreement" in p for p in report.problems)
    _shards(path)[0].write_bytes(b"\x00" * 10)
    report = verify_llada(path)
    assert not report.ok and report.problems[0].startswith("native load failed")
    assert report.format().endswith("FAILED (1 problem(s))")


def test_verify_remote_code_comparison(tiny_llada_dir, tmp_path, monkeypatch):
    path = _copy(tiny_llada_dir, tmp_path)
    for name in ("configuration_llada.py", "modeling_llada.py"):
        (path / name).write_text("# stand-in: load_remote_model is patched below\n")
    same = load_llada(path)
    monkeypatch.setattr(retrofit.models.verify, "load_remote_model", lambda p, dtype, device: same)
    report = verify_llada(path)
    assert report.ok and report.remote.startswith("matched (folder's llada.LLaDAModelLM, transformers")
    assert "max|Δlogits| = 0 " in report.remote

    other = load_llada(path)
    with torch.no_grad():
        other.model.transformer.ln_f.weight.mul_(1.5)
    monkeypatch.setattr(retrofit.models.verify, "load_remote_model", lambda p, dtype, device: other)
    report = verify_llada(path)
    assert not report.ok and report.remote.startswith("MISMATCH")

    def broken(p, dtype, device):
        raise AttributeError("'LLaDAConfig' object has no attribute 'use_cache'")

    monkeypatch.setattr(retrofit.models.verify, "load_remote_model", broken)
    report = verify_llada(path)
    if int(transformers.__version__.split(".")[0]) >= 5:
        assert report.ok and report.remote.startswith(
            f"skipped: the folder's modeling code failed on transformers {transformers.__version__} "
            "(AttributeError: 'LLaDAConfig' object has no attribute 'use_cache')"
        )
        assert report.remote.endswith("NOT compared") and "comparison skipped" in report.warnings[0]
    else:
        assert not report.ok and report.remote.startswith("skipped")
