"""FlexMDM grafted onto a LLaDA trunk: time-conditioned token posteriors + expected gap counts.

    input_ids [B, L] --append one pad column--> canvas [B, L+1]
    t [B] -> temb -> time_mlp -> e [B, D] -> adaln[k](e) = (scale, shift) for blocks of group k
    backbone(canvas, key mask, block_modulation) -> h [B, L+1, D] (post-ln_f)
    logits = backbone.compute_logits(h[:, :L])     [B, L, V]  (or [N, V] at logits_mask)
    expected_gaps = length_head(h)                  [B, L+1]

docs/method.md §2.1-2.10. With zero AdaLN the token logits equal the base LLaDA's on the same width-(L+1)
canvas and key mask (docs/method.md §2.10), so a fresh graft starts from the pretrained model.

Usage:
    >>> import retrofit.models  # registers "flexmdm" with AutoConfig / AutoModel
    >>> model = FlexMDMModel.from_llada("path/to/LLaDA-8B-Base", dtype=torch.bfloat16, seed=0)
    >>> out = model(input_ids, t=torch.full((B,), 0.5), attention_mask=slot_mask)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers.utils import ModelOutput

from retrofit.models.flexmdm_config import FlexMDMConfig
from retrofit.models.length_head import LengthHead
from retrofit.models.llada import LLaDAModelLM
from retrofit.models.packed_attention import PackedLayout
from retrofit.models.prefix_cache import PrefixCache, as_prefix_len, check_inference_only
from retrofit.models.time_embedding import AdaLNModulation, SinusoidalTimeEmbedding, TimeMLP

# Arguments that generic wrappers (peft's PeftModelForCausalLM, Trainer) pass and FlexMDM ignores when None.
_IGNORED_FORWARD_KWARGS = (
    "inputs_embeds",
    "labels",
    "output_attentions",
    "output_hidden_states",
    "return_dict",
)


@dataclass
class FlexMDMOutput(ModelOutput):
    """Output of `FlexMDMModel.forward` (docs/method.md §2.1).

    Attributes:
        logits: [B, L, V_emb] token logits in the model dtype, or [N, V_emb] for the N True
            entries of `logits_mask` (row-major order, i.e. `logits_mask.nonzero()`).
        expected_gaps: [B, L+1] float32 >= 0: g_hat_j, the expected number of insertions into
            gap j (read at position j; j = n_b is the tail gap; docs/method.md §2.2, §2.6).
        prefix_cache: with `cache_prefix=P`, the PrefixCache of canvas positions 0..P-1 (their
            keys/values carry the AdaLN modulation of this forward's t), else None.
        trunk_positions: B x (L+1), the positions fed to the trunk (the length slot included;
            packed: R x T); trunk FLOPs are proportional to trunk_positions x num_hidden_layers.
        token_ce: with `token_targets`, float32 [N] cross-entropy at the N slots of
            `logits_mask` (row-major), and `logits` is None.

    In a cached forward (`prefix_cache=`) L is the live width Lv: logits cover live slots
    P..P+Lv-1 and expected_gaps[:, i] is canvas gap P + i (i = 0..Lv).
    """

    logits: torch.Tensor | None = None
    expected_gaps: torch.Tensor | None = None
    prefix_cache: PrefixCache | None = None
    trunk_positions: int | None = None
    token_ce: torch.Tensor | None = None


class FlexMDMModel(PreTrainedModel):
    """LLaDA trunk + time embedding + grouped zero-init AdaLN + length head (docs/method.md §2.4-2.6).

    Submodules: `backbone` (LLaDAModelLM; tensors under `backbone.model.transformer.*`),
    `time_embedding` (parameter-free), `time_mlp`, `adaln` (ModuleList, one modulator per group)
    and `length_head`. Every forward calls these submodules (never reads their weights), so
    peft LoRA / `modules_to_save` wrappers, gradient checkpointing and ZeRO-3 compose.

    Args:
        config: the FlexMDMConfig.
        backbone: an existing LLaDAModelLM to reuse (no copy); default: a new one from
            `config.backbone_config`.
    """

    config_class = FlexMDMConfig
    supports_gradient_checkpointing = True
    _no_split_modules = ["LLaDABlock"]
    _supports_sdpa = True

    def __init__(self, config: FlexMDMConfig, backbone: LLaDAModelLM | None = None):
        super().__init__(config)
        d = config.hidden_size
        self.backbone = backbone if backbone is not None else LLaDAModelLM(config.backbone_config)
        self.time_embedding = SinusoidalTimeEmbedding(config.time_embed_dim, config.time_max_period)
        self.time_mlp = TimeMLP(config.time_embed_dim, config.time_hidden_size, d)
        self.adaln = nn.ModuleList(AdaLNModulation(d) for _ in range(config.num_adaln_groups))
        self.length_head = LengthHead(d, config.length_head_hidden, config.length_scale)
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        """Init of the new modules only (the backbone dispatches to its own `_init_weights`).

        transformers runs this on modules not loaded from a checkpoint; torch.nn.init is guarded
        there, so tensors already loaded (flag `_is_hf_initialized`) are never overwritten.
        """
        if isinstance(module, (nn.Linear, nn.LayerNorm)):
            # PyTorch default init (docs/method.md §2.4, §2.6); AdaLNModulation's reset is zero (§2.5)
            module.reset_parameters()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.backbone.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.backbone.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Linear:
        return self.backbone.get_output_embeddings()

    @classmethod
    def can_generate(cls) -> bool:
        """False: FlexMDM is sampled by `retrofit.sampling`, not by transformers' `generate()`."""
        return False

    def prepare_inputs_for_generation(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """Present so peft's `task_type="CAUSAL_LM"` wrapper accepts the model; never used.

        Raises:
            TypeError: always: sample with `retrofit.sampling`, not `generate()`.
        """
        raise TypeError("FlexMDM is not autoregressive: sample with retrofit.sampling, not generate()")

    def new_module_names(self) -> list[str]:
        """Names of the modules the graft adds, for peft `modules_to_save` (docs/method.md §2.9)."""
        return ["time_mlp", "length_head"] + [f"adaln.{k}" for k in range(len(self.adaln))]

    def block_modulation(
        self, t: torch.Tensor, document_ids: torch.Tensor | None = None
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per-block AdaLN (scale, shift) for times t [B] float (docs/method.md §2.4-2.5).

        Args:
            t: [B] float times (packed: one per document).
            document_ids: packed rows: long [R, T], the document (index into t) of each
                position, -1 on filler (given document 0's modulation; never read).

        Returns:
            A list with one (scale [B, D], shift [B, D]) pair per backbone block (packed: one
            [R, T, D] pair, each position carrying its document's modulation, docs/method.md §3.7);
            blocks k*G .. k*G+G-1 share the pair of group k (G = adaln_group_size).
        """
        e = self.time_mlp(self.time_embedding(t))  # [B, D]
        group_mods = [modulator(e) for modulator in self.adaln]
        if document_ids is not None:
            index = document_ids.clamp_min(0)
            group_mods = [(scale[index], shift[index]) for scale, shift in group_mods]  # [R, T, D]
        group = self.config.adaln_group_size
        return [group_mods[i // group] for i in range(self.config.num_hidden_layers)]

    def forward(
        self,
        input_ids: torch.LongTensor,
        t: torch.Tensor | float,
        attention_mask: torch.Tensor | None = None,
        logits_mask: torch.Tensor | None = None,
        cache_prefix: int | None = None,
        prefix_cache: PrefixCache | None = None,
        packed: PackedLayout | None = None,
        token_targets: torch.Tensor | None = None,
        head_chunk: int | None = None,
        **kwargs,
    ) -> FlexMDMOutput:
        """Token posteriors and expected gap counts for the canvas x_t at time t (docs/method.md §2.1-2.2).

        Args:
            input_ids: [B, L] int64 canvas: the n_b slots of row b, then pad. With
                `prefix_cache` (P positions): the live slots only, canvas positions P..P+L-1.
            t: [B] float FlexMDM times in [0, 1] (a python float or 0-dim tensor is broadcast).
            attention_mask: [B, L] bool/int, 1 on the n_b real slots of row b (left-aligned);
                None = all L slots are real. Row lengths n_b come only from this mask. With
                `prefix_cache` it marks the live slots: row b has m_b = n_b - P live slots (it may
                be 0) and its length slot sits at live position m_b (canvas position n_b).
            logits_mask: optional [B, L] bool; if given, logits are computed only there (with
                `prefix_cache`: over the live slots).
            cache_prefix: P: also return `.prefix_cache`, each block's post-RoPE keys and values
                of canvas positions 0..P-1 (inference only). 0 <= P <= min_b n_b: P is at most
                the smallest prompt length of the batch, so the prefix is real slots in every
                row. Outputs are unchanged.
            prefix_cache: a PrefixCache from `cache_prefix=P` on this batch: the trunk runs only
                on the live columns plus the length-slot column ([B, L+1]), their queries
                attending to the cached prefix keys (always valid) and to the live keys (slots
                mode: live keys 0..m_b). Built in the same step (same canvas, same t), the
                outputs equal the full forward's live part up to kernel rounding (bitwise for
                most CPU shapes, else ~1e-6 in fp32); reused in later steps it is
                Fast-dLLM's approximate cache, stale in the response and in t (the prefix keeps
                the AdaLN modulation of the t it was built at); see retrofit.models.prefix_cache.
            packed: a PackedLayout of packed rows (docs/method.md §3.7): `input_ids` [R, T] hold
                whole documents, each its n_d slots then its length slot (pad), laid out by the
                training collator; `t` holds one time per document (indexed by
                `packed.document_ids`); no pad column is appended and `attention_mask` must be
                None. logits / expected_gaps are then [N, V] / [R, T] (gap j of document d is
                read at its position j = 0..n_d). Needs pad_attention "slots".
            token_targets: long [B, L] targets at `logits_mask`: return `token_ce` [N] (float32
                cross-entropy) instead of logits, the head run in chunks of `head_chunk` slots
                recomputed in backward (retrofit.models.token_head).

        Returns:
            FlexMDMOutput(logits [B, L, V_emb] or [N, V_emb], expected_gaps [B, L+1] fp32 >= 0,
            prefix_cache, trunk_positions = B * (L + 1)).
            In "slots" mode row b attends to keys 0..n_b and position n_b (the length slot)
            always holds pad_token_id, so a row's outputs on positions 0..n_b do not depend on
            the canvas width or on other rows. In "full" mode every column is attended.
            Indexing with `prefix_cache` (P cached positions): logits[:, i] is canvas slot P + i
            and expected_gaps[:, i] is canvas gap P + i (i = 0..L; the tail gap of row b is
            i = m_b = n_b - P).

        Raises:
            ValueError: bad shapes, a mask that is not left-aligned, unsupported arguments, both
                cache arguments, cache_prefix > the shortest row, a prefix_cache that does not
                fit, or a cache argument while autograd is recording (inference only).
        """
        _check_ignored_kwargs(kwargs)
        if packed is not None:
            return self._packed_forward(
                input_ids, t, attention_mask, logits_mask, packed, token_targets, head_chunk
            )
        B, L = input_ids.shape
        times = _batch_times(t, B, input_ids.device)  # [B] fp32
        canvas, key_mask = self._canvas(input_ids, attention_mask)  # [B, L+1], [B, L+1] | None
        cache_kwargs = self._cache_kwargs(canvas, key_mask, cache_prefix, prefix_cache)
        out = self.backbone(
            canvas,
            attention_mask=key_mask,
            block_modulation=self.block_modulation(times),
            return_logits=False,
            **cache_kwargs,
        )
        h = out.last_hidden_state  # [B, L+1, D], post-ln_f
        token_ce = None
        if logits_mask is None and token_targets is None:
            # The LM head runs on all L+1 rows, as in the base LLaDA, so the GEMM (whose rounding
            # depends on its shape) gives bitwise the base's logits at graft time (docs/method.md §2.10).
            logits = self.backbone.compute_logits(h)[:, :L]  # [B, L, V] (a view)
        else:  # [N, V], or the [N] cross-entropy
            logits, token_ce = self.backbone.head_outputs(h[:, :L], logits_mask, token_targets, head_chunk)
        return FlexMDMOutput(
            logits=logits,
            expected_gaps=self.length_head(
                h, row_offset=0 if prefix_cache is None else prefix_cache.prefix_len
            ),
            prefix_cache=out.prefix_cache,
            trunk_positions=out.trunk_positions,
            token_ce=token_ce,
        )

    def _packed_forward(self, input_ids, t, attention_mask, logits_mask, packed, token_targets, head_chunk):
        """`forward` on packed rows (docs/method.md §3.7); see its `packed` argument."""
        if attention_mask is not None or self.config.pad_attention != "slots":
            raise ValueError(
                "packed rows need pad_attention='slots' and no attention_mask (documents attend to themselves)"
            )
        if input_ids.shape != packed.document_ids.shape:
            raise ValueError(
                f"input_ids {tuple(input_ids.shape)} and packed.document_ids "
                f"{tuple(packed.document_ids.shape)} must have the same [R, T] shape"
            )
        times = torch.as_tensor(t, device=input_ids.device).float().reshape(-1)  # [num documents]
        out = self.backbone(
            input_ids,
            block_modulation=self.block_modulation(times, packed.document_ids),
            return_logits=False,
            packed=packed,
        )
        h = out.last_hidden_state  # [R, T, D]
        if logits_mask is None and token_targets is None:
            logits, token_ce = self.backbone.compute_logits(h), None
        else:
            logits, token_ce = self.backbone.head_outputs(h, logits_mask, token_targets, head_chunk)
        return FlexMDMOutput(
            logits=logits,
            expected_gaps=self.length_head(h),
            trunk_positions=out.trunk_positions,
            token_ce=token_ce,
        )

    def _cache_kwargs(
        self,
        canvas: torch.Tensor,
        key_mask: torch.Tensor | None,
        cache_prefix: int | None,
        prefix_cache: PrefixCache | None,
    ) -> dict[str, Any]:
        """Backbone keyword arguments of the prefix cache, after FlexMDM-level checks."""
        if cache_prefix is None and prefix_cache is None:
            return {}
        check_inference_only("FlexMDMModel.forward")
        if cache_prefix is not None and prefix_cache is None:
            cache_prefix = as_prefix_len(cache_prefix, canvas.shape[1] - 1)
            if key_mask is not None:
                shortest = int(key_mask.sum(-1).min()) - 1  # min n_b (keys 0..n_b are attended)
                if cache_prefix > shortest:
                    raise ValueError(
                        f"cache_prefix={cache_prefix} exceeds the shortest row ({shortest} slots): the "
                        "prefix must be real slots in every row; use the smallest prompt length"
                    )
        return {"cache_prefix": cache_prefix, "prefix_cache": prefix_cache}

    def _canvas(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Append the pad column; in "slots" mode also the key mask of keys 0..n_b (docs/method.md §2.2)."""
        B, L = input_ids.shape
        pad = self.config.pad_token_id
        canvas = nn.functional.pad(input_ids, (0, 1), value=pad)  # [B, L+1]
        if self.config.pad_attention == "full":
            return canvas, None
        lengths = _row_lengths(attention_mask, B, L, input_ids.device)  # [B]
        pos = torch.arange(L + 1, device=input_ids.device)  # [L+1]
        canvas = torch.where(pos[None, :] == lengths[:, None], pad, canvas)  # length slot = pad
        return canvas, pos[None, :] <= lengths[:, None]

    @classmethod
    def from_llada(
        cls,
        path_or_model: str | Path | LLaDAModelLM,
        *,
        seed: int | None = None,
        dtype: torch.dtype | None = None,
        **graft_kwargs: Any,
    ) -> FlexMDMModel:
        """Graft fresh FlexMDM modules onto a LLaDA model (docs/method.md §2.4-2.6, §2.10).

        Args:
            path_or_model: a LLaDAModelLM (reused as the backbone, no copy) or a folder / Hub name.
            seed: if given, the new modules are initialised from `torch.manual_seed(seed)` on CPU
                in fp32 (same values on every device); the global RNG state is restored after.
            dtype: cast the whole model (backbone included) to this dtype; default: keep the
                backbone's dtype (when loading a path: the checkpoint's stored dtype).
            **graft_kwargs: FlexMDMConfig fields (canvas_width, adaln_group_size, schedules, ...).

        Returns:
            The FlexMDMModel, on the backbone's device, in eval/train mode of the backbone.
        """
        if isinstance(path_or_model, LLaDAModelLM):
            backbone = path_or_model
        else:
            backbone = _load_llada(path_or_model, dtype)
            graft_kwargs.setdefault("base_model", str(path_or_model))
        graft_kwargs.setdefault("base_model", backbone.name_or_path or None)
        config = FlexMDMConfig(backbone=backbone.config, **graft_kwargs)
        for item in (*backbone.modules(), *backbone.parameters(), *backbone.buffers()):
            item._is_hf_initialized = True  # post_init must not re-initialise the pretrained trunk
        first = next(backbone.parameters())
        with torch.random.fork_rng(devices=[]):
            if seed is not None:
                torch.manual_seed(seed)
            model = cls(config, backbone=backbone)
        model.to(device=first.device, dtype=dtype or first.dtype)
        return model.train(backbone.training)


def _check_ignored_kwargs(kwargs: dict[str, Any]) -> None:
    unexpected = [k for k, v in kwargs.items() if k not in _IGNORED_FORWARD_KWARGS or not _is_flag(v)]
    if unexpected:
        raise ValueError(
            f"FlexMDMModel.forward got unsupported arguments {sorted(unexpected)}; "
            "pass input_ids, t, attention_mask and logits_mask"
        )


def _is_flag(value: Any) -> bool:
    return value is None or isinstance(value, bool)


def _batch_times(t: torch.Tensor | float, batch: int, device: torch.device) -> torch.Tensor:
    """t as float32 [B] on `device`; a python float or 0-dim tensor is broadcast."""
    times = torch.as_tensor(t, device=device).float()
    if times.ndim == 0:
        return times.expand(batch)
    if times.shape != (batch,):
        raise ValueError(f"t has shape {tuple(times.shape)}, expected ({batch},) or a scalar")
    return times


def _row_lengths(attention_mask: torch.Tensor | None, batch: int, width: int, device) -> torch.Tensor:
    """n_b [B] int64 from a left-aligned slot mask (never from counting pad ids)."""
    if attention_mask is None:
        return torch.full((batch,), width, dtype=torch.long, device=device)
    if attention_mask.shape != (batch, width):
        raise ValueError(f"attention_mask has shape {tuple(attention_mask.shape)}, expected {(batch, width)}")
    mask = attention_mask.bool()
    lengths = mask.sum(-1)  # [B]
    if not torch.equal(mask, torch.arange(width, device=device)[None, :] < lengths[:, None]):
        raise ValueError("attention_mask must mark each row's real slots as a left-aligned run of ones")
    return lengths


def _load_llada(path: str | Path, dtype: torch.dtype | None) -> LLaDAModelLM:
    """Load a LLaDA folder with `retrofit.models.loading.load_llada` when available."""
    try:
        from retrofit.models.loading import load_llada
    except ImportError:
        return LLaDAModelLM.from_pretrained(str(path), dtype=dtype or "auto")
    return load_llada(path, dtype)
