"""What a tiny CPU `retrofit train` tells the user, and the resume checks around it.

One 2-step FlexMDM run of the tiny recipe, launched as a user would (`python -m retrofit.cli
train ...` in a fresh interpreter, so import-time banners are seen), is shared by the tests:

* log noise: neither stream holds DeepSpeed's accelerator banner, torch's `pin_memory`
  warning or the PEFT `is_gradient_checkpointing` rename warning;
* the run ends by naming its final checkpoint and the `retrofit export` command for it;
  `resume_from_checkpoint=auto` names the checkpoint it picked, or says it found none;
* the manifest records the world size and ZeRO stage; a checkpoint recorded as 2-process ZeRO-3
  is refused when resumed by 1 process (before any model loads), naming both world sizes and
  the two options; DeepSpeed shard names give the world size of checkpoints that lack the record;
* `model.base` set to a training checkpoint, or to a missing path, is refused with the fix.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from retrofit.train import run_training
from retrofit.training.checkpoint import CheckpointError, read_manifest, write_manifest
from retrofit.training.model_builder import resolve_local
from retrofit.training.recipe import load_recipe
from retrofit.training.resume import check_resume_parallelism, saved_parallelism

REPO = Path(__file__).resolve().parents[2]
NOISE = (
    "Setting accelerator to CPU",  # DeepSpeed's accelerator banner (0.19)
    "Setting ds_accelerator to",  # the same banner in other DeepSpeed versions
    "pin_memory",  # torch DataLoader on a machine without an accelerator
    "is_gradient_checkpointing",  # transformers 5.x FutureWarning raised inside peft
)


def overrides(base: Path, data: Path, out: Path, *extra: str) -> list[str]:
    source = (
        f"{{format: sft, source: {data}, template: plain, prompt_field: prompt, response_field: response}}"
    )
    return [
        f"model.base={base}",
        f"data.train=[{source}]",
        "data.max_length=32",
        "training.loss_normalizer=32",
        "lora.r=4",
        "lora.alpha=8",
        "model.graft.adaln_group_size=1",
        "training.per_device_train_batch_size=4",
        "training.gradient_accumulation_steps=1",
        "training.max_steps=2",
        "training.save_steps=100",
        "training.logging_steps=1",
        f"training.output_dir={out}",
        *extra,
    ]


def tiny_recipe(base: Path, data: Path, out: Path, *extra: str):
    return load_recipe(REPO / "recipes" / "tiny" / "flexmdm-sft.yaml", overrides(base, data, out, *extra))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """The shared 2-step run: (base, data, output_dir, completed process)."""
    from retrofit.models.tiny import write_tiny_llada

    root = tmp_path_factory.mktemp("run-reports")
    base = write_tiny_llada(root / "llada", layers=2, d_model=32, heads=4, seed=0)
    data = root / "count.jsonl"
    data.write_text(
        "".join(json.dumps({"prompt": f"count {n}:", "response": "x" * n}) + "\n" for n in range(1, 21))
    )
    out = root / "out"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "RETROFIT_DEBUG": "1"}
    env.pop("DS_ACCELERATOR", None)
    proc = subprocess.run(
        [sys.executable, "-m", "retrofit.cli", "train", str(REPO / "recipes" / "tiny" / "flexmdm-sft.yaml"),
         *overrides(base, data, out)],
        capture_output=True, text=True, cwd=root, env=env, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return base, data, out, proc


def test_a_tiny_cpu_train_prints_no_noise(run):
    proc = run[3]
    for text in NOISE:
        assert text not in proc.stderr, f"{text!r} reached stderr:\n{proc.stderr[-2000:]}"
        assert text not in proc.stdout, f"{text!r} reached stdout"
    assert "'loss':" in proc.stdout  # the run did train and log


def test_the_run_ends_with_its_checkpoint_and_the_export_command(run):
    out, proc = run[2], run[3]
    lines = proc.stdout.strip().splitlines()
    assert lines[-2:] == [
        f"[retrofit] done at step 2; final checkpoint: {out / 'checkpoint-2'}",
        f"[retrofit] next: retrofit export {out / 'checkpoint-2'} --out exports/out",
    ]
    assert (out / "checkpoint-2" / "adapter_model.safetensors").is_file()
    assert "resume" not in proc.stdout  # no resume asked for: nothing said about it


def test_auto_resume_names_the_checkpoint_it_picked(run, tmp_path, capsys):
    base, data, out, _ = run
    resumed = tmp_path / "resumed"
    shutil.copytree(out / "checkpoint-2", resumed / "checkpoint-2")
    recipe = tiny_recipe(base, data, resumed, "training.max_steps=3", "training.resume_from_checkpoint=auto")
    assert run_training(recipe) == 0
    stdout = capsys.readouterr().out
    assert (
        f"[retrofit] resuming from {resumed / 'checkpoint-2'} (the newest complete checkpoint, picked by "
        "training.resume_from_checkpoint=auto)\n"
    ) in stdout
    assert f"final checkpoint: {resumed / 'checkpoint-3'}\n" in stdout
    assert json.loads((resumed / "checkpoint-3" / "trainer_state.json").read_text())["global_step"] == 3

    fresh = tmp_path / "fresh"
    recipe = tiny_recipe(base, data, fresh, "training.max_steps=1", "training.resume_from_checkpoint=auto")
    assert run_training(recipe) == 0
    assert (
        f"training.resume_from_checkpoint=auto: no checkpoint in {fresh}; starting fresh\n"
        in capsys.readouterr().out
    )


def test_the_manifest_records_the_world_size(run):
    manifest = read_manifest(run[2] / "checkpoint-2")
    assert manifest["parallelism"] == {"world_size": 1, "zero_stage": None}
    assert saved_parallelism(run[2] / "checkpoint-2") == (1, None)
    check_resume_parallelism(
        run[2] / "checkpoint-2", world_size=4, zero_stage=None
    )  # full optimizer.pt: fine


def fake_zero_checkpoint(src: Path, dst: Path, world_size: int, stage: int | None) -> Path:
    """Copy a 1-process checkpoint, add DeepSpeed-named per-rank optimizer shards, re-record it."""
    shutil.copytree(src, dst)
    shards = dst / "global_step2"
    shards.mkdir()
    for rank in range(world_size):
        (shards / f"bf16_zero_pp_rank_{rank}_mp_rank_00_optim_states.pt").write_bytes(b"shard")
    manifest = read_manifest(dst)
    fields = {k: manifest[k] for k in ("kind", "model_config", "lora", "recipe", "step")}
    parallelism = {"world_size": world_size, "zero_stage": stage} if stage is not None else None
    write_manifest(dst, base_model=manifest["base_model"]["path"], parallelism=parallelism, **fields)
    return dst


def test_a_zero3_checkpoint_of_2_processes_is_refused_on_1(run, tmp_path, monkeypatch):
    base, data, out, _ = run
    ckpt = fake_zero_checkpoint(
        out / "checkpoint-2", tmp_path / "run" / "checkpoint-2", world_size=2, stage=3
    )
    assert saved_parallelism(ckpt) == (2, 3)

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded before the resume check")

    monkeypatch.setattr("retrofit.train.resolve_local", no_model)
    recipe = tiny_recipe(base, data, tmp_path / "run", f"training.resume_from_checkpoint={ckpt}")
    with pytest.raises(CheckpointError) as info:
        run_training(recipe)
    message = str(info.value)
    assert message.startswith(
        f"refusing to resume from {ckpt}: it was saved by 2 process(es) under DeepSpeed ZeRO-3, "
        "and this run has 1 process(es) without DeepSpeed."
    )
    assert "resume with 2 processes (accelerate launch --num_processes 2" in message
    assert f"model.init_from={ckpt}" in message
    with pytest.raises(CheckpointError, match=r"this run has 1 process\(es\) \(ZeRO-3\)"):
        check_resume_parallelism(ckpt, world_size=1, zero_stage=3)
    check_resume_parallelism(ckpt, world_size=2, zero_stage=3)  # the same layout resumes


def test_older_zero_checkpoints_get_their_world_size_from_the_shard_names(run, tmp_path):
    ckpt = fake_zero_checkpoint(run[2] / "checkpoint-2", tmp_path / "old", world_size=4, stage=None)
    assert read_manifest(ckpt)["parallelism"] == {}
    assert saved_parallelism(ckpt) == (4, None)
    with pytest.raises(
        CheckpointError, match=r"saved by 4 process\(es\) under DeepSpeed ZeRO, and this run has 2"
    ):
        check_resume_parallelism(ckpt, world_size=2, zero_stage=2)
    check_resume_parallelism(ckpt, world_size=4, zero_stage=2)


def test_model_base_gets_the_right_advice(run, tmp_path, monkeypatch):
    ckpt = run[2] / "checkpoint-2"
    from retrofit.models.loading import CheckpointError as ModelFolderError

    with pytest.raises(ModelFolderError, match=rf"use model.base={run[0]} model.init_from={ckpt} to start"):
        resolve_local(str(ckpt))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"^model.base: no such folder: \./missing "):
        resolve_local("./missing")
