"""Write evaluation results: `results.json` and per-sample `samples.jsonl`, atomically.

`results.json` records what was evaluated and how: the run config, the sampler settings, a
hash of the model folder, metrics (by convention `name` plus `name_stderr`), timings, the
retrofit/Python versions and a UTC timestamp. Each file is written to a temporary file in the
same folder and moved into place with `os.replace`, so readers never see a half-written file.

Example:
    >>> write_results("eval-out/gsm8k", config={"task": "gsm8k"}, metrics={"accuracy": 0.5,
    ...     "accuracy_stderr": 0.05}, samples=[{"id": 0, "correct": True}], model_dir="ckpt/")
    PosixPath('eval-out/gsm8k/results.json')
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import math
import os
import platform
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1
CONFIG_FILES = ("config.json", "adapter_config.json")
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
_SAMPLE_CHUNKS, _CHUNK_BYTES = 16, 1 << 16


def _jsonable(obj: Any) -> Any:
    """Plain JSON types: numpy / torch scalars and arrays, paths, dataclasses; NaN/inf -> None."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if obj is None or isinstance(obj, (str, bool, int)):
        return obj
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return _jsonable(dataclasses.asdict(obj))
    if hasattr(obj, "tolist"):  # numpy arrays/scalars, torch tensors
        return _jsonable(obj.tolist())
    raise TypeError(f"results: cannot store {type(obj).__name__} value {obj!r} in JSON")


def _atomic_write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _sampled_digest(path: Path, size: int) -> str:
    """sha256 of 16 chunks of 64 KiB at evenly spaced offsets (the whole file if it is small)."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        if size <= _SAMPLE_CHUNKS * _CHUNK_BYTES:
            h.update(f.read())
        else:
            step = (size - _CHUNK_BYTES) // (_SAMPLE_CHUNKS - 1)
            for i in range(_SAMPLE_CHUNKS):
                f.seek(i * step)
                h.update(f.read(_CHUNK_BYTES))
    return h.hexdigest()


def model_hash(model_dir: str | os.PathLike, *, full: bool = False) -> str:
    """Fast fingerprint of a model folder: `sha256:<hex>`.

    Hashed, in order: the bytes of `config.json` and `adapter_config.json` (those present), then
    for every top-level weight file (`*.safetensors`, `*.bin`, `*.pt`, `*.pth`, sorted by name)
    its name, its size in bytes, and a sha256 of 16 chunks of 64 KiB at evenly spaced offsets
    (about 1 MiB read per file, so an 8B checkpoint takes well under a second). Two folders with
    the same config and same-sized weights that differ only outside the sampled chunks collide;
    pass `full=True` to hash every byte instead (slow: minutes for 16 GB).

    Args:
        model_dir: folder with a config and weight files (export output, adapter folder, ...).
        full: hash whole weight files instead of samples.

    Returns:
        "sha256:" followed by 64 hex digits.

    Raises:
        FileNotFoundError: if the folder does not exist or holds neither a config nor weights.
    """
    folder = Path(model_dir)
    if not folder.is_dir():
        raise FileNotFoundError(f"model_hash: {folder} is not a folder")
    configs = [folder / n for n in CONFIG_FILES if (folder / n).is_file()]
    weights = sorted(p for p in folder.iterdir() if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES))
    if not configs and not weights:
        raise FileNotFoundError(
            f"model_hash: {folder} has no {' / '.join(CONFIG_FILES)} and no weight files "
            f"({', '.join('*' + s for s in WEIGHT_SUFFIXES)}); is it a model folder?"
        )
    h = hashlib.sha256()
    for path in configs:
        h.update(f"{path.name}\0".encode() + path.read_bytes() + b"\0")
    for path in weights:
        size = path.stat().st_size
        digest = _sampled_digest(path, size) if not full else hashlib.sha256(path.read_bytes()).hexdigest()
        h.update(f"{path.name}\0{size}\0{digest}\0".encode())
    return f"sha256:{h.hexdigest()}"


def write_results(
    out_dir: str | os.PathLike,
    *,
    config: Mapping[str, Any],
    metrics: Mapping[str, Any],
    samples: Iterable[Mapping[str, Any]] | None = None,
    timings: Mapping[str, float] | None = None,
    model_dir: str | os.PathLike | None = None,
    sampler: Mapping[str, Any] | None = None,
) -> Path:
    """Write `<out_dir>/results.json` (and `<out_dir>/samples.jsonl`) atomically.

    Args:
        out_dir: output folder (created if missing).
        config: the run's settings (task, data, limits, seeds, ...).
        metrics: metric values; store standard errors as `<name>_stderr` (see
            `passk.mean_and_stderr`). NaN / inf are stored as null.
        samples: optional per-sample records, one JSON line each (e.g. prompt, output, extracted
            answer, gold, correct, status).
        timings: optional wall-clock durations in seconds, e.g. {"generate_s": 12.3}.
        model_dir: optional model folder; its path and `model_hash` are recorded.
        sampler: optional sampler settings (steps, schedules, confidence, ...).

    Returns:
        Path of results.json.

    Raises:
        TypeError: if a value cannot be represented in JSON.
        FileNotFoundError: if `model_dir` is given but is not a model folder.
    """
    from retrofit import __version__

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    record = {
        "schema_version": SCHEMA_VERSION,
        "created_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "versions": {"retrofit": __version__, "python": platform.python_version()},
        "model_dir": os.fspath(model_dir) if model_dir is not None else None,
        "model_hash": model_hash(model_dir) if model_dir is not None else None,
        "config": config,
        "sampler": sampler or {},
        "metrics": metrics,
        "timings": timings or {},
    }
    if samples is not None:
        lines = [json.dumps(_jsonable(s), ensure_ascii=False, allow_nan=False) for s in samples]
        _atomic_write(out / "samples.jsonl", "".join(line + "\n" for line in lines))
        record["num_samples"] = len(lines)
    path = out / "results.json"
    _atomic_write(path, json.dumps(_jsonable(record), indent=2, ensure_ascii=False, allow_nan=False) + "\n")
    return path
