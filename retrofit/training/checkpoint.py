"""The training-checkpoint manifest `retrofit_checkpoint.json` (format owned by export).

A training checkpoint is a standard HF Trainer checkpoint folder of a peft-wrapped model
(`adapter_config.json`, `adapter_model.safetensors` with the LoRA tensors and the
`modules_to_save` graft modules, optimizer / scheduler / rng / trainer state, and with DeepSpeed
a `global_step*/` folder of ZeRO shards) plus this manifest. The manifest records what
`retrofit export` needs to rebuild the model without guessing: the kind ("flexmdm" | "llada"),
the base model path and a cheap fingerprint of it, the FlexMDM config / graft dict, the LoRA
settings, the recipe, the step, the world size and ZeRO stage it was saved with (a ZeRO
checkpoint resumes only under the same world size), and the sha256 of every file in the folder. It is written last,
atomically, with `"complete": true`; a folder without it is an unfinished checkpoint.

Choosing and checking the checkpoint a run resumes from is `retrofit.training.resume`.

Call `write_manifest` on the main process only, after every rank has finished writing (after
the Trainer's save and a barrier), because it hashes every file in the folder.

Usage:
    >>> write_manifest(ckpt, kind="flexmdm", base_model="/models/LLaDA-8B-Base",
    ...                model_config=model.config.to_dict(), lora=lora_cfg, recipe=recipe, step=500)
    >>> verify_checkpoint(ckpt)   # [] when intact
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from pathlib import Path
from typing import Any

from retrofit.io_utils import file_digests, sha256_file, write_json_atomic

MANIFEST_NAME = "retrofit_checkpoint.json"
FORMAT_NAME = "retrofit-checkpoint"
FORMAT_VERSION = 1
KINDS = ("flexmdm", "llada")
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".index.json")


class CheckpointError(RuntimeError):
    """A checkpoint or model folder is missing, incomplete, corrupt or of the wrong kind.

    The message names the file at fault and, where there is one, the fix.
    """


def base_fingerprint(base_dir: str | os.PathLike) -> dict[str, Any]:
    """Cheap identity of a model folder: sha256 of config.json + names and sizes of weight files.

    Args:
        base_dir: a local model folder (LLaDA or FlexMDM layout).

    Returns:
        {"config_sha256": hex str, "weights": {file name: size in bytes}}.

    Raises:
        CheckpointError: the folder or its config.json does not exist.
    """
    base = Path(base_dir)
    config = base / "config.json"
    if not config.is_file():
        raise CheckpointError(f"{config}: not found; the base model must be a local model folder")
    weights = {
        p.name: p.stat().st_size
        for p in sorted(base.iterdir())
        if p.is_file() and p.name.endswith(_WEIGHT_SUFFIXES)
    }
    return {"config_sha256": sha256_file(config), "weights": weights}


def write_manifest(
    checkpoint_dir: str | os.PathLike,
    *,
    kind: str,
    base_model: str | os.PathLike,
    model_config: dict,
    lora: dict,
    recipe: dict,
    step: int,
    extra: dict | None = None,
    parallelism: dict | None = None,
) -> Path:
    """Hash every file of a finished checkpoint folder and write `retrofit_checkpoint.json`.

    Args:
        checkpoint_dir: the Trainer checkpoint folder (everything else already written).
        kind: "flexmdm" (FlexMDMModel wrapped by peft) or "llada" (LLaDAModelLM, MDM baseline).
        base_model: local folder of the pretrained weights the model was built from (LLaDA, or
            a FlexMDM export for a later stage). Stored as an absolute path + fingerprint.
        model_config: JSON-serialisable config dict (`FlexMDMConfig.to_dict()` or the LLaDA one).
        lora: LoRA settings (r, lora_alpha, target_modules, modules_to_save, ...).
        recipe: the training recipe (data, schedules, optimiser, sampler defaults...).
        step: global optimiser step of this checkpoint.
        extra: optional additional JSON-serialisable fields (stored under "extra").
        parallelism: how the run was laid out, {"world_size": int, "zero_stage": int | None}
            (None stage = no DeepSpeed); resume refuses a ZeRO checkpoint under another world
            size (`retrofit.training.resume.check_resume_parallelism`).

    Returns:
        Path of the manifest.

    Raises:
        CheckpointError: unknown kind, missing folder or base model.
        TypeError: a value is not JSON-serialisable (sets, paths, enums and torch dtypes are
            converted).
    """
    ckpt = Path(checkpoint_dir)
    if kind not in KINDS:
        raise CheckpointError(f"write_manifest: kind={kind!r}; expected one of {KINDS}")
    if not ckpt.is_dir():
        raise CheckpointError(f"{ckpt}: checkpoint folder does not exist")
    base = Path(base_model).absolute()
    manifest = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "kind": kind,
        "step": int(step),
        "base_model": {"path": str(base), "fingerprint": base_fingerprint(base)},
        "model_config": model_config,
        "lora": lora,
        "recipe": recipe,
        "extra": extra or {},
        "parallelism": parallelism or {},
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "files": file_digests(ckpt, exclude=(MANIFEST_NAME,)),
        "complete": True,
    }
    manifest = json.loads(json.dumps(manifest, default=_to_json))  # fails before writing if not serialisable
    return write_json_atomic(ckpt / MANIFEST_NAME, manifest)


def _to_json(value: Any) -> Any:
    """JSON form of values peft / transformers configs hold: sets (sorted), paths, dtypes, enums."""
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=str)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if hasattr(value, "value") and type(value).__module__ != "builtins":  # enum.Enum
        return value.value
    if type(value).__name__ == "dtype":  # torch.dtype
        return str(value).removeprefix("torch.")
    raise TypeError(f"write_manifest: {type(value).__name__} value {value!r} is not JSON-serialisable")


def read_manifest(checkpoint_dir: str | os.PathLike) -> dict[str, Any]:
    """Load `retrofit_checkpoint.json` of a checkpoint folder.

    Returns:
        The manifest dict (see `write_manifest`); completeness is checked by `verify_checkpoint`.

    Raises:
        CheckpointError: the manifest is missing, not JSON, or of another format / newer version.
    """
    path = Path(checkpoint_dir) / MANIFEST_NAME
    if not path.is_file():
        raise CheckpointError(
            f"{path}: not found. The folder is not a finished retrofit training checkpoint "
            "(interrupted save, or not written by retrofit's trainer)."
        )
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        raise CheckpointError(f"{path}: 'format' is not {FORMAT_NAME!r}")
    if int(manifest.get("format_version", 0)) > FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: format_version {manifest['format_version']} is newer than this retrofit "
            f"({FORMAT_VERSION}); upgrade retrofit"
        )
    return manifest


def verify_files(root: Path, files: dict[str, dict], *, check_hashes: bool = True) -> list[str]:
    """Compare files below `root` with a {relpath: {"sha256", "size"}} table.

    Returns:
        One human-readable problem per missing file, size mismatch or sha256 mismatch.
    """
    problems = []
    for rel, want in files.items():
        path = root / rel
        if not path.is_file():
            problems.append(f"{path}: listed in the manifest but missing")
        elif path.stat().st_size != want.get("size"):
            problems.append(f"{path}: size {path.stat().st_size} != {want.get('size')} in the manifest")
        elif check_hashes and sha256_file(path) != want.get("sha256"):
            problems.append(f"{path}: sha256 differs from the manifest (file changed or corrupt)")
    return problems


def verify_checkpoint(checkpoint_dir: str | os.PathLike, *, check_hashes: bool = True) -> list[str]:
    """Check a training checkpoint against its manifest.

    Args:
        checkpoint_dir: the checkpoint folder.
        check_hashes: also recompute sha256 (else only presence and sizes).

    Returns:
        Problems found (empty list = intact): missing / unreadable manifest, `complete` not
        true, unknown kind, missing files, size or sha256 mismatches.
    """
    try:
        manifest = read_manifest(checkpoint_dir)
    except CheckpointError as err:
        return [str(err)]
    path = Path(checkpoint_dir) / MANIFEST_NAME
    problems = []
    if manifest.get("complete") is not True:
        problems.append(f"{path}: 'complete' is not true (the save did not finish)")
    if manifest.get("kind") not in KINDS:
        problems.append(f"{path}: kind={manifest.get('kind')!r}; expected one of {KINDS}")
    if not isinstance(manifest.get("files"), dict):
        return [*problems, f"{path}: has no 'files' table"]
    return problems + verify_files(Path(checkpoint_dir), manifest["files"], check_hashes=check_hashes)


def check_base(manifest: dict, base_dir: str | os.PathLike) -> list[str]:
    """Compare a base model folder with the fingerprint recorded in a manifest.

    Returns:
        Problems (empty when config.json's sha256 and the weight file names/sizes match).
    """
    want = manifest.get("base_model", {}).get("fingerprint", {})
    try:
        have = base_fingerprint(base_dir)
    except CheckpointError as err:
        return [str(err)]
    problems = []
    if have["config_sha256"] != want.get("config_sha256"):
        problems.append(
            f"{Path(base_dir) / 'config.json'}: differs from the base model the checkpoint was trained on"
        )
    if have["weights"] != want.get("weights"):
        problems.append(
            f"{base_dir}: weight files {have['weights']} differ from the recorded {want.get('weights')}"
        )
    return problems
