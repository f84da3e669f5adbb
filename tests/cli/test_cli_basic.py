"""The `retrofit` console script: --help, env, tiny-llada, verify-llada (run as subprocesses)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from retrofit.cli import VERBS, main

RETROFIT = Path(sys.executable).parent / "retrofit"  # the venv's console script


def _run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([str(RETROFIT), *args], capture_output=True, text=True, timeout=timeout)


def test_help_lists_every_verb():
    proc = _run("--help")
    assert proc.returncode == 0
    for verb in VERBS:
        assert verb in proc.stdout
    assert _run("no-such-verb").returncode == 2


def test_env_prints_versions_without_importing_heavy_packages():
    # -X importtime lists every imported module on stderr: deepspeed / lm_eval must not appear.
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", str(RETROFIT), "env"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    names = [line.split(":")[0] for line in proc.stdout.splitlines()]
    for name in ("python", "torch", "torch CUDA", "CUDA devices", "transformers", "peft", "accelerate"):
        assert name in names
    for name in ("deepspeed", "datasets", "lm_eval", "safetensors", "retrofit"):
        assert name in names
    imported = {
        line.rsplit("|", 1)[-1].strip().split(".")[0] for line in proc.stderr.splitlines() if "|" in line
    }
    assert "torch" in imported and not imported & {"deepspeed", "lm_eval", "peft", "transformers"}


def test_tiny_llada_then_verify_llada(tmp_path, capsys):
    out = tmp_path / "tiny"
    proc = _run("tiny-llada", "--out", str(out), "--layers", "1", "--d-model", "32", "--kv-heads", "2")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(
        f"wrote {out}: 1 layers, d_model 32, 4 heads (2 kv), vocab 320, mask id 258"
    )
    cfg = json.loads((out / "config.json").read_text())
    assert (cfg["n_layers"], cfg["d_model"], cfg["n_kv_heads"]) == (1, 32, 2)

    # The remaining calls run in-process (same code path as the console script, no import cost).
    capsys.readouterr()
    assert main(["tiny-llada", "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().out
    assert main(["tiny-llada", "--out", str(out), "--overwrite", "--seed", "3"]) == 0

    capsys.readouterr()
    assert main(["verify-llada", str(out)]) == 0
    verified = capsys.readouterr().out
    assert "mask id: 258" in verified and verified.rstrip().endswith("OK")

    (out / "config.json").write_text(json.dumps({**cfg, "alibi": True}))
    assert main(["verify-llada", str(out), "--no-remote-code"]) == 1
    assert "alibi=True is not supported" in capsys.readouterr().out


def test_verb_errors_are_one_paragraph_and_debug_shows_the_traceback(tmp_path, monkeypatch):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("mode: retrofit\nmodel: {base: x}\ndata: {train: [{format: sft, source: gsm8k}]}\n")
    proc = _run("train", "--dry-run", str(recipe), "training.max_stpes=3")
    assert proc.returncode == 1
    assert "retrofit train: error: RecipeError:" in proc.stderr and "did you mean 'max_steps'" in proc.stderr
    assert "Traceback" not in proc.stderr
    monkeypatch.setenv("RETROFIT_DEBUG", "1")
    assert "Traceback" in _run("train", "--dry-run", str(recipe), "training.max_stpes=3").stderr
