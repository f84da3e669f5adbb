"""Load LLaDA checkpoints natively, after cheap checks that turn broken folders into clear errors.

`load_llada(dir)` first validates a local folder without reading any weight data:

1. config.json exists, parses, and `LLaDAConfig` accepts it (unsupported values such as
   `alibi=true` raise, naming the key and the file);
2. the weights are safetensors: `model.safetensors.index.json` and every shard it lists, or one
   `model.safetensors`; each shard's header is opened with `safetensors.safe_open` (a truncated
   download fails here, naming the shard). Folders with only `.bin` weights are refused unless
   `trust_bin=True` (even then they are read with `torch.load(weights_only=True)`);
3. every tensor name and shape in the headers equals what the config implies (the error names
   the tensor, the shard, both shapes and the config.json key to fix).

Then it calls `LLaDAModelLM.from_pretrained`, which builds the model on the meta device and
fills it shard by shard (no second copy of the weights in RAM). Hub ids go straight to
`from_pretrained`.

Usage:
    >>> model = load_llada("GSAI-ML/LLaDA-8B-Base", dtype=torch.bfloat16, device="cuda")
    >>> mask_id = resolve_mask_id(model.config, tokenizer)
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from retrofit.models.llada import LLaDAConfig, LLaDAModelLM
from retrofit.models.tokenizer import MASK_TOKEN

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"
# Tensors the official remote code may store that the native model recomputes.
IGNORED_TENSORS = re.compile(r"rotary_emb\.inv_freq")
# Tensor-name suffix -> config.json key that sets each dimension (docs/method.md §8.2).
_DIM_KEYS: dict[str, tuple[str, ...]] = {
    "wte.weight": ("embedding_size", "d_model"),
    "transformer.ff_out.weight": ("embedding_size", "d_model"),
    "norm.weight": ("d_model",),
    "ln_f.weight": ("d_model",),
    "q_proj.weight": ("d_model / n_heads", "d_model"),
    "k_proj.weight": ("n_kv_heads", "d_model"),
    "v_proj.weight": ("n_kv_heads", "d_model"),
    "attn_out.weight": ("d_model", "d_model"),
    "ff_proj.weight": ("mlp_hidden_size", "d_model"),
    "up_proj.weight": ("mlp_hidden_size", "d_model"),
    "ff_out.weight": ("d_model", "mlp_hidden_size"),  # block down-projection
}


class CheckpointError(ValueError):
    """A checkpoint folder is unusable; the message names the file / key and the fix."""


def read_llada_config(path: str | Path) -> LLaDAConfig:
    """Parse and validate `path`/config.json.

    Raises:
        FileNotFoundError: config.json is missing.
        CheckpointError: it is not valid JSON, is not a LLaDA config, or holds an unsupported
            or inconsistent value (message starts with the config.json path).
    """
    cfg_path = Path(path) / "config.json"
    if not cfg_path.is_file():
        raise FileNotFoundError(f"{cfg_path} is missing: a LLaDA checkpoint folder needs its config.json")
    try:
        raw = json.loads(cfg_path.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{cfg_path} is not valid JSON ({e}); re-download or fix it") from e
    if raw.get("model_type", "llada") != "llada":
        raise CheckpointError(f"{cfg_path}: model_type={raw['model_type']!r}, expected 'llada'")
    try:
        config = LLaDAConfig.from_dict(raw)
    except (ValueError, TypeError) as e:
        raise CheckpointError(f"{cfg_path}: {e}") from e
    config._name_or_path = str(path)
    return config


def weight_files(path: str | Path, trust_bin: bool = False) -> dict[str, Path]:
    """Map each tensor name to its safetensors file, checking that every file exists.

    Returns:
        name -> shard path; empty when the folder holds `.bin` weights and `trust_bin` is set
        (their headers cannot be read without loading them).

    Raises:
        FileNotFoundError: no weights, or a shard listed in the index is missing.
        CheckpointError: the index is unreadable, or only `.bin` weights exist and `trust_bin`
            is False.
    """
    path = Path(path)
    index_path = path / INDEX_FILE
    if index_path.is_file():
        try:
            weight_map = json.loads(index_path.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise CheckpointError(f"{index_path} has no readable 'weight_map' ({e}); re-download it") from e
        for shard in sorted(set(weight_map.values())):
            if not (path / shard).is_file():
                raise FileNotFoundError(f"{path / shard} is missing (listed in {index_path}); re-download it")
        return {name: path / shard for name, shard in weight_map.items()}
    if (path / SINGLE_FILE).is_file():
        single = path / SINGLE_FILE
        try:
            with safe_open(single, framework="pt") as fh:
                return dict.fromkeys(fh.keys(), single)
        except (SafetensorError, OSError) as e:
            raise CheckpointError(f"{single} is not a readable safetensors file ({e}); re-download it") from e
    if any(path.glob("*.bin")):
        if trust_bin:
            return {}
        raise CheckpointError(
            f"{path} holds only .bin (pickle) weights; retrofit loads safetensors only. Convert them, "
            "or pass trust_bin=True (--trust-bin) if you trust the source"
        )
    raise FileNotFoundError(f"{path} has no {INDEX_FILE}, {SINGLE_FILE} or .bin weights")


def read_shapes(files: dict[str, Path]) -> dict[str, tuple[tuple[int, ...], Path]]:
    """Read tensor shapes from safetensors headers (no tensor data is loaded).

    Args:
        files: tensor name -> shard path (from `weight_files`).

    Returns:
        name -> (shape, shard path).

    Raises:
        CheckpointError: a shard's header is unreadable (truncated / corrupt download), or a
            tensor listed in the index is absent from its shard.
    """
    shapes: dict[str, tuple[tuple[int, ...], Path]] = {}
    for shard in sorted(set(files.values())):
        try:
            with safe_open(shard, framework="pt") as fh:
                for name in fh.keys():  # noqa: SIM118 (safe_open is not iterable)
                    shapes[name] = (tuple(fh.get_slice(name).get_shape()), shard)
        except (SafetensorError, OSError) as e:
            raise CheckpointError(f"{shard} is not a readable safetensors file ({e}); re-download it") from e
    for name, shard in files.items():
        if name not in shapes:
            raise CheckpointError(f"tensor {name} is listed in {INDEX_FILE} but absent from {shard}")
    return shapes


def _config_keys_for(name: str) -> tuple[str, ...]:
    for suffix, keys in _DIM_KEYS.items():
        if name.endswith(suffix):
            return keys
    return ()


def check_shapes(config: LLaDAConfig, shapes: dict[str, tuple[tuple[int, ...], Path]], path: Path) -> None:
    """Compare header names/shapes with the parameters `config` implies (built on meta).

    Raises:
        CheckpointError: a missing or unexpected tensor (hinting at `n_layers`), or a shape
            mismatch naming the tensor, its file, both shapes and the config key.
    """
    cfg_file = path / "config.json"
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in LLaDAModelLM(config).state_dict().items()}
    found = {k: v for k, v in shapes.items() if not IGNORED_TENSORS.search(k)}
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"{path}: weights do not match {cfg_file} (n_layers={config.n_layers}): "
            f"missing {missing[:4]}{'...' if len(missing) > 4 else ''}, "
            f"unexpected {unexpected[:4]}{'...' if len(unexpected) > 4 else ''}. "
            "Fix n_layers in config.json or use the matching weights"
        )
    for name, want in expected.items():
        have, shard = found[name]
        if have != want:
            keys = _config_keys_for(name)
            dims = [keys[i] for i in range(min(len(have), len(want), len(keys))) if have[i] != want[i]]
            raise CheckpointError(
                f"tensor {name} in {shard} has shape {list(have)} but {cfg_file} implies {list(want)}; "
                f"fix config.json key(s) {', '.join(dims or keys) or 'd_model'} to match the weights"
            )


def validate_llada_dir(path: str | Path, trust_bin: bool = False) -> LLaDAConfig:
    """Run every cheap check on a local checkpoint folder (see the module docstring).

    Returns:
        the validated LLaDAConfig.

    Raises:
        FileNotFoundError, CheckpointError: see `read_llada_config`, `weight_files`,
            `read_shapes`, `check_shapes`.
    """
    path = Path(path)
    config = read_llada_config(path)
    files = weight_files(path, trust_bin=trust_bin)
    if files:
        check_shapes(config, read_shapes(files), path)
    return config


def looks_like_path(name_or_path: str) -> bool:
    """True when a model reference must be a local folder rather than a Hub id ("org/name").

    That is: it starts with `./`, `../`, `/` or `~`; it holds more than one `/`; or its first
    component exists here (`runs/x` beside a `runs/` folder).
    """
    text = str(name_or_path)
    if text in (".", "..") or text.startswith(("./", "../", "/", "~")) or text.count("/") > 1:
        return True
    return "/" in text and Path(text.split("/", 1)[0]).exists()


def hub_offline() -> bool:
    """True when HF_HUB_OFFLINE is set to a true value (read now, not at import)."""
    return os.environ.get("HF_HUB_OFFLINE", "0").strip().lower() not in ("", "0", "false", "no", "off")


def offline_message(repo_id: str, field: str = "model") -> str:
    """Why a Hub id cannot be loaded while HF_HUB_OFFLINE is set, and the two ways out."""
    return (
        f"{field}={repo_id}: not a local folder, and HF_HUB_OFFLINE={os.environ.get('HF_HUB_OFFLINE')} "
        f"keeps retrofit offline, but {repo_id} is not in the Hugging Face cache. Download it once where "
        f"there is network: `hf download {repo_id}` (`huggingface-cli download {repo_id}` with "
        "huggingface_hub < 1.0), or unset HF_HUB_OFFLINE; or pass the path of a local copy"
    )


def resolve_model_dir(name_or_path: str | Path, *, field: str = "model") -> str:
    """A local folder for a model: the folder itself, or the Hub cache snapshot of an id.

    Args:
        name_or_path: a local folder, or a Hub id such as "GSAI-ML/LLaDA-8B-Base" (downloaded
            unless HF_HUB_OFFLINE is set, in which case only the cache is used).
        field: what the value is called in messages (e.g. "model.base").

    Returns:
        the folder path (str).

    Raises:
        FileNotFoundError: the value looks like a path (see `looks_like_path`) and no such folder
            exists ("no such folder: PATH"), or it is a file, or neither a folder nor a valid Hub id.
        OSError: a Hub id missing from the cache while HF_HUB_OFFLINE is set (says how to download).
    """
    text = str(name_or_path)
    local = Path(text).expanduser()
    if local.is_dir():
        return str(local)
    if local.exists():
        raise FileNotFoundError(f"{field}={text}: is a file; expected a model folder (or a Hub id)")
    if looks_like_path(text):
        where = "" if str(local.absolute()) == text else f" (looked in {local.absolute()})"
        raise FileNotFoundError(f"{field}: no such folder: {text}{where}")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

    try:
        return snapshot_download(text, local_files_only=hub_offline())
    except HFValidationError as err:
        raise FileNotFoundError(f"{field}={text}: no such folder, and not a valid Hub id ({err})") from err
    except LocalEntryNotFoundError as err:
        if hub_offline():
            raise OSError(offline_message(text, field)) from err
        raise


def refuse_training_checkpoint(folder: str | Path, *, field: str | None = None) -> None:
    """Refuse a training checkpoint where a model folder is expected, with the way forward.

    A LoRA or ZeRO Trainer checkpoint (no config.json of its own) is not a model; a
    full-parameter checkpoint (`mode: pretrain`: config.json + weights) loads as it is.

    Args:
        folder: the folder given.
        field: the recipe field it was given as (e.g. "model.base"); None for a verb's MODEL_DIR.

    Raises:
        CheckpointError: "PATH is a training checkpoint; export it first: retrofit export PATH
            --out OUT"; as a recipe field it also suggests `model.init_from=PATH` with the
            checkpoint's own base (from its manifest).
    """
    from retrofit.export.inspect import is_training_checkpoint

    folder = Path(folder)
    if (folder / "config.json").is_file() or not is_training_checkpoint(folder):
        return
    export = f"retrofit export {folder} --out OUT"
    if field is None:
        raise CheckpointError(
            f"{folder} is a training checkpoint, not a model folder; export it first: {export}"
        )
    base = _manifest_base(folder)
    init = f"model.base={base} model.init_from={folder}" if base else f"model.init_from={folder}"
    raise CheckpointError(
        f"{field}={folder} is a training checkpoint, not a model folder: use {init} to start a new "
        f"stage from its trained weights, or export it first ({export}) and use OUT as {field}"
    )


def _manifest_base(folder: Path) -> str | None:
    """The base model path recorded in a checkpoint's retrofit_checkpoint.json (None if unreadable)."""
    try:
        manifest = json.loads((folder / "retrofit_checkpoint.json").read_text(encoding="utf-8"))
        return str(manifest["base_model"]["path"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _has_safetensors(path: Path) -> bool:
    return (path / INDEX_FILE).is_file() or (path / SINGLE_FILE).is_file()


def load_llada(
    path_or_id: str | Path,
    dtype: torch.dtype | None = None,
    device: str | torch.device | None = None,
    *,
    trust_bin: bool = False,
) -> LLaDAModelLM:
    """Load a LLaDA checkpoint (local folder or Hub id) into the native `LLaDAModelLM`.

    Args:
        path_or_id: local checkpoint folder or Hub id (e.g. "GSAI-ML/LLaDA-8B-Base").
        dtype: parameter dtype; None keeps the stored dtype (bf16 for the official weights).
        device: put the weights straight onto this device (e.g. "cuda:0"); None = CPU.
        trust_bin: allow `.bin` weights (still read with `weights_only=True`).

    Returns:
        LLaDAModelLM in eval mode.

    Raises:
        FileNotFoundError, CheckpointError: see `validate_llada_dir`; a path that does not exist
            ("no such folder"); a training checkpoint (see `refuse_training_checkpoint`); also
            when loading leaves any parameter missing.
        OSError: a Hub id could not be fetched (offline: says how to download it).
    """
    kwargs: dict = {"dtype": dtype if dtype is not None else "auto", "output_loading_info": True}
    if device is not None:
        kwargs["device_map"] = {"": str(device)}
    local = Path(path_or_id).expanduser()
    if local.exists():
        refuse_training_checkpoint(local)
        kwargs["config"] = validate_llada_dir(local, trust_bin=trust_bin)
        kwargs["use_safetensors"] = _has_safetensors(local)
        source = str(local)
    elif looks_like_path(str(path_or_id)):
        raise FileNotFoundError(f"no such folder: {path_or_id}")
    else:
        source = str(path_or_id)
    try:
        model, info = LLaDAModelLM.from_pretrained(source, **kwargs)
    except OSError as e:
        if hub_offline():
            raise OSError(f"{offline_message(source)} ({e})") from e
        raise
    if info["missing_keys"] or info["mismatched_keys"]:
        raise CheckpointError(
            f"{source}: weights missing {sorted(info['missing_keys'])[:4]} or mismatched "
            f"{sorted(info['mismatched_keys'])[:4]}; the config does not match the weights"
        )
    return model.eval()


def resolve_mask_id(config, tokenizer=None) -> int:
    """The mask token id: `config.mask_token_id`, else the tokenizer's `<|mdm_mask|>` (docs/method.md §8.4).

    Args:
        config: LLaDAConfig (or any object / dict with `mask_token_id`).
        tokenizer: optional tokenizer whose vocabulary is checked for `<|mdm_mask|>`.

    Returns:
        the mask id (int).

    Raises:
        CheckpointError: neither source gives an id, they disagree, or the id lies outside the
            embedding (`embedding_size`); the message names config.json `mask_token_id` and the
            tokenizer file.
    """
    get = config.get if isinstance(config, dict) else lambda k, d=None: getattr(config, k, d)
    cfg_file = Path(get("_name_or_path", "") or ".") / "config.json"
    from_config = get("mask_token_id")
    from_tok, tok_file = None, "(no tokenizer given)"
    if tokenizer is not None:
        from_tok = tokenizer.get_vocab().get(MASK_TOKEN)
        tok_file = str(Path(getattr(tokenizer, "name_or_path", "") or ".") / "tokenizer.json")
    if from_config is None and from_tok is None:
        raise CheckpointError(
            f"no mask id: {cfg_file} has no `mask_token_id` and {tok_file} has no {MASK_TOKEN} token; "
            "set mask_token_id in config.json"
        )
    if from_config is not None and from_tok is not None and int(from_config) != int(from_tok):
        raise CheckpointError(
            f"mask id disagreement: {cfg_file} `mask_token_id`={from_config} but {tok_file} maps "
            f"{MASK_TOKEN} to {from_tok}; fix mask_token_id in config.json or use the matching tokenizer"
        )
    mask_id = int(from_config if from_config is not None else from_tok)
    size = get("embedding_size") or get("vocab_size")
    if size is not None and not 0 <= mask_id < size:
        raise CheckpointError(f"{cfg_file} `mask_token_id`={mask_id} is outside the embedding (size {size})")
    return mask_id
