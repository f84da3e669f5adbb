"""Export of a DeepSpeed ZeRO-3 checkpoint written by a real 2-process CPU run (gloo).

The worker (this file run by torchrun) trains the tiny FlexMDM + LoRA for 3 steps under ZeRO-3,
saves the sharded checkpoint, gathers the full parameters and records the outputs of the same
model unsharded on a probe batch. The test then checks that `retrofit export` reproduces
DeepSpeed's own consolidation (`get_fp32_state_dict_from_zero_checkpoint`, merged by peft's
`merge_and_unload`) bit for bit in fp32, and the unsharded model's outputs within 1e-5.

Worker usage (what the test runs):
    torchrun --standalone --nproc_per_node 2 tests/export/test_export_zero.py BASE CKPT REFS
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
GRAFT = {"canvas_width": 64, "adaln_group_size": 1}


def build_peft_model(base: Path):
    """The tiny FlexMDM wrapped with LoRA exactly as the trainer wraps it (fp32)."""
    from retrofit.models import FlexMDMModel
    from retrofit.training.lora import wrap_with_lora
    from retrofit.training.sections import LoraRecipe

    model = FlexMDMModel.from_llada(base, seed=0, dtype=torch.float32, **GRAFT)
    return wrap_with_lora(model, LoraRecipe(r=4, alpha=8, dropout=0.0), model.new_module_names())


def probe(vocab_size: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(5)
    return {"input_ids": torch.randint(0, vocab_size, (2, 9), generator=gen), "t": torch.tensor([0.2, 0.7])}


def worker(base: Path, ckpt: Path, refs: Path) -> None:
    """Train 3 ZeRO-3 steps on 2 CPU ranks, save, record the unsharded model's probe outputs."""
    import deepspeed
    import torch.distributed as dist
    from safetensors.torch import save_file

    from retrofit.training.checkpoint import write_manifest

    deepspeed.init_distributed(dist_backend="gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    assert world == 2, f"expected 2 processes, got {world}"
    peft_model = build_peft_model(base)
    config = {"train_micro_batch_size_per_gpu": 2, "gradient_accumulation_steps": 1, "zero_allow_untested_optimizer": True,
              "zero_optimization": {"stage": 3}, "gradient_clipping": 1.0}  # fmt: skip
    params = [p for p in peft_model.parameters() if p.requires_grad]
    engine, *_ = deepspeed.initialize(
        model=peft_model, optimizer=torch.optim.AdamW(params, lr=1e-2), config=config
    )
    vocab = peft_model.get_base_model().config.backbone["vocab_size"]
    gen = torch.Generator().manual_seed(10 + rank)
    for _ in range(3):
        out = engine(torch.randint(0, vocab, (2, 12), generator=gen), torch.rand(2, generator=gen))
        loss = out.logits.float().logsumexp(-1).mean() + 1e-3 * out.expected_gaps.mean()
        engine.backward(loss)
        engine.step()
    engine.save_checkpoint(str(ckpt))
    with deepspeed.zero.GatheredParameters(list(engine.module.parameters())):
        full = {n: p.detach().clone() for n, p in engine.module.named_parameters()}
    dist.barrier()
    if rank == 0:
        unsharded = build_peft_model(base)
        unsharded.load_state_dict(full, strict=True)
        with torch.no_grad():
            out = unsharded.get_base_model().eval()(**probe(vocab))
        save_file({"logits": out.logits.contiguous(), "gaps": out.expected_gaps.contiguous()}, str(refs))
        unsharded.peft_config["default"].save_pretrained(str(ckpt))
        model_config = unsharded.get_base_model().config.to_dict()
        write_manifest(ckpt, kind="flexmdm", base_model=base, model_config=model_config,
                       lora=unsharded.peft_config["default"].to_dict(), recipe={"zero": 3}, step=3)  # fmt: skip
    dist.barrier()


@pytest.fixture(scope="module")
def zero3_run(tiny_llada_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("zero3")
    ckpt, refs = root / "checkpoint-3", root / "unsharded.safetensors"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", "DS_ACCELERATOR": "cpu",
           "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}  # fmt: skip
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           __file__, str(tiny_llada_dir), str(ckpt), str(refs)]  # fmt: skip
    done = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    return tiny_llada_dir, ckpt, refs


@pytest.mark.slow
def test_zero3_export_equals_deepspeed_consolidation(zero3_run, tmp_path):
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint
    from safetensors.torch import load_file
    from transformers import AutoModel

    from retrofit.export.pipeline import export_checkpoint
    from retrofit.training.checkpoint import CheckpointError

    base, ckpt, refs = zero3_run
    assert (ckpt / "latest").read_text().strip() == "global_step3" and not (
        ckpt / "adapter_model.safetensors"
    ).exists()
    with pytest.raises(
        CheckpointError, match=r"global_step3: reading DeepSpeed ZeRO shards: .*--trust-checkpoint"
    ):
        export_checkpoint(ckpt, tmp_path / "untrusted")
    assert not (tmp_path / "untrusted").exists()
    report = export_checkpoint(ckpt, tmp_path / "out", dtype="fp32", trust_checkpoint=True)
    assert report.mode == "full" and report.errors["reloaded.logits"] < 1e-5

    reference = build_peft_model(base)  # DeepSpeed's consolidation, merged by peft itself
    reference.load_state_dict(get_fp32_state_dict_from_zero_checkpoint(str(ckpt)), strict=True)
    expected = reference.merge_and_unload().state_dict()
    exported = {}
    for shard in (tmp_path / "out").glob("*.safetensors"):
        exported.update(load_file(shard))
    assert exported.keys() == expected.keys()
    assert all(torch.equal(exported[k], expected[k]) for k in expected)  # bit for bit
    trained = load_file(refs)  # outputs of the same model unsharded, in the ZeRO run
    model = AutoModel.from_pretrained(tmp_path / "out").eval()
    with torch.no_grad():
        out = model(**probe(model.config.backbone["vocab_size"]))
    torch.testing.assert_close(out.logits, trained["logits"], atol=1e-5, rtol=0)
    torch.testing.assert_close(out.expected_gaps, trained["gaps"], atol=1e-5, rtol=1e-6)
    from retrofit.models import FlexMDMModel

    initial = FlexMDMModel.from_llada(base, seed=0, dtype=torch.float32, **GRAFT).state_dict()
    for key in ("time_mlp.fc1.weight", "adaln.0.weight", "backbone.model.transformer.blocks.0.q_proj.weight"):
        assert not torch.equal(exported[key], initial[key]), (
            f"{key} did not train"
        )  # the merge is not trivial


@pytest.mark.slow
def test_inspect_zero3_checkpoint(zero3_run):
    from retrofit.export.inspect import inspect_folder

    report = inspect_folder(zero3_run[1])
    assert report.kind == "zero checkpoint" and report.problems == [] and report.model_type == "flexmdm"
    assert any(name.startswith("global_step3/") for name in report.shards)


if __name__ == "__main__":
    worker(*(Path(arg) for arg in sys.argv[1:4]))
