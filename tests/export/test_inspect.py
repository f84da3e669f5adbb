"""`retrofit inspect`: the kind of every folder retrofit deals with, exact parameter counts from
safetensors headers, and the problems it must report (exit code 1)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from retrofit.commands import inspect as inspect_command
from retrofit.export.inspect import inspect_folder
from retrofit.training.checkpoint import MANIFEST_NAME, read_manifest, write_manifest

REPO = Path(__file__).resolve().parents[2]


def numel_by_prefix(folder: Path) -> dict[str, int]:
    """Parameter counts per top-level name, read tensor by tensor (independent of the headers code)."""
    counts: dict[str, int] = {}
    for path in folder.glob("*.safetensors"):
        for key, tensor in load_file(path).items():
            counts[key.split(".")[0]] = counts.get(key.split(".")[0], 0) + tensor.numel()
    return counts


@pytest.fixture(scope="module")
def exported(trained_checkpoint, tmp_path_factory) -> Path:
    from retrofit.export.pipeline import export_checkpoint

    out = tmp_path_factory.mktemp("inspect") / "export"
    export_checkpoint(trained_checkpoint.ckpt, out, dtype="bf16", max_shard_size="100KB", verify="layers")
    return out


def run_inspect(path: Path, capsys, *extra: str) -> tuple[int, str]:
    import argparse

    parser = argparse.ArgumentParser()
    inspect_command.add_arguments(parser)
    code = inspect_command.run(parser.parse_args([str(path), *extra]))
    return code, capsys.readouterr().out


def test_llada_and_flexmdm_model_folders(tiny_llada_dir, tiny_flexmdm_dir, capsys):
    code, text = run_inspect(tiny_llada_dir, capsys)
    assert code == 0 and "kind: llada model" in text and "problems: none" in text
    assert f"total {numel_by_prefix(tiny_llada_dir)['model']:,}" in text
    report = inspect_folder(tiny_flexmdm_dir)
    counts = numel_by_prefix(tiny_flexmdm_dir)
    assert report.kind == "flexmdm model" and report.model_type == "flexmdm" and report.problems == []
    assert report.params == {"total": sum(counts.values()), "backbone": counts["backbone"],
                             "graft": sum(counts.values()) - counts["backbone"]}  # fmt: skip
    assert report.dtypes == {"F32": sum(counts.values())}


def test_training_checkpoint(trained_checkpoint, capsys):
    code, text = run_inspect(trained_checkpoint.ckpt, capsys)
    assert code == 0 and "kind: training checkpoint (trainer+peft)" in text and "step: 7" in text
    report = inspect_folder(trained_checkpoint.ckpt)
    sizes = {
        k: t.numel() for k, t in load_file(trained_checkpoint.ckpt / "adapter_model.safetensors").items()
    }
    lora = sum(n for k, n in sizes.items() if ".lora_" in k)
    assert report.params == {
        "total": sum(sizes.values()),
        "lora": lora,
        "modules_to_save": sum(sizes.values()) - lora,
    }
    assert lora == 4 * (3 * 2 * (64 + 64) + (64 + 320))  # r (in + out): q/k/v of 2 blocks, the 64->320 head


def test_zero_checkpoint_layout(trained_checkpoint, tmp_path, capsys):
    ckpt = shutil.copytree(trained_checkpoint.ckpt, tmp_path / "checkpoint-7")
    (ckpt / "adapter_model.safetensors").unlink()
    (ckpt / "global_step7").mkdir()
    (ckpt / "global_step7" / "zero_pp_rank_0_mp_rank_00_model_states.pt").write_bytes(b"never unpickled")
    (ckpt / "latest").write_text("global_step7")
    old = read_manifest(ckpt)
    write_manifest(ckpt, **{k: old[k] for k in ("kind", "model_config", "lora", "recipe", "step")},
                   base_model=old["base_model"]["path"])  # fmt: skip
    code, text = run_inspect(ckpt, capsys)
    assert code == 0 and "kind: zero checkpoint" in text and "ZeRO global_step7: 1 files, 15 bytes" in text


def test_export_folder_cli_json(exported):
    done = subprocess.run([sys.executable, "-m", "retrofit.cli", "inspect", str(exported), "--json"],
                          capture_output=True, text=True, cwd=REPO, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["kind"] == "export" and report["model_type"] == "flexmdm" and report["problems"] == []
    counts = numel_by_prefix(exported)
    assert report["params"]["total"] == sum(counts.values()) and report["dtypes"] == {
        "BF16": sum(counts.values())
    }
    assert len(report["shards"]) > 2 and report["shards"] == sorted(report["shards"])


def _drop_shard(folder: Path) -> str:
    shard = sorted(folder.glob("model-*.safetensors"))[1]
    shard.unlink()
    return f"{shard}: listed in model.safetensors.index.json but missing"


def _edit_card(folder: Path) -> str:
    text = (folder / "README.md").read_text()
    (folder / "README.md").write_text(text.replace("Merged", "merged"))  # same size, other bytes
    return "README.md: sha256 differs from the manifest"


def _incomplete(folder: Path) -> str:
    manifest = json.loads((folder / "retrofit_manifest.json").read_text())
    (folder / "retrofit_manifest.json").write_text(json.dumps({**manifest, "complete": False}))
    return "'complete' is not true (the export did not finish)"


def _truncate(folder: Path) -> str:
    shard = sorted(folder.glob("model-*.safetensors"))[0]
    shard.write_bytes(shard.read_bytes()[:-2])
    return f"{shard}: truncated safetensors file"


def _bad_index(folder: Path) -> str:
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    index["weight_map"]["ghost.weight"] = sorted(set(index["weight_map"].values()))[0]
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    return "lacks 1 tensors the index puts there, e.g. 'ghost.weight'"


@pytest.mark.parametrize("damage", [_drop_shard, _edit_card, _incomplete, _truncate, _bad_index])
def test_export_problems(exported, tmp_path, capsys, damage):
    folder = shutil.copytree(exported, tmp_path / "export")
    expected = damage(folder)
    code, text = run_inspect(folder, capsys)
    assert code == 1 and "kind: export" in text and expected in text, text


def test_other_folders_are_problems(trained_checkpoint, tiny_llada_dir, tmp_path, capsys):
    code, text = run_inspect(tmp_path, capsys)
    assert code == 1 and "not a model or checkpoint folder" in text
    other = shutil.copytree(tiny_llada_dir, tmp_path / "gpt2")
    (other / "config.json").write_text('{"model_type": "gpt2"}')
    assert inspect_folder(other).problems == [
        f"{other / 'config.json'}: model_type 'gpt2' is not llada or flexmdm"
    ]
    ckpt = shutil.copytree(trained_checkpoint.ckpt, tmp_path / "ckpt")
    (ckpt / "adapter_model.safetensors").unlink()
    (ckpt / MANIFEST_NAME).write_text(
        (ckpt / MANIFEST_NAME).read_text().replace('"complete": true', '"complete": false')
    )
    problems = inspect_folder(ckpt, check_hashes=False).problems
    assert any("'complete' is not true" in p for p in problems)
    assert any("adapter_model.safetensors: listed in the manifest but missing" in p for p in problems)
    assert run_inspect(tmp_path / "absent", capsys)[0] == 1
