"""Native LLaDA (masked-diffusion LM) for transformers 4.5x / 5.x, no `trust_remote_code`.

Parameter names equal the official GSAI-ML/LLaDA-8B checkpoints (spec §8.2), so their sharded
safetensors load with zero missing / unexpected keys:

    model.transformer.wte.weight                    [V_emb, D]
    model.transformer.blocks.{i}.attn_norm.weight   [D]
    model.transformer.blocks.{i}.{q,k,v}_proj.weight
    model.transformer.blocks.{i}.attn_out.weight    [D, D]
    model.transformer.blocks.{i}.ff_norm.weight     [D]
    model.transformer.blocks.{i}.ff_proj.weight     [H, D]   (SiLU gate)
    model.transformer.blocks.{i}.up_proj.weight     [H, D]
    model.transformer.blocks.{i}.ff_out.weight      [D, H]
    model.transformer.ln_f.weight                   [D]
    model.transformer.ff_out.weight                 [V_emb, D]  (untied LM head)

Block math (spec §2.3, §8.3): pre-norm Llama block, RMSNorm in fp32, RoPE in fp32 with the
NeoX half-split rotation, bidirectional SDPA (no causal mask), SwiGLU MLP, no biases.

Usage:
    >>> import retrofit.models  # registers "llada" with the transformers Auto classes
    >>> model = AutoModel.from_pretrained("path/to/LLaDA-8B-Base", dtype=torch.bfloat16)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers.utils import ModelOutput

from retrofit.models.llada_config import LLaDAConfig

try:  # transformers >= 4.52: recomputation handled by the layer base class
    from transformers.modeling_layers import GradientCheckpointingLayer
except ImportError:  # pragma: no cover - older transformers
    GradientCheckpointingLayer = nn.Module


@dataclass
class LLaDAOutput(ModelOutput):
    """Output of `LLaDAModelLM.forward`.

    Attributes:
        logits: [B, L, V_emb] token logits (model dtype), or None if `return_logits=False`.
        hidden_states: tuple of n_layers + 1 tensors [B, L, D]: the input of each block, then the
            final post-`ln_f` state (spec §8.3). None unless requested.
        last_hidden_state: [B, L, D] post-`ln_f` state (always returned; the FlexMDM length head
            and masked-slot logits read it).
    """

    logits: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    last_hidden_state: torch.Tensor | None = None


class RMSNorm(nn.Module):
    """RMSNorm computed in fp32, cast back, then scaled by the weight (spec §8.3)."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(dtype)


