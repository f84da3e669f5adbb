"""Tests for retrofit.evaluation.results: atomic results.json / samples.jsonl and model_hash."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest

from retrofit.evaluation.results import model_hash, write_results


@pytest.fixture
def model_dir(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "flexmdm"}')
    (folder / "model.safetensors").write_bytes(bytes(range(256)) * 8192)  # 2 MiB
    (folder / "README.md").write_text("not hashed")
    return folder


def test_write_results_content(tmp_path, model_dir):
    out = tmp_path / "eval"
    path = write_results(
        out,
        config={"task": "gsm8k", "limit": np.int64(5)},
        metrics={"accuracy": np.float32(0.5), "accuracy_stderr": 0.25, "single": math.nan},
        samples=[{"id": 0, "correct": True, "tokens": np.array([1, 2])}, {"id": 1, "correct": False}],
        timings={"generate_s": 1.5},
        model_dir=model_dir,
        sampler={"steps": 256},
    )
    assert path == out / "results.json"
    record = json.loads(path.read_text())
    assert record["schema_version"] == 1
    assert record["config"] == {"task": "gsm8k", "limit": 5}
    assert record["metrics"] == {"accuracy": 0.5, "accuracy_stderr": 0.25, "single": None}  # NaN -> null
    assert record["timings"] == {"generate_s": 1.5} and record["sampler"] == {"steps": 256}
    assert record["model_hash"] == model_hash(model_dir) and record["model_dir"] == str(model_dir)
    assert record["num_samples"] == 2 and re.fullmatch(r"\d{4}-\d\d-\d\dT.*\+00:00", record["created_utc"])
    lines = (out / "samples.jsonl").read_text().splitlines()
    assert [json.loads(x) for x in lines] == [
        {"id": 0, "correct": True, "tokens": [1, 2]},
        {"id": 1, "correct": False},
    ]


def test_failed_write_keeps_previous_file_and_leaves_no_temp(tmp_path):
    write_results(tmp_path, config={"run": 1}, metrics={"acc": 1.0})
    before = (tmp_path / "results.json").read_text()
    with pytest.raises(TypeError, match="cannot store object"):
        write_results(tmp_path, config={"run": 2}, metrics={"acc": object()})
    assert (tmp_path / "results.json").read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]
    write_results(tmp_path, config={"run": 3}, metrics={})  # overwriting works
    assert json.loads((tmp_path / "results.json").read_text())["config"] == {"run": 3}


def test_model_hash_tracks_config_names_and_sampled_bytes(model_dir):
    h0 = model_hash(model_dir)
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", h0) and model_hash(model_dir) == h0
    (model_dir / "README.md").write_text("changed")  # not a config or weight file
    assert model_hash(model_dir) == h0

    weights = model_dir / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[100_000] ^= 0xFF  # between sampled chunk 0 [0, 64 KiB) and chunk 1 (starts at ~132 KiB)
    weights.write_bytes(bytes(data))
    assert model_hash(model_dir) == h0  # the documented blind spot of the fast hash
    data[10] ^= 0xFF  # inside chunk 0
    weights.write_bytes(bytes(data))
    h1 = model_hash(model_dir)
    assert h1 != h0

    weights.rename(model_dir / "model-00001.safetensors")
    assert model_hash(model_dir) not in (h0, h1)
    (model_dir / "config.json").write_text('{"model_type": "llada"}')
    assert len({h0, h1, model_hash(model_dir)}) == 3


def test_model_hash_full_sees_every_byte(model_dir):
    full0 = model_hash(model_dir, full=True)
    weights = model_dir / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[100_000] ^= 0xFF
    weights.write_bytes(bytes(data))
    assert model_hash(model_dir, full=True) != full0


def test_model_hash_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        model_hash(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="no config.json"):
        model_hash(tmp_path)
