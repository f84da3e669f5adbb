"""`retrofit inspect`: say what a folder is and what is wrong with it, without loading weights.

Kinds recognised (first match wins):

- "export": a folder written by `retrofit export` (`retrofit_manifest.json`), FlexMDM or LLaDA;
- "zero checkpoint": a training checkpoint with DeepSpeed ZeRO shards (`global_step*/`);
- "training checkpoint (trainer+peft)": `retrofit_checkpoint.json` / `adapter_config.json`;
- "flexmdm model" / "llada model": a model folder (config.json `model_type`), e.g. a graft or
  an official LLaDA download.

Parameter counts and dtypes come from safetensors headers only (pickled files are never opened).
Problems reported: missing or incomplete manifest, sha256 / size mismatches, shards missing from
an index, truncated safetensors, index entries absent from their shard, unknown model types.

Usage:
    $ retrofit inspect exports/flexmdm-gsm8k      # exit code 1 if any problem is found
    >>> report = inspect_folder("runs/ift/checkpoint-1000"); print(report.format())
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from retrofit.io_utils import read_safetensors_header
from retrofit.training.checkpoint import MANIFEST_NAME, verify_checkpoint, verify_files

EXPORT_MANIFEST = "retrofit_manifest.json"  # same name as retrofit.export.pipeline.EXPORT_MANIFEST (not imported: torch-free)
INDEX_NAME = "model.safetensors.index.json"
ADAPTER_FILE = "adapter_model.safetensors"


@dataclass
class FolderReport:
    """What `inspect_folder` found.

    Attributes:
        path: the folder.
        kind: "export", "zero checkpoint", "training checkpoint (trainer+peft)", "flexmdm model",
            "llada model" or "unknown".
        model_type: "flexmdm" / "llada" / other, when known.
        params: {group: parameter count} ("total", and "backbone" / "graft" for FlexMDM, or
            "lora" / "modules_to_save" for adapters).
        dtypes: {safetensors dtype: parameter count}.
        shards: weight files (relative names).
        details: other facts (step, base model, verification mode, ...).
        problems: everything found wrong; empty = healthy.
    """

    path: Path
    kind: str = "unknown"
    model_type: str | None = None
    params: dict[str, int] = field(default_factory=dict)
    dtypes: dict[str, int] = field(default_factory=dict)
    shards: list[str] = field(default_factory=list)
    details: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def format(self) -> str:
        """Human-readable multi-line summary."""
        params = ", ".join(f"{k} {v:,}" for k, v in self.params.items()) or "none found"
        dtypes = ", ".join(f"{k} ({v:,})" for k, v in self.dtypes.items()) or "-"
        shards = f"{len(self.shards)}" + (
            f" ({', '.join(self.shards[:4])}{' ...' if len(self.shards) > 4 else ''})" if self.shards else ""
        )
        lines = [str(self.path), f"  kind: {self.kind}", f"  model_type: {self.model_type or '-'}",
                 f"  parameters: {params}", f"  dtype: {dtypes}", f"  weight files: {shards}"]  # fmt: skip
        lines += [f"  {d}" for d in self.details]
        lines += (
            ["  problems: none"]
            if not self.problems
            else ["  problems:", *(f"    - {p}" for p in self.problems)]
        )
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (for `retrofit inspect --json`)."""
        return {**asdict(self), "path": str(self.path)}


def inspect_folder(path: str | Path, *, check_hashes: bool = True) -> FolderReport:
    """Classify a folder and check it.

    Args:
        path: folder to inspect.
        check_hashes: recompute sha256 of files listed in a manifest (else sizes only).

    Returns:
        FolderReport (never raises for a bad folder: problems are listed instead).
    """
    folder = Path(path)
    report = FolderReport(folder)
    if not folder.is_dir():
        report.problems.append(f"{folder}: not a folder")
        return report
    report.model_type = _model_type(folder, report)
    if (folder / EXPORT_MANIFEST).is_file():
        _inspect_export(folder, report, check_hashes)
    elif (
        (folder / MANIFEST_NAME).is_file() or (folder / "adapter_config.json").is_file() or _zero_dirs(folder)
    ):
        _inspect_training(folder, report, check_hashes)
    elif report.model_type in ("flexmdm", "llada"):
        report.kind = f"{report.model_type} model"
        _weights(folder, report)
    elif report.model_type:
        report.problems.append(
            f"{folder / 'config.json'}: model_type {report.model_type!r} is not llada or flexmdm"
        )
    else:
        report.problems.append(
            f"{folder}: no config.json, manifest or adapter: not a model or checkpoint folder"
        )
    return report


def is_training_checkpoint(folder: str | Path) -> bool:
    """True when `folder` is a Trainer checkpoint rather than a model folder (nothing is opened).

    A training checkpoint holds `retrofit_checkpoint.json`, `trainer_state.json`,
    `adapter_config.json` or a DeepSpeed `global_step*/` folder; `retrofit export` turns it into a
    model folder that `generate` / `infill` / `eval` and `model.base` accept.
    """
    folder = Path(folder)
    markers = (MANIFEST_NAME, "trainer_state.json", "adapter_config.json")
    return any((folder / name).is_file() for name in markers) or bool(_zero_dirs(folder))


