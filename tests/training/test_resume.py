"""Checkpoints and resume of `retrofit.train` (tiny FlexMDM recipe, one CPU process, fp32).

* 20 steps straight == 10 steps + resume + 10 steps: identical adapter / graft tensors (bitwise)
  and identical logged losses (model, optimizer, scheduler, RNG, data position and the
  collator's time-band counter are all restored).
* Checkpoints are atomic (no staging leftovers), hold a complete manifest, and only the last
  `save_total_limit` remain.
* SIGTERM mid-run saves the current step and stops; `resume_from_checkpoint=auto` finishes.
* An incomplete or corrupt checkpoint is refused with a message.
* `init_from` starts a new stage from an earlier checkpoint: "continue" loads its tensors,
  "merge" folds the LoRA into the base and adds a fresh one (same function at step 0).
* `mode: pretrain` writes an official-layout LLaDA folder at the end.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from retrofit.train import run_training
from retrofit.training.checkpoint import CheckpointError, verify_checkpoint
from retrofit.training.model_builder import build_model
from retrofit.training.recipe import load_recipe
from retrofit.training.resume import resolve_resume
from retrofit.training.trainer import STAGING_DIR, FlexMDMTrainer

REPO = Path(__file__).resolve().parents[2]
ADAPTER = "adapter_model.safetensors"


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory) -> Path:
    from retrofit.models.tiny import write_tiny_llada

    return write_tiny_llada(tmp_path_factory.mktemp("base") / "llada", layers=2, d_model=32, heads=4, seed=0)


@pytest.fixture(scope="module")
def count_data(tmp_path_factory) -> Path:
    """Tiny SFT pairs 'count 7 x:' -> 'xxxxxxx' (response length set by the prompt)."""
    gen = torch.Generator().manual_seed(0)
    path = tmp_path_factory.mktemp("data") / "count.jsonl"
    with path.open("w") as f:
        for _ in range(200):
            n, c = (
                int(torch.randint(1, 41, (1,), generator=gen)),
                "abxyz"[int(torch.randint(0, 5, (1,), generator=gen))],
            )
            f.write(json.dumps({"prompt": f"count {n} {c}:", "response": c * n}) + "\n")
    return path


def tiny_recipe(base: Path, data: Path, out: Path, *extra: str, name: str = "flexmdm-sft.yaml"):
    return load_recipe(
        REPO / "recipes" / "tiny" / name,
        [
            f"model.base={base}",
            f"data.train=[{{format: sft, source: {data}, template: plain, prompt_field: prompt, response_field: response}}]",
            "data.max_length=64",
            "training.loss_normalizer=64",
            "lora.r=4",
            "lora.alpha=8",
            "training.per_device_train_batch_size=4",
            "training.gradient_accumulation_steps=2",
            "training.logging_steps=1",
            "training.disable_tqdm=true",
            f"training.output_dir={out}",
            *extra,
        ],
    )


@pytest.fixture(scope="module")
def straight_run(tiny_base, count_data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "a"
    recipe = tiny_recipe(tiny_base, count_data, out, "training.max_steps=20", "training.save_steps=5")
    recipe.training.save_total_limit = 3
    assert run_training(recipe) == 0
    return out


def losses(checkpoint: Path) -> list[float]:
    history = json.loads((checkpoint / "trainer_state.json").read_text())["log_history"]
    return [h["loss"] for h in history if "loss" in h]


def test_checkpoints_are_atomic_complete_and_rotated(straight_run):
    assert sorted(p.name for p in straight_run.iterdir()) == [
        "checkpoint-10",
        "checkpoint-15",
        "checkpoint-20",
    ]
    assert not (straight_run / STAGING_DIR).exists()
    for ckpt in straight_run.iterdir():
        assert verify_checkpoint(ckpt) == []
        manifest = json.loads((ckpt / "retrofit_checkpoint.json").read_text())
        assert manifest["kind"] == "flexmdm" and manifest["complete"] is True
        assert manifest["step"] == int(ckpt.name.split("-")[1])
        tensors = load_file(ckpt / ADAPTER)
        assert not any(".base_layer." in k or "wte" in k for k in tensors)  # trainable tensors only
        assert any("lora_A" in k for k in tensors) and any("length_head" in k for k in tensors)


def test_resume_equals_straight_run(straight_run, tiny_base, count_data, tmp_path):
    out = tmp_path / "b"
    out.mkdir()
    shutil.copytree(straight_run / "checkpoint-10", out / "checkpoint-10")
    recipe = tiny_recipe(
        tiny_base, count_data, out, "training.max_steps=20", "training.save_steps=5",
        "training.resume_from_checkpoint=auto",
    )  # fmt: skip
    assert run_training(recipe) == 0
    want, got = (
        load_file(straight_run / "checkpoint-20" / ADAPTER),
        load_file(out / "checkpoint-20" / ADAPTER),
    )
    assert want.keys() == got.keys()
    for key in want:
        assert torch.equal(want[key], got[key]), key
    assert losses(out / "checkpoint-20") == losses(straight_run / "checkpoint-20")
    assert len(losses(out / "checkpoint-20")) == 20


def test_sigterm_saves_the_step_and_auto_resume_finishes(tiny_base, count_data, tmp_path, monkeypatch):
    out = tmp_path / "run"
    original = FlexMDMTrainer.training_step

    def step_then_signal(self, model, inputs, num_items_in_batch=None):
        if self.state.global_step == 2:
            os.kill(os.getpid(), signal.SIGTERM)  # preemption during step 3
        return original(self, model, inputs, num_items_in_batch)

    monkeypatch.setattr(FlexMDMTrainer, "training_step", step_then_signal)
    recipe = tiny_recipe(tiny_base, count_data, out, "training.max_steps=6", "training.save_steps=100")
    assert run_training(recipe) == 0
    assert [p.name for p in out.iterdir()] == ["checkpoint-3"]
    assert verify_checkpoint(out / "checkpoint-3") == []
    assert signal.getsignal(signal.SIGTERM) is not None  # handlers restored after training
    monkeypatch.setattr(FlexMDMTrainer, "training_step", original)
    recipe = tiny_recipe(
        tiny_base, count_data, out, "training.max_steps=6", "training.save_steps=100",
        "training.resume_from_checkpoint=auto",
    )  # fmt: skip
    assert run_training(recipe) == 0
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint-3", "checkpoint-6"]
    assert len(losses(out / "checkpoint-6")) == 6


def test_incomplete_or_corrupt_checkpoints_are_refused(straight_run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(straight_run, out)
    assert resolve_resume("auto", str(out)) == str(out / "checkpoint-20")
    assert resolve_resume("auto", str(tmp_path / "empty")) is None
    (out / "checkpoint-20" / "retrofit_checkpoint.json").unlink()  # save interrupted before the manifest
    with pytest.raises(CheckpointError, match=r"refusing to resume from .*checkpoint-20.*not found"):
        resolve_resume("auto", str(out))
    with (out / "checkpoint-15" / ADAPTER).open("ab") as f:
        f.write(b"\0")
    with pytest.raises(CheckpointError, match=r"refusing to resume .*adapter_model.safetensors: size"):
        resolve_resume(str(out / "checkpoint-15"), str(out))
    assert resolve_resume(str(out / "checkpoint-10"), str(out)) == str(out / "checkpoint-10")


@torch.no_grad()
def test_init_from_continues_or_merges_an_earlier_stage(straight_run, tiny_base, count_data, tmp_path):
    ckpt = straight_run / "checkpoint-20"
    saved = load_file(ckpt / ADAPTER)
    probe = {
        "input_ids": torch.randint(3, 250, (2, 16), generator=torch.Generator().manual_seed(0)),
        "t": torch.tensor([0.3, 0.8]),
    }
    outputs = {}
    for mode in ("continue", "merge"):
        recipe = tiny_recipe(
            tiny_base, count_data, tmp_path / mode, f"model.init_from={ckpt}", f"model.init_lora={mode}"
        )
        model, info = build_model(recipe, str(tiny_base), recipe.data.max_length)
        state = {
            k.replace(".default", "").replace(".modules_to_save", ""): v
            for k, v in model.state_dict().items()
        }
        if mode == "continue":
            for key, value in saved.items():
                assert torch.equal(state[key], value), key
        else:  # fresh LoRA (B = 0) on merged base weights; graft modules carried over
            assert all(not v.any() for k, v in state.items() if "lora_B" in k)
            assert all(torch.equal(state[k], v) for k, v in saved.items() if "lora" not in k)
        assert info["kind"] == "flexmdm" and info["lora"]["r"] == 4
        out = model.eval()(**probe)
        outputs[mode] = (out.logits, out.expected_gaps)
    torch.testing.assert_close(outputs["merge"][0], outputs["continue"][0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(outputs["merge"][1], outputs["continue"][1], atol=1e-4, rtol=1e-5)


def test_pretrain_writes_an_official_llada_folder(tiny_base, count_data, tmp_path):
    from retrofit.models.loading import load_llada
    from retrofit.models.tiny import OFFICIAL_CONFIG_KEYS

    out = tmp_path / "pre"
    recipe = tiny_recipe(
        tiny_base, count_data, out, "training.max_steps=3", "training.save_steps=100", name="pretrain.yaml"
    )
    assert recipe.mode == "pretrain" and recipe.training.loss == "mdm"
    assert run_training(recipe) == 0
    final = out / "final"
    config = json.loads((final / "config.json").read_text())
    assert set(config) == set(OFFICIAL_CONFIG_KEYS) and config["model_type"] == "llada"
    index = json.loads((final / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) >= 2 and (final / "tokenizer.json").is_file()
    trained = load_llada(final)
    before = load_llada(tiny_base)
    ckpt = load_file(out / "checkpoint-3" / "model.safetensors")
    for name, param in trained.named_parameters():
        assert torch.equal(param, ckpt[name]), name
    assert any(not torch.equal(p, q) for p, q in zip(trained.parameters(), before.parameters()))


def test_mdm_baseline_recipe_trains_lora_and_evaluates(tiny_base, count_data, tmp_path):
    out = tmp_path / "mdm"
    eval_spec = f"[{{format: sft, source: {count_data}, template: plain, prompt_field: prompt, response_field: response, limit: 8}}]"
    recipe = tiny_recipe(
        tiny_base, count_data, out, "training.max_steps=4", "training.save_steps=4", f"data.eval={eval_spec}",
        "training.eval_strategy=steps", "training.eval_steps=2", "training.per_device_eval_batch_size=4",
        name="mdm-sft.yaml",
    )  # fmt: skip
    assert recipe.training.loss == "mdm"
    assert run_training(recipe) == 0
    manifest = json.loads((out / "checkpoint-4" / "retrofit_checkpoint.json").read_text())
    assert manifest["kind"] == "llada" and manifest["model_config"]["model_type"] == "llada"
    tensors = load_file(out / "checkpoint-4" / ADAPTER)
    assert tensors and all("lora_" in k for k in tensors)  # LoRA only: no graft in the baseline
    history = json.loads((out / "checkpoint-4" / "trainer_state.json").read_text())["log_history"]
    evals = [h["eval_loss"] for h in history if "eval_loss" in h]
    assert len(evals) == 2 and all(math.isfinite(v) and v > 0 for v in evals)


def test_grafted_folder_as_base_equals_grafting_in_the_trainer(straight_run, tiny_base, count_data, tmp_path):
    """`retrofit graft` output as model.base (the README's 8B workflow) trains exactly like grafting
    inside the trainer with the same seed: the same logged losses while the two LR schedules
    (5 vs 20 max steps) still agree (the first 3 steps)."""
    from retrofit.graft import graft_checkpoint

    grafted = graft_checkpoint(tiny_base, tmp_path / "graft", dtype=torch.float32, seed=0, canvas_width=64)
    out = tmp_path / "g"
    recipe = tiny_recipe(grafted, count_data, out, "training.max_steps=5", "training.save_steps=5")
    assert run_training(recipe) == 0
    assert losses(out / "checkpoint-5")[:3] == losses(straight_run / "checkpoint-20")[:3]
    manifest = json.loads((out / "checkpoint-5" / "retrofit_checkpoint.json").read_text())
    assert manifest["kind"] == "flexmdm" and Path(manifest["base_model"]["path"]) == Path(grafted).absolute()

    bad = tiny_recipe(grafted, count_data, tmp_path / "bad", "objective.insertion_schedule=linear")
    with pytest.raises(ValueError, match="objective.insertion_schedule"):
        build_model(bad, str(grafted), bad.data.max_length)
