"""FlexMDM sampler: tau-leaping over insert-mask and unmask events (docs/method.md §4.1-§4.5, §4.7, §7.3).

From the prompt (or nothing) at t = 0 to t = 1 in S steps of dt = 1/S, one forward pass each:
unmask K ~ Poisson(N h_β(t) dt) masks chosen by confidence, then insert e_j ~ Poisson(ĝ_j h_α(t) dt)
masks per allowed gap, on the pre-unmask layout (docs/method.md §4.2). Then, unlike the research sampler,
a final insertion at t = 1 of the mass still pending (e_j ~ Poisson(ĝ_j(t = 1))) and one fill pass
that unmasks every remaining mask, sampled from p_θ (docs/method.md §7.3.5). ``reference=True`` keeps the
research behaviour: linear hazards, no insertion in the last step, an argmax fill in the last step.

Hazards come from the schedules stored in the model config (``insertion_schedule``,
``unmasking_schedule``) unless the sampler config names others (docs/method.md §4.5). Each step runs the
model only on the columns in use (the longest current row; the model appends the length slot).

Rows are independent: each row is left-aligned at column 0 with its own length, protected
spans and cap, and draws from its own counter-based stream keyed by (seed, example id, sample
number) (:class:`~retrofit.sampling.draws.RowRandom`). So with a "slots"-attention model a row's
sample does not depend on the batch size, the order of rows or the other rows' lengths (up to
float rounding of the batched forward pass; see tests/sampling/test_row_randomness.py).

Example::

    sampler = FlexMDMSampler(model, FlexMDMSamplerConfig(steps=256, max_length=1024))
    out = sampler.sample([prompt_ids], seed=0, example_ids=[17])
    fast = dataclasses.replace(sampler, config=dataclasses.replace(sampler.config, steps=64))
    mid = sampler.infill([prefix_ids], [suffix_ids]).generated[0]
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor

from retrofit.sampling.batch import accepts_argument, model_device, progress, repeat_rows
from retrofit.sampling.draws import RowRandom, resolve_row_keys
from retrofit.sampling.flexmdm_config import FlexMDMSamplerConfig
from retrofit.sampling.prompt_cache import PromptCache
from retrofit.sampling.steps import (
    above_threshold,
    allowed_gaps,
    cap_insertions,
    confidence,
    draw_tokens,
    editable_slots,
    first_k_eligible,
    insert_masks,
    insertion_counts,
    predict,
    select_top_k,
    unmask_count,
    window_size,
)
from retrofit.sampling.trace import SampleOutput, Trace
from retrofit.schedules import Schedule, make_schedule

__all__ = ["FlexMDMSampler"]


@dataclass
class _State:
    """The batch being sampled: canvas [B, L_full] int64 and per-row [B] int64 bookkeeping."""

    canvas: Tensor
    lengths: Tensor
    pre: Tensor  # protected ids at the front (prompt / prefix)
    suf: Tensor  # protected ids at the end (suffix)
    cap: Tensor  # max length of each row
    dropped: Tensor
    cache: PromptCache | None = None  # the run's model calls (prompt cache or plain)


@dataclass
class FlexMDMSampler:
    """Prompt-conditioned sampling and infilling with a FlexMDM (docs/method.md §4.2, §4.4).

    Args:
        model: ``model(input_ids [B, L], t [B], attention_mask [B, L]) -> .logits [B, L, V],
            .expected_gaps [B, L + 1]``, with ``model.config`` holding insertion_schedule,
            unmasking_schedule, mask_token_id, pad_token_id (and optionally sampler_defaults).
        config: sampler settings; None = FlexMDMSamplerConfig.from_model(model).
        tokenizer: optional; kept for callers that decode (not used by the sampler itself).
    """

    model: Any
    config: FlexMDMSamplerConfig | None = None
    tokenizer: Any = None

    def __post_init__(self) -> None:
        if self.config is None:
            self.config = FlexMDMSamplerConfig.from_model(self.model)

    # ----------------------------------------------------------------------------- public API
    def sample(
        self,
        prompts: list[list[int]] | None = None,
        num_samples: int = 1,
        generator: torch.Generator | None = None,
        *,
        seed: int | None = None,
        example_ids: list[int] | None = None,
        row_keys: list[int] | None = None,
    ) -> SampleOutput:
        """Generate continuations of ``prompts`` (or from nothing), each ``num_samples`` times.

        Args:
            prompts: token-id lists (lengths may differ; their lengths are taken as given, pad ids
                inside a prompt are fine); None = ``num_samples`` unconditional rows (one example).
            num_samples: samples per prompt; rows are prompt-major.
            generator: used only when ``seed`` is None: one base seed is drawn from it (None =
                torch's global RNG). Kept for callers that pass a seeded generator.
            seed: base seed of every draw. Row (prompt i, sample j) draws from its own stream
                keyed by (seed, example_ids[i], j) (:func:`~retrofit.sampling.draws.row_seed`).
            example_ids: one integer identity per prompt (e.g. its index in the evaluated set);
                None = 0, 1, ... in call order.
            row_keys: explicit stream keys, one per row (prompt-major; ``draws.row_seeds``);
                override generator / seed / example_ids (for callers that batch rows themselves).

        Returns:
            SampleOutput; ``generated`` holds the tokens after the prompt.

        Raises:
            ValueError: a prompt is longer than max_length, num_samples < 1, or example_ids does
                not hold one integer per prompt.
        """
        prompts = [[]] if prompts is None else prompts
        keys = resolve_row_keys(len(prompts), num_samples, generator, seed, example_ids, row_keys)
        rows = repeat_rows(prompts, num_samples)
        cap = self.config.max_length
        too_long = [len(p) for p in rows if len(p) > cap]
        if too_long:
            raise ValueError(
                f"sample: a prompt has {too_long[0]} tokens > max_length={cap}; raise "
                "FlexMDMSamplerConfig.max_length (CLI: --max-length)"
            )
        return self._run(rows, [[] for _ in rows], [cap] * len(rows), keys, [[] for _ in rows])

    def infill(
        self,
        prefixes: list[list[int]],
        suffixes: list[list[int]],
        num_samples: int = 1,
        generator: torch.Generator | None = None,
        middles: list[list[int]] | None = None,
        *,
        seed: int | None = None,
        example_ids: list[int] | None = None,
        row_keys: list[int] | None = None,
    ) -> SampleOutput:
        """Fill the middle between each prefix and suffix; the model picks its length (docs/method.md §4.4).

        Prefix and suffix tokens never change; insertions go only into gaps
        P_pre <= j <= n - P_suf and the middle grows by at most ``max_middle`` tokens.

        Multi-span infilling: ``middles`` gives each middle's starting tokens (anchors, e.g. a maze
        path's start, subgoals and goal). They are clean, so they are never changed either, and
        every gap between them is open to insertion: the model chooses each span's length. This
        is the sampler of models trained with anchored samples (`retrofit.data.sft`, anchors).

        Args:
            prefixes, suffixes: token-id lists, one pair per problem (boundary tokens included).
            num_samples: samples per problem. generator, seed, example_ids: as in :meth:`sample`
                (one id per problem).
            middles: optional token-id lists (no mask ids), one per problem; default empty.

        Returns:
            SampleOutput; ``generated`` holds the middles (anchors included).

        Raises:
            ValueError: the lists differ in length, num_samples < 1, or bad example_ids.
        """
        middles = [[] for _ in prefixes] if middles is None else middles
        if not len(prefixes) == len(suffixes) == len(middles):
            raise ValueError(
                f"infill: {len(prefixes)} prefixes, {len(suffixes)} suffixes and {len(middles)} middles"
            )
        keys = resolve_row_keys(len(prefixes), num_samples, generator, seed, example_ids, row_keys)
        pre, suf = repeat_rows(prefixes, num_samples), repeat_rows(suffixes, num_samples)
        mid = repeat_rows(middles, num_samples)
        caps = [len(p) + len(m) + len(s) + self.config.max_middle for p, m, s in zip(pre, mid, suf)]
        return self._run(pre, suf, caps, keys, mid)

    # ----------------------------------------------------------------------------- the run
    def _run(self, fronts, backs, caps, keys: list[int], middles) -> SampleOutput:
        """Sample rows ``fronts[b] + middles[b] + backs[b]`` (row b capped at caps[b] tokens), row b
        drawing from the stream ``keys[b]``."""
        if not fronts:
            raise ValueError("sampler: no prompts given (pass prompts=None for unconditional samples)")
        cfg, mask_id = self.config, self._mask_id()
        st = self._initial_state(fronts, middles, backs, caps)
        st.cache = PromptCache(
            None if cfg.reference else cfg.cache_period(), int(st.pre.min()), self.model
        )  # fronts never move
        rand = RowRandom(keys).to(st.canvas.device)
        trace = Trace() if cfg.trace else None
        if trace is not None:
            trace.record(0.0, st.canvas, st.lengths, mask_id, "init")
        steps, dt = cfg.steps, 1.0 / cfg.steps
        regular = steps - 1 if cfg.reference else steps
        passes = 0
        with torch.no_grad():
            for i in progress(range(regular), cfg.progress, "flexmdm sampling", "step"):
                self._step(st, i * dt, dt, rand)
                passes += 1
                if trace is not None:
                    trace.record((i + 1) * dt, st.canvas, st.lengths, mask_id, "step")
            passes += self._finish(st, rand, trace)
        return self._output(st, passes, trace)

    def _step(self, st: _State, t: float, dt: float, rand: RowRandom) -> None:
        """One tau-leaping step: predict, unmask on the pre-insertion canvas, insert (docs/method.md §4.2)."""
        width = self._width(st)
        pred = self._predict(st, t, width)
        self._unmask(st, pred.logits, rand, hazard_dt=self._hazard("unmasking", t) * dt)
        allowed = allowed_gaps(st.lengths, st.pre, st.suf, width + 1)
        e = insertion_counts(pred.expected_gaps, allowed, self._hazard("insertion", t) * dt, rand)
        self._insert(st, e, width)

    def _finish(self, st: _State, rand: RowRandom, trace: Trace | None) -> int:
        """Final insertion at t = 1 and the fill pass (or the reference last step). Returns passes."""
        cfg, mask_id = self.config, self._mask_id()
        if cfg.reference:  # last step at t = (S - 1)/S: argmax fill, no insertion
            t = (cfg.steps - 1) / cfg.steps
            pred = self._predict(st, t, self._width(st))
            self._unmask(st, pred.logits, rand, hazard_dt=None, argmax=True)
            if trace is not None:
                trace.record(1.0, st.canvas, st.lengths, mask_id, "fill")
            return 1
        passes, pred = 0, None
        if cfg.final_insertion:
            width = self._width(st)
            pred = self._predict(st, 1.0, width)
            passes += 1
            allowed = allowed_gaps(st.lengths, st.pre, st.suf, width + 1)
            e = insertion_counts(pred.expected_gaps, allowed, None, rand)
            if int(self._insert(st, e, width)) > 0:
                pred = None  # the layout changed: the fill needs a fresh pass
            if trace is not None:
                trace.record(1.0, st.canvas, st.lengths, mask_id, "final_insert")
        if pred is None:
            pred = self._predict(st, 1.0, self._width(st))
            passes += 1
        self._unmask(st, pred.logits, rand, hazard_dt=None, argmax=cfg.fill == "argmax")
        if trace is not None:
            trace.record(1.0, st.canvas, st.lengths, mask_id, "fill")
        return passes

    # ----------------------------------------------------------------------------- step parts
    def _predict(self, st: _State, t: float, width: int):
        """One forward pass; logits only at unmaskable slots when the model supports logits_mask."""
        mask = None
        if self.config.masked_logits and accepts_argument(self.model, "logits_mask"):
            mask = editable_slots(st.lengths, st.pre, st.suf, width) & (
                st.canvas[:, :width] == self._mask_id()
            )
        return predict(self.model, st.canvas, st.lengths, t, width, logits_mask=mask, cache=st.cache)

    def _unmask(
        self, st: _State, logits: Tensor, rand: RowRandom, hazard_dt: float | None, argmax: bool = False
    ) -> None:
        """Unmask K ~ Poisson(N h_β dt) eligible masks by confidence; hazard_dt None = all of them."""
        cfg, width = self.config, logits.shape[1]
        view = st.canvas[:, :width]
        eligible = editable_slots(st.lengths, st.pre, st.suf, width) & (view == self._mask_id())
        banned = self._banned(logits.shape[-1], logits.device)
        if hazard_dt is None:
            chosen = eligible
        else:
            n_masks = eligible.sum(-1)
            k = unmask_count(n_masks, hazard_dt, rand)
            if cfg.sliding_window:
                eligible = first_k_eligible(eligible, window_size(k, cfg.alpha_win, cfg.max_window, n_masks))
            conf = confidence(cfg.confidence, logits, eligible, st.lengths, rand, banned)
            chosen = select_top_k(conf, eligible, k)
            if (
                cfg.unmask_threshold is not None and not cfg.reference
            ):  # also every confident slot (in the window)
                chosen |= above_threshold(logits, eligible, cfg.unmask_threshold, banned)
        u = rand.uniform(view.shape[0], width, view.device)
        temperature = 0.0 if argmax else cfg.temperature
        view[chosen] = draw_tokens(logits[chosen], u[chosen], temperature, cfg.top_k, cfg.top_p, banned)

    def _insert(self, st: _State, e: Tensor, width: int) -> Tensor:
        """Apply the max-length cap, then insert; returns the number of masks inserted."""
        kept, dropped = cap_insertions(e, st.lengths, st.cap)
        st.dropped += dropped
        canvas, lengths = insert_masks(st.canvas[:, :width], st.lengths, kept, self._mask_id(),
                                       self._pad_id(), out_width=st.canvas.shape[1])  # fmt: skip
        st.canvas, st.lengths = canvas, lengths
        return kept.sum()

    # ----------------------------------------------------------------------------- helpers
    def _initial_state(self, fronts, middles, backs, caps) -> _State:
        device = model_device(self.model)
        full = max(max(caps), 1)
        rows = [torch.tensor(f + m + b, dtype=torch.long) for f, m, b in zip(fronts, middles, backs)]
        canvas = torch.full((len(rows), full), self._pad_id(), dtype=torch.long)
        for b, row in enumerate(rows):  # input conversion only; the steps are vectorised
            canvas[b, : len(row)] = row
        as_tensor = lambda xs: torch.tensor(xs, dtype=torch.long, device=device)  # noqa: E731
        return _State(
            canvas=canvas.to(device),
            lengths=as_tensor([len(r) for r in rows]),
            pre=as_tensor([len(f) for f in fronts]),
            suf=as_tensor([len(b) for b in backs]),
            cap=as_tensor(list(caps)),
            dropped=torch.zeros(len(rows), dtype=torch.long, device=device),
        )

    def _output(self, st: _State, passes: int, trace: Trace | None) -> SampleOutput:
        canvas, lengths = st.canvas.cpu(), st.lengths.cpu()
        pre, suf = st.pre.cpu(), st.suf.cpu()
        seqs = [canvas[b, : int(lengths[b])].tolist() for b in range(canvas.shape[0])]
        gen = [s[int(pre[b]) : len(s) - int(suf[b])] for b, s in enumerate(seqs)]
        return SampleOutput(
            seqs, gen, lengths, pre, suf, st.dropped.cpu(), passes, trace, st.cache.trunk_positions
        )

    def _width(self, st: _State) -> int:
        trim = self.config.trim
        if trim is None:
            trim = getattr(getattr(self.model, "config", None), "pad_attention", None) != "full"
        return max(int(st.lengths.max()), 1) if trim else st.canvas.shape[1]

    def _schedule(self, kind: str) -> Schedule:
        if self.config.reference:
            return make_schedule("linear")
        spec = getattr(self.config, f"{kind}_schedule")
        if spec is None:
            spec = getattr(getattr(self.model, "config", None), f"{kind}_schedule", None)
        if spec is None:
            raise ValueError(f"sampler: no {kind} schedule: set FlexMDMSamplerConfig.{kind}_schedule "
                             f"or model.config.{kind}_schedule")  # fmt: skip
        return make_schedule(spec)

    def _hazard(self, kind: str, t: float) -> float:
        h = float(self._schedule(kind).rate(t))
        if not math.isfinite(h):
            raise ValueError(f"sampler: {kind} hazard at t={t} is {h}; use more steps or another schedule")
        return h

    def _config_id(self, name: str, model_key: str) -> int:
        value = getattr(self.config, name)
        if value is None:
            value = getattr(getattr(self.model, "config", None), model_key, None)
        if value is None:
            raise ValueError(f"sampler: set FlexMDMSamplerConfig.{name} or model.config.{model_key}")
        return int(value)

    def _mask_id(self) -> int:
        return self._config_id("mask_id", "mask_token_id")

    def _pad_id(self) -> int:
        return self._config_id("pad_id", "pad_token_id")

    def _banned(self, vocab: int, device: torch.device) -> Tensor:
        ids = [self._mask_id(), *self.config.banned_token_ids]
        if self.config.ban_pad:
            ids.append(self._pad_id())
        banned = torch.zeros(vocab, dtype=torch.bool, device=device)
        banned[torch.tensor([i for i in ids if 0 <= i < vocab], dtype=torch.long, device=device)] = True
        return banned

    def with_options(self, **overrides: Any) -> FlexMDMSampler:
        """A copy with ``dataclasses.replace(self.config, **overrides)``."""
        return replace(self, config=replace(self.config, **overrides))
