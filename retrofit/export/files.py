"""Files of an export folder besides the weights: the base's modeling code, stale temp folders.

Modeling code (`--to-llada`): an official LLaDA config.json names its loaders in `auto_map`
(configuration_llada.LLaDAConfig, modeling_llada.LLaDAModelLM). An exported LLaDA folder that
keeps `auto_map` must ship those .py files, or `AutoModel.from_pretrained(out,
trust_remote_code=True)` fails offline. `find_modeling_code` looks for the files (plus the local
modules they import) in the base folder, then in the LLaDA folder a FlexMDM base was grafted
from; when none has them, the export drops `auto_map` and its model card says to load the folder
with retrofit's registered classes.

Stale temp folders: `retrofit.io_utils.atomic_directory` builds `<parent>/.tmp-<name>-XXXXXXXX`
and, with --overwrite, moves the previous folder to `.tmp-old-<name>-XXXXXXXX` for a moment. A
killed export leaves them behind; `remove_stale_temp_folders` (run by the next export to the
same destination) deletes exactly those names, unless an owner file written by
`write_owner_file` shows the export that made it is still running.

Usage:
    >>> code = find_modeling_code(config.auto_map, [base_dir]); copy_modeling_code(code, tmp)
    >>> removed, kept = remove_stale_temp_folders(out)
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

OWNER_FILE = ".tmp-export-owner.json"  # inside the temp folder; `.tmp-` names are never hashed
UNOWNED_STALE_AFTER_S = 60.0  # a temp folder without owner file younger than this may be starting
_MKDTEMP_SUFFIX = "[a-z0-9_]{8}"  # tempfile.mkdtemp's random part


@dataclass
class ModelingCode:
    """Modeling files to copy: `files` are paths relative to `source` (a local folder)."""

    source: Path
    files: list[str] = field(default_factory=list)


def _module_files(auto_map: dict) -> list[str]:
    """'modeling_llada.LLaDAModelLM' -> 'modeling_llada.py' for every local `auto_map` entry."""
    names = []
    for ref in auto_map.values():
        refs = ref if isinstance(ref, (list, tuple)) else [ref]
        for one in refs:
            if isinstance(one, str) and "--" not in one and "." in one:
                name = one.rsplit(".", 1)[0].replace(".", "/") + ".py"
                if name not in names:
                    names.append(name)
    return names


def find_modeling_code(auto_map: dict | None, candidates: list[Path]) -> ModelingCode | None:
    """The first candidate folder holding every module file `auto_map` names, with their imports.

    Args:
        auto_map: the config's `auto_map` (None / {} -> None).
        candidates: local folders to look in, in order (missing ones are skipped).

    Returns:
        ModelingCode with the module files and every local file they import relatively
        (`from .x import y`, found by transformers' `get_relative_import_files`), or None when
        no candidate has all of them (or `auto_map` names only Hub code, "repo--module.Class").
    """
    from transformers.dynamic_module_utils import get_relative_import_files

    names = _module_files(auto_map or {})
    if not names:
        return None
    for folder in candidates:
        if not folder.is_dir() or not all((folder / n).is_file() for n in names):
            continue
        files = list(names)
        for name in names:
            for extra in sorted(get_relative_import_files(str(folder / name))):
                rel = Path(extra).resolve().relative_to(folder.resolve()).as_posix()
                if rel not in files:
                    files.append(rel)
        if all((folder / f).is_file() for f in files):
            return ModelingCode(folder, files)
    return None


def copy_modeling_code(code: ModelingCode, dst: Path) -> list[str]:
    """Copy `code.files` from `code.source` into `dst` (bytes unchanged); returns their names."""
    for name in code.files:
        (dst / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(code.source / name, dst / name)
    return list(code.files)


def write_owner_file(tmp: Path) -> None:
    """Record this process (pid, host, start time) in the temp folder `tmp`."""
    owner = {"pid": os.getpid(), "host": socket.gethostname(), "start": _process_start(os.getpid())}
    (tmp / OWNER_FILE).write_text(json.dumps(owner), encoding="utf-8")


def _process_start(pid: int) -> str | None:
    """Start time of `pid` in clock ticks since boot (Linux /proc), None if unknown / not running."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _owner_alive(folder: Path) -> bool | None:
    """True: its owner may still run; False: its owner is dead; None: no readable owner file."""
    try:
        owner = json.loads((folder / OWNER_FILE).read_text(encoding="utf-8"))
        pid, host, start = int(owner["pid"]), owner["host"], owner.get("start")
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if host != socket.gethostname():
        return True  # cannot tell from here
    if Path("/proc").is_dir():
        now = _process_start(pid)
        return now is not None and (start is None or now == start)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temp_folders(out: str | os.PathLike) -> tuple[list[Path], list[str]]:
    """Delete the temp folders killed exports to `out` left beside it.

    Only `<parent>/.tmp-<name>-XXXXXXXX` (a write in progress) and `.tmp-old-<name>-XXXXXXXX`
    (the previous folder during an --overwrite swap) are considered; nothing else is touched.
    A write folder is removed when its owner file names a dead process on this host, or when
    it has no owner file and is older than `UNOWNED_STALE_AFTER_S`. An old-copy folder is
    removed only when `out` exists (the swap finished); otherwise it may be the only copy of
    the previous export and is kept.

    Returns:
        (removed folders, notes on kept folders: "<path>: <why>").
    """
    out = Path(out).absolute()
    parent, name = out.parent, re.escape(out.name)
    writing = re.compile(rf"\.tmp-{name}-{_MKDTEMP_SUFFIX}")
    old_copy = re.compile(rf"\.tmp-old-{name}-{_MKDTEMP_SUFFIX}")
    removed: list[Path] = []
    kept: list[str] = []
    if not parent.is_dir():
        return removed, kept
    for folder in sorted(parent.iterdir()):
        is_writing, is_old = writing.fullmatch(folder.name), old_copy.fullmatch(folder.name)
        if not (is_writing or is_old) or not folder.is_dir() or folder.is_symlink():
            continue
        alive = _owner_alive(folder)
        if alive:
            kept.append(f"{folder}: its export (see {OWNER_FILE}) may still be running")
            continue
        if is_old and alive is None and not out.exists():
            kept.append(f"{folder}: {out} is missing, so this may be the previous export; rename it back")
            continue
        if alive is None and is_writing and time.time() - folder.stat().st_mtime < UNOWNED_STALE_AFTER_S:
            kept.append(f"{folder}: no owner file and younger than {UNOWNED_STALE_AFTER_S:g} s")
            continue
        other = parent / out.name.removeprefix("old-")  # `.tmp-old-X-*` is also X's old copy
        if alive is None and is_writing and out.name.startswith("old-") and not other.exists():
            kept.append(f"{folder}: may be the previous export of {other} (missing); rename it back")
            continue
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
    return removed, kept
