"""FlexMDMTrainer's checkpoints: atomic, with their manifest, rotated -- without private overrides.

* `FlexMDMTrainer` (and its `AtomicCheckpoints` callback) override no private method of
  `transformers.Trainer` / `TrainerCallback` (the checker is shown to catch one).
* While checkpoint-N is being completed (manifest being written), no `checkpoint-N` exists under
  `output_dir` and `resume_from_checkpoint=auto` picks the previous checkpoint; afterwards each
  `checkpoint-N` holds a verified manifest, only the last `save_total_limit` remain, no
  staging folder is left and `args.output_dir` is the run folder again.
* A save killed before its manifest leaves no `checkpoint-N` (auto resumes the previous one);
  the next run clears the leftover and re-saves the step, replacing an older folder of that step.
* `save_strategy="epoch"` saves are staged the same way; the step training stops at is saved
  once (also when a callback stops it between saves); a save decided by a callback added after
  the trainer was built is completed in place (manifest added).
* `rotate_checkpoints` keeps the newest by step number (checkpoint-10 is newer than checkpoint-9).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import Trainer, TrainerCallback

from retrofit.models.llada import LLaDAConfig, LLaDAModelLM
from retrofit.training.args import RetrofitTrainingArguments
from retrofit.training.checkpoint import MANIFEST_NAME, verify_checkpoint
from retrofit.training.collator import MDMCollator
from retrofit.training.lora import wrap_with_lora
from retrofit.training.resume import resolve_resume
from retrofit.training.sections import LoraRecipe
from retrofit.training.trainer import STAGING_DIR, AtomicCheckpoints, FlexMDMTrainer, rotate_checkpoints

PAD, MASK, VOCAB, WIDTH = 298, 299, 300, 32


def private_overrides(cls: type, base: type) -> list[str]:
    """Names `cls` defines (not inherits) that start with "_" (dunders aside) and exist on `base`."""
    return sorted(
        name
        for name in vars(cls)
        if name.startswith("_")
        and not (name.startswith("__") and name.endswith("__"))
        and hasattr(base, name)
    )


def test_no_private_transformers_method_is_overridden():
    assert private_overrides(FlexMDMTrainer, Trainer) == []
    assert private_overrides(AtomicCheckpoints, TrainerCallback) == []

    class Overriding(FlexMDMTrainer):  # what the trainer did before: the checker must see it
        def _save_checkpoint(self, model, trial):
            pass

        def _get_output_dir(self, trial):
            pass

    assert private_overrides(Overriding, Trainer) == ["_get_output_dir", "_save_checkpoint"]


def test_rotate_checkpoints_keeps_the_newest_by_step(tmp_path):
    for name in ("checkpoint-9", "checkpoint-10", "checkpoint-2", "checkpoint-x", "final"):
        (tmp_path / name).mkdir()
    assert rotate_checkpoints(str(tmp_path), None) == []
    assert rotate_checkpoints(str(tmp_path), 0) == []
    assert rotate_checkpoints(str(tmp_path), 2) == [str(tmp_path / "checkpoint-2")]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "checkpoint-10",
        "checkpoint-9",
        "checkpoint-x",
        "final",
    ]
    assert rotate_checkpoints(str(tmp_path), 1) == [str(tmp_path / "checkpoint-9")]


# ---------------------------------------------------------------------------- tiny runs


def tiny_model():
    torch.manual_seed(0)
    config = LLaDAConfig(
        d_model=16, n_heads=2, n_kv_heads=2, n_layers=1, mlp_hidden_size=32, vocab_size=VOCAB,
        embedding_size=320, mask_token_id=MASK, pad_token_id=PAD, eos_token_id=PAD,
    )  # fmt: skip
    return wrap_with_lora(LLaDAModelLM(config), LoraRecipe(r=2, alpha=4, dropout=0.0), [])


def rows(n: int) -> list[dict]:
    gen = torch.Generator().manual_seed(0)
    return [
        {"input_ids": torch.randint(2, 290, (int(torch.randint(8, WIDTH, (1,), generator=gen)),)).tolist(),
         "prompt_length": 2}
        for _ in range(n)
    ]  # fmt: skip


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("base")
    (base / "config.json").write_text('{"model_type": "llada"}')
    return base


def make_trainer(out: Path, base: Path, *, callbacks=None, n_rows: int = 16, **kw) -> FlexMDMTrainer:
    settings = dict(
        output_dir=str(out), optim="sgd", learning_rate=0.1, lr_scheduler_type="constant", loss="mdm",
        per_device_train_batch_size=2, max_steps=6, save_strategy="steps", save_steps=2,
        logging_steps=1, report_to="none", disable_tqdm=True, use_cpu=True, seed=0,
        loss_normalizer=float(WIDTH),
    )  # fmt: skip
    settings.update(kw)
    args = RetrofitTrainingArguments(**settings)
    info = {"kind": "llada", "base_model": base, "model_config": {}, "lora": {"r": 2}, "recipe": {}}
    return FlexMDMTrainer(
        model=tiny_model(),
        args=args,
        train_dataset=rows(n_rows),
        data_collator=MDMCollator(mask_id=MASK, pad_id=PAD, canvas_width=WIDTH),
        callbacks=callbacks,
        manifest_info=info,
    )


def checkpoints(out: Path) -> list[str]:
    return sorted(
        (p.name for p in out.iterdir() if p.name.startswith("checkpoint-")), key=lambda n: int(n[11:])
    )


def test_a_checkpoint_appears_only_complete(tmp_path, base_dir):
    out = tmp_path / "run"
    trainer = make_trainer(out, base_dir, save_total_limit=2)
    seen = []
    write = next(cb for cb in trainer.callback_handler.callbacks if isinstance(cb, AtomicCheckpoints))
    complete = write.write_manifest

    def observed(folder: str, step: int) -> None:
        # what a reader sees while checkpoint-<step> is being completed
        seen.append(
            {
                "step": step,
                "folder": Path(folder).relative_to(out).as_posix(),
                "files": sorted(p.name for p in Path(folder).iterdir()),
                "visible": checkpoints(out),
                "auto": resolve_resume("auto", str(out)),
                "output_dir": trainer.args.output_dir,
            }
        )
        complete(folder, step)

    write.write_manifest = observed
    trainer.train()
    assert [s["step"] for s in seen] == [2, 4, 6]
    for s, visible, auto in zip(seen, [[], ["checkpoint-2"], ["checkpoint-2", "checkpoint-4"]], [None, 2, 4]):
        assert s["folder"] == f"{STAGING_DIR}/checkpoint-{s['step']}"
        assert {"adapter_model.safetensors", "optimizer.pt", "scheduler.pt", "rng_state.pth"} <= set(
            s["files"]
        )
        assert "trainer_state.json" in s["files"] and MANIFEST_NAME not in s["files"]
        assert s["visible"] == visible  # checkpoint-<step> itself is not there yet
        assert s["auto"] == (None if auto is None else str(out / f"checkpoint-{auto}"))
        assert s["output_dir"] == str(out)  # restored before the manifest is written
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint-4", "checkpoint-6"]  # save_total_limit=2
    for name in ("checkpoint-4", "checkpoint-6"):
        assert verify_checkpoint(out / name) == []
        manifest = json.loads((out / name / MANIFEST_NAME).read_text())
        assert manifest["step"] == int(name[11:]) and manifest["kind"] == "llada"
        assert manifest["parallelism"] == {"world_size": 1, "zero_stage": None}
        assert json.loads((out / name / "trainer_state.json").read_text())["global_step"] == int(name[11:])
    assert trainer.args.output_dir == str(out)
    assert resolve_resume("auto", str(out)) == str(out / "checkpoint-6")


def test_a_save_killed_before_its_manifest_is_never_seen(tmp_path, base_dir):
    out = tmp_path / "run"
    trainer = make_trainer(out, base_dir)
    cb = next(cb for cb in trainer.callback_handler.callbacks if isinstance(cb, AtomicCheckpoints))
    complete = cb.write_manifest

    def killed_at_4(folder: str, step: int) -> None:
        if step == 4:
            raise KeyboardInterrupt("killed while hashing checkpoint-4")
        complete(folder, step)

    cb.write_manifest = killed_at_4
    with pytest.raises(KeyboardInterrupt):
        trainer.train()
    assert checkpoints(out) == ["checkpoint-2"]
    assert (out / STAGING_DIR / "checkpoint-4" / "trainer_state.json").is_file()  # the unfinished save
    assert resolve_resume("auto", str(out)) == str(out / "checkpoint-2")

    # an older checkpoint-4 (e.g. from a run that went further) is replaced, not merged into
    (out / "checkpoint-4").mkdir()
    (out / "checkpoint-4" / "stale.bin").write_bytes(b"old")
    (out / "checkpoint-4" / MANIFEST_NAME).write_text("{}")
    resumed = make_trainer(out, base_dir)
    resumed.train(resume_from_checkpoint=str(out / "checkpoint-2"))
    assert checkpoints(out) == ["checkpoint-2", "checkpoint-4", "checkpoint-6"]
    assert not (out / STAGING_DIR).exists()  # the leftover was cleared before the first new save
    assert not (out / "checkpoint-4" / "stale.bin").exists()
    for name in checkpoints(out):
        assert verify_checkpoint(out / name) == []


class SaveAtStep3(TrainerCallback):
    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == 3:
            control.should_save = True
        return control


class StopAtStep3(TrainerCallback):
    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == 3:
            control.should_training_stop = True
        return control


def saves_of(trainer: FlexMDMTrainer) -> list[int]:
    """Record the step of every checkpoint the trainer completes (list filled during train)."""
    cb = next(cb for cb in trainer.callback_handler.callbacks if isinstance(cb, AtomicCheckpoints))
    steps, complete = [], cb.write_manifest

    def recording(folder: str, step: int) -> None:
        steps.append(step)
        complete(folder, step)

    cb.write_manifest = recording
    return steps


def test_epoch_saves_are_staged_and_late_decisions_complete_in_place(tmp_path, base_dir):
    out = tmp_path / "epochs"
    trainer = make_trainer(out, base_dir, n_rows=8, max_steps=-1, num_train_epochs=2, save_strategy="epoch")
    saved = saves_of(trainer)
    trainer.train()
    assert saved == [4, 8]  # 8 rows / batch 2 = 4 steps an epoch; the last step is saved once
    assert checkpoints(out) == ["checkpoint-4", "checkpoint-8"]
    assert all(verify_checkpoint(out / name) == [] for name in checkpoints(out))
    assert not (out / STAGING_DIR).exists()

    out = tmp_path / "stopped"  # a callback stops training between saves: that step is saved
    trainer = make_trainer(out, base_dir, callbacks=[StopAtStep3()], save_steps=100)
    saved = saves_of(trainer)
    trainer.train()
    assert saved == [3] and checkpoints(out) == ["checkpoint-3"]
    assert verify_checkpoint(out / "checkpoint-3") == [] and not (out / STAGING_DIR).exists()

    out = tmp_path / "late"
    trainer = make_trainer(out, base_dir, max_steps=4, save_steps=4)
    trainer.add_callback(SaveAtStep3())  # runs after AtomicCheckpoints: the save is not staged
    trainer.train()
    assert checkpoints(out) == ["checkpoint-3", "checkpoint-4"]
    assert verify_checkpoint(out / "checkpoint-3") == []  # completed in place with its manifest
    assert verify_checkpoint(out / "checkpoint-4") == []
