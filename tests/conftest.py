"""Shared pytest fixtures: offline Hub settings, the local data folder, a tiny LLaDA checkpoint.

Other test modules may append fixtures here; keep each one small.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
# The local copy of the public datasets: RETROFIT_DATA_DIR if set, else ../shared/data beside the repo.
DATA_DIR = Path(os.environ.get("RETROFIT_DATA_DIR") or REPO_ROOT.parent / "shared" / "data")

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
if DATA_DIR.is_dir():
    os.environ["RETROFIT_DATA_DIR"] = str(DATA_DIR)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The local copy of the public datasets (RETROFIT_DATA_DIR, else ../shared/data beside the repo)."""
    return DATA_DIR


@pytest.fixture(scope="session")
def tiny_llada_dir(tmp_path_factory) -> Path:
    """A tiny random LLaDA checkpoint (2 layers, d_model 64, 4 heads, seed 0), official layout.

    Session-scoped and shared: copy it before modifying it.
    """
    from retrofit.models.tiny import write_tiny_llada

    return write_tiny_llada(tmp_path_factory.mktemp("tiny") / "llada", layers=2, d_model=64, heads=4, seed=0)


@pytest.fixture(scope="session")
def trained_checkpoint(tiny_llada_dir, tmp_path_factory):
    """A FlexMDM training checkpoint of `tiny_llada_dir`, saved like the trainer saves it.

    LoRA (r 4, alpha 8: scaling 2) on q/k/v_proj + transformer.ff_out, modules_to_save =
    new_module_names(); every trainable tensor perturbed so the merge is non-trivial. Returns a
    namespace: ckpt, base, batch (input_ids [2, 10], t [2], attention_mask [2, 10]), logits /
    gaps of the in-training (peft, eval) model, and backbone_logits (LoRA-live backbone on
    input_ids alone, the --to-llada reference). Session-scoped: copy `ckpt` before modifying it.
    """
    import json
    from types import SimpleNamespace

    import torch

    from retrofit.models import FlexMDMModel
    from retrofit.training.checkpoint import write_manifest
    from retrofit.training.lora import wrap_with_lora
    from retrofit.training.sections import LoraRecipe

    model = FlexMDMModel.from_llada(
        tiny_llada_dir, seed=0, dtype=torch.float32, canvas_width=64, adaln_group_size=1
    )
    peft_model = wrap_with_lora(model, LoraRecipe(r=4, alpha=8, dropout=0.1), model.new_module_names())
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for param in (p for p in peft_model.parameters() if p.requires_grad):
            param.add_(0.05 * torch.randn(param.shape, generator=gen))
    ckpt = tmp_path_factory.mktemp("trained") / "checkpoint-7"
    peft_model.save_pretrained(ckpt)
    (ckpt / "trainer_state.json").write_text(
        json.dumps({"global_step": 7, "log_history": [{"loss": 3.5, "step": 7}]})
    )
    write_manifest(ckpt, kind="flexmdm", base_model=tiny_llada_dir, model_config=model.config.to_dict(),
                   lora=peft_model.peft_config["default"].to_dict(), recipe={"data": {"train": ["gsm8k"]}}, step=7)  # fmt: skip
    ids = torch.randint(0, model.config.backbone["vocab_size"], (2, 10), generator=gen)
    batch = {
        "input_ids": ids,
        "t": torch.tensor([0.3, 0.9]),
        "attention_mask": torch.arange(10) < torch.tensor([[10], [7]]),
    }
    inner = peft_model.get_base_model().eval()
    with torch.no_grad():
        out = inner(**batch)
        backbone_logits = inner.backbone(ids).logits
    return SimpleNamespace(ckpt=ckpt, base=tiny_llada_dir, batch=batch, logits=out.logits,
                           gaps=out.expected_gaps, backbone_logits=backbone_logits)  # fmt: skip


@pytest.fixture(scope="session")
def tiny_flexmdm_dir(tiny_llada_dir, tmp_path_factory) -> Path:
    """`tiny_llada_dir` grafted into a FlexMDM folder (fp32, canvas_width 64, seed 0).

    Session-scoped and shared: copy it before modifying it.
    """
    import torch

    from retrofit.graft import graft_checkpoint

    out = tmp_path_factory.mktemp("tiny-flexmdm") / "flexmdm"
    return graft_checkpoint(tiny_llada_dir, out, dtype=torch.float32, seed=0, canvas_width=64)
