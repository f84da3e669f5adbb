"""Multi-process training of the tiny FlexMDM recipe through `accelerate launch` on CPU (gloo).

* DDP, 2 processes (world size asserted), 30 steps: each loss term's mean over the last 5 steps
  is below its mean over the first 5; the logged loss has the scale of a 1-process run with the
  same global batch (mean ratio within [0.75, 1.33]; the transformers 5.x `labels` bug would give
  2); in every step the two ranks draw different times that together hit each of the W x B
  strata of [0, 1) exactly once (banded low-discrepancy t); LoRA and graft weights end up
  bitwise identical on both ranks.
* DeepSpeed ZeRO-2 and ZeRO-3, 2 processes each (world size and stage asserted): the logged
  losses agree step by step (rtol 1e-5) and the ZeRO-3 checkpoint's adapter / graft tensors have
  their full shapes. The DeepSpeed shared-memory op (prebuilt by `make setup`) is loaded, or
  built once, by a session fixture before the first launch.
"""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
ACCELERATE = str(Path(sys.executable).parent / "accelerate")
T_MIN = 1e-3

RECORDER = textwrap.dedent(
    """
    # Runs retrofit.train on this rank, recording the times t of every micro-batch and, at the end,
    # this rank's trainable tensors (test helper of tests/training/test_train_distributed.py).
    import json, os, sys
    from safetensors.torch import save_file
    from retrofit.training.trainer import FlexMDMTrainer
    from retrofit.train import main

    out, rank, records = sys.argv[1], int(os.environ.get("RANK", "0")), []
    compute_loss, train = FlexMDMTrainer.compute_loss, FlexMDMTrainer.train

    def recording_loss(self, model, inputs, *args, **kwargs):
        if model.training:
            records.append({"step": self.state.global_step, "t": inputs["t"].tolist()})
        return compute_loss(self, model, inputs, *args, **kwargs)

    def train_and_dump(self, *args, **kwargs):
        result = train(self, *args, **kwargs)
        if not self.is_deepspeed_enabled:
            params = {n: p.detach().cpu().contiguous() for n, p in self.model.named_parameters() if p.requires_grad}
            save_file(params, f"{out}/rank{rank}.safetensors")
        with open(f"{out}/times{rank}.json", "w") as f:
            json.dump(records, f)
        return result

    FlexMDMTrainer.compute_loss, FlexMDMTrainer.train = recording_loss, train_and_dump
    sys.exit(main(sys.argv[2:]))
    """
)


@pytest.fixture(scope="session")
def deepspeed_shm_op():
    """DeepSpeed's CPU shared-memory op: prebuilt by `make setup`; built here once if missing."""
    from deepspeed.ops.op_builder import ShareMemCommBuilder

    return ShareMemCommBuilder().load(verbose=False)


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict[str, Path]:
    from retrofit.models.tiny import write_tiny_llada

    root = tmp_path_factory.mktemp("dist")
    base = write_tiny_llada(root / "base", layers=2, d_model=32, heads=4, seed=0)
    gen = torch.Generator().manual_seed(0)
    data = root / "count.jsonl"
    with data.open("w") as f:
        for _ in range(400):
            n, c = (
                int(torch.randint(1, 41, (1,), generator=gen)),
                "abxyz"[int(torch.randint(0, 5, (1,), generator=gen))],
            )
            f.write(json.dumps({"prompt": f"count {n} {c}:", "response": c * n}) + "\n")
    script = root / "record_train.py"
    script.write_text(RECORDER)
    return {"root": root, "base": base, "data": data, "script": script}


