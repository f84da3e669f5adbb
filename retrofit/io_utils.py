"""File-system helpers shared by checkpointing, export and inspect.

- `atomic_directory`: build a folder in a `.tmp-*` directory beside the target, then rename it
  into place, so a crash never leaves a half-written folder under the final name.
- `sha256_file` / `file_digests`: content hashes for manifests.
- `write_json_atomic`: write a JSON file through a temp file + `os.replace`.
- `read_safetensors_header`: parse (and sanity-check) a safetensors header without loading
  tensors, e.g. to count parameters or detect truncated files.

Usage:
    >>> with atomic_directory("out/model", overwrite=False) as tmp:
    ...     (tmp / "config.json").write_text("{}")
    # out/model now exists and holds config.json; on an exception nothing is left behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

TMP_PREFIX = ".tmp-"
"""Every temporary file or folder we create starts with this, so it can never be mistaken
for a finished checkpoint (tools skip names starting with '.tmp-')."""

_HASH_CHUNK = 1 << 22  # 4 MiB
_MAX_HEADER_BYTES = 100 * 1024 * 1024  # the safetensors format's own limit

# safetensors dtype string -> bytes per element
SAFETENSORS_DTYPE_BYTES: dict[str, int] = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2, "F16": 2,
    "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8,
}  # fmt: skip


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes, read in 4 MiB chunks (constant memory).

    Raises:
        FileNotFoundError: `path` does not exist.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def file_digests(root: str | os.PathLike, *, exclude: Iterable[str] = ()) -> dict[str, dict[str, Any]]:
    """sha256 and size of every regular file below `root`.

    Args:
        root: folder to walk (recursively, symlinks not followed).
        exclude: relative POSIX paths to leave out (e.g. the manifest itself). Names starting
            with `.tmp-` are always left out.

    Returns:
        {relative POSIX path: {"sha256": hex str, "size": bytes}}, sorted by path.
    """
    root = Path(root)
    skip = set(exclude)
    out: dict[str, dict[str, Any]] = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if rel in skip or any(part.startswith(TMP_PREFIX) for part in path.relative_to(root).parts):
            continue
        if path.is_file() and not path.is_symlink():
            out[rel] = {"sha256": sha256_file(path), "size": path.stat().st_size}
    return out


def write_json_atomic(path: str | os.PathLike, obj: Any) -> Path:
    """Write `obj` as indented JSON to `path` via a `.tmp-` file and `os.replace` (atomic on POSIX).

    Returns:
        The final path.
    """
    return _write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def write_jsonl_atomic(path: str | os.PathLike, rows: Iterable[Any]) -> Path:
    """Write one JSON value per line to `path` atomically (parent folders created).

    Returns:
        The final path.
    """
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return _write_text_atomic(path, "".join(json.dumps(row) + "\n" for row in rows))


def _write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f"{TMP_PREFIX}{path.name}-", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


@contextmanager
def atomic_directory(target: str | os.PathLike, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield an empty temp folder beside `target`; on success rename it to `target`.

    The temp folder is `<parent>/.tmp-<name>-XXXX`. If the body raises (including
    KeyboardInterrupt), the temp folder is removed and `target` is untouched. With `overwrite`,
    an existing `target` is replaced only after the new folder is complete: old -> `.tmp-old-*`,
    new -> target, then the old copy is deleted (if the second rename fails the old folder is
    put back).

    Args:
        target: final folder path.
        overwrite: allow replacing an existing folder.

    Raises:
        FileExistsError: `target` exists and `overwrite` is False (checked before any work), or
            `target` is a file.
    """
    target = Path(target).absolute()
    if target.exists() and (not overwrite or not target.is_dir()):
        what = "a file" if not target.is_dir() else "an existing folder"
        raise FileExistsError(
            f"{target} is {what}; choose another output path"
            + (" or pass --overwrite to replace it" if target.is_dir() else "")
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{target.name}-", dir=target.parent))
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # mkdtemp makes it owner-only; a finished folder gets normal permissions
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _commit(tmp, target, overwrite)


def _commit(tmp: Path, target: Path, overwrite: bool) -> None:
    """Move the finished `tmp` folder to `target` (replacing it only if `overwrite`)."""
    if not target.exists():
        os.rename(tmp, target)
        return
    if not overwrite:  # appeared while we worked
        shutil.rmtree(tmp, ignore_errors=True)
        raise FileExistsError(f"{target} appeared while writing; nothing was replaced")
    old = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}old-{target.name}-", dir=target.parent))
    old.rmdir()
    os.rename(target, old)
    try:
        os.rename(tmp, target)
    except BaseException:
        os.rename(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)


def read_safetensors_header(path: str | os.PathLike) -> dict[str, Any]:
    """Parse a safetensors file's JSON header and check that the file is complete.

    Args:
        path: a `.safetensors` file.

    Returns:
        {tensor name: {"dtype": str, "shape": list[int], "data_offsets": [begin, end]}} plus the
        optional "__metadata__" entry, exactly as stored.

    Raises:
        ValueError: the file is shorter than its header says (truncated), the header is not
            valid JSON, or a tensor's byte range disagrees with its dtype/shape. The message
            names the file.
    """
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as handle:
        raw = handle.read(8)
        if len(raw) < 8:
            raise ValueError(f"{path}: truncated safetensors file ({size} bytes, no header)")
        (n_header,) = struct.unpack("<Q", raw)
        if n_header > _MAX_HEADER_BYTES or 8 + n_header > size:
            raise ValueError(f"{path}: truncated or corrupt safetensors file (header of {n_header} bytes)")
        try:
            header = json.loads(handle.read(n_header))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ValueError(f"{path}: safetensors header is not valid JSON ({err})") from err
    data_end = 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        numel = 1
        for dim in info["shape"]:
            numel *= dim
        if end - begin != numel * SAFETENSORS_DTYPE_BYTES.get(info["dtype"], 0):
            raise ValueError(f"{path}: tensor {name!r} has {end - begin} bytes for shape {info['shape']}")
        data_end = max(data_end, end)
    if 8 + n_header + data_end > size:
        raise ValueError(
            f"{path}: truncated safetensors file ({size} bytes on disk, header needs {8 + n_header + data_end})"
        )
    return header
