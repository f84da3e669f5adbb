"""Collators: built samples -> noisy training batches (FlexMDM interpolant or LLaDA baseline mask).

`FlexMDMCollator` (docs/method.md §1.3-1.7, §3.5):
  1. right-pad x1 to ``canvas_width`` with an explicit ``x1_mask`` (lengths never come from
     counting pad ids); infilling rows (``infill_cutoff >= 0``) get a freshly drawn
     prefix / middle / suffix split in the boundary format first;
  2. draw t per row: "stratified" (the research code: rank r of W draws its B times in
     [r/W, (r+1)/W)), "banded" (each micro-step covers one contiguous band of t, the same band on
     all ranks; over one optimizer step the strata are exactly those of stratified sampling of the
     global batch), or "uniform";
  3. `sample_interpolant` -> x_t, targets, gaps, ELBO weights;
  4. ``trim``: cut the batch to its longest x_t (slots to max n, gaps to max n + 1). A slot with a
     target or a gap is never dropped, and with a model whose outputs at slots 0..n_b do not depend
     on columns beyond n_b (FlexMDMModel's default attention) the loss is unchanged.

`MDMCollator` (docs/method.md §3.6): the LLaDA baseline on a fixed canvas filled with pad/EOS; the pad tail
is part of the response (LLaDA SFT convention). It is never trimmed: the pads are real, attended
tokens and targets of a fixed-length model, so cutting them would change the loss.

Determinism: every draw comes from generators seeded by (seed, rank, call counter). The counter
lives in the collator and advances once per call, so **DataLoader workers must be 0** (each
worker would hold its own copy of the counter), or set ``collator.calls`` from the batch index
before each call. With time mode "banded" the micro-step is ``calls % grad_accum`` and the
optimizer step ``calls // grad_accum``, so the collator must be called exactly once per
micro-batch, in order, on every rank (use ``dataloader_drop_last`` so all micro-batches have B
rows, and an epoch length divisible by grad_accum so every optimizer step gets all G bands);
evaluation must use its own copy (`eval_copy`). `state_dict` / `load_state_dict` carry the
counter across a resume.

Never name the targets ``labels``: transformers 5.x rescales the logged loss by the world size
when a batch carries ``labels``.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import Tensor

from retrofit.data.infill_format import boundary_ids, boundary_layout, draw_infill_split, fim_ids, fim_layout
from retrofit.interpolant import IGNORE_INDEX, mdm_forward_mask, sample_interpolant, trim_to_longest
from retrofit.schedules import Schedule, draw_uniform, make_schedule
from retrofit.time_sampling import banded_times, derive_seed, sample_times
from retrofit.training.packing import PackPlan
from retrofit.training.sections import TIME_SAMPLING_MODES

__all__ = ["FlexMDMCollator", "MDMCollator", "TimeSampler", "pad_x1"]


def _generator(*parts: Any) -> torch.Generator:
    return torch.Generator().manual_seed(derive_seed(*parts))


@dataclass
class TimeSampler:
    """Training times of one micro-batch from the call counter (docs/method.md §3.5).

    Attributes:
        mode: "stratified" | "banded" | "uniform" (see the module docstring).
        world_size, rank: data-parallel layout. grad_accum: micro-steps per optimizer step.
        seed: run seed shared by all ranks. t_min: t = (1 - t_min) tau + t_min.
    """

    mode: str = "stratified"
    world_size: int = 1
    rank: int = 0
    grad_accum: int = 1
    seed: int = 0
    t_min: float = 1e-3

    def __post_init__(self) -> None:
        if self.mode not in TIME_SAMPLING_MODES:
            raise ValueError(f"time mode must be one of {TIME_SAMPLING_MODES}, got {self.mode!r}")
        if self.grad_accum < 1 or self.world_size < 1 or not 0 <= self.rank < self.world_size:
            raise ValueError(
                f"need grad_accum >= 1 and 0 <= rank < world_size; got {self.grad_accum}, {self.rank}, "
                f"{self.world_size}"
            )

    def __call__(self, batch_size: int, counter: int) -> Tensor:
        """float32 [batch_size] times of the ``counter``-th call on this rank."""
        if self.mode == "banded":
            return banded_times(
                self.grad_accum,
                batch_size,
                self.world_size,
                self.rank,
                counter % self.grad_accum,
                seed=self.seed,
                step=counter // self.grad_accum,
                t_min=self.t_min,
            )
        return sample_times(
            batch_size,
            world_size=self.world_size,
            rank=self.rank,
            t_min=self.t_min,
            stratified=self.mode == "stratified",
            generator=_generator("t", self.seed, self.rank, counter),
        )


def pad_x1(features: list[dict[str, Any]], pad_id: int, width: int) -> tuple[Tensor, Tensor]:
    """Right-pad the samples' ``input_ids`` to ``width``.

    Returns:
        (x1 long [B, width] with pad_id after each sample, x1_mask bool [B, width], left-aligned).

    Raises:
        ValueError: a sample is longer than ``width``.
    """
    lengths = torch.tensor([len(f["input_ids"]) for f in features], dtype=torch.long)
    if int(lengths.max()) > width:
        raise ValueError(
            f"collator: a sample has {int(lengths.max())} tokens but canvas_width is {width}; build the "
            "data with max_length <= canvas_width (infilling: canvas_width = max_length + 2k, see "
            "retrofit.data.infill_format.infill_canvas_width / fim_overhead)"
        )
    flat = torch.tensor(
        list(itertools.chain.from_iterable(f["input_ids"] for f in features)), dtype=torch.long
    )
    x1_mask = torch.arange(width) < lengths[:, None]
    x1 = torch.full((len(features), width), pad_id, dtype=torch.long)
    x1[x1_mask] = flat
    return x1, x1_mask


def _column(features: list[dict[str, Any]], name: str, default: int) -> Tensor:
    return torch.tensor([int(f.get(name, default)) for f in features], dtype=torch.long)


@dataclass
class _CollatorBase:
    """Shared fields and the x1 / infilling / time logic of both collators."""

    tokenizer: Any = None
    mask_id: int | None = None
    pad_id: int | None = None
    canvas_width: int = 1024
    time_mode: str = "stratified"
    world_size: int = 1
    rank: int = 0
    grad_accum: int = 1
    seed: int = 0
    packing: bool = False
    pack_tokens: int | None = None
    calls: int = field(default=0)

    def _setup(self, t_min: float) -> None:
        if self.pad_id is None:
            self.pad_id = getattr(self.tokenizer, "pad_token_id", None)
        if self.mask_id is None or self.pad_id is None or self.mask_id == self.pad_id:
            raise ValueError(
                "collator: need mask_id and pad_id (pad from the tokenizer if omitted) and mask_id != pad_id; "
                f"got mask_id={self.mask_id}, pad_id={self.pad_id}"
            )
        if self.canvas_width < 1:
            raise ValueError(f"collator: canvas_width must be >= 1, got {self.canvas_width}")
        if self.pack_tokens is not None and self.pack_tokens < 1:
            raise ValueError(f"collator: pack_tokens must be >= 1 or None, got {self.pack_tokens}")
        self.times = TimeSampler(
            self.time_mode, self.world_size, self.rank, self.grad_accum, self.seed, t_min
        )

    def state_dict(self) -> dict[str, int]:
        """The call counter (all other state is configuration)."""
        return {"calls": self.calls}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Restore the call counter saved by `state_dict`."""
        self.calls = int(state["calls"])

    def eval_copy(self) -> _CollatorBase:
        """A copy with its own call counter, starting at 0, for evaluation batches.

        The HF Trainer calls ``data_collator`` for eval batches too; without a separate copy they
        would advance the training counter and shift the time bands / noise streams.
        """
        return replace(self, calls=0)

    def _x1(self, features: list[dict[str, Any]], style: str) -> tuple[Tensor, Tensor, Tensor]:
        """(x1 [B, W], x1_mask [B, W], protected [B, W]) with infilling rows laid out in ``style``."""
        x1, x1_mask = pad_x1(features, self.pad_id, self.canvas_width)
        protected = torch.arange(self.canvas_width) < _column(features, "prompt_length", 0)[:, None]
        for b, f in enumerate(features):  # given positions of multi-span rows (usually none)
            protected[b, list(f.get("anchors") or [])] = True
        cutoffs = _column(features, "infill_cutoff", -1)
        infill = cutoffs >= 0
        if not bool(infill.any()):
            return x1, x1_mask, protected
        rows = infill.nonzero()[:, 0]  # lay out only the infilling rows, then write them back
        lengths = x1_mask[rows].sum(dim=1)
        u = draw_uniform((2, len(rows)), generator=_generator("infill", self.seed, self.rank, self.calls))
        e, f = draw_infill_split(lengths, cutoffs[rows], u[0], u[1], style=style)
        if style == "flexmdm":
            lay = boundary_layout(x1[rows], lengths, e, f, self._boundary(), self.pad_id, self.canvas_width)
        else:
            lay = fim_layout(x1[rows], lengths, e, f, self._fim_ids(), self.pad_id, self.canvas_width)
        for full, part in zip((x1, x1_mask, protected), lay):
            full[rows] = part
        return x1, x1_mask, protected

    def _boundary(self) -> list[int]:
        raise ValueError("this collator has no boundary format")

    def _fim_ids(self) -> dict[str, list[int]]:
        raise ValueError("this collator has no FIM format")

    def _draw(self, features: list[dict[str, Any]]) -> tuple[Tensor, torch.Generator]:
        """(t [B] for this call, generator of the noise), from the call counter; given ``t`` wins."""
        if all("t" in f for f in features):
            t = torch.tensor([float(f["t"]) for f in features], dtype=torch.float32)
        else:
            t = self.times(len(features), self.calls)
        return t, _generator("noise", self.seed, self.rank, self.calls)