def overrides(setup: dict[str, Path], out: Path, steps: int, batch: int, accum: int) -> list[str]:
    return [
        str(REPO / "recipes/tiny/flexmdm-sft.yaml"),
        f"model.base={setup['base']}",
        f"data.train=[{{format: sft, source: {setup['data']}, template: plain, prompt_field: prompt, response_field: response}}]",
        "data.max_length=64",
        "training.loss_normalizer=64",
        "lora.r=8",
        "lora.alpha=8",
        "training.learning_rate=5e-3",
        "training.lora_learning_rate=5e-3",
        "training.lr_scheduler_type=constant_with_warmup",
        "training.warmup_steps=2",
        f"training.per_device_train_batch_size={batch}",
        f"training.gradient_accumulation_steps={accum}",
        f"training.max_steps={steps}",
        f"training.save_steps={steps}",
        "training.logging_steps=1",
        "training.disable_tqdm=true",
        f"training.output_dir={out}",
    ]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(config: str, setup: dict[str, Path], out: Path, *, steps: int, batch: int, accum: int) -> str:
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    if "ddp" in config:
        env["ACCELERATE_USE_CPU"] = "1"  # MULTI_GPU + ACCELERATE_USE_CPU: 2 real CPU processes
    cmd = [ACCELERATE, "launch", "--config_file", str(REPO / "recipes/accelerate" / config)]
    cmd += ["--main_process_port", str(free_port()), str(setup["script"]), str(out)]
    proc = subprocess.run(
        cmd + overrides(setup, out, steps, batch, accum),
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc.stdout


def history(out: Path, steps: int) -> list[dict]:
    state = json.loads((out / f"checkpoint-{steps}" / "trainer_state.json").read_text())
    logs = [h for h in state["log_history"] if "length_loss" in h]
    assert len(logs) == steps
    return logs


def test_ddp_two_processes(setup):
    out = setup["root"] / "ddp"
    stdout = launch("cpu-ddp-2proc.yaml", setup, out, steps=30, batch=4, accum=1)
    assert "[retrofit] world_size=2 " in stdout
    logs = history(out, 30)
    for term in ("unmask_loss", "length_loss"):
        values = [h[term] for h in logs]
        assert sum(values[-5:]) / 5 < sum(values[:5]) / 5, (term, values)
    # both ranks: different times, jointly one per stratum of the W x B = 8 strata, every step
    times = [json.loads((out / f"times{r}.json").read_text()) for r in (0, 1)]
    assert [len(t) for t in times] == [30, 30]
    for rec0, rec1 in zip(*times):
        assert rec0["step"] == rec1["step"] and rec0["t"] != rec1["t"]
        strata = [math.floor((t - T_MIN) / (1 - T_MIN) * 8) for t in rec0["t"] + rec1["t"]]
        assert sorted(strata) == list(range(8))
        # serpentine interleaving (time_sampling.banded_strata): equal stratum sums per rank
        assert strata[:4] == [0, 3, 4, 7] and strata[4:] == [1, 2, 5, 6]
    rank0, rank1 = load_file(out / "rank0.safetensors"), load_file(out / "rank1.safetensors")
    assert rank0.keys() == rank1.keys() and any("length_head" in k for k in rank0)
    for key in rank0:
        assert torch.equal(rank0[key], rank1[key]), key
    # the same global batch (8) on one process logs the same loss scale
    single = setup["root"] / "single"
    subprocess.run(
        [sys.executable, str(setup["script"]), str(single), *overrides(setup, single, 30, 8, 1)],
        cwd=REPO, env={**os.environ, "HF_HUB_OFFLINE": "1"}, check=True, capture_output=True, timeout=600,
    )  # fmt: skip
    one = sum(h["loss"] for h in history(single, 30)) / 30
    two = sum(h["loss"] for h in logs) / 30
    assert 0.75 < two / one < 1.33, (one, two)


def test_deepspeed_zero2_and_zero3_agree(setup, deepspeed_shm_op):
    assert deepspeed_shm_op is not None  # the op loads (prebuilt or built once above)
    runs = {}
    for stage in (2, 3):
        out = setup["root"] / f"zero{stage}"
        stdout = launch(f"cpu-zero{stage}-2proc.yaml", setup, out, steps=8, batch=2, accum=2)
        assert f"[retrofit] world_size=2 distributed=DEEPSPEED zero_stage={stage}" in stdout
        assert (out / "checkpoint-8" / "global_step8").is_dir()  # DeepSpeed's own shards
        runs[stage] = history(out, 8)
    for h2, h3 in zip(runs[2], runs[3]):
        for key in ("loss", "unmask_loss", "length_loss"):
            assert h3[key] == pytest.approx(h2[key], rel=1e-5), (key, h2, h3)
    zero3 = load_file(setup["root"] / "zero3" / "checkpoint-8" / "adapter_model.safetensors")
    zero2 = load_file(setup["root"] / "zero2" / "checkpoint-8" / "adapter_model.safetensors")
    assert zero3.keys() == zero2.keys()
    for key, tensor in zero2.items():
        assert zero3[key].shape == tensor.shape and tensor.numel() > 0, key
    assert zero3["base_model.model.backbone.model.transformer.ff_out.lora_B.weight"].shape == (320, 8)
    assert zero3["base_model.model.time_mlp.fc1.weight"].shape == (128, 32)
    assert zero3["base_model.model.adaln.0.weight"].shape == (64, 32)
