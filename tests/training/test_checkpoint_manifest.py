"""Training-checkpoint manifest (retrofit/training/checkpoint.py) and file helpers (retrofit/io_utils.py).

No models here: folders of small files, exact hashes, and the failure modes verify_checkpoint
must report.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from pathlib import Path

import pytest

from retrofit.io_utils import (
    atomic_directory,
    file_digests,
    read_safetensors_header,
    sha256_file,
    write_json_atomic,
)
from retrofit.training.checkpoint import (
    MANIFEST_NAME,
    CheckpointError,
    base_fingerprint,
    check_base,
    read_manifest,
    verify_checkpoint,
    write_manifest,
)


@pytest.fixture
def base_dir(tmp_path: Path) -> Path:
    base = tmp_path / "base"
    base.mkdir()
    (base / "config.json").write_text('{"model_type": "llada"}')
    (base / "model.safetensors").write_bytes(b"x" * 100)
    (base / "tokenizer.json").write_text("{}")
    return base


@pytest.fixture
def ckpt(tmp_path: Path) -> Path:
    ckpt = tmp_path / "checkpoint-3"
    (ckpt / "global_step3").mkdir(parents=True)
    (ckpt / "adapter_model.safetensors").write_bytes(b"adapter")
    (ckpt / "adapter_config.json").write_text('{"r": 4}')
    (ckpt / "global_step3" / "zero_pp_rank_0_mp_rank_00_model_states.pt").write_bytes(b"shard0")
    (ckpt / ".tmp-partial").write_text("ignored")
    return ckpt


def _write(ckpt: Path, base: Path, **overrides) -> dict:
    kwargs = dict(
        kind="flexmdm",
        base_model=base,
        model_config={"model_type": "flexmdm"},
        lora={"r": 4, "target_modules": {"v_proj", "q_proj"}},
        recipe={"lr": 1e-4},
        step=3,
    )
    kwargs.update(overrides)
    write_manifest(ckpt, **kwargs)
    return json.loads((ckpt / MANIFEST_NAME).read_text())


def test_sha256_file_matches_hashlib(tmp_path: Path):
    path = tmp_path / "f"
    path.write_bytes(b"abc")
    assert sha256_file(path) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    big = os.urandom(9 * 1024 * 1024 + 3)  # spans several 4 MiB chunks
    path.write_bytes(big)
    assert sha256_file(path) == hashlib.sha256(big).hexdigest()


def test_write_manifest_records_everything(ckpt: Path, base_dir: Path):
    manifest = _write(ckpt, base_dir)
    assert manifest["format"] == "retrofit-checkpoint" and manifest["format_version"] == 1
    assert manifest["kind"] == "flexmdm" and manifest["step"] == 3 and manifest["complete"] is True
    assert manifest["lora"]["target_modules"] == ["q_proj", "v_proj"]  # sets become sorted lists
    assert manifest["base_model"]["path"] == str(base_dir.absolute())
    fingerprint = manifest["base_model"]["fingerprint"]
    assert fingerprint["config_sha256"] == hashlib.sha256(b'{"model_type": "llada"}').hexdigest()
    assert fingerprint["weights"] == {"model.safetensors": 100}
    assert set(manifest["files"]) == {
        "adapter_model.safetensors",
        "adapter_config.json",
        "global_step3/zero_pp_rank_0_mp_rank_00_model_states.pt",
    }  # the manifest itself and .tmp-* names are not listed
    assert manifest["files"]["adapter_model.safetensors"] == {
        "sha256": hashlib.sha256(b"adapter").hexdigest(),
        "size": 7,
    }
    assert read_manifest(ckpt) == manifest
    assert verify_checkpoint(ckpt) == []
    assert check_base(manifest, base_dir) == []


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (
            lambda c: (c / "adapter_model.safetensors").unlink(),
            "adapter_model.safetensors: listed in the manifest but missing",
        ),
        (
            lambda c: (c / "adapter_model.safetensors").write_bytes(b"ADAPTER"),
            "adapter_model.safetensors: sha256 differs",
        ),
        (lambda c: (c / "adapter_config.json").write_text("{}"), "adapter_config.json: size 2 != 8"),
        (
            lambda c: (c / "global_step3" / "zero_pp_rank_0_mp_rank_00_model_states.pt").unlink(),
            "zero_pp_rank_0",
        ),
        (lambda c: (c / MANIFEST_NAME).unlink(), "retrofit_checkpoint.json: not found"),
        (lambda c: (c / MANIFEST_NAME).write_text("{not json"), "not valid JSON"),
    ],
    ids=["missing", "sha", "size", "zero-shard", "no-manifest", "bad-json"],
)
def test_verify_checkpoint_reports_damage(ckpt: Path, base_dir: Path, damage, expected: str):
    _write(ckpt, base_dir)
    damage(ckpt)
    problems = verify_checkpoint(ckpt)
    assert len(problems) == 1 and expected in problems[0], problems


def test_verify_checkpoint_incomplete_and_size_only(ckpt: Path, base_dir: Path):
    manifest = _write(ckpt, base_dir)
    manifest["complete"] = False
    (ckpt / MANIFEST_NAME).write_text(json.dumps(manifest))
    (ckpt / "adapter_model.safetensors").write_bytes(b"ADAPTER")  # same size, other bytes
    assert verify_checkpoint(ckpt, check_hashes=False) == [
        f"{ckpt / MANIFEST_NAME}: 'complete' is not true (the save did not finish)"
    ]
    assert len(verify_checkpoint(ckpt)) == 2


def test_manifest_errors(ckpt: Path, base_dir: Path, tmp_path: Path):
    with pytest.raises(CheckpointError, match="kind='mdm'"):
        _write(ckpt, base_dir, kind="mdm")
    with pytest.raises(CheckpointError, match="checkpoint folder does not exist"):
        _write(tmp_path / "nope", base_dir)
    with pytest.raises(CheckpointError, match="config.json: not found"):
        _write(ckpt, tmp_path / "no-base")
    with pytest.raises(TypeError, match="object"):
        _write(ckpt, base_dir, recipe={"x": object()})
    assert not (ckpt / MANIFEST_NAME).exists()  # nothing written by the failed calls
    manifest = _write(ckpt, base_dir)
    manifest["format_version"] = 99
    (ckpt / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match="newer than this retrofit"):
        read_manifest(ckpt)


def test_check_base_detects_other_base(ckpt: Path, base_dir: Path):
    manifest = _write(ckpt, base_dir)
    (base_dir / "config.json").write_text('{"model_type": "llada", "n_layers": 3}')
    (base_dir / "model-00002.safetensors").write_bytes(b"y")
    problems = check_base(manifest, base_dir)
    assert len(problems) == 2 and "config.json: differs" in problems[0] and "model-00002" in problems[1]
    assert base_fingerprint(base_dir)["weights"] == {"model-00002.safetensors": 1, "model.safetensors": 100}


def test_atomic_directory_success_failure_overwrite(tmp_path: Path):
    target = tmp_path / "out"
    with atomic_directory(target) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".tmp-out-") and not target.exists()
        (tmp / "a.txt").write_text("new")
    assert (target / "a.txt").read_text() == "new"
    assert (target.stat().st_mode & 0o777) == (0o777 & ~_umask())
    with pytest.raises(FileExistsError, match="--overwrite"), atomic_directory(target):
        raise AssertionError("the body must not run")
    with pytest.raises(KeyboardInterrupt), atomic_directory(target, overwrite=True) as tmp:
        (tmp / "a.txt").write_text("half")
        raise KeyboardInterrupt
    assert (target / "a.txt").read_text() == "new"
    with atomic_directory(target, overwrite=True) as tmp:
        (tmp / "b.txt").write_text("replacement")
    assert sorted(p.name for p in target.iterdir()) == ["b.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no .tmp-* left anywhere
    (tmp_path / "file").write_text("")
    with (
        pytest.raises(FileExistsError, match="is a file"),
        atomic_directory(tmp_path / "file", overwrite=True),
    ):
        pass


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_write_json_atomic_and_file_digests(tmp_path: Path):
    write_json_atomic(tmp_path / "x.json", {"a": [1, 2]})
    assert json.loads((tmp_path / "x.json").read_text()) == {"a": [1, 2]}
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "y").write_bytes(b"")
    digests = file_digests(tmp_path, exclude=("x.json",))
    assert digests == {"sub/y": {"sha256": hashlib.sha256(b"").hexdigest(), "size": 0}}


def test_read_safetensors_header_detects_truncation(tmp_path: Path):
    import torch
    from safetensors.torch import save_file

    path = tmp_path / "t.safetensors"
    save_file(
        {"w": torch.ones(3, 2), "b": torch.zeros(5, dtype=torch.bfloat16)},
        str(path),
        metadata={"format": "pt"},
    )
    header = read_safetensors_header(path)
    assert header["w"]["shape"] == [3, 2] and header["b"]["dtype"] == "BF16"
    assert header["__metadata__"] == {"format": "pt"}
    data = path.read_bytes()
    path.write_bytes(data[:-4])
    with pytest.raises(ValueError, match=r"t\.safetensors: truncated safetensors file"):
        read_safetensors_header(path)
    path.write_bytes(data[:20])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        read_safetensors_header(path)
    path.write_bytes(struct.pack("<Q", 4) + b"{{{{")
    with pytest.raises(ValueError, match="not valid JSON"):
        read_safetensors_header(path)