@dataclass
class FlexMDMCollator(_CollatorBase):
    """FlexMDM batches: x_t, targets, gaps, weights; trimmed to the longest x_t
    (docs/method.md §1.3-1.5, §3.5).

    Args (fields):
        tokenizer: optional; gives pad_id (if omitted) and the boundary ids of infilling rows.
        insertion_schedule, unmasking_schedule: alpha / beta (anything `make_schedule` accepts;
            the retrofit uses "geometric" (10, 0.01) / "linear").
        mask_id: mask token id (required). pad_id: pad id (default tokenizer.pad_token_id).
        canvas_width: L_max, the width x1 is padded to (max_length; infilling: max_length + 2k).
        time_mode: "stratified" | "banded" | "uniform". world_size, rank, grad_accum, seed:
            data-parallel layout and run seed (see the module docstring).
        trim: cut the batch to its longest x_t. t_min: lower clamp of t (1e-3).
        infill_boundary: boundary ids (default: from the tokenizer) for infilling rows.
        packing: lay the examples' trimmed x_t (n_b slots + the length slot) side by side in
            rows of `pack_tokens` positions (None: one row per micro-batch; docs/method.md §3.7,
            `retrofit.training.packing`).

    Call: ``collator(features)`` with features = dicts holding ``input_ids`` (list[int]) and
    optionally ``prompt_length``, ``infill_cutoff``, ``anchors`` (positions protected like the
    prompt), ``t`` (fixed eval times). Returns a dict:
        input_ids long [B, w] (x_t), attention_mask long [B, w] (1 on the n_b slots), t float [B],
        mask_slots bool [B, w], targets long [B, w] (-100 off mask slots), gaps float [B, w + 1],
        gap_mask bool [B, w + 1], weight_unmask / weight_insert float [B], num_x1_tokens long []
        (real x1 tokens, boundaries included), num_computed_tokens long [] (B * w + B: slots plus
        the length slot); w = max n if trim else canvas_width.
        With ``packing``: input_ids / mask_slots / targets / gaps / gap_mask are [R, T] packed
        rows (each document: its n_b slots, then its length slot holding pad, with gap j of
        the example at its position j), document_ids / position_ids long [R, T] are added,
        attention_mask is absent, t and the weights stay [B], and num_computed_tokens = R * T.
    """

    insertion_schedule: Schedule | str | dict = "geometric"
    unmasking_schedule: Schedule | str | dict = "linear"
    trim: bool = True
    t_min: float = 1e-3
    infill_boundary: list[int] | None = None

    def __post_init__(self) -> None:
        self._setup(self.t_min)
        self.alpha = make_schedule(self.insertion_schedule)
        self.beta = make_schedule(self.unmasking_schedule)

    def _boundary(self) -> list[int]:
        if self.infill_boundary is None:
            if self.tokenizer is None:
                raise ValueError("FlexMDMCollator: infilling rows need a tokenizer or infill_boundary ids")
            self.infill_boundary = boundary_ids(self.tokenizer)
        return self.infill_boundary

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Tensor]:
        x1, x1_mask, protected = self._x1(features, "flexmdm")
        t, gen = self._draw(features)
        self.calls += 1
        s = sample_interpolant(
            x1, x1_mask, t, protected, self.alpha, self.beta, self.mask_id, self.pad_id, gen
        )
        if self.trim or self.packing:
            s = trim_to_longest(s)
        if self.packing:
            return self._packed(s, x1_mask)
        batch, width = s.x_t.shape
        return {
            "input_ids": s.x_t,
            "attention_mask": s.slot_mask.long(),
            "t": s.t,
            "mask_slots": s.mask_slots,
            "targets": s.targets,
            "gaps": s.gaps,
            "gap_mask": s.gap_mask,
            "weight_unmask": s.weight_unmask,
            "weight_insert": s.weight_insert,
            "num_x1_tokens": x1_mask.sum(),
            "num_computed_tokens": torch.tensor(batch * width + batch),
        }

    def _packed(self, s: Any, x1_mask: Tensor) -> dict[str, Tensor]:
        """Packed rows of documents (slots, then the pad length slot) of a trimmed sample."""
        plan = PackPlan(s.lengths + 1, self.pack_tokens)
        column = torch.arange(s.x_t.shape[1] + 1)
        ids = torch.nn.functional.pad(s.x_t, (0, 1), value=self.pad_id)
        ids = torch.where(column[None, :] == s.lengths[:, None], self.pad_id, ids)  # length slot = pad
        pad_column = (0, 1)
        return {
            "input_ids": plan.gather(ids, self.pad_id),
            "document_ids": plan.document_ids,
            "position_ids": plan.position_ids,
            "t": s.t,
            "mask_slots": plan.gather(torch.nn.functional.pad(s.mask_slots, pad_column, value=False), False),
            "targets": plan.gather(
                torch.nn.functional.pad(s.targets, pad_column, value=IGNORE_INDEX), IGNORE_INDEX
            ),
            "gaps": plan.gather(s.gaps, 0.0),
            "gap_mask": plan.gather(s.gap_mask, False),
            "weight_unmask": s.weight_unmask,
            "weight_insert": s.weight_insert,
            "num_x1_tokens": x1_mask.sum(),
            "num_computed_tokens": torch.tensor(plan.num_positions),
        }


