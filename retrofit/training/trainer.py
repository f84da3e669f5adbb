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
- checkpoints: written into `<output_dir>/.tmp-staging/checkpoint-N`, completed with the
  `retrofit_checkpoint.json` manifest (which records the world size and ZeRO stage), then
  renamed to `<output_dir>/checkpoint-N` (atomic); the last `save_total_limit` are kept.
- on CPU, `dataloader_pin_memory` is turned off (pinning needs an accelerator; torch warns).
"""

from __future__ import annotations

import contextlib
import os
import shutil
from typing import Any

import torch
from transformers import Trainer
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, rotate_checkpoints

from retrofit.training.callbacks import StepStats
from retrofit.training.lora import build_param_groups
from retrofit.training.objective import micro_batch_loss

__all__ = ["STAGING_DIR", "FlexMDMTrainer"]

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
        self._staging: str | None = None

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

    def _get_output_dir(self, trial) -> str:
        return self._staging if self._staging is not None else super()._get_output_dir(trial)

    def _save_checkpoint(self, model, trial) -> None:
        """Write checkpoint-N in a staging folder, add the manifest, rename, rotate."""
        run_dir = super()._get_output_dir(trial)
        name = f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        staging = os.path.join(run_dir, STAGING_DIR)
        staged, final = os.path.join(staging, name), os.path.join(run_dir, name)
        if self.args.should_save and os.path.exists(staged):
            shutil.rmtree(staged)  # left over by an interrupted save
        self.accelerator.wait_for_everyone()
        self._staging = staging
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self._staging = None
        self.accelerator.wait_for_everyone()
        if self.args.should_save:
            self._finish_checkpoint(staged, final, run_dir)
        self.accelerator.wait_for_everyone()

    def _finish_checkpoint(self, staged: str, final: str, run_dir: str) -> None:
        if self.manifest_info is not None:
            from retrofit.training.checkpoint import write_manifest

            write_manifest(
                staged, step=self.state.global_step, parallelism=self.parallelism(), **self.manifest_info
            )
        if os.path.exists(final):  # same step saved again (e.g. interrupt right after a save)
            shutil.rmtree(final)
        os.replace(staged, final)
        with contextlib.suppress(OSError):  # leave no empty staging folder behind
            os.rmdir(os.path.dirname(staged))
        rotate_checkpoints(
            output_dir=run_dir,
            save_total_limit=self.args.save_total_limit,
            best_model_checkpoint=self.state.best_model_checkpoint,
        )


def _as_float(value: Any, default: float) -> float:
    if value is None:
        return float(default)
    return float(value.sum()) if isinstance(value, torch.Tensor) else float(value)
