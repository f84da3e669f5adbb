"""Native LLaDA (masked-diffusion LM) for transformers 4.5x / 5.x, no `trust_remote_code`.

Parameter names equal the official GSAI-ML/LLaDA-8B checkpoints (docs/method.md §8.2), so their sharded
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

Block math (docs/method.md §2.3, §8.3): pre-norm Llama block, RMSNorm in fp32, RoPE in fp32 with the
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
from retrofit.models.packed_attention import PackedLayout, packed_attention
from retrofit.models.prefix_cache import PrefixCache, as_prefix_len, check_inference_only
from retrofit.models.token_head import token_cross_entropy

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
            final post-`ln_f` state (docs/method.md §8.3). None unless requested.
        last_hidden_state: [B, L, D] post-`ln_f` state (always returned; the FlexMDM length head
            and masked-slot logits read it).
        prefix_cache: the PrefixCache of the first P positions when the forward was called with
            `cache_prefix=P`, else None.
        trunk_positions: B x L, the positions fed to the trunk (L = the live width in a cached
            forward); trunk FLOPs are proportional to trunk_positions x n_layers.
        token_ce: with `token_targets`, float32 [N] cross-entropy at the N slots of
            `logits_mask` (row-major), and `logits` is None.

    In a cached forward (`prefix_cache=`) L is the live width Lv and every tensor covers the
    live positions P..P+Lv-1 only.
    """

    logits: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    last_hidden_state: torch.Tensor | None = None
    prefix_cache: PrefixCache | None = None
    trunk_positions: int | None = None
    token_ce: torch.Tensor | None = None


