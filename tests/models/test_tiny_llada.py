"""Tiny checkpoints and tokenizers: official layout, determinism, atomic writes, BPE (docs/method.md §8)."""

from __future__ import annotations

import json
import time

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoTokenizer

import retrofit.models.tiny as tiny
from retrofit.models.tiny import OFFICIAL_CONFIG_KEYS, write_tiny_llada
from retrofit.models.tokenizer import (
    CHAT_TEMPLATE,
    MASK_TOKEN,
    SPECIAL_TOKENS,
    build_tokenizer,
    save_tokenizer,
)


def _weights(path) -> dict[str, torch.Tensor]:
    out = {}
    for shard in sorted(path.glob("model-*.safetensors")):
        out.update(load_file(shard))
    return out


def test_official_layout(tiny_llada_dir):
    files = sorted(p.name for p in tiny_llada_dir.iterdir())
    shards = [f for f in files if f.startswith("model-")]
    assert len(shards) >= 2 and all(f.endswith(f"-of-{len(shards):05d}.safetensors") for f in shards)
    assert {"config.json", "model.safetensors.index.json", "tokenizer.json", "tokenizer_config.json"} <= set(
        files
    )
    cfg = json.loads((tiny_llada_dir / "config.json").read_text())
    assert set(cfg) == set(OFFICIAL_CONFIG_KEYS) and len(OFFICIAL_CONFIG_KEYS) == 46
    assert cfg["architectures"] == ["LLaDAModelLM"] and cfg["model_type"] == "llada"
    assert cfg["auto_map"] == {
        "AutoConfig": "configuration_llada.LLaDAConfig",
        "AutoModel": "modeling_llada.LLaDAModelLM",
        "AutoModelForCausalLM": "modeling_llada.LLaDAModelLM",
    }
    assert (cfg["d_model"], cfg["n_layers"], cfg["n_heads"], cfg["n_kv_heads"], cfg["mlp_hidden_size"]) == (
        64, 2, 4, 4, 192,
    )  # fmt: skip
    # 262 tokenizer ids padded to a multiple of 64, like LLaDA's 126464-row embedding.
    assert cfg["vocab_size"] == cfg["embedding_size"] == 320
    assert (cfg["mask_token_id"], cfg["eos_token_id"], cfg["pad_token_id"]) == (258, 257, 257)
    index = json.loads((tiny_llada_dir / "model.safetensors.index.json").read_text())
    weights = _weights(tiny_llada_dir)
    assert set(index["weight_map"]) == set(weights) and set(index["weight_map"].values()) == set(shards)
    assert index["metadata"]["total_size"] == sum(t.numel() * t.element_size() for t in weights.values())
    assert weights["model.transformer.wte.weight"].shape == (320, 64)


def test_deterministic_for_a_seed(tiny_llada_dir, tmp_path):
    again = _weights(write_tiny_llada(tmp_path / "again", seed=0))
    other = _weights(write_tiny_llada(tmp_path / "other", seed=1))
    first = _weights(tiny_llada_dir)
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not torch.equal(first["model.transformer.wte.weight"], other["model.transformer.wte.weight"])


def test_gqa_and_shard_size(tmp_path):
    path = write_tiny_llada(
        tmp_path / "gqa", layers=1, d_model=32, heads=4, kv_heads=2, max_shard_size=20_000
    )
    weights = _weights(path)
    assert weights["model.transformer.blocks.0.k_proj.weight"].shape == (16, 32)
    assert weights["model.transformer.blocks.0.q_proj.weight"].shape == (32, 32)
    # 320*32*4 = 40 960 bytes per embedding matrix: each gets its own shard.
    assert len(list(path.glob("model-*.safetensors"))) >= 3


