"""Training-time logging statistics and the SIGTERM / Ctrl-C checkpoint callback.

- :class:`StepStats` accumulates per-micro-step numbers on each rank (loss terms, x1 tokens,
  computed tokens after trimming) and reduces them across ranks at logging time into
  `unmask_loss`, `length_loss`, `tokens_per_s`, `computed_frac` (computed / full-width tokens)
  and `slowest_rank_share` (per micro-step, the busiest rank's share of the computed tokens:
  1/W when balanced; the step waits for that rank).
- :class:`InterruptCheckpoint` turns SIGTERM (Slurm preemption, `kill`) and SIGINT (Ctrl-C) into
  "save a checkpoint at the end of this optimizer step, then stop". All ranks agree through an
  all-reduce, so a signal that reaches one rank only still stops every rank at the same step.
"""

from __future__ import annotations

import contextlib
import signal
import time
from typing import Any

import torch
from transformers import TrainerCallback

__all__ = ["InterruptCheckpoint", "StepStats"]


class StepStats:
    """Per-rank accumulators between two logging steps (all values detached, on `device`)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Start a new logging window."""
        self.loss_terms: dict[str, float] = {}
        self.micro: list[tuple[float, float, float]] = []  # (x1 tokens, computed, full) per micro-step
        self.steps = 0.0  # optimizer steps in the window (sum of 1/G over micro-steps)
        self.started = time.perf_counter()

    def add(
        self, terms: dict[str, torch.Tensor], x1_tokens: float, computed: float, full: float, scale: float
    ) -> None:
        """Record one micro-step.

        Args:
            terms: scalar loss terms of the micro-batch (already normalised per docs/method.md §3.3).
            x1_tokens: clean tokens in the micro-batch (x1 lengths summed).
            computed: tokens the trunk processed after trimming (B x trimmed width incl. length slot).
            full: tokens at full canvas width (B x (canvas + 1)).
            scale: 1 / gradient-accumulation steps, so sums over a step match the logged loss.
        """
        for name, value in terms.items():
            self.loss_terms[name] = self.loss_terms.get(name, 0.0) + float(value.detach()) * scale
        self.micro.append((float(x1_tokens), float(computed), float(full)))
        self.steps += scale

    def reduce(self, accelerator: Any) -> dict[str, float]:
        """All ranks: average the loss terms over ranks and steps; token rates and fractions.

        Every rank must call this at the same logging step (it runs collectives).

        Returns:
            {"<term>": mean over ranks / steps, "tokens_per_s", "computed_frac", "slowest_rank_share"}.
        """
        names = sorted(self.loss_terms)
        device = accelerator.device
        terms = torch.tensor([self.loss_terms[n] for n in names], dtype=torch.float64, device=device)
        micro = torch.tensor(self.micro or [(0.0, 0.0, 0.0)], dtype=torch.float64, device=device)  # [m, 3]
        if accelerator.num_processes > 1:
            terms = accelerator.reduce(terms, reduction="mean") if names else terms
            micro = accelerator.gather(micro[None]).reshape(accelerator.num_processes, -1, 3)  # [W, m, 3]
        else:
            micro = micro[None]
        elapsed = max(time.perf_counter() - self.started, 1e-9)
        logs = {n: float(v) / max(self.steps, 1e-9) for n, v in zip(names, terms.tolist())}
        computed = micro[..., 1]  # [W, m]
        logs["tokens_per_s"] = float(micro[..., 0].sum()) / elapsed
        logs["computed_frac"] = float(computed.sum() / micro[..., 2].sum().clamp_min(1))
        share = computed.max(dim=0).values / computed.sum(dim=0).clamp_min(1)  # [m]
        logs["slowest_rank_share"] = float(share.mean())
        self.reset()
        return logs


class InterruptCheckpoint(TrainerCallback):
    """Save and stop on SIGTERM / SIGINT (a second Ctrl-C aborts at once).

    The handler only sets a flag; at the end of each optimizer step the flag is max-reduced over
    ranks and, if set anywhere, the step's checkpoint is saved (atomically, by the trainer) and
    training stops. Handlers are restored when training ends.
    """

    def __init__(self) -> None:
        self.requested = 0
        self.interrupted_at: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt  # second Ctrl-C: give up on the clean save
        self.requested = signum

    def on_train_begin(self, args, state, control, **kwargs):
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(ValueError):  # not the main thread: no interrupt saving
                self._previous[sig] = signal.signal(sig, self._handle)
        return control

    def on_step_end(self, args, state, control, **kwargs):
        flag = torch.tensor([self.requested], dtype=torch.int64, device=args.device)
        if args.world_size > 1:  # every rank stops at the same step
            torch.distributed.all_reduce(flag)
        if int(flag.item()) > 0:
            control.should_save = True
            control.should_training_stop = True
            self.interrupted_at = state.global_step
        return control

    def on_train_end(self, args, state, control, **kwargs):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
        return control
