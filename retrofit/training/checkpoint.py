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

Resume: `resolve_resume` picks the checkpoint (`auto` = newest complete one) and refuses a
corrupt one; `check_resume_parallelism` refuses a ZeRO checkpoint under another world size;
`describe_resume` is the line `retrofit train` prints about the choice.

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
            size (`check_resume_parallelism`).

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


def saved_parallelism(checkpoint_dir: str | os.PathLike) -> tuple[int | None, int | None]:
    """(world size, ZeRO stage) a checkpoint was saved with.

    Read from the manifest's `parallelism`; for checkpoints written before it was recorded, the
    world size is the number of DeepSpeed per-rank optimizer shards
    (`global_step*/*zero_pp_rank_<r>_mp_rank_00_optim_states.pt`) and the stage is unknown (None).

    Returns:
        (world size or None if unknown, ZeRO stage or None for no DeepSpeed / unknown).
    """
    ckpt = Path(checkpoint_dir)
    try:
        recorded = read_manifest(ckpt).get("parallelism") or {}
    except CheckpointError:
        recorded = {}
    if recorded.get("world_size") is not None:
        stage = recorded.get("zero_stage")
        return int(recorded["world_size"]), (int(stage) if stage is not None else None)
    ranks = {
        p.name.split("zero_pp_rank_")[1].split("_")[0] for p in ckpt.glob("global_step*/*optim_states.pt")
    }
    return (len(ranks) or None), None


def check_resume_parallelism(
    checkpoint_dir: str | os.PathLike, world_size: int, zero_stage: int | None
) -> None:
    """Refuse to resume a DeepSpeed ZeRO checkpoint under another number of processes.

    ZeRO splits the optimizer state (Adam moments, fp32 master weights) into one shard per
    process. Resumed by a different number of processes -- or without DeepSpeed -- the Trainer
    restores the weights but silently starts the optimizer afresh. Checkpoints without ZeRO
    shards (one process, DDP) hold the whole optimizer state and resume under any world size.

    Args:
        checkpoint_dir: the checkpoint to resume from.
        world_size: processes of this run.
        zero_stage: this run's DeepSpeed ZeRO stage; None when it does not use DeepSpeed.

    Raises:
        CheckpointError: naming both world sizes and the two ways forward (resume with the
            saved number of processes, or `model.init_from` for a new run from its weights).
    """
    ckpt = Path(checkpoint_dir)
    saved_size, saved_stage = saved_parallelism(ckpt)
    zero_saved = saved_stage is not None or any(p.is_dir() for p in ckpt.glob("global_step*"))
    if not zero_saved or saved_size is None:
        return
    if zero_stage is not None and saved_size == world_size:
        return
    stage = f"ZeRO-{saved_stage}" if saved_stage is not None else "ZeRO"
    now = f"{world_size} process(es)" + (
        " without DeepSpeed" if zero_stage is None else f" (ZeRO-{zero_stage})"
    )
    raise CheckpointError(
        f"refusing to resume from {ckpt}: it was saved by {saved_size} process(es) under DeepSpeed {stage}, "
        f"and this run has {now}. ZeRO keeps one optimizer shard per process, so the weights would be "
        "restored but the optimizer state and its step counter silently reset. Either resume with "
        f"{saved_size} processes (accelerate launch --num_processes {saved_size} with the same DeepSpeed "
        f"config), or start a new run from its trained weights: model.init_from={ckpt} (LoRA stages; "
        "fresh optimizer and LR schedule, training.resume_from_checkpoint unset)"
    )


def resolve_resume(value: str | None, output_dir: str) -> str | None:
    """Checkpoint to resume from: None, `auto` (newest in output_dir, or None) or a path.

    Raises:
        CheckpointError: the checkpoint is incomplete or corrupt (message lists the problems).
    """
    from transformers.trainer_utils import get_last_checkpoint

    if value in (None, "", "none", "None"):
        return None
    if value == "auto":
        value = get_last_checkpoint(output_dir) if Path(output_dir).is_dir() else None
        if value is None:
            return None
    problems = verify_checkpoint(value, check_hashes=True)
    if problems:
        raise CheckpointError(
            f"refusing to resume from {value}: it is incomplete or corrupt ("
            + "; ".join(problems)
            + "). Delete it or pass an earlier checkpoint as training.resume_from_checkpoint=PATH."
        )
    return str(value)


def describe_resume(value: str | None, resume: str | None, output_dir: str) -> str | None:
    """One line saying which checkpoint training resumes from, or that `auto` found none.

    Returns:
        the line, or None when no resume was asked for.
    """
    if resume is None:
        if value == "auto":
            return f"training.resume_from_checkpoint=auto: no checkpoint in {output_dir}; starting fresh"
        return None
    how = (
        "the newest complete checkpoint, picked by training.resume_from_checkpoint=auto"
        if value == "auto"
        else "training.resume_from_checkpoint"
    )
    return f"resuming from {resume} ({how})"