@dataclass
class MDMCollator(_CollatorBase):
    """LLaDA baseline batches on a fixed canvas (docs/method.md §3.6); infilling rows in the FIM format
    (§1.7).

    Args (fields): tokenizer, mask_id, pad_id, canvas_width, time_mode, world_size, rank,
        grad_accum, seed as in `FlexMDMCollator` (time_mode default "uniform": t ~ U(0, 1) as in
        the reference; p = (1 - 1e-3) t + 1e-3 is applied by `mdm_forward_mask`).
        train_pad_tail: the pad/EOS tail is part of the response (LLaDA SFT convention; default).
        fim: FIM instruction / delimiter ids (default: from the tokenizer) for infilling rows.
        packing, pack_tokens: pack the examples into rows (docs/method.md §3.7): a document is the
            whole width-L canvas when the pad tail is trained, else the example's real tokens.

    Returns a dict: input_ids long [B, L] (x_t), targets long [B, L] (-100 off masked positions),
        mask_slots bool [B, L], mask_prob float [B], t float [B], num_x1_tokens long [],
        num_computed_tokens long [] (B * L).
    """

    time_mode: str = "uniform"
    train_pad_tail: bool = True
    fim: dict[str, list[int]] | None = None

    def __post_init__(self) -> None:
        self._setup(0.0)

    def _fim_ids(self) -> dict[str, list[int]]:
        if self.fim is None:
            if self.tokenizer is None:
                raise ValueError("MDMCollator: infilling rows need a tokenizer or fim ids")
            self.fim = fim_ids(self.tokenizer)
        return self.fim

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Tensor]:
        x1, x1_mask, protected = self._x1(features, "fim")
        t, gen = self._draw(features)
        self.calls += 1
        response = ~protected if self.train_pad_tail else x1_mask & ~protected
        s = mdm_forward_mask(x1, response, t, self.mask_id, gen)
        if self.packing:
            sizes = (
                torch.full_like(t, x1.shape[1], dtype=torch.long) if self.train_pad_tail else x1_mask.sum(1)
            )
            plan = PackPlan(sizes, self.pack_tokens)
            return {
                "input_ids": plan.gather(s.x_t, self.pad_id),
                "document_ids": plan.document_ids,
                "position_ids": plan.position_ids,
                "targets": plan.gather(s.targets, IGNORE_INDEX),
                "mask_slots": plan.gather(s.masked, False),
                "mask_prob": s.mask_prob,
                "t": t,
                "num_x1_tokens": x1_mask.sum(),
                "num_computed_tokens": torch.tensor(plan.num_positions),
            }
        return {
            "input_ids": s.x_t,
            "targets": s.targets,
            "mask_slots": s.masked,
            "mask_prob": s.mask_prob,
            "t": t,
            "num_x1_tokens": x1_mask.sum(),
            "num_computed_tokens": torch.tensor(x1.numel()),
        }
