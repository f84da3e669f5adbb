"""`LLaDAConfig`: the official LLaDA config.json keys (docs/method.md §8.1-8.2), validated on load.

Keys whose other values retrofit's native LLaDA does not implement (ALiBi, biases, ...) raise a
ValueError that names the key; see `retrofit.models.llada` for the model itself.
"""

from __future__ import annotations

from transformers import PretrainedConfig

# (key, value, reason) for official config keys whose other values we do not implement.
_UNSUPPORTED: tuple[tuple[str, object, str], ...] = (
    ("alibi", False, "ALiBi attention biases are not implemented; LLaDA uses RoPE"),
    ("rope", True, "only rotary position embeddings are implemented"),
    ("block_type", "llama", "only the Llama-style block of LLaDA-8B is implemented"),
    ("include_bias", False, "linear biases are not implemented"),
    ("include_qkv_bias", False, "q/k/v biases are not implemented"),
    ("bias_for_layer_norm", False, "norm biases are not implemented"),
    ("layer_norm_type", "rms", "only RMSNorm is implemented"),
    ("attention_layer_norm", False, "q/k layer norms are not implemented"),
    ("input_emb_norm", False, "input embedding norm is not implemented"),
    ("weight_tying", False, "tied input/output embeddings are not implemented"),
    ("activation_type", "silu", "only the SiLU-gated MLP (SwiGLU) is implemented"),
    ("block_group_size", 1, "block groups are not implemented"),
)


class LLaDAConfig(PretrainedConfig):
    """Configuration of a LLaDA model; accepts every key of the official config.json (docs/method.md §8.1).

    Defaults are the LLaDA-8B-Base values. Keys that only matter to the original training code
    (init_fn, precision, flash_attention, ...) are stored and ignored.

    Raises:
        ValueError: a key holds a value this implementation does not support (the message
            names the key and the supported value), or head / size settings are inconsistent.
    """

    model_type = "llada"
    keys_to_ignore_at_inference = ["past_key_values"]

    def __init__(
        self,
        d_model: int = 4096,
        n_heads: int = 32,
        n_kv_heads: int | None = None,
        n_layers: int = 32,
        mlp_ratio: int = 4,
        mlp_hidden_size: int | None = 12288,
        vocab_size: int = 126464,
        embedding_size: int | None = 126464,
        max_sequence_length: int = 4096,
        rope_theta: float = 500000.0,
        rms_norm_eps: float = 1e-5,
        mask_token_id: int | None = 126336,
        eos_token_id: int | None = 126081,
        pad_token_id: int | None = 126081,
        bos_token_id: int | None = None,
        scale_logits: bool = False,
        rope_full_precision: bool = True,
        init_std: float = 0.02,
        use_cache: bool = False,
        **kwargs,
    ):
        official_defaults = dict(
            activation_type="silu", alibi=False, alibi_bias_max=8.0, attention_dropout=0.0,
            attention_layer_norm=False, attention_layer_norm_with_affine=True,
            bias_for_layer_norm=False, block_group_size=1, block_type="llama",
            embedding_dropout=0.0, flash_attention=False, include_bias=False,
            include_qkv_bias=False, init_cutoff_factor=None, init_device="meta",
            init_fn="mitchell", input_emb_norm=False, layer_norm_type="rms",
            layer_norm_with_affine=True, multi_query_attention=None, precision="amp_bf16",
            residual_dropout=0.0, rope=True, weight_tying=False,
        )  # fmt: skip
        for key, value in official_defaults.items():
            kwargs.setdefault(key, value)
        self.d_model = d_model
        self.n_heads = n_heads
        self.n_kv_heads = n_kv_heads if n_kv_heads is not None else n_heads
        self.n_layers = n_layers
        self.mlp_ratio = mlp_ratio
        self.mlp_hidden_size = mlp_hidden_size if mlp_hidden_size is not None else mlp_ratio * d_model
        self.vocab_size = vocab_size
        self.embedding_size = embedding_size if embedding_size is not None else vocab_size
        self.max_sequence_length = max_sequence_length
        self.rope_theta = rope_theta
        self.rms_norm_eps = rms_norm_eps
        self.mask_token_id = mask_token_id
        self.scale_logits = scale_logits
        self.rope_full_precision = rope_full_precision
        self.init_std = init_std
        self.use_cache = use_cache
        kwargs.setdefault("tie_word_embeddings", False)
        super().__init__(
            pad_token_id=pad_token_id, eos_token_id=eos_token_id, bos_token_id=bos_token_id, **kwargs
        )
        self.validate_llada()

    # HF-style aliases used by generic tooling (peft, accelerate size estimates).
    @property
    def hidden_size(self) -> int:
        return self.d_model

    @property
    def num_hidden_layers(self) -> int:
        return self.n_layers

    @property
    def num_attention_heads(self) -> int:
        return self.n_heads

    def validate_llada(self) -> None:
        """Raise ValueError naming the config key if a value is unsupported or inconsistent."""
        for key, supported, reason in _UNSUPPORTED:
            value = getattr(self, key, supported)
            if key == "block_group_size" and value in (None, 1):
                continue
            if value != supported:
                raise ValueError(
                    f"config.json: {key}={value!r} is not supported ({reason}); "
                    f"retrofit's native LLaDA needs {key}={supported!r}."
                )
        if self.d_model % self.n_heads:
            raise ValueError(
                f"config.json: d_model={self.d_model} is not divisible by n_heads={self.n_heads}"
            )
        if self.n_heads % self.n_kv_heads:
            raise ValueError(
                f"config.json: n_heads={self.n_heads} is not a multiple of n_kv_heads={self.n_kv_heads}"
            )
        if (self.d_model // self.n_heads) % 2:
            raise ValueError("config.json: the head size d_model/n_heads must be even for RoPE")
        if self.embedding_size < self.vocab_size:
            raise ValueError(
                f"config.json: embedding_size={self.embedding_size} < vocab_size={self.vocab_size}"
            )
