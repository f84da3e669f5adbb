"""LLaDA baseline sampler: fixed-length masked diffusion, semi-autoregressive blocks (docs/method.md §4.9).

The canvas is prompt ‖ M×G. G is split into G / block_length blocks filled left to right, each in
steps / num_blocks steps. A block with m masks reveals floor(m/s) tokens per step and one more in
its first (m mod s) steps (docs/method.md §7.5: m = 10, s = 4 -> [3, 3, 2, 2]). Each step: one forward pass
(a conditional + unconditional pair with classifier-free guidance), a proposal x̂ = argmax of the
logits plus temperature-scaled Gumbel noise in float64 (temperature 0 = argmax), a confidence
(softmax probability of x̂, or uniform for ``random``), and the most confident masked positions of
the current block are revealed for good.

Batches are ragged and rows independent: row b is left-aligned, prompt at 0..P_b-1, its G
generated slots at P_b..P_b+G-1 (then its suffix, when infilling in place), pad after, with an
attention mask that hides the pad keys; its semi-AR blocks are offset by P_b. So each row sees
exactly the positions it has alone (left-padding would shift every row's positions by the
batch's longest prompt and change its result with the batch). Each row draws from its own
counter-based stream keyed by (seed, example id, sample number)
(:class:`~retrofit.sampling.draws.RowRandom`). The batch's width is max_b(P_b + S_b) + G, so the
pad a short row carries is the difference to the longest prompt: callers that batch many prompts
(``TextGenerator``) sort them by length first to keep it small.

Infilling: in the baseline's FIM format (instruction + ``<prefix>``…``</prefix><suffix>``…
``</suffix>``, middle generated after it; docs/method.md §1.7, §6.2) or in place (a given number of masks
between prefix and suffix).

Example::

    sampler = MDMSampler(llada, MDMSamplerConfig(gen_length=256, block_length=128, steps=128))
    out = sampler.sample([prompt_ids], seed=0, example_ids=[17])
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor

from retrofit.sampling.batch import accepts_argument, model_device, progress, repeat_rows
from retrofit.sampling.draws import RowRandom, resolve_row_keys
from retrofit.sampling.mdm_config import MDMSamplerConfig
from retrofit.sampling.prompt_cache import PromptCache
from retrofit.sampling.steps import above_threshold, select_top_k
from retrofit.sampling.trace import SampleOutput

__all__ = ["MDMSampler", "reveal_schedule"]


def _gather_columns(logits: Tensor, cols: Tensor) -> Tensor:
    """logits [B, L, V] at each row's columns cols [B, b] -> [B, b, V]."""
    return logits.gather(1, cols[:, :, None].expand(-1, -1, logits.shape[-1]))


def reveal_schedule(num_masks: Tensor, steps: int) -> Tensor:
    """Tokens to reveal at each step of a block: floor(m/s), +1 in the first (m mod s) steps.

    docs/method.md §7.5: m = 10, s = 4 -> [3, 3, 2, 2].

    Args:
        num_masks: [B] int64 masks in the block. steps: s >= 1.

    Returns:
        [B, steps] int64, rows summing to num_masks.
    """
    base, extra = num_masks // steps, num_masks % steps
    s = torch.arange(steps, device=num_masks.device)[None, :]
    return base[:, None] + (s < extra[:, None]).long()