def _model_type(folder: Path, report: FolderReport) -> str | None:
    config = folder / "config.json"
    if not config.is_file():
        return None
    try:
        return json.loads(config.read_text(encoding="utf-8")).get("model_type")
    except (OSError, ValueError) as err:
        report.problems.append(f"{config}: unreadable ({err})")
        return None


def _zero_dirs(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("global_step*") if p.is_dir())


def _read_json(path: Path, report: FolderReport) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        report.problems.append(f"{path}: unreadable ({err})")
        return None


def _inspect_export(folder: Path, report: FolderReport, check_hashes: bool) -> None:
    """An export: its manifest (complete, every file's sha256) plus the weight files."""
    report.kind = "export"
    manifest = _read_json(folder / EXPORT_MANIFEST, report) or {}
    if manifest.get("complete") is not True:
        report.problems.append(
            f"{folder / EXPORT_MANIFEST}: 'complete' is not true (the export did not finish)"
        )
    report.problems += verify_files(folder, manifest.get("files") or {}, check_hashes=check_hashes)
    source = manifest.get("source") or {}
    report.details.append(f"exported from: {source.get('checkpoint')} (step {source.get('step')})")
    report.details.append(f"verification: {(manifest.get('verification') or {}).get('mode')}")
    if manifest.get("kind") and manifest.get("kind") != report.model_type:
        report.problems.append(
            f"{folder}: manifest kind {manifest.get('kind')!r} != config.json {report.model_type!r}"
        )
    _weights(folder, report)


def _inspect_training(folder: Path, report: FolderReport, check_hashes: bool) -> None:
    """A Trainer checkpoint: manifest checks, adapter tensor counts, ZeRO shard listing (not opened)."""
    zero = _zero_dirs(folder)
    report.kind = "zero checkpoint" if zero else "training checkpoint (trainer+peft)"
    report.problems += verify_checkpoint(folder, check_hashes=check_hashes)
    manifest = _read_json(folder / MANIFEST_NAME, report) if (folder / MANIFEST_NAME).is_file() else {}
    if manifest:
        report.model_type = manifest.get("kind", report.model_type)
        report.details.append(
            f"step: {manifest.get('step')}; base: {(manifest.get('base_model') or {}).get('path')}"
        )
    adapter = folder / ADAPTER_FILE
    if adapter.is_file():
        counts = _count(adapter, report)
        if counts is not None:
            lora = sum(n for key, (n, _) in counts.items() if ".lora_" in key)
            total = sum(n for n, _ in counts.values())
            report.params = {"total": total, "lora": lora, "modules_to_save": total - lora}
            report.dtypes = dict(Counter(_dtype_counts(counts)))
            report.shards.append(ADAPTER_FILE)
    for tag in zero:
        files = sorted(p for p in (folder / tag).iterdir() if p.is_file())
        report.shards += [f"{tag}/{p.name}" for p in files]
        report.details.append(
            f"ZeRO {tag}: {len(files)} files, {sum(p.stat().st_size for p in files):,} bytes (pickle, not opened)"
        )
    if not adapter.is_file() and not zero and not (folder / "adapter_model.bin").is_file():
        report.problems.append(f"{adapter}: missing (and no global_step*/ ZeRO folder)")


def _count(path: Path, report: FolderReport) -> dict[str, tuple[int, str]] | None:
    """{tensor: (numel, dtype)} from a safetensors header, or None (problem recorded)."""
    try:
        header = read_safetensors_header(path)
    except (OSError, ValueError) as err:
        report.problems.append(str(err))
        return None
    out = {}
    for key, info in header.items():
        if key != "__metadata__":
            numel = 1
            for dim in info["shape"]:
                numel *= dim
            out[key] = (numel, info["dtype"])
    return out


def _dtype_counts(counts: dict[str, tuple[int, str]]) -> dict[str, int]:
    totals: Counter = Counter()
    for numel, dtype in counts.values():
        totals[dtype] += numel
    return dict(totals)


def _weights(folder: Path, report: FolderReport) -> None:
    """Shard list from the index (or model.safetensors), header checks, parameter counts."""
    index = folder / INDEX_NAME
    weight_map: dict[str, str] = {}
    if index.is_file():
        weight_map = (_read_json(index, report) or {}).get("weight_map", {})
        files = sorted(set(weight_map.values()))
    elif (folder / "model.safetensors").is_file():
        files = ["model.safetensors"]
    else:
        files = []
        bins = sorted(p.name for p in folder.glob("*.bin"))
        report.problems.append(
            f"{folder}: no safetensors weights" + (f" (pickled {bins} not opened)" if bins else "")
        )
    counts: dict[str, tuple[int, str]] = {}
    for name in files:
        if not (folder / name).is_file():
            report.problems.append(f"{folder / name}: listed in {INDEX_NAME} but missing")
            continue
        shard = _count(folder / name, report) or {}
        missing = [k for k, f in weight_map.items() if f == name and k not in shard]
        if missing:
            report.problems.append(
                f"{folder / name}: lacks {len(missing)} tensors the index puts there, e.g. {missing[0]!r}"
            )
        counts.update(shard)
    report.shards = files
    total = sum(n for n, _ in counts.values())
    report.params = {"total": total}
    if report.model_type == "flexmdm":
        backbone = sum(n for k, (n, _) in counts.items() if k.startswith("backbone."))
        report.params.update(backbone=backbone, graft=total - backbone)
    report.dtypes = _dtype_counts(counts)
