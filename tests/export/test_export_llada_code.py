"""LLaDA exports ship the modeling code their `auto_map` names, or drop `auto_map` (issue #16 item 9).

Before: `retrofit export --to-llada` kept the base's `auto_map` without the .py files, so
`AutoModel.from_pretrained(out, trust_remote_code=True)` failed offline ("does not appear to
have a file named configuration_llada.py").
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from retrofit.export.pipeline import export_checkpoint
from retrofit.graft import graft_checkpoint
from retrofit.models import FlexMDMModel, LLaDAModelLM
from retrofit.models.tiny import OFFICIAL_AUTO_MAP, write_modeling_code
from retrofit.training.checkpoint import write_manifest

CODE_FILES = [
    "configuration_llada.py",
    "modeling_llada.py",
    "packed_attention.py",
    "prefix_cache.py",
    "token_head.py",
]  # modeling imports prefix_cache, packed_attention and token_head
# Runs without importing retrofit, as a user of the exported folder would.
LOAD_WITHOUT_RETROFIT = """
import sys, torch
from safetensors.torch import save_file
from transformers import AutoModel
model = AutoModel.from_pretrained(sys.argv[1], trust_remote_code=True).eval()
assert "retrofit" not in sys.modules
with torch.no_grad():
    logits = model(input_ids=torch.arange(24).view(2, 12)).logits
save_file({"logits": logits.contiguous()}, sys.argv[2], metadata={"module": type(model).__module__})
"""


def _load_without_retrofit(folder: Path, tmp_path: Path) -> tuple[torch.Tensor, str]:
    out = tmp_path / "remote_logits.safetensors"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": ""}
    proc = subprocess.run([sys.executable, "-c", LOAD_WITHOUT_RETROFIT, str(folder), str(out)],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    from safetensors import safe_open

    with safe_open(str(out), framework="pt") as handle:
        module = handle.metadata()["module"]
    return load_file(out)["logits"], module


def _native_logits(folder: Path) -> torch.Tensor:
    with torch.no_grad():
        return LLaDAModelLM.from_pretrained(folder).eval()(torch.arange(24).view(2, 12)).logits


def test_to_llada_copies_the_base_modeling_code(trained_checkpoint, tmp_path):
    base = tmp_path / "base-with-code"
    shutil.copytree(trained_checkpoint.base, base)
    write_modeling_code(base)  # .py files do not enter the base fingerprint
    out = tmp_path / "llada"
    report = export_checkpoint(trained_checkpoint.ckpt, out, base=base, dtype="fp32", to_llada=True)

    assert report.modeling_code == CODE_FILES and report.modeling_code_from == str(base)
    assert not report.auto_map_dropped
    for name in CODE_FILES:
        assert (out / name).read_bytes() == (base / name).read_bytes()
    assert json.loads((out / "config.json").read_text())["auto_map"] == OFFICIAL_AUTO_MAP
    manifest = json.loads((out / "retrofit_manifest.json").read_text())
    assert set(CODE_FILES) <= set(manifest["files"])  # hashed like every other file
    assert "trust_remote_code=True" in (out / "README.md").read_text()

    remote, module = _load_without_retrofit(out, tmp_path)
    assert module.startswith("transformers_modules.")
    assert torch.equal(remote, _native_logits(out))


def test_to_llada_without_modeling_code_drops_auto_map(trained_checkpoint, tmp_path, capsys):
    from retrofit.cli import main

    out = tmp_path / "llada"
    assert not list(Path(trained_checkpoint.base).glob("*.py"))
    assert (
        main(["export", str(trained_checkpoint.ckpt), "--out", str(out), "--to-llada", "--verify", "layers"])
        == 0
    )
    assert "dropped config.json auto_map: the base ships no modeling code" in capsys.readouterr().out
    config = json.loads((out / "config.json").read_text())
    assert "auto_map" not in config and config["model_type"] == "llada"
    assert not list(out.glob("*.py"))
    assert "config.json has no `auto_map`" in (out / "README.md").read_text()
    from transformers import AutoModel

    model = AutoModel.from_pretrained(out, trust_remote_code=True)  # retrofit.models is imported here
    assert isinstance(model, LLaDAModelLM)


def test_to_llada_from_a_flexmdm_base_takes_the_code_of_the_grafted_llada(tiny_llada_dir, tmp_path):
    """The 8B flow: graft LLaDA -> train on the graft -> export --to-llada."""
    from retrofit.training.lora import wrap_with_lora
    from retrofit.training.sections import LoraRecipe

    llada = tmp_path / "llada-with-code"
    shutil.copytree(tiny_llada_dir, llada)
    write_modeling_code(llada)
    flex = graft_checkpoint(llada, tmp_path / "flex", canvas_width=64)
    model = FlexMDMModel.from_pretrained(flex, dtype=torch.float32)
    peft_model = wrap_with_lora(model, LoraRecipe(r=2, alpha=2, dropout=0.0), model.new_module_names())
    peft_model.save_pretrained(tmp_path / "ckpt")
    write_manifest(tmp_path / "ckpt", kind="flexmdm", base_model=flex, model_config=model.config.to_dict(),
                   lora={}, recipe={}, step=1)  # fmt: skip
    report = export_checkpoint(tmp_path / "ckpt", tmp_path / "out", to_llada=True, verify="layers")
    assert report.modeling_code == CODE_FILES and report.modeling_code_from == str(llada)
    assert (tmp_path / "out" / "modeling_llada.py").read_bytes() == (llada / "modeling_llada.py").read_bytes()
