"""LLaDA baseline sampler: fixed-length masked diffusion, semi-autoregressive blocks (spec §4.9).

The canvas is prompt ‖ M×G. G is split into G / block_length blocks filled left to right, each in
steps / num_blocks steps. A block with m masks reveals floor(m/s) tokens per step and one more in
its first (m mod s) steps (spec §7.5: m = 10, s = 4 -> [3, 3, 2, 2]). Each step: one forward pass
(a conditional + unconditional pair with classifier-free guidance), a proposal x̂ = argmax of the
logits plus temperature-scaled Gumbel noise in float64 (temperature 0 = argmax), a confidence
(softmax probability of x̂, or uniform for ``random``), and the most confident masked positions of
the current block are revealed for good. Batched prompts are left-padded with an attention mask.

Infilling: in the baseline's FIM format (instruction + ``<prefix>``…``</prefix><suffix>``…
``</suffix>``, middle generated after it; spec §1.7, §6.2) or in place (a given number of masks
between prefix and suffix).

Example::

    sampler = MDMSampler(llada, MDMSamplerConfig(gen_length=256, block_length=128, steps=128))
    out = sampler.sample([prompt_ids], generator=torch.Generator().manual_seed(0))
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor

from retrofit.sampling.batch import model_device, progress, repeat_rows
from retrofit.sampling.mdm_config import MDMSamplerConfig
from retrofit.sampling.steps import select_top_k
from retrofit.sampling.trace import SampleOutput

__all__ = ["MDMSampler", "reveal_schedule"]


def reveal_schedule(num_masks: Tensor, steps: int) -> Tensor:
    """Tokens to reveal at each step of a block: floor(m/s), +1 in the first (m mod s) steps.

    Spec §7.5: m = 10, s = 4 -> [3, 3, 2, 2].

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
    """Masked-diffusion sampling and infilling with a LLaDA model (spec §4.9).

    Args:
        model: ``model(input_ids [B, L], attention_mask [B, L]) -> .logits [B, L, V]``.
        config: sampler settings (default MDMSamplerConfig()).
        tokenizer: optional; needed for FIM-format infilling and for the EoT id.
    """

    model: Any
    config: MDMSamplerConfig = MDMSamplerConfig()
    tokenizer: Any = None

    def sample(
        self, prompts: list[list[int]], num_samples: int = 1, generator: torch.Generator | None = None
    ) -> SampleOutput:
        """Generate ``gen_length`` tokens after each prompt (``num_samples`` rows per prompt).

        Args:
            prompts: token-id lists of any lengths (left-padded internally).
            num_samples: samples per prompt; rows are prompt-major.
            generator: torch.Generator for the Gumbel / random-remasking draws.

        Returns:
            SampleOutput; ``generated`` is cut at the first EOS when stop_at_eos.
        """
        rows = repeat_rows(prompts, num_samples)
        return self._generate(rows, [[] for _ in rows], self.config, generator)

    def infill(
        self,
        prefixes: list[list[int]],
        suffixes: list[list[int]],
        num_samples: int = 1,
        generator: torch.Generator | None = None,
        middle_length: int | None = None,
        middles: list[list[int]] | None = None,
    ) -> SampleOutput:
        """Fill between prefix and suffix ids.

        ``middle_length=None``: the baseline FIM format (spec §1.7, §6.2): prompt = instruction ‖
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
            return self._generate(pre, suf, config, generator, mid)
        if middle_length is None:
            ids = self._fim_ids()
            prompts = [ids["instruction"] + ids["<prefix>"] + p + ids["</prefix>"] + ids["<suffix>"] + s
                       + ids["</suffix>"] for p, s in zip(pre, suf)]  # fmt: skip
            return self._generate(prompts, [[] for _ in prompts], self.config, generator)
        config = replace(self.config, gen_length=middle_length, block_length=middle_length)
        return self._generate(pre, suf, config, generator)

    # ----------------------------------------------------------------------------- core
    def _generate(self, fronts, backs, cfg: MDMSamplerConfig, generator, middles=None) -> SampleOutput:
        if not fronts:
            raise ValueError("MDMSampler: no prompts given")
        x, attn, region = self._canvas(fronts, backs, cfg.gen_length, middles)
        prompt_mask = attn.bool().clone()
        prompt_mask[:, region : region + cfg.gen_length] = False
        blocks = cfg.gen_length // cfg.block_length
        per_block = cfg.steps // blocks
        passes = 0
        with torch.no_grad():
            for k in progress(range(blocks), cfg.progress, "llada blocks", "block"):
                lo = region + k * cfg.block_length
                hi = lo + cfg.block_length
                plan = reveal_schedule((x[:, lo:hi] == self._mask_id(cfg)).sum(-1), per_block)
                for s in range(per_block):
                    logits = self._logits(x, attn, prompt_mask, cfg, lo, hi)  # [B, b, V]
                    passes += 1
                    proposal, conf = self._propose(logits, cfg, generator)
                    block = x[:, lo:hi]
                    chosen = select_top_k(conf, block == self._mask_id(cfg), plan[:, s])
                    block[chosen] = proposal[chosen]
        return self._output(x, region, fronts, backs, cfg, passes)

    def _canvas(self, fronts, backs, gen_length, middles=None) -> tuple[Tensor, Tensor, int]:
        """[pad… front | M×G (or the middles) | back …pad] [B, L], its attention mask; (x, attn, region)."""
        cfg, device = self.config, model_device(self.model)
        width_front, width_back = max(map(len, fronts)), max(map(len, backs))
        L = width_front + gen_length + width_back
        x = torch.full((len(fronts), L), self._pad_id(cfg), dtype=torch.long)
        attn = torch.zeros((len(fronts), L), dtype=torch.long)
        for b, (f, bk) in enumerate(zip(fronts, backs)):  # input conversion only
            x[b, width_front - len(f) : width_front] = torch.tensor(f, dtype=torch.long)
            x[b, width_front + gen_length : width_front + gen_length + len(bk)] = torch.tensor(
                bk, dtype=torch.long
            )
            attn[b, width_front - len(f) : width_front + gen_length + len(bk)] = 1
        x[:, width_front : width_front + gen_length] = self._mask_id(cfg)
        if middles is not None:
            x[:, width_front : width_front + gen_length] = torch.tensor(middles, dtype=torch.long)
        return x.to(device), attn.to(device), width_front

    def _logits(
        self, x: Tensor, attn: Tensor, prompt_mask: Tensor, cfg: MDMSamplerConfig, lo: int, hi: int
    ) -> Tensor:
        """Float32 logits of columns lo..hi-1 [B, hi - lo, V]; with CFG one batched pass over
        (x, x with the prompt masked), combined as l_u + (w + 1)(l_c - l_u) (spec §4.9 step 1)."""
        if cfg.cfg_scale > 0:
            unconditional = x.masked_fill(prompt_mask, self._mask_id(cfg))
            both = self.model(input_ids=torch.cat([x, unconditional]), attention_mask=torch.cat([attn, attn]))
            cond, uncond = both.logits[:, lo:hi].float().chunk(2, dim=0)
            return uncond + (cfg.cfg_scale + 1.0) * (cond - uncond)
        return self.model(input_ids=x, attention_mask=attn).logits[:, lo:hi].float()

    def _propose(self, logits: Tensor, cfg: MDMSamplerConfig, generator) -> tuple[Tensor, Tensor]:
        """x̂ = argmax(l + T·Gumbel) in float64 and its confidence, both [B, b] (spec §4.9 steps 2-3)."""
        logits = logits.clone()
        logits[..., self._mask_id(cfg)] = float("-inf")  # never propose the mask itself (spec §4.7.3)
        if cfg.logits_eos_inf:
            logits[..., self._eos_id(cfg)] = float("-inf")
        noisy = logits.to(torch.float64)
        gen_device = generator.device if generator is not None else torch.device("cpu")
        if cfg.temperature > 0:
            u = torch.rand(noisy.shape, generator=generator, device=gen_device, dtype=torch.float64)
            noisy = noisy + cfg.temperature * (-torch.log(-torch.log(u.clamp_min(1e-300)))).to(noisy.device)
        proposal = noisy.argmax(dim=-1)  # [B, b]
        if cfg.remasking == "low_confidence":
            conf = torch.softmax(logits, dim=-1).gather(-1, proposal[..., None]).squeeze(-1).to(torch.float64)
        else:
            conf = torch.rand(proposal.shape, generator=generator, device=gen_device, dtype=torch.float64)
            conf = conf.to(proposal.device)
        if cfg.confidence_eos_eot_inf:
            stops = self._stop_ids(cfg)
            conf = conf.masked_fill(torch.isin(proposal, stops), float("-inf"))
        return proposal, conf

    def _output(self, x, region, fronts, backs, cfg, passes) -> SampleOutput:
        gen = x[:, region : region + cfg.gen_length].cpu()
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
