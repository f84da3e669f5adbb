"""`FlexMDMTrainer`: a thin `transformers.Trainer` subclass for the FlexMDM and LLaDA (MDM) losses.

What it changes (everything else -- DDP / DeepSpeed, gradient accumulation, clipping, LR
schedule, tqdm progress with ETA, resume of optimizer / scheduler / RNG / data position -- is the
Trainer's own):

- `compute_loss`: `retrofit.training.objective.micro_batch_loss`: the FlexMDM objective
  (docs/method.md §3.2-3.3) with token logits only at mask slots (plain or packed rows, §3.7;
  the token head chunked by `token_head_chunk`), or the LLaDA baseline loss (§3.6). It returns the per-micro-batch loss
  sum / (B_micro * loss_normalizer); the Trainer divides by the accumulation steps
  (`model_accepts_loss_kwargs = False`), so one optimizer step minimises the global-batch
  sum / (global batch * loss_normalizer) whatever the split into micro-batches.
- `create_optimizer`: AdamW (or `args.optim`) over the param groups of docs/method.md §2.9.
- logging: `unmask_loss`, `length_loss` (averaged across ranks), `lr/<group>`, `tokens_per_s`,
  `computed_frac` and `slowest_rank_share` (see `retrofit.training.callbacks.StepStats`).
- checkpoints (`AtomicCheckpoints`, a callback: no private Trainer method is overridden):
  written into `<output_dir>/.tmp-staging/checkpoint-N`, completed with the
  `retrofit_checkpoint.json` manifest (which records the world size and ZeRO stage), then
  renamed to `<output_dir>/checkpoint-N` (atomic); the last `save_total_limit` are kept.
- on CPU, `dataloader_pin_memory` is turned off (pinning needs an accelerator; torch warns).
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from transformers import Trainer, TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from retrofit.training.callbacks import StepStats
from retrofit.training.lora import build_param_groups
from retrofit.training.objective import micro_batch_loss

__all__ = ["STAGING_DIR", "AtomicCheckpoints", "FlexMDMTrainer", "rotate_checkpoints"]

STAGING_DIR = ".tmp-staging"
"""Checkpoints are written below `<output_dir>/.tmp-staging/` and renamed when complete."""


class FlexMDMTrainer(Trainer):
    """HF Trainer for FlexMDM / MDM fine-tuning; construct it like `transformers.Trainer`.

    Args:
        *args, **kwargs: as `transformers.Trainer` (args must be `RetrofitTrainingArguments`).
        manifest_info: keyword arguments of `retrofit.training.checkpoint.write_manifest` except
            `step` (kind, base_model, model_config, lora, recipe); None = no manifest (tests).
        full_row_tokens: tokens of one untrimmed row (canvas width + 1 length slot for FlexMDM,
            canvas width for MDM), the denominator of `computed_frac`.
        eval_data_collator: collator of the eval set (own instance: evaluation must not advance
            the training collator's time-band counter); None = the training collator.

    Checkpoints are atomic through a callback, `AtomicCheckpoints`, added last: it points the
    public `args.output_dir` at `<output_dir>/.tmp-staging` for each save, and in `on_save`
    (after every rank has written its files) adds the manifest and renames the folder into
    place. No private Trainer method is overridden (they were `_save_checkpoint` and
    `_get_output_dir`, the first things to break on an upgrade). Completing the checkpoint in
    place in `on_save` alone would be simpler, but `checkpoint-N` would then exist before its
    manifest: a job killed during the save (SIGTERM, then SIGKILL at the end of the grace time)
    would leave a newest folder that `resume_from_checkpoint=auto` refuses, instead of one it
    never sees, and the Trainer's own `save_total_limit` rotation (run before `on_save`) could
    delete the last complete checkpoint first.
    """

    def __init__(
        self,
        *args: Any,
        manifest_info: dict | None = None,
        full_row_tokens: int = 0,
        eval_data_collator: Any = None,
        **kwargs: Any,
    ):
        training_args = kwargs.get("args", args[1] if len(args) > 1 else None)
        if training_args is not None and training_args.device.type == "cpu":
            # pinned memory only helps copies to an accelerator; on CPU torch warns about it per loader
            training_args.dataloader_pin_memory = False
        super().__init__(*args, **kwargs)
        self.eval_data_collator = eval_data_collator
        # Our loss is a per-micro-batch mean; let the Trainer divide by the accumulation steps.
        self.model_accepts_loss_kwargs = False
        self.loss_is_scaled_for_ga = False
        self.manifest_info = manifest_info
        self.full_row_tokens = int(full_row_tokens)
        self.step_stats = StepStats()
        # added last: it must see every other callback's save decision of a step
        self.add_callback(
            AtomicCheckpoints(
                self._write_manifest if manifest_info is not None else None,
                self.accelerator.wait_for_everyone,
            )
        )

    # ------------------------------------------------------------------ loss

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """Loss of one micro-batch (docs/method.md §3.3); see the module docstring for the scaling contract.

        Args:
            model: the (wrapped) FlexMDMModel or LLaDAModelLM.
            inputs: a collator batch (FlexMDMCollator or MDMCollator keys; never `labels`).
            return_outputs: also return the model output.
            num_items_in_batch: ignored (the normaliser is the fixed B * loss_normalizer).

        Returns:
            float32 scalar loss (and the model output if requested).
        """
        loss, terms, outputs = micro_batch_loss(
            model,
            inputs,
            self.args.loss,
            normalizer=self.args.loss_normalizer,
            head_chunk=self.args.token_head_chunk or None,
            packed_backend=None if self.args.packed_attention == "auto" else self.args.packed_attention,
        )
        if model.training:
            self._record(terms, inputs)
        return (loss, outputs) if return_outputs else loss

    def _record(self, terms: dict[str, torch.Tensor], inputs: dict[str, Any]) -> None:
        batch = inputs["t"].shape[0]  # examples (a packed batch has fewer rows than examples)
        computed = _as_float(inputs.get("num_computed_tokens"), inputs["input_ids"].numel())
        x1_tokens = _as_float(inputs.get("num_x1_tokens"), computed)
        full = batch * self.full_row_tokens if self.full_row_tokens else computed
        accum = getattr(self, "current_gradient_accumulation_steps", 1)  # set by the training loop
        self.step_stats.add(terms, x1_tokens, computed, full, scale=1.0 / accum)
        if self.optimizer is not None:
            self._step_lrs = {
                g.get("name", str(i)): g["lr"] for i, g in enumerate(self.optimizer.param_groups)
            }

    def get_eval_dataloader(self, eval_dataset=None):
        """The Trainer's eval loader, built with `eval_data_collator` when one is given."""
        if self.eval_data_collator is None:
            return super().get_eval_dataloader(eval_dataset)
        train_collator, self.data_collator = self.data_collator, self.eval_data_collator
        try:
            return super().get_eval_dataloader(eval_dataset)
        finally:
            self.data_collator = train_collator

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        """Evaluation: the same loss as training, no predictions (`prediction_loss_only`)."""
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad(), self.compute_loss_context_manager():
            loss = self.compute_loss(model, inputs)
        return loss.detach(), None, None

    # ------------------------------------------------------------------ optimizer and logging

    def create_optimizer(self, model=None):
        """Optimizer (`args.optim`, AdamW by default) over the named groups of docs/method.md §2.9."""
        if self.optimizer is None:
            opt_model = self.model if model is None else model
            groups = build_param_groups(opt_model, self.args)
            optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
            self.optimizer = optimizer_cls(groups, **optimizer_kwargs)
        return self.optimizer

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Add the FlexMDM metrics to the Trainer's training logs (collective on all ranks)."""
        if "loss" in logs and self.model.training:
            logs.update(self.step_stats.reduce(self.accelerator))
            # the lr each group used in the last logged step (the scheduler has already advanced)
            logs.update({f"lr/{name}": lr for name, lr in getattr(self, "_step_lrs", {}).items()})
        super().log(logs, start_time)

    # ------------------------------------------------------------------ atomic checkpoints

    def parallelism(self) -> dict[str, int | None]:
        """{"world_size", "zero_stage"} of this run (stage None without DeepSpeed), for the manifest."""
        stage = self.accelerator.state.deepspeed_plugin.zero_stage if self.is_deepspeed_enabled else None
        return {"world_size": int(self.accelerator.num_processes), "zero_stage": stage}

    def _write_manifest(self, folder: str, step: int) -> None:
        from retrofit.training.checkpoint import write_manifest

        write_manifest(folder, step=step, parallelism=self.parallelism(), **self.manifest_info)


class AtomicCheckpoints(TrainerCallback):
    """Make each `<output_dir>/checkpoint-N` appear complete, with its manifest, or not at all.

    Public mechanisms only (no private `Trainer` method is overridden): the Trainer writes a
    checkpoint below `args.output_dir`, read at each save, and calls `on_save` on every rank
    once all of its files are written. So, on every rank:

    - `on_step_end` / `on_epoch_end` (added last, so they see the final `control.should_save`):
      when this step saves, the main process clears `<output_dir>/.tmp-staging/` (anything
      there is an interrupted save), all ranks meet, and `args.output_dir` is pointed at the
      staging folder for this save only;
    - the Trainer writes `.tmp-staging/checkpoint-N` (each rank its own files: ZeRO shards, RNG
      state); its own `save_total_limit` rotation finds only that folder there and deletes nothing;
    - `on_save`: `args.output_dir` is restored; after a barrier the main process writes the
      manifest (`write_manifest(folder, step)`), renames the folder to `<output_dir>/checkpoint-N`
      (`os.replace`: atomic on one file system; an older folder of the same step is removed
      first) and keeps the newest `args.save_total_limit` checkpoint folders; a second barrier
      holds the other ranks until the folder is in place.

    The step training stops at is always saved (unless `save_strategy="no"`): the Trainer itself
    does so only for `save_strategy="steps"` at `max_steps` and at epoch ends, not when a callback
    stops training early; an epoch end right after that save does not save the step again.

    A process killed at any point leaves either no `checkpoint-N` or a complete one, so
    `resume_from_checkpoint=auto` (the newest `checkpoint-N`) falls back to the previous
    checkpoint. A save this callback did not see coming (`save_strategy="best"`, whose decision
    follows the evaluation, or a callback added after this one) is written in place; `on_save`
    then only adds the manifest, and readers, which require it, refuse the folder until then.

    Args:
        write_manifest: `(folder, step) -> None`, writes `retrofit_checkpoint.json` into the
            finished folder; None = no manifest (tests of the Trainer alone).
        barrier: waits for every rank (`accelerator.wait_for_everyone`).
    """

    def __init__(self, write_manifest: Callable[[str, int], None] | None, barrier: Callable[[], None]):
        self.write_manifest = write_manifest
        self.barrier = barrier
        self.run_dir: str | None = None  # the real output_dir while a save is staged
        self.saved_step = -1

    def _stage(self, args, control):
        if control.should_save and self.run_dir is None:
            staging = os.path.join(args.output_dir, STAGING_DIR)
            if args.should_save and os.path.exists(staging):
                shutil.rmtree(staging)  # left over by an interrupted save
            self.barrier()
            self.run_dir, args.output_dir = args.output_dir, staging
        return control

    def on_step_end(self, args, state, control, **kwargs):
        if control.should_training_stop and args.save_strategy != "no":
            control.should_save = True  # the last step is always saved (the run's result)
        return self._stage(args, control)

    def on_epoch_end(self, args, state, control, **kwargs):
        if control.should_save and state.global_step == self.saved_step:
            control.should_save = False  # this step's end has just saved it
        return self._stage(args, control)

    def on_save(self, args, state, control, **kwargs):
        name = f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
        if self.run_dir is None:  # written in place (see the class docstring)
            staged = final = os.path.join(args.output_dir, name)
        else:
            args.output_dir, self.run_dir = self.run_dir, None
            staged, final = (
                os.path.join(args.output_dir, STAGING_DIR, name),
                os.path.join(args.output_dir, name),
            )
        self.barrier()  # every rank has written its files
        if args.should_save:
            self._publish(staged, final, state.global_step, args.save_total_limit)
        self.barrier()
        self.saved_step = state.global_step
        return control

    def on_train_end(self, args, state, control, **kwargs):
        if self.run_dir is not None:  # staged, then not saved (save_strategy="best": no new best)
            args.output_dir, self.run_dir = self.run_dir, None
        return control

    def _publish(self, staged: str, final: str, step: int, keep: int | None) -> None:
        if not os.path.isdir(staged):
            raise RuntimeError(
                f"{staged}: the Trainer did not write checkpoint-{step} there; this transformers version "
                "does not save below args.output_dir as read at save time, which retrofit's atomic "
                "checkpoints need (retrofit.training.trainer.AtomicCheckpoints)"
            )
        if self.write_manifest is not None:
            self.write_manifest(staged, step)
        if staged != final:
            if os.path.exists(final):  # same step saved again (e.g. a resumed run)
                shutil.rmtree(final)
            os.replace(staged, final)
            with contextlib.suppress(OSError):  # leave no empty staging folder behind
                os.rmdir(os.path.dirname(staged))
        rotate_checkpoints(os.path.dirname(final), keep)


def rotate_checkpoints(run_dir: str, keep: int | None) -> list[str]:
    """Delete all but the newest `keep` `checkpoint-N` folders of `run_dir` (by step N).

    Args:
        run_dir: the run's output_dir.
        keep: how many to keep (`save_total_limit`); None or <= 0 keeps all.

    Returns:
        the deleted folders, oldest first.
    """
    if not keep or keep <= 0:
        return []
    steps = sorted(
        (int(p.name.split("-", 1)[1]), p)
        for p in Path(run_dir).glob(f"{PREFIX_CHECKPOINT_DIR}-*")
        if p.is_dir() and p.name.split("-", 1)[1].isdigit()
    )
    old = [str(p) for _, p in steps[:-keep]]
    for path in old:
        shutil.rmtree(path)
    return old


def _as_float(value: Any, default: float) -> float:
    if value is None:
        return float(default)
    return float(value.sum()) if isinstance(value, torch.Tensor) else float(value)