def test_atomic_write_and_overwrite(tiny_llada_dir, tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    write_tiny_llada(out)  # an existing empty folder is fine
    with pytest.raises(FileExistsError, match="overwrite=True"):
        write_tiny_llada(out, seed=1)
    write_tiny_llada(out, seed=1, overwrite=True)
    key = "model.transformer.wte.weight"
    assert not torch.equal(_weights(out)[key], _weights(tiny_llada_dir)[key])  # replaced

    def fail(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(tiny, "save_sharded", fail)
    with pytest.raises(RuntimeError, match="disk full"):
        write_tiny_llada(tmp_path / "never")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no half-written or temp folder


def test_byte_tokenizer_ids_and_specials():
    tok = build_tokenizer()
    assert len(tok) == 262
    text = "héllo, wörld\n\t{}"
    assert tok(text)["input_ids"] == list(text.encode("utf-8"))  # id = byte value
    assert tok.decode(tok(text)["input_ids"]) == text
    assert [tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS] == list(range(256, 262))
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (256, 257, 257)
    assert tok.mask_token is None  # like the official tokenizer: mask id comes from config.json
    assert tok(f"a{MASK_TOKEN}b")["input_ids"] == [97, 258, 98]


def test_chat_template_and_bos_behaviour(tmp_path):
    tok = build_tokenizer()
    messages = [{"role": "user", "content": " What is 2+2? "}]
    text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert text == (
        "<|startoftext|><|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )
    assert tok.chat_template == CHAT_TEMPLATE
    assert tok("hi")["input_ids"] == [104, 105]  # default: no BOS added
    with_bos = build_tokenizer(add_bos_token=True)
    assert with_bos("hi")["input_ids"] == [256, 104, 105]
    assert with_bos("hi", add_special_tokens=False)["input_ids"] == [104, 105]
    save_tokenizer(with_bos, tmp_path)
    cfg = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert cfg["tokenizer_class"] == "PreTrainedTokenizerFast" and cfg["add_bos_token"] is True
    assert cfg["chat_template"] == CHAT_TEMPLATE and not (tmp_path / "chat_template.jinja").exists()
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    assert reloaded("hi")["input_ids"] == [256, 104, 105] and reloaded.chat_template == CHAT_TEMPLATE


def test_bpe_trained_on_gsm8k_and_python(data_dir, tmp_path):
    src = tmp_path / "snippet.py"
    src.write_text("def add(a, b):\n    return a + b\n" * 50)
    start = time.perf_counter()
    tok = build_tokenizer(train_on=[data_dir / "gsm8k" / "test.jsonl", src], vocab_size=1024)
    elapsed = time.perf_counter() - start
    assert len(tok) == 1024 and elapsed < 20
    assert tok.convert_tokens_to_ids(MASK_TOKEN) == 1024 - 4  # specials follow the 256 + 762 merges
    question = "Janet's ducks lay 16 eggs per day. How many dollars does she make every day?"
    ids = tok(question)["input_ids"]
    assert len(ids) < 0.5 * len(question.encode()) and tok.decode(ids) == question
    assert tok("def add(a, b):")["input_ids"] != list(b"def add(a, b):")  # merged code tokens
    path = write_tiny_llada(tmp_path / "bpe", train_on=[src], vocab_size=300)
    cfg = json.loads((path / "config.json").read_text())
    n_tokens = len(AutoTokenizer.from_pretrained(path))
    assert 262 < n_tokens <= 300 and cfg["embedding_size"] == 320 and cfg["mask_token_id"] == n_tokens - 4


def test_tokenizer_argument_errors(tmp_path):
    with pytest.raises(ValueError, match="needs train_on"):
        build_tokenizer(vocab_size=1000)
    with pytest.raises(ValueError, match=">= 262"):
        build_tokenizer(train_on=[tmp_path], vocab_size=100)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        build_tokenizer(train_on=[tmp_path / "missing.txt"], vocab_size=300)
    (tmp_path / "data.csv").write_text("a,b\n")
    with pytest.raises(ValueError, match=r"data\.csv is not one of"):
        build_tokenizer(train_on=[tmp_path / "data.csv"], vocab_size=300)
