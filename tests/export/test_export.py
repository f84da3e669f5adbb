"""`retrofit export`: merge a trained tiny checkpoint, verify, write atomically (issue #5).

The checkpoint (conftest `trained_checkpoint`) is a FlexMDM of the tiny LLaDA wrapped by peft as
the trainer wraps it, with every trainable tensor perturbed. Exact checks: the merged weights
equal W + (alpha/r) B A bit for bit, graft modules equal the adapter's, AutoModel reloads
strictly and reproduces the training model's logits and expected gaps within 1e-5 (fp32).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import retrofit.models  # noqa: F401  (registers the Auto classes)
from retrofit.export.models import ExportError
from retrofit.export.pipeline import export_checkpoint
from retrofit.export.shards import ShardWriter
from retrofit.io_utils import sha256_file
from retrofit.training.checkpoint import MANIFEST_NAME, CheckpointError, read_manifest, write_manifest

REPO = Path(__file__).resolve().parents[2]
ADAPTER = "adapter_model.safetensors"
Q0 = "backbone.model.transformer.blocks.0.q_proj"


def load_folder(folder: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a safetensors model folder."""
    out = {}
    for path in sorted(folder.glob("*.safetensors")):
        out.update(load_file(path))
    return out


def rewrite_manifest(ckpt: Path, base: Path | None = None) -> None:
    """Re-hash a (deliberately modified) checkpoint so only the intended defect remains."""
    old = read_manifest(ckpt)
    (ckpt / MANIFEST_NAME).unlink()
    write_manifest(ckpt, kind=old["kind"], base_model=base or old["base_model"]["path"],
                   model_config=old["model_config"], lora=old["lora"], recipe=old["recipe"], step=old["step"])  # fmt: skip


