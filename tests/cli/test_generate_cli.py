"""`retrofit generate` / `retrofit infill` on tiny LLaDA and grafted FlexMDM folders, plus the loader."""

from __future__ import annotations

import json

import pytest

from retrofit.cli import main
from retrofit.sampling import FlexMDMSampler, MDMSampler
from retrofit.sampling.load import load_model, make_sampler


@pytest.fixture(scope="module")
def flexmdm_dir(tiny_llada_dir, tmp_path_factory):
    """The session's tiny LLaDA grafted into a FlexMDM folder (length scale 4: short samples)."""
    import torch

    from retrofit.graft import graft_checkpoint

    out = tmp_path_factory.mktemp("flex") / "flexmdm"
    return graft_checkpoint(tiny_llada_dir, out, dtype=torch.float32, canvas_width=64, length_scale=4.0)


def test_load_model_picks_the_kind(tiny_llada_dir, flexmdm_dir, tmp_path):
    model, tok, kind = load_model(flexmdm_dir, device="cpu")
    assert kind == "flexmdm" and tok is not None and not model.training
    assert isinstance(make_sampler(model, tok, kind, steps=3, gen_length=8), FlexMDMSampler)
    model, tok, kind = load_model(tiny_llada_dir, device="cpu")
    sampler = make_sampler(model, tok, kind, steps=4, gen_length=8, confidence="top_prob")
    assert kind == "llada" and isinstance(sampler, MDMSampler) and sampler.config.block_length == 8
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ValueError, match="model_type 'bert'"):
        load_model(tmp_path)
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_model(tmp_path / "nope")


def test_generate_flexmdm_with_trace(flexmdm_dir, tmp_path, capsys):
    png, jsonl = tmp_path / "trace.png", tmp_path / "out.jsonl"
    argv = ["generate", str(flexmdm_dir), "--prompt", "Hi", "--prompt", "2 + 2 =", "--steps", "6",
            "--max-length", "40", "--num-samples", "2", "--seed", "1", "--trace-png", str(png),
            "--output", str(jsonl)]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert printed.count("=== prompt") == 4 and "prompt 1, sample 1" in printed
    rows = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert len(rows) == 4 and all(r["num_tokens"] == len(r["token_ids"]) for r in rows)
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert main(argv) == 0 and capsys.readouterr().out == printed  # same seed, same samples


def test_generate_llada_prompts_file(tiny_llada_dir, tmp_path, capsys):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"prompt": "one"}) + "\n" + json.dumps("two") + "\n")
    argv = ["generate", str(tiny_llada_dir), "--prompts-file", str(prompts), "--gen-length", "8",
            "--block-length", "4", "--steps", "4", "--no-chat-template"]  # fmt: skip
    assert main(argv) == 0
    assert capsys.readouterr().out.count("=== prompt") == 2
    bad = ["generate", str(tiny_llada_dir), "--prompt", "x", "--gen-length", "8", "--block-length", "3"]
    assert main(bad) == 1
    assert "multiple of block_length=3" in capsys.readouterr().err


def test_infill_both_kinds(flexmdm_dir, tiny_llada_dir, capsys):
    base = ["--prefix", "def f(x):\\n    return ", "--suffix", "\\n", "--steps", "4", "--seed", "0"]
    assert main(["infill", str(flexmdm_dir), *base, "--max-middle", "6", "--show-full"]) == 0
    out = capsys.readouterr().out
    assert "=== middle, sample 0" in out and "=== full 0 ===\ndef f(x):\n    return " in out
    assert main(["infill", str(tiny_llada_dir), *base, "--middle-length", "4", "--num-samples", "2"]) == 0
    assert capsys.readouterr().out.count("=== middle") == 2
    assert main(["infill", str(tiny_llada_dir), *base, "--gen-length", "4"]) == 0  # FIM format


def test_generate_requires_a_prompt(tiny_llada_dir):
    with pytest.raises(SystemExit) as e:
        main(["generate", str(tiny_llada_dir)])
    assert e.value.code == 2


def test_truncated_shard_is_named_before_loading(tiny_flexmdm_dir, tmp_path):
    import shutil

    from retrofit.models.loading import CheckpointError
    from retrofit.sampling.load import load_model

    broken = tmp_path / "broken"
    shutil.copytree(tiny_flexmdm_dir, broken)
    shard = sorted(broken.glob("*.safetensors"))[0]
    shard.write_bytes(shard.read_bytes()[:40])
    with pytest.raises(CheckpointError, match=f"{shard.name} is not a readable safetensors file"):
        load_model(broken, device="cpu")