@dataclass
class MDMSampler:
    """Masked-diffusion sampling and infilling with a LLaDA model (docs/method.md §4.9).

    Args:
        model: ``model(input_ids [B, L], attention_mask [B, L]) -> .logits [B, L, V]``.
        config: sampler settings (default MDMSamplerConfig()).
        tokenizer: optional; needed for FIM-format infilling and for the EoT id.
    """

    model: Any
    config: MDMSamplerConfig = MDMSamplerConfig()
    tokenizer: Any = None

    def sample(
        self,
        prompts: list[list[int]],
        num_samples: int = 1,
        generator: torch.Generator | None = None,
        *,
        seed: int | None = None,
        example_ids: list[int] | None = None,
        row_keys: list[int] | None = None,
    ) -> SampleOutput:
        """Generate ``gen_length`` tokens after each prompt (``num_samples`` rows per prompt).

        Args:
            prompts: token-id lists of any lengths (each row left-aligned, pad after).
            num_samples: samples per prompt; rows are prompt-major.
            generator: used only when ``seed`` is None: one base seed is drawn from it (None =
                torch's global RNG). Kept for callers that pass a seeded generator.
            seed: base seed of the Gumbel / random-remasking draws. Row (prompt i, sample j)
                draws from its own stream keyed by (seed, example_ids[i], j).
            example_ids: one integer identity per prompt (e.g. its index in the evaluated set);
                None = 0, 1, ... in call order.
            row_keys: explicit stream keys, one per row (prompt-major; ``draws.row_seeds``);
                override generator / seed / example_ids (for callers that batch rows themselves).

        Returns:
            SampleOutput; ``generated`` is cut at the first EOS when stop_at_eos.

        Raises:
            ValueError: no prompts, or example_ids does not hold one integer per prompt.
        """
        keys = resolve_row_keys(len(prompts), num_samples, generator, seed, example_ids, row_keys)
        rows = repeat_rows(prompts, num_samples)
        return self._generate(rows, [[] for _ in rows], self.config, keys)

    def infill(
        self,
        prefixes: list[list[int]],
        suffixes: list[list[int]],
        num_samples: int = 1,
        generator: torch.Generator | None = None,
        middle_length: int | None = None,
        middles: list[list[int]] | None = None,
        *,
        seed: int | None = None,
        example_ids: list[int] | None = None,
        row_keys: list[int] | None = None,
    ) -> SampleOutput:
        """Fill between prefix and suffix ids (generator, seed, example_ids, row_keys as in
        :meth:`sample`, one id per problem).

        ``middle_length=None``: the baseline FIM format (docs/method.md §1.7, §6.2): prompt = instruction ‖
        ``<prefix>`` ‖ prefix ‖ ``</prefix>`` ‖ ``<suffix>`` ‖ suffix ‖ ``</suffix>`` (each
        delimiter tokenized alone), then ``gen_length`` tokens; ``sequences`` = prefix + middle.
        Otherwise in place: prefix ‖ M×middle_length ‖ suffix, one block of middle_length in
        ``steps`` steps; ``sequences`` = prefix + middle + suffix.
        ``middles``: in place from a template instead: prefix ‖ middle ‖ suffix, where the mask
        ids of each middle are generated and its other tokens are given (a fixed budget of masks
        per span, as a fixed-length model fills multi-span problems); one block, ``steps`` steps.
        All middles must have the same length; ``generated`` holds the whole filled middle.

        Raises:
            ValueError: the lists differ in length, middles of different lengths or together with
                middle_length, or FIM format without a tokenizer.
        """
        if len(prefixes) != len(suffixes):
            raise ValueError(f"infill: {len(prefixes)} prefixes but {len(suffixes)} suffixes")
        keys = resolve_row_keys(len(prefixes), num_samples, generator, seed, example_ids, row_keys)
        pre, suf = repeat_rows(prefixes, num_samples), repeat_rows(suffixes, num_samples)
        if middles is not None:
            mid = repeat_rows(middles, num_samples)
            widths = sorted({len(m) for m in mid})
            if middle_length is not None or len(mid) != len(pre) or len(widths) != 1 or widths[0] < 1:
                raise ValueError(
                    f"infill: middles must be one non-empty template per prefix, all of one length "
                    f"(got {len(mid)} middles of lengths {widths[:4]} for {len(pre)} prefixes), without "
                    "middle_length"
                )
            config = replace(self.config, gen_length=widths[0], block_length=widths[0])
            return self._generate(pre, suf, config, keys, mid)
        if middle_length is None:
            ids = self._fim_ids()
            prompts = [ids["instruction"] + ids["<prefix>"] + p + ids["</prefix>"] + ids["<suffix>"] + s
                       + ids["</suffix>"] for p, s in zip(pre, suf)]  # fmt: skip
            return self._generate(prompts, [[] for _ in prompts], self.config, keys)
        config = replace(self.config, gen_length=middle_length, block_length=middle_length)
        return self._generate(pre, suf, config, keys)

    # ----------------------------------------------------------------------------- core
    def _generate(self, fronts, backs, cfg: MDMSamplerConfig, keys: list[int], middles=None) -> SampleOutput:
        """Fill row b = fronts[b] ‖ M×G (or middles[b]) ‖ backs[b], drawing from stream keys[b]."""
        if not fronts:
            raise ValueError("MDMSampler: no prompts given")
        x, attn, region = self._canvas(fronts, backs, cfg.gen_length, middles)
        pos = torch.arange(x.shape[1], device=x.device)[None, :]
        in_gen = (pos >= region[:, None]) & (pos < (region + cfg.gen_length)[:, None])
        prompt_mask = attn.bool() & ~in_gen  # the given tokens (prompt, suffix): masked for CFG
        rand = RowRandom(keys).to(x.device)
        cache = PromptCache(cfg.cache_period(), int(region.min()), self.model)  # prompts: columns 0..P_b-1
        mask_id = self._mask_id(cfg)
        blocks = cfg.gen_length // cfg.block_length
        per_block = cfg.steps // blocks
        draws_per_step = int(cfg.temperature > 0) + int(cfg.remasking == "random")
        passes = 0
        with torch.no_grad():
            for k in progress(range(blocks), cfg.progress, "llada blocks", "block"):
                cols = (
                    region[:, None] + k * cfg.block_length + torch.arange(cfg.block_length, device=x.device)
                )
                plan = reveal_schedule((x.gather(1, cols) == mask_id).sum(-1), per_block)  # [B, b] cols
                for s in range(per_block):
                    block = x.gather(1, cols)
                    if not bool((block == mask_id).any()):  # threshold unmasking finished the block early
                        break
                    rand.calls = (k * per_block + s) * draws_per_step  # a row's draws never depend on skips
                    logits = self._logits(x, attn, prompt_mask, cfg, cols, cache)  # [B, b, V]
                    passes += 1
                    proposal, conf = self._propose(logits, cfg, rand)
                    chosen = select_top_k(conf, block == mask_id, plan[:, s])
                    if cfg.unmask_threshold is not None:
                        chosen |= above_threshold(
                            logits, block == mask_id, cfg.unmask_threshold, self._banned(cfg, logits)
                        )
                    x.scatter_(1, cols, torch.where(chosen, proposal, block))
        out = self._output(x, region, fronts, backs, cfg, passes)
        out.trunk_positions = cache.trunk_positions
        return out

    def _canvas(self, fronts, backs, gen_length, middles=None) -> tuple[Tensor, Tensor, Tensor]:
        """Left-aligned rows [front | M×G (or the middle) | back | pad…] [B, L] with
        L = max_b(P_b + S_b) + G, their attention mask [B, L] (1 on real slots) and each row's
        generation start P_b [B] int64: (x, attn, region), on the model's device."""
        cfg, device = self.config, model_device(self.model)
        L = max(len(f) + len(bk) for f, bk in zip(fronts, backs)) + gen_length
        x = torch.full((len(fronts), L), self._pad_id(cfg), dtype=torch.long)
        attn = torch.zeros((len(fronts), L), dtype=torch.long)
        for b, (f, bk) in enumerate(zip(fronts, backs)):  # input conversion only
            mid = [self._mask_id(cfg)] * gen_length if middles is None else list(middles[b])
            row = torch.tensor(list(f) + mid + list(bk), dtype=torch.long)
            x[b, : len(row)] = row
            attn[b, : len(row)] = 1
        region = torch.tensor([len(f) for f in fronts], dtype=torch.long)
        return x.to(device), attn.to(device), region.to(device)

    def _logits(
        self,
        x: Tensor,
        attn: Tensor,
        prompt_mask: Tensor,
        cfg: MDMSamplerConfig,
        cols: Tensor,
        cache: PromptCache,
    ) -> Tensor:
        """Float32 logits of each row's block columns ``cols`` [B, b] -> [B, b, V]; with CFG one
        batched pass over (x, x with the prompt masked), combined as l_u + (w + 1)(l_c - l_u)
        (docs/method.md §4.9 step 1). ``cache`` runs the model (a cached call returns the live columns)."""
        if cfg.cfg_scale > 0:
            unconditional = x.masked_fill(prompt_mask, self._mask_id(cfg))
            both = self._block_logits(
                torch.cat([x, unconditional]), torch.cat([attn, attn]), torch.cat([cols, cols]), cache
            )
            cond, uncond = both.chunk(2, dim=0)
            return uncond + (cfg.cfg_scale + 1.0) * (cond - uncond)
        return self._block_logits(x, attn, cols, cache)

    def _block_logits(self, x: Tensor, attn: Tensor, cols: Tensor, cache: PromptCache) -> Tensor:
        """Float32 logits [B, b, V] at each row's block columns ``cols`` [B, b] (ascending).

        The LM head runs only there (``logits_mask``; it is much of a step's cost at a 126k
        vocabulary) when the model takes it; rows of ``logits_mask.nonzero()`` come in row-major
        order, i.e. each row's block columns in ascending order."""
        if accepts_argument(self.model, "logits_mask"):
            where = torch.zeros_like(x, dtype=torch.bool).scatter_(1, cols, True)
            out, _ = cache(self.model, x, attn, logits_mask=where)
            return out.logits.view(x.shape[0], cols.shape[1], -1).float()
        out, offset = cache(self.model, x, attn)
        return _gather_columns(out.logits, cols - offset).float()

    def _banned(self, cfg: MDMSamplerConfig, logits: Tensor) -> Tensor:
        """[V] bool tokens never proposed: the mask id (and EOS with logits_eos_inf)."""
        banned = torch.zeros(logits.shape[-1], dtype=torch.bool, device=logits.device)
        banned[self._mask_id(cfg)] = True
        if cfg.logits_eos_inf:
            banned[self._eos_id(cfg)] = True
        return banned

    def _propose(self, logits: Tensor, cfg: MDMSamplerConfig, rand: RowRandom) -> tuple[Tensor, Tensor]:
        """x̂ = argmax(l + T·Gumbel) in float64 and its confidence, both [B, b]
        (docs/method.md §4.9 steps 2-3).

        Row b's Gumbel noise of block slot i, token v is uniform column i·V + v of its stream."""
        # never propose the mask itself (docs/method.md §4.7.3), nor EOS with logits_eos_inf
        logits = logits.masked_fill(self._banned(cfg, logits), float("-inf"))
        noisy = logits.to(torch.float64)
        B, b, V = noisy.shape
        if cfg.temperature > 0:
            u = rand.uniform(B, b * V, noisy.device).view(B, b, V)
            noisy = noisy + cfg.temperature * (-torch.log(-torch.log(u.clamp_min(1e-300))))
        proposal = noisy.argmax(dim=-1)  # [B, b]
        if cfg.remasking == "low_confidence":
            conf = torch.softmax(logits, dim=-1).gather(-1, proposal[..., None]).squeeze(-1).to(torch.float64)
        else:
            conf = rand.uniform(B, b, proposal.device)
        if cfg.confidence_eos_eot_inf:
            stops = self._stop_ids(cfg)
            conf = conf.masked_fill(torch.isin(proposal, stops), float("-inf"))
        return proposal, conf

    def _output(self, x, region, fronts, backs, cfg, passes) -> SampleOutput:
        cols = region[:, None] + torch.arange(cfg.gen_length, device=x.device)[None, :]
        gen = x.gather(1, cols).cpu()
        if cfg.stop_at_eos:
            stop = torch.isin(gen, self._stop_ids(cfg).cpu())
            first = torch.where(stop.any(-1), stop.long().argmax(-1), torch.full_like(stop[:, 0], gen.shape[1],
                                                                                    dtype=torch.long))  # fmt: skip
        else:
            first = torch.full((gen.shape[0],), gen.shape[1], dtype=torch.long)
        generated = [gen[b, : int(first[b])].tolist() for b in range(gen.shape[0])]
        seqs = [f + g + bk for f, g, bk in zip(fronts, generated, backs)]
        B = len(seqs)
        return SampleOutput(
            sequences=seqs,
            generated=generated,
            lengths=torch.tensor([len(s) for s in seqs], dtype=torch.long),
            prompt_lengths=torch.tensor([len(f) for f in fronts], dtype=torch.long),
            suffix_lengths=torch.tensor([len(bk) for bk in backs], dtype=torch.long),
            dropped_insertions=torch.zeros(B, dtype=torch.long),
            num_forward_passes=passes,
        )

    # ----------------------------------------------------------------------------- ids
    def _config_value(self, cfg_value, *model_keys: str):
        if cfg_value is not None:
            return int(cfg_value)
        mc = getattr(self.model, "config", None)
        for key in model_keys:
            value = getattr(mc, key, None)
            if value is not None:
                return int(value)
        return None

    def _mask_id(self, cfg: MDMSamplerConfig) -> int:
        value = self._config_value(cfg.mask_id, "mask_token_id")
        if value is None:
            raise ValueError("MDMSampler: set MDMSamplerConfig.mask_id or model.config.mask_token_id")
        return value

    def _eos_id(self, cfg: MDMSamplerConfig) -> int:
        value = self._config_value(cfg.eos_id, "eos_token_id")
        if value is None and self.tokenizer is not None:
            value = self.tokenizer.eos_token_id
        if value is None:
            raise ValueError("MDMSampler: set MDMSamplerConfig.eos_id or model.config.eos_token_id")
        return int(value)

    def _pad_id(self, cfg: MDMSamplerConfig) -> int:
        value = self._config_value(cfg.pad_id, "pad_token_id")
        return self._eos_id(cfg) if value is None else value

    def _stop_ids(self, cfg: MDMSamplerConfig) -> Tensor:
        ids = [self._eos_id(cfg)]
        eot = cfg.eot_id
        if eot is None and self.tokenizer is not None:
            eot = self.tokenizer.get_vocab().get("<|eot_id|>")
        if eot is not None:
            ids.append(int(eot))
        return torch.tensor(ids, dtype=torch.long, device=model_device(self.model))

    def _fim_ids(self) -> dict[str, list[int]]:
        if self.tokenizer is None:
            raise ValueError("MDMSampler.infill: the FIM format needs a tokenizer (or pass middle_length)")
        from retrofit.data.infill_format import fim_ids

        return fim_ids(self.tokenizer)
