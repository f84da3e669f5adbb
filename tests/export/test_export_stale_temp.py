"""A killed export leaves no temp folder behind after the next export (issue #16 item 7).

The first export is SIGKILLed while writing its shards (no cleanup handler can run); the next
export to the same destination removes that `.tmp-<name>-XXXXXXXX` folder and touches nothing
else: other destinations' temp folders, a running export's folder, a fresh folder without owner
file, user files.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from retrofit.export.files import OWNER_FILE, remove_stale_temp_folders, write_owner_file
from retrofit.export.pipeline import export_checkpoint

REPO = Path(__file__).resolve().parents[2]
KILLED_EXPORT = """
import os, signal, sys
from retrofit.export.pipeline import export_checkpoint
from retrofit.export.shards import ShardWriter
open_shard = ShardWriter._open
def open_then_die(self, shard):
    open_shard(self, shard)
    os.kill(os.getpid(), signal.SIGKILL)
ShardWriter._open = open_then_die
export_checkpoint(sys.argv[1], sys.argv[2], verify="layers")
"""


def _folder(path: Path, *, age_s: float = 0.0, owner: bool = False) -> Path:
    path.mkdir()
    (path / "model.safetensors").write_bytes(b"partial")
    if owner:
        write_owner_file(path)  # this test process: alive
    stamp = time.time() - age_s
    os.utime(path, (stamp, stamp))
    return path


def test_next_export_removes_the_killed_exports_temp_folder(trained_checkpoint, tmp_path, capsys):
    out = tmp_path / "m"
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", KILLED_EXPORT, str(trained_checkpoint.ckpt), str(out)],
                          capture_output=True, text=True, env=env, timeout=300)  # fmt: skip
    assert proc.returncode == -9, proc.stderr[-2000:]
    (killed,) = [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-m-")]
    assert (killed / OWNER_FILE).is_file() and not out.exists()

    keep = {
        "notes.txt": None,
        ".tmp-other-abcdefgh": _folder(tmp_path / ".tmp-other-abcdefgh", age_s=3600),  # other destination
        ".tmp-m-extra-abcdefgh": _folder(tmp_path / ".tmp-m-extra-abcdefgh", age_s=3600),  # "m-extra"'s
        ".tmp-m-running1": _folder(tmp_path / ".tmp-m-running1", age_s=3600, owner=True),  # live owner
        ".tmp-m-starting": _folder(tmp_path / ".tmp-m-starting"),  # no owner file yet, fresh
        ".tmp-old-m-abcdefgh": _folder(tmp_path / ".tmp-old-m-abcdefgh", age_s=3600),  # m missing: keep
    }
    (tmp_path / "notes.txt").write_text("mine")
    unowned_old = _folder(tmp_path / ".tmp-m-olderxyz", age_s=3600)  # e.g. from an older retrofit

    from retrofit.cli import main

    assert main(["export", str(trained_checkpoint.ckpt), "--out", str(out), "--verify", "layers"]) == 0
    printed = capsys.readouterr().out
    assert f"removed {killed}: temp folder of an earlier export to {out} that did not finish" in printed
    assert f"removed {unowned_old}:" in printed
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*keep, "m"])
    assert not list(out.glob(".tmp-*"))  # the owner file does not end up in the export
    assert (tmp_path / "notes.txt").read_text() == "mine"

    # now that m exists, the old copy of an interrupted --overwrite swap is stale too
    removed, kept = remove_stale_temp_folders(out)
    assert removed == [tmp_path / ".tmp-old-m-abcdefgh"]
    assert len(kept) == 2 and all(".tmp-m-running1" in k or ".tmp-m-starting" in k for k in kept)


def test_overwrite_export_cleans_and_replaces(trained_checkpoint, tmp_path):
    out = tmp_path / "m"
    export_checkpoint(trained_checkpoint.ckpt, out, verify="layers")
    stale = _folder(tmp_path / ".tmp-m-killed00", age_s=120)
    dead = {"pid": 999999999, "host": socket.gethostname(), "start": "1"}  # no such process
    (stale / OWNER_FILE).write_text(json.dumps(dead))
    report = export_checkpoint(trained_checkpoint.ckpt, out, overwrite=True, verify="layers")
    assert report.removed_temp == [str(stale)] and sorted(p.name for p in tmp_path.iterdir()) == ["m"]