def rope_cos_sin(
    length: int, head_dim: int, theta: float, device: torch.device | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """RoPE tables for absolute positions 0..length-1, in fp32 (spec §8.3).

    inv_freq_k = theta^(-2k/head_dim), angle = pos * inv_freq, duplicated as [f || f].

    Returns:
        (cos, sin), each [length, head_dim] float32.
    """
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim))
    angles = torch.outer(torch.arange(length, device=device, dtype=torch.float32), inv_freq)
    angles = torch.cat((angles, angles), dim=-1)
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate [B, H, L, hd] by the NeoX half-split convention: x*cos + [-x2 || x1]*sin."""
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat((-x2, x1), dim=-1) * sin


def _modulate(y: torch.Tensor, scale_shift: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
    """AdaLN: y <- (1 + scale) * y + shift, scale/shift [B, D] broadcast over positions (spec §2.5)."""
    if scale_shift is None:
        return y
    scale, shift = scale_shift
    return y * (1 + scale[:, None, :].to(y.dtype)) + shift[:, None, :].to(y.dtype)


class LLaDABlock(GradientCheckpointingLayer):
    """One pre-norm Llama-style LLaDA block (spec §2.3, §8.3)."""

    def __init__(self, config: LLaDAConfig):
        super().__init__()
        d, hd = config.d_model, config.d_model // config.n_heads
        self.n_heads, self.n_kv_heads, self.head_dim = config.n_heads, config.n_kv_heads, hd
        self.rope_full_precision = config.rope_full_precision
        self.attn_norm = RMSNorm(d, config.rms_norm_eps)
        self.q_proj = nn.Linear(d, config.n_heads * hd, bias=False)
        self.k_proj = nn.Linear(d, config.n_kv_heads * hd, bias=False)
        self.v_proj = nn.Linear(d, config.n_kv_heads * hd, bias=False)
        self.attn_out = nn.Linear(d, d, bias=False)
        self.ff_norm = RMSNorm(d, config.rms_norm_eps)
        self.ff_proj = nn.Linear(d, config.mlp_hidden_size, bias=False)
        self.up_proj = nn.Linear(d, config.mlp_hidden_size, bias=False)
        self.ff_out = nn.Linear(config.mlp_hidden_size, d, bias=False)

    def attention(self, h, cos, sin, attn_mask):
        """Bidirectional multi-head attention. h [B, L, D]; attn_mask [B, 1, 1, L] bool or None."""
        B, L, _ = h.shape
        q = self.q_proj(h).view(B, L, self.n_heads, self.head_dim).transpose(1, 2)  # [B, H, L, hd]
        k = self.k_proj(h).view(B, L, self.n_kv_heads, self.head_dim).transpose(1, 2)  # [B, Hkv, L, hd]
        v = self.v_proj(h).view(B, L, self.n_kv_heads, self.head_dim).transpose(1, 2)
        rope_dtype = torch.float32 if self.rope_full_precision else q.dtype
        q = apply_rope(q.to(rope_dtype), cos.to(rope_dtype), sin.to(rope_dtype)).to(v.dtype)
        k = apply_rope(k.to(rope_dtype), cos.to(rope_dtype), sin.to(rope_dtype)).to(v.dtype)
        if self.n_kv_heads != self.n_heads:  # grouped-query attention
            rep = self.n_heads // self.n_kv_heads
            k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=0.0, is_causal=False)
        return self.attn_out(out.transpose(1, 2).reshape(B, L, -1))

    def forward(self, x, cos, sin, attn_mask=None, scale=None, shift=None):
        """x [B, L, D] -> [B, L, D]. Optional AdaLN `scale`, `shift` [B, D] modulate both norms.

        Tensors are positional so that re-entrant gradient checkpointing propagates their grads.
        """
        mod = None if scale is None else (scale, shift)
        x = x + self.attention(_modulate(self.attn_norm(x), mod), cos, sin, attn_mask)
        h = _modulate(self.ff_norm(x), mod)
        return x + self.ff_out(F.silu(self.ff_proj(h)) * self.up_proj(h))


class LLaDAModel(nn.Module):
    """The trunk: `transformer` = ModuleDict(wte, blocks, ln_f, ff_out) with official names."""

    def __init__(self, config: LLaDAConfig):
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(config.embedding_size, config.d_model),
                blocks=nn.ModuleList([LLaDABlock(config) for _ in range(config.n_layers)]),
                ln_f=RMSNorm(config.d_model, config.rms_norm_eps),
                ff_out=nn.Linear(config.d_model, config.embedding_size, bias=False),
            )
        )


class LLaDAModelLM(PreTrainedModel):
    """LLaDA masked-diffusion LM (`model_type` "llada"), loadable from official checkpoints.

    Also registered for AutoModelForCausalLM / AutoModelForMaskedLM because the official
    config's `auto_map` names those loaders; it is not causal (attention is bidirectional).
    """

    config_class = LLaDAConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["LLaDABlock"]
    _supports_sdpa = True
    _keys_to_ignore_on_load_unexpected = [r"rotary_emb\.inv_freq"]

    def __init__(self, config: LLaDAConfig):
        super().__init__(config)
        self.model = LLaDAModel(config)
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.init_std
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=std)
        elif isinstance(module, RMSNorm):
            nn.init.ones_(module.weight)

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.transformer.wte

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.model.transformer.wte = value

    def get_output_embeddings(self) -> nn.Linear:
        return self.model.transformer.ff_out

    @property
    def lm_head(self) -> nn.Linear:
        """The untied output projection `model.transformer.ff_out` [V_emb, D]."""
        return self.model.transformer.ff_out

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Token logits from post-`ln_f` states [..., D] -> [..., V_emb] (scaled if scale_logits)."""
        logits = self.lm_head(hidden)
        return logits * (1.0 / math.sqrt(self.config.d_model)) if self.config.scale_logits else logits

    def logits_at(self, hidden: torch.Tensor, logits_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Logits of post-`ln_f` states [B, L, D]: [B, L, V_emb], or [N, V_emb] at the rows of
        `logits_mask.nonzero()` ([B, L] bool) when given.

        Raises:
            ValueError: `logits_mask` is not [B, L].
        """
        if logits_mask is None:
            return self.compute_logits(hidden)
        if tuple(logits_mask.shape) != tuple(hidden.shape[:2]):
            raise ValueError(
                f"logits_mask has shape {tuple(logits_mask.shape)}, expected {tuple(hidden.shape[:2])}"
            )
        return self.compute_logits(hidden[logits_mask.bool()])

    def forward(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        output_hidden_states: bool = False,
        block_modulation: Sequence[tuple[torch.Tensor, torch.Tensor] | None] | None = None,
        return_logits: bool = True,
        return_dict: bool = True,
        logits_mask: torch.Tensor | None = None,
        **kwargs,
    ) -> LLaDAOutput:
        """Bidirectional forward pass.

        Args:
            input_ids: [B, L] int64 token ids. Positions are the absolute indices 0..L-1.
            attention_mask: optional [B, L] (bool or 0/1): keys with 0 are not attended to
                (query positions are still computed). None = full attention (spec §2.2).
            output_hidden_states: also return the input of each block and the final state.
            block_modulation: optional, one `(scale, shift)` pair ([B, D] each) or None per block,
                applied after attn_norm and ff_norm (FlexMDM AdaLN, spec §2.5).
            return_logits: set False to skip the LM head (FlexMDM computes logits only where needed).
            logits_mask: optional [B, L] bool: logits only there (`logits_at`); the MDM loss needs
                only the masked positions, and the LM head is much of a small model's cost.

        Returns:
            LLaDAOutput with logits [B, L, V_emb] (or [N, V_emb] with `logits_mask`),
            last_hidden_state [B, L, D], hidden_states.

        Raises:
            ValueError: block_modulation of the wrong length, or a logits_mask not of shape [B, L].
        """
        tr = self.model.transformer
        B, L = input_ids.shape
        if block_modulation is not None and len(block_modulation) != len(tr.blocks):
            raise ValueError(
                f"block_modulation has {len(block_modulation)} entries for {len(tr.blocks)} blocks"
            )
        x = tr.wte(input_ids)  # [B, L, D]
        head_dim = self.config.d_model // self.config.n_heads
        cos, sin = rope_cos_sin(L, head_dim, self.config.rope_theta, device=x.device)  # [L, hd]
        attn_mask = None
        if attention_mask is not None and not bool(attention_mask.all()):
            attn_mask = attention_mask.bool()[:, None, None, :]  # [B, 1, 1, L]
        hidden_states = []
        for i, block in enumerate(tr.blocks):
            if output_hidden_states:
                hidden_states.append(x)
            mod = block_modulation[i] if block_modulation is not None else None
            scale, shift = mod if mod is not None else (None, None)
            x = block(x, cos, sin, attn_mask, scale, shift)
        x = tr.ln_f(x)
        if output_hidden_states:
            hidden_states.append(x)
        logits = self.logits_at(x, logits_mask) if return_logits else None  # [B, L, V] or [N, V]
        return LLaDAOutput(
            logits=logits,
            hidden_states=tuple(hidden_states) if output_hidden_states else None,
            last_hidden_state=x,
        )