@pytest.fixture(scope="module")
def fp32_export(trained_checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "flexmdm-fp32"
    report = export_checkpoint(trained_checkpoint.ckpt, out, dtype="fp32", max_shard_size="100KB")
    return out, report


def test_fp32_export_reproduces_training_model(trained_checkpoint, fp32_export):
    out, report = fp32_export
    from transformers import AutoModel

    model, info = AutoModel.from_pretrained(out, output_loading_info=True)
    assert type(model).__name__ == "FlexMDMModel" and next(model.parameters()).dtype == torch.float32
    assert all(not v for v in info.values()), info  # strict: nothing missing / unexpected / mismatched
    with torch.no_grad():
        got = model.eval()(**trained_checkpoint.batch)
    torch.testing.assert_close(got.logits, trained_checkpoint.logits, atol=1e-5, rtol=0)
    torch.testing.assert_close(got.expected_gaps, trained_checkpoint.gaps, atol=1e-5, rtol=1e-6)
    assert (
        report.mode == "full" and len(report.shards) > 1 and (out / "model.safetensors.index.json").is_file()
    )
    assert report.errors["reloaded.logits"] <= 1e-5 and report.errors["prewrite_fp32.expected_gaps"] <= 1e-5
    assert report.n_params == sum(p.numel() for p in model.parameters())


def test_export_folder_contents(trained_checkpoint, fp32_export):
    out, _ = fp32_export
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "flexmdm" and config["architectures"] == ["FlexMDMModel"]
    assert config["dtype"] == "float32" and config["canvas_width"] == 64
    assert config["insertion_schedule"]["name"] == "geometric"
    generation = json.loads((out / "generation_config.json").read_text())
    from retrofit.sampling.flexmdm_config import FlexMDMSamplerConfig

    assert generation["sampler"]["steps"] == FlexMDMSamplerConfig().steps
    assert generation["mask_token_id"] == config["mask_token_id"] and generation["unmasking_schedule"] == {
        "name": "linear"
    }
    for name in ("tokenizer.json", "tokenizer_config.json"):
        assert (out / name).read_bytes() == (trained_checkpoint.base / name).read_bytes()
    card = (out / "README.md").read_text()
    assert str(trained_checkpoint.base) in card and "(step 7)" in card and '"loss": 3.5' in card
    manifest = json.loads((out / "retrofit_manifest.json").read_text())
    assert manifest["complete"] is True and manifest["kind"] == "flexmdm" and manifest["source"]["step"] == 7
    files = sorted(p.name for p in out.iterdir() if p.name != "retrofit_manifest.json")
    assert sorted(manifest["files"]) == files
    assert all(manifest["files"][f]["sha256"] == sha256_file(out / f) for f in files)


def test_merged_weights_match_closed_form(trained_checkpoint, fp32_export):
    out, _ = fp32_export
    exported = load_folder(out)
    base = load_folder(trained_checkpoint.base)
    adapter = load_file(trained_checkpoint.ckpt / ADAPTER)
    for module in (Q0, "backbone.model.transformer.ff_out"):
        A = adapter[f"base_model.model.{module}.lora_A.weight"]
        B = adapter[f"base_model.model.{module}.lora_B.weight"]
        expected = base[module.removeprefix("backbone.") + ".weight"] + (B @ A) * (8 / 4)  # alpha / r = 2
        assert torch.equal(exported[module + ".weight"], expected)
        assert not torch.equal(expected, base[module.removeprefix("backbone.") + ".weight"])
    assert torch.equal(exported["backbone.model.transformer.blocks.1.attn_out.weight"],
                       base["model.transformer.blocks.1.attn_out.weight"])  # fmt: skip
    graft = {k.removeprefix("base_model.model."): v for k, v in adapter.items() if ".lora_" not in k}
    assert graft and all(torch.equal(exported[k], v) for k, v in graft.items())


def test_bf16_export_is_the_rounded_fp32_export(trained_checkpoint, fp32_export, tmp_path):
    report = export_checkpoint(trained_checkpoint.ckpt, tmp_path / "bf16", dtype="bf16")
    fp32 = load_folder(fp32_export[0])
    bf16 = load_folder(tmp_path / "bf16")
    assert fp32.keys() == bf16.keys()
    assert all(
        bf16[k].dtype == torch.bfloat16 and torch.equal(bf16[k], fp32[k].to(torch.bfloat16)) for k in fp32
    )
    # stated bf16 tolerance 3e-2 (relative-ish); measured here ~3e-3
    assert report.tolerance["reloaded.logits"] == 3e-2 and report.errors["reloaded.logits"] < 1e-2
    assert report.errors["layers.cast"] < 1e-2 and report.errors["layers.merged_fp32"] < 1e-6


def test_to_llada_exports_the_plain_backbone(trained_checkpoint, tmp_path):
    from retrofit.models import LLaDAModelLM

    report = export_checkpoint(trained_checkpoint.ckpt, tmp_path / "llada", dtype="fp32", to_llada=True)
    assert (
        report.kind == "llada"
        and json.loads((tmp_path / "llada" / "config.json").read_text())["model_type"] == "llada"
    )
    keys = load_folder(tmp_path / "llada").keys()
    assert keys and all(k.startswith("model.transformer.") for k in keys)
    model, info = LLaDAModelLM.from_pretrained(tmp_path / "llada", output_loading_info=True)
    assert all(not v for v in info.values()), info
    with torch.no_grad():
        logits = model.eval()(trained_checkpoint.batch["input_ids"]).logits
    torch.testing.assert_close(logits, trained_checkpoint.backbone_logits, atol=1e-5, rtol=0)


def test_cli_layers_mode_equals_full_mode(trained_checkpoint, fp32_export, tmp_path, capsys):
    from retrofit.cli import main

    out = tmp_path / "layers"
    assert (
        main(
            [
                "export",
                str(trained_checkpoint.ckpt),
                "--out",
                str(out),
                "--dtype",
                "fp32",
                "--verify",
                "layers",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "verification (layers)" in printed and "layers.disk" in printed and "reloaded" not in printed
    exported, reference = load_folder(out), load_folder(fp32_export[0])
    assert exported.keys() == reference.keys() and all(
        torch.equal(exported[k], reference[k]) for k in exported
    )
    assert main(["export", str(trained_checkpoint.ckpt), "--out", str(out)]) == 1
    assert "already exists" in capsys.readouterr().err


def test_llada_kind_checkpoint(tiny_llada_dir, tmp_path):
    """MDM baseline: LLaDA + LoRA (no graft) exports to a plain LLaDA folder."""
    from retrofit.models.loading import load_llada
    from retrofit.training.lora import wrap_with_lora
    from retrofit.training.sections import LoraRecipe

    model = load_llada(tiny_llada_dir, torch.float32)
    peft_model = wrap_with_lora(model, LoraRecipe(r=2, alpha=6, dropout=0.0), modules_to_save=[])
    with torch.no_grad():
        for param in (p for p in peft_model.parameters() if p.requires_grad):
            param.add_(0.1 * torch.randn(param.shape, generator=torch.Generator().manual_seed(3)))
    peft_model.save_pretrained(tmp_path / "ckpt")
    write_manifest(tmp_path / "ckpt", kind="llada", base_model=tiny_llada_dir, model_config=model.config.to_dict(),
                   lora={}, recipe={}, step=1)  # fmt: skip
    report = export_checkpoint(tmp_path / "ckpt", tmp_path / "out", dtype="fp32")
    ids = torch.arange(12).view(2, 6)
    with torch.no_grad():
        want = peft_model.get_base_model().eval()(ids).logits
        got = retrofit.models.LLaDAModelLM.from_pretrained(tmp_path / "out").eval()(ids).logits
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    assert report.kind == "llada" and report.errors["reloaded.logits"] < 1e-5


def test_checkpoint_on_a_flexmdm_base(tiny_flexmdm_dir, tmp_path):
    """A later stage trained from a FlexMDM folder (graft or earlier export): names need no prefix."""
    from retrofit.models import FlexMDMModel
    from retrofit.training.lora import wrap_with_lora
    from retrofit.training.sections import LoraRecipe

    model = FlexMDMModel.from_pretrained(tiny_flexmdm_dir, dtype=torch.float32)
    peft_model = wrap_with_lora(model, LoraRecipe(r=2, alpha=2, dropout=0.0), model.new_module_names())
    with torch.no_grad():
        for param in (p for p in peft_model.parameters() if p.requires_grad):
            param.add_(0.05 * torch.randn(param.shape, generator=torch.Generator().manual_seed(4)))
    peft_model.save_pretrained(tmp_path / "ckpt")
    write_manifest(tmp_path / "ckpt", kind="flexmdm", base_model=tiny_flexmdm_dir, model_config=model.config.to_dict(),
                   lora={}, recipe={}, step=2)  # fmt: skip
    report = export_checkpoint(tmp_path / "ckpt", tmp_path / "out", dtype="fp32")
    ids, t = torch.arange(16).view(2, 8), torch.tensor([0.1, 0.6])
    with torch.no_grad():
        want = peft_model.get_base_model().eval()(ids, t)
        got = FlexMDMModel.from_pretrained(tmp_path / "out").eval()(ids, t)
    torch.testing.assert_close(got.logits, want.logits, atol=1e-5, rtol=0)
    torch.testing.assert_close(got.expected_gaps, want.expected_gaps, atol=1e-5, rtol=1e-6)
    assert report.errors["prewrite_fp32.logits"] < 1e-5


def _pickled_adapter(ckpt: Path, base: Path) -> str:
    torch.save(load_file(ckpt / ADAPTER), ckpt / "adapter_model.bin")
    (ckpt / ADAPTER).unlink()
    rewrite_manifest(ckpt)
    return "adapter_model.bin: a pickled adapter: .*pass --trust-checkpoint"


def _wrong_adapter_shape(ckpt: Path, base: Path) -> str:
    tensors = load_file(ckpt / ADAPTER)
    tensors[f"base_model.model.{Q0}.lora_A.weight"] = torch.zeros(4, 32)
    save_file(tensors, str(ckpt / ADAPTER), metadata={"format": "pt"})
    rewrite_manifest(ckpt)
    return r"adapter_model.safetensors: LoRA factors A\[4, 32\] .* do not fit the base weight"


def _wrong_base_shape(ckpt: Path, base: Path) -> str:
    shard = sorted(base.glob("model-*.safetensors"))[-1]
    tensors = load_file(shard)
    key = sorted(tensors)[0]
    tensors[key] = torch.zeros(tensors[key].numel() + 1)
    save_file(tensors, str(shard), metadata={"format": "pt"})
    rewrite_manifest(ckpt, base)
    return rf"{shard.name}: tensor '{key}' has shape \[{tensors[key].numel()}\]"


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-16])


def _truncated_base(ckpt: Path, base: Path) -> str:
    _truncate(sorted(base.glob("model-*.safetensors"))[0])
    rewrite_manifest(ckpt, base)
    return r"model-00001-of-0000\d.safetensors: truncated safetensors file"


def _truncated_adapter(ckpt: Path, base: Path) -> str:
    _truncate(ckpt / ADAPTER)
    rewrite_manifest(ckpt)
    return "adapter_model.safetensors: unreadable safetensors file .*truncated"


def _other_model_type(ckpt: Path, base: Path) -> str:
    config = json.loads((base / "config.json").read_text())
    (base / "config.json").write_text(json.dumps({**config, "model_type": "gpt2"}))
    rewrite_manifest(ckpt, base)
    return "config.json: model_type='gpt2'; a flexmdm checkpoint needs a base of type"


def _missing_adapter(ckpt: Path, base: Path) -> str:
    (ckpt / ADAPTER).unlink()
    return "adapter_model.safetensors: listed in the manifest but missing"


def _changed_adapter(ckpt: Path, base: Path) -> str:
    (ckpt / ADAPTER).write_bytes(b"\0")
    return "adapter_model.safetensors: size 1 != .* in the manifest"


def _not_a_checkpoint(ckpt: Path, base: Path) -> str:
    shutil.rmtree(ckpt)
    shutil.copytree(base, ckpt)  # a LLaDA model folder passed as the checkpoint
    return "retrofit_checkpoint.json: not found"


CORRUPTIONS = {
    "missing-adapter": _missing_adapter,
    "changed-adapter": _changed_adapter,
    "adapter-wrong-shape": _wrong_adapter_shape,
    "base-wrong-shape": _wrong_base_shape,
    "truncated-base": _truncated_base,
    "truncated-adapter": _truncated_adapter,
    "other-model-type": _other_model_type,
    "pickled-adapter": _pickled_adapter,
    "not-a-checkpoint": _not_a_checkpoint,
}


@pytest.fixture
def damaged(trained_checkpoint, tmp_path):
    """Copies of the checkpoint and its base (manifest pointing at the copy) + an existing --out."""
    base = shutil.copytree(trained_checkpoint.base, tmp_path / "base")
    ckpt = shutil.copytree(trained_checkpoint.ckpt, tmp_path / "ckpt")
    rewrite_manifest(ckpt, base)
    out = tmp_path / "exports" / "model"
    out.mkdir(parents=True)
    (out / "keep.txt").write_text("old export")
    return ckpt, base, out


def _assert_untouched(out: Path) -> None:
    assert [p.name for p in out.parent.iterdir()] == ["model"]  # no partial or .tmp-* folder left
    assert [p.name for p in out.iterdir()] == ["keep.txt"] and (out / "keep.txt").read_text() == "old export"


@pytest.mark.parametrize("case", sorted(CORRUPTIONS))
def test_corrupt_inputs_fail_cleanly(damaged, case):
    ckpt, base, out = damaged
    expected = CORRUPTIONS[case](ckpt, base)
    with pytest.raises(CheckpointError, match=expected):
        export_checkpoint(ckpt, out, overwrite=True, verify="layers")
    _assert_untouched(out)


def test_pickled_adapter_exports_with_trust(damaged, fp32_export):
    ckpt, base, out = damaged
    _pickled_adapter(ckpt, base)
    export_checkpoint(ckpt, out, dtype="fp32", overwrite=True, trust_checkpoint=True, verify="layers")
    exported, reference = load_folder(out), load_folder(fp32_export[0])
    assert exported.keys() == reference.keys() and all(
        torch.equal(exported[k], reference[k]) for k in exported
    )
    assert not (out / "keep.txt").exists() and [p.name for p in out.parent.iterdir()] == ["model"]


def test_failed_verification_writes_nothing(damaged, monkeypatch):
    ckpt, _, out = damaged
    monkeypatch.setitem(__import__("retrofit.export.verify").export.verify.TOLERANCE, torch.float32, 0.0)
    with pytest.raises(ExportError, match="layers: merged_fp32 differs"):
        export_checkpoint(ckpt, out, dtype="fp32", overwrite=True, verify="layers")
    _assert_untouched(out)


def test_interrupted_export_leaves_only_tmp_names(damaged, monkeypatch):
    ckpt, _, out = damaged
    seen, open_shard = [], ShardWriter._open

    def interrupted_open(self, shard):
        seen.append(sorted(p.name for p in out.parent.iterdir()))
        if len(seen) == 3:
            raise KeyboardInterrupt
        open_shard(self, shard)

    monkeypatch.setattr(ShardWriter, "_open", interrupted_open)
    with pytest.raises(KeyboardInterrupt):
        export_checkpoint(ckpt, out, overwrite=True, max_shard_size="50KB", verify="layers")
    during = seen[-1]  # the parent folder while shards were being written
    assert len(during) == 2 and during[0].startswith(".tmp-model-") and during[1] == "model"
    _assert_untouched(out)


MEMORY_SCRIPT = """
import json, resource, sys, threading, time
import retrofit.export.pipeline, retrofit.models
from retrofit.export.pipeline import export_checkpoint

def anon():  # anonymous resident memory (file-backed mmap pages excluded)
    return next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("RssAnon:"))

peak, stop = [0], threading.Event()
def sample():
    while not stop.is_set():
        peak[0] = max(peak[0], anon())
        time.sleep(0.002)
base_anon, base_rss = anon(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
thread = threading.Thread(target=sample)
thread.start()
report = export_checkpoint(sys.argv[1], sys.argv[2], dtype="bf16", max_shard_size="16MB", verify="layers")
stop.set()
thread.join()
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"anon": peak[0] - base_anon, "rss": rss - base_rss, "n_params": report.n_params}))
"""

SETUP_SCRIPT = """
import sys, torch
from pathlib import Path
from safetensors.torch import save_file
from retrofit.models import FlexMDMModel, LLaDAConfig, LLaDAModelLM
from retrofit.training.sections import LoraRecipe
from retrofit.training.checkpoint import write_manifest
from retrofit.training.lora import wrap_with_lora
root = Path(sys.argv[1])
config = LLaDAConfig(d_model=512, n_heads=8, n_kv_heads=8, n_layers=8, mlp_hidden_size=1536,
                     vocab_size=8192, embedding_size=8192, mask_token_id=8000, eos_token_id=1, pad_token_id=1)
torch.manual_seed(0)
LLaDAModelLM(config).save_pretrained(root / "base", max_shard_size="50MB")
model = FlexMDMModel.from_llada(root / "base", dtype=torch.float32, adaln_group_size=4)
peft_model = wrap_with_lora(model, LoraRecipe(r=8, alpha=8), model.new_module_names())
peft_model.save_pretrained(root / "ckpt")
write_manifest(root / "ckpt", kind="flexmdm", base_model=root / "base", model_config=model.config.to_dict(),
               lora={}, recipe={}, step=0)
"""


def test_streaming_merge_peak_memory(tmp_path):
    """~40M-parameter LLaDA-shaped FlexMDM exported to bf16: memory ~ one tensor, not the model.

    Anonymous memory peaks at ~8 N_max bytes (fp32 merged copy + fp32 B@A of the largest
    LoRA-merged tensor, the 8192 x 512 LM head); ru_maxrss also counts the touched
    memory-mapped base shard (50 MB) and adapter file.
    """
    env = {"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "2"}
    subprocess.run([sys.executable, "-c", textwrap.dedent(SETUP_SCRIPT), str(tmp_path)], check=True, env=env,
                   cwd=REPO, capture_output=True)  # fmt: skip
    done = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT, str(tmp_path / "ckpt"), str(tmp_path / "out")],
                          check=True, env=env, cwd=REPO, capture_output=True, text=True)  # fmt: skip
    result = json.loads(done.stdout.strip().splitlines()[-1])
    n_params, n_max = result["n_params"], 8192 * 512
    print(
        f"{n_params / 1e6:.0f}M params: anon +{result['anon'] / 1e6:.0f} MB, maxrss +{result['rss'] / 1e6:.0f} MB"
    )
    assert 35e6 < n_params < 50e6
    assert result["anon"] < 8 * n_max + 40e6  # 8 N_max = 34 MB, 40 MB allocator / Python slack
    base_shard = max(p.stat().st_size for p in (tmp_path / "base").glob("*.safetensors"))  # <= 50 MB
    adapter = (tmp_path / "ckpt" / ADAPTER).stat().st_size
    assert result["rss"] < 8 * n_max + 40e6 + base_shard + adapter
    assert result["rss"] < 4 * n_params  # below the fp32 model size (156 MB); the 390M run: 0.37x
    with safe_open(sorted((tmp_path / "out").glob("*.safetensors"))[0], "pt") as f:
        assert f.get_slice(next(iter(f.keys()))).get_dtype() == "BF16"