class RMSNorm(nn.Module):
    """RMSNorm computed in fp32, cast back, then scaled by the weight (docs/method.md §8.3)."""

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
    """RoPE tables for absolute positions 0..length-1, in fp32 (docs/method.md §8.3).

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
    """AdaLN: y <- (1 + scale) * y + shift, scale/shift [B, D] broadcast over positions, or
    [B, L, D] per position (packed rows, docs/method.md §2.5, §3.7)."""
    if scale_shift is None:
        return y
    scale, shift = (m[:, None, :] if m.dim() == 2 else m for m in scale_shift)
    return y * (1 + scale.to(y.dtype)) + shift.to(y.dtype)


class LLaDABlock(GradientCheckpointingLayer):
    """One pre-norm Llama-style LLaDA block (docs/method.md §2.3, §8.3)."""

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

    def attention(self, h, cos, sin, attn_mask, prefix_kv=None, cache_sink=None, cache_len=0, packed=None):
        """Bidirectional multi-head attention. h [B, L, D]; attn_mask [B, 1, 1, K] bool or None.

        cos/sin [L, hd] (or [B, 1, L, hd] per row) are the RoPE tables of h's positions. `packed`
        (a PackedLayout): block-diagonal attention within each document (docs/method.md §3.7). Prefix cache (inference):
        `prefix_kv` = (keys, values) [B, Hkv, P, hd] are prepended to h's keys/values (K = P + L);
        with `cache_sink` (a list) the post-RoPE keys and the values of h's first `cache_len`
        positions are appended to it as a detached, contiguous pair [B, Hkv, cache_len, hd].
        """
        B, L, _ = h.shape
        q = self.q_proj(h).view(B, L, self.n_heads, self.head_dim).transpose(1, 2)  # [B, H, L, hd]
        k = self.k_proj(h).view(B, L, self.n_kv_heads, self.head_dim).transpose(1, 2)  # [B, Hkv, L, hd]
        v = self.v_proj(h).view(B, L, self.n_kv_heads, self.head_dim).transpose(1, 2)
        rope_dtype = torch.float32 if self.rope_full_precision else q.dtype
        q = apply_rope(q.to(rope_dtype), cos.to(rope_dtype), sin.to(rope_dtype)).to(v.dtype)
        k = apply_rope(k.to(rope_dtype), cos.to(rope_dtype), sin.to(rope_dtype)).to(v.dtype)
        if cache_sink is not None:
            cache_sink.append(
                (k[:, :, :cache_len].detach().contiguous(), v[:, :, :cache_len].detach().contiguous())
            )
        if prefix_kv is not None:
            k, v = torch.cat((prefix_kv[0], k), dim=2), torch.cat((prefix_kv[1], v), dim=2)
        if self.n_kv_heads != self.n_heads:  # grouped-query attention
            rep = self.n_heads // self.n_kv_heads
            k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        if packed is not None:
            out = packed_attention(q, k, v, packed)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=0.0, is_causal=False)
        return self.attn_out(out.transpose(1, 2).reshape(B, L, -1))

    def forward(
        self,
        x,
        cos,
        sin,
        attn_mask=None,
        scale=None,
        shift=None,
        *,
        prefix_kv=None,
        cache_sink=None,
        cache_len=0,
        packed=None,
    ):
        """x [B, L, D] -> [B, L, D]. Optional AdaLN `scale`, `shift` [B, D] (or [B, L, D])
        modulate both norms.

        Tensors are positional so that re-entrant gradient checkpointing propagates their grads.
        The keyword-only prefix-cache and `packed` arguments are described in `attention`.
        """
        mod = None if scale is None else (scale, shift)
        h = _modulate(self.attn_norm(x), mod)
        x = x + self.attention(h, cos, sin, attn_mask, prefix_kv, cache_sink, cache_len, packed)
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

    def head_outputs(
        self,
        hidden: torch.Tensor,
        logits_mask: torch.Tensor | None,
        token_targets: torch.Tensor | None = None,
        head_chunk: int | None = None,
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """(logits, token_ce) of post-`ln_f` states [B, L, D] (docs/method.md §3.2).

        Without `token_targets`: (`logits_at(hidden, logits_mask)`, None). With `token_targets`
        (long [B, L], read at `logits_mask`, which is then required): (None, float32 [N]
        cross-entropy at the N mask slots, row-major), computed by
        `retrofit.models.token_head.token_cross_entropy` in chunks of `head_chunk` slots.

        Raises:
            ValueError: `token_targets` without `logits_mask`, or shapes that differ from [B, L].
        """
        if token_targets is None:
            return self.logits_at(hidden, logits_mask), None
        if logits_mask is None or token_targets.shape != logits_mask.shape:
            raise ValueError("token_targets needs a logits_mask of the same [B, L] shape (the mask slots)")
        if tuple(logits_mask.shape) != tuple(hidden.shape[:2]):
            raise ValueError(
                f"logits_mask has shape {tuple(logits_mask.shape)}, expected {tuple(hidden.shape[:2])}"
            )
        select = logits_mask.bool()
        return None, token_cross_entropy(
            self.compute_logits, hidden[select], token_targets[select], head_chunk
        )

    def forward(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        output_hidden_states: bool = False,
        block_modulation: Sequence[tuple[torch.Tensor, torch.Tensor] | None] | None = None,
        return_logits: bool = True,
        return_dict: bool = True,
        logits_mask: torch.Tensor | None = None,
        cache_prefix: int | None = None,
        prefix_cache: PrefixCache | None = None,
        packed: PackedLayout | None = None,
        token_targets: torch.Tensor | None = None,
        head_chunk: int | None = None,
        **kwargs,
    ) -> LLaDAOutput:
        """Bidirectional forward pass, optionally building or using a prompt-prefix KV cache.

        Args:
            input_ids: [B, L] int64 token ids. Positions are the absolute indices 0..L-1 (with
                `prefix_cache`: the live columns, absolute positions P..P+L-1).
            attention_mask: optional [B, L] (bool or 0/1): keys with 0 are not attended to
                (query positions are still computed). None = full attention (docs/method.md §2.2). With
                `prefix_cache` it covers the live columns only; cached prefix keys are always
                attended to.
            output_hidden_states: also return the input of each block and the final state.
            block_modulation: optional, one `(scale, shift)` pair ([B, D] each) or None per block,
                applied after attn_norm and ff_norm (FlexMDM AdaLN, docs/method.md §2.5).
            return_logits: set False to skip the LM head (FlexMDM computes logits only where needed).
            logits_mask: optional [B, L] bool: logits only there (`logits_at`); the MDM loss needs
                only the masked positions, and the LM head is much of a small model's cost.
            cache_prefix: P (0 <= P <= L): also return, in `.prefix_cache`, each block's post-RoPE
                keys and values of positions 0..P-1 (inference only). These positions must be
                real tokens in every row (`attention_mask[:, :P]` all 1): P = the smallest prompt
                length of the batch, rows left-aligned. The outputs are unchanged.
            prefix_cache: a PrefixCache (P positions, B rows) to run only the live columns:
                each block computes q/k/v of the live tokens (RoPE at positions P..P+L-1), its
                keys/values are cat(cached prefix, live), the live queries attend to all of
                them, the MLP runs on live tokens only. Built from a forward on the same canvas
                (same block_modulation), the live outputs equal the full forward's on those
                positions up to kernel rounding (bitwise for most CPU shapes, else ~1e-6 in
                fp32; see retrofit.models.prefix_cache for exactness and staleness).
            packed: a PackedLayout: the rows hold several documents, each attending only to
                itself with RoPE positions `packed.position_ids` (docs/method.md §3.7);
                `attention_mask` must then be None.
            token_targets: long [B, L] targets at `logits_mask`: return `token_ce` [N] instead of
                logits (`head_outputs`); `head_chunk` slots per chunk of the token head.

        Returns:
            LLaDAOutput with logits [B, L, V_emb] (or [N, V_emb] with `logits_mask`),
            last_hidden_state [B, L, D], hidden_states, prefix_cache (with `cache_prefix`) and
            trunk_positions = B * L.

        Raises:
            ValueError: block_modulation of the wrong length, a logits_mask not of shape [B, L],
                both cache arguments, a cache_prefix outside 0..L or over masked positions, a
                prefix_cache that does not fit (batch, layers, heads, dtype, device), or a cache
                argument while autograd is recording (the cache is inference-only).
        """
        tr = self.model.transformer
        B, L = input_ids.shape
        if block_modulation is not None and len(block_modulation) != len(tr.blocks):
            raise ValueError(
                f"block_modulation has {len(block_modulation)} entries for {len(tr.blocks)} blocks"
            )
        if cache_prefix is not None:
            cache_prefix = as_prefix_len(cache_prefix, L)
        offset = self._check_cache_args(input_ids, attention_mask, cache_prefix, prefix_cache)
        x = tr.wte(input_ids)  # [B, L, D]
        head_dim = self.config.d_model // self.config.n_heads
        # Tables of positions 0..offset+L-1, sliced: the live rows are bitwise the full forward's.
        cos, sin = rope_cos_sin(offset + L, head_dim, self.config.rope_theta, device=x.device)
        cos, sin = cos[offset:], sin[offset:]  # [L, hd]
        if packed is not None:
            if attention_mask is not None or offset or cache_prefix is not None:
                raise ValueError("packed rows take neither attention_mask nor a prefix cache")
            cos, sin = cos[packed.position_ids][:, None], sin[packed.position_ids][:, None]  # [B, 1, L, hd]
        attn_mask = _key_mask(attention_mask, offset, B, input_ids.device)
        sink: list[tuple[torch.Tensor, torch.Tensor]] | None = [] if cache_prefix is not None else None
        hidden_states = []
        for i, block in enumerate(tr.blocks):
            if output_hidden_states:
                hidden_states.append(x)
            mod = block_modulation[i] if block_modulation is not None else None
            scale, shift = mod if mod is not None else (None, None)
            if packed is not None:
                x = block(x, cos, sin, None, scale, shift, packed=packed)
            elif sink is None and prefix_cache is None:
                x = block(x, cos, sin, attn_mask, scale, shift)
            else:
                past = prefix_cache.layer(i) if prefix_cache is not None else None
                x = block(
                    x,
                    cos,
                    sin,
                    attn_mask,
                    scale,
                    shift,
                    prefix_kv=past,
                    cache_sink=sink,
                    cache_len=cache_prefix or 0,
                )
        x = tr.ln_f(x)
        if output_hidden_states:
            hidden_states.append(x)
        logits, token_ce = None, None
        if return_logits:  # [B, L, V] or [N, V]; or the [N] cross-entropy with token_targets
            logits, token_ce = self.head_outputs(x, logits_mask, token_targets, head_chunk)
        cache = None
        if sink is not None:
            cache = PrefixCache(
                keys=tuple(k for k, _ in sink),
                values=tuple(v for _, v in sink),
                prefix_len=int(cache_prefix),
                batch_size=B,
            )
        return LLaDAOutput(
            logits=logits,
            hidden_states=tuple(hidden_states) if output_hidden_states else None,
            last_hidden_state=x,
            prefix_cache=cache,
            trunk_positions=B * L,
            token_ce=token_ce,
        )

    def _check_cache_args(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        cache_prefix: int | None,
        prefix_cache: PrefixCache | None,
    ) -> int:
        """Validate the prefix-cache arguments; return the absolute position of column 0 (P or 0)."""
        if cache_prefix is None and prefix_cache is None:
            return 0
        check_inference_only("LLaDAModelLM.forward")
        B, L = input_ids.shape
        if cache_prefix is not None and prefix_cache is not None:
            raise ValueError(
                "pass either cache_prefix (a full forward that builds the cache) or prefix_cache "
                "(a forward of the live columns that uses it), not both"
            )
        if cache_prefix is not None:
            if attention_mask is not None and not bool(attention_mask[:, :cache_prefix].bool().all()):
                raise ValueError(
                    f"cache_prefix={cache_prefix}: attention_mask is 0 inside the first {cache_prefix} "
                    "positions of some row; the prefix must be real tokens in every row (use the "
                    "smallest prompt length of the batch, rows left-aligned)"
                )
            return 0
        if not isinstance(prefix_cache, PrefixCache):
            raise ValueError(f"prefix_cache must be a PrefixCache, got {type(prefix_cache).__name__}")
        cfg = self.config
        prefix_cache.validate(
            batch_size=B,
            num_layers=cfg.n_layers,
            num_kv_heads=cfg.n_kv_heads,
            head_dim=cfg.d_model // cfg.n_heads,
            dtype=self.model.transformer.wte.weight.dtype,
            device=input_ids.device,
        )
        return prefix_cache.prefix_len


def _key_mask(attention_mask: torch.Tensor | None, offset: int, batch: int, device) -> torch.Tensor | None:
    """SDPA key mask [B, 1, 1, offset + L] bool, or None when every key is attended to.

    The `offset` cached prefix keys are always attended to; `attention_mask` [B, L] covers the rest.
    """
    if attention_mask is None or bool(attention_mask.all()):
        return None
    mask = attention_mask.bool()
    if offset:
        mask = torch.cat((torch.ones(batch, offset, dtype=torch.bool, device=device), mask), dim=1)
    return mask[:, None, None, :]
