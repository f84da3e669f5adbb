"""Run the demo's stages as subprocesses, with timings, logs and a cached base model."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from retrofit.demo.plan import Stage


class StageError(RuntimeError):
    """A demo stage exited non-zero or did not write its artefact."""


INFILL_URL = "https://raw.githubusercontent.com/openai/human-eval-infilling/master/data/{name}"


def ensure_data_dir(data_dir: Path, out: Path) -> Path:
    """A data directory holding gsm8k/{train,test}.jsonl and the single-line HumanEval-infilling file.

    `data_dir` itself when it has them (../shared/data here); otherwise `out/data`, filled once
    (then cached) from what `data_dir` has and, for the rest, from the public sources: GSM8K from
    the Hub dataset, HumanEval-infilling from openai/human-eval-infilling on GitHub. Every file is
    written to a temporary name and renamed, so an interrupted download never leaves half a file.

    Raises:
        ConnectionError / RuntimeError: a download failed; the message names the source and says
            to set RETROFIT_DATA_DIR (or --data-dir) to a local copy instead.
    """
    from retrofit.evaluation.humaneval_data import BENCHMARKS

    infill = Path("humaneval-infilling") / BENCHMARKS["single-line"]
    needed = [Path("gsm8k") / "train.jsonl", Path("gsm8k") / "test.jsonl", infill]
    if all((data_dir / rel).is_file() for rel in needed):
        return data_dir
    local = out / "data"
    for rel in needed:
        path = local / rel
        if path.is_file():
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        if (data_dir / rel).is_file():
            shutil.copyfile(data_dir / rel, tmp)
        elif rel == infill:
            _download(INFILL_URL.format(name=rel.name), tmp)
        else:
            from retrofit.data.gsm8k_format import load_gsm8k

            rows = load_gsm8k(rel.stem, data_dir=None)
            tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
        os.replace(tmp, path)
    return local


def _download(url: str, dest: Path) -> None:
    """Fetch `url` into `dest` (a temporary name the caller renames).

    Raises:
        ConnectionError: the request failed (names the URL and the local-copy alternative).
    """
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(dest, "wb") as sink:
            shutil.copyfileobj(response, sink)
    except OSError as exc:
        dest.unlink(missing_ok=True)
        raise ConnectionError(
            f"could not download {url} ({exc}); without network, set RETROFIT_DATA_DIR (or --data-dir) "
            f"to a folder holding humaneval-infilling/{dest.name.removesuffix('.tmp')}"
        ) from exc


def run_stage(stage: Stage, log_dir: Path, env: dict[str, str], echo: bool = True) -> dict:
    """Run one stage; stream its output to the terminal and to `log_dir/<n>.log`.

    Returns:
        {"name", "seconds", "cached", "log"}.

    Raises:
        StageError: non-zero exit or missing artefact (the message names the log file).
    """
    if stage.cached and stage.artefact.exists():
        return {"name": stage.name, "seconds": 0.0, "cached": True, "log": None}
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / (stage.name.replace(" ", "_").replace(":", "").replace("/", "_") + ".log")
    start = time.perf_counter()
    with open(log, "w") as sink:
        sink.write("$ " + " ".join(stage.argv) + "\n")
        sink.flush()
        proc = subprocess.Popen(
            stage.argv, env={**env, **stage.env}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, bufsize=1,
        )  # fmt: skip
        for line in proc.stdout:
            sink.write(line)
            if echo:
                sys.stdout.write(line)
        code = proc.wait()
    seconds = time.perf_counter() - start
    if code != 0:
        raise StageError(f"demo stage '{stage.name}' failed (exit {code}); see {log}")
    if not stage.artefact.exists():
        raise StageError(f"demo stage '{stage.name}' did not write {stage.artefact}; see {log}")
    return {"name": stage.name, "seconds": seconds, "cached": False, "log": str(log)}


def run_plan(stages: list[Stage], out: Path, env: dict[str, str], echo: bool = True) -> list[dict]:
    """Run every stage in order, printing a one-line banner per stage; returns their timings."""
    timings = []
    for i, stage in enumerate(stages, 1):
        print(f"\n[demo {i}/{len(stages)}] {stage.name}", flush=True)
        timings.append(run_stage(stage, out / "logs", env, echo=echo))
        done = timings[-1]
        note = "cached" if done["cached"] else f"{done['seconds']:.1f} s"
        print(f"[demo {i}/{len(stages)}] {stage.name}: done ({note})", flush=True)
    return timings


def reset_outputs(out: Path) -> None:
    """Remove a previous demo's outputs except the cached base models."""
    if not out.exists():
        return
    for child in out.iterdir():
        if child.name in ("cache", "data"):
            continue
        shutil.rmtree(child) if child.is_dir() else child.unlink()
