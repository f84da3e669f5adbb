"""Recipes, overrides, shipped accelerate / DeepSpeed configs, LR schedule and the --dry-run plan.

* Every shipped recipe loads and opens with a comment giving its launch command.
* `key=value` overrides: dotted keys, list indices, type coercion, clear errors.
* Every accelerate YAML parses with accelerate's `ClusterConfig`; every DeepSpeed JSON, with its
  "auto" values and the world size filled in from the paired accelerate config, parses with
  `deepspeed.runtime.config.DeepSpeedConfig`.
* The cosine schedule of docs/method.md §5.1 reproduces the multiplier table of §7.5.
* `retrofit train --dry-run` on the 8B GSM8K recipe: global batch 128, 1025 tokens, 5800 steps,
  402,657,281 trainable parameters (docs/method.md §2.9), ZeRO-2 / ZeRO-3 memory rows.
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

import pytest
import torch
import yaml

from retrofit.training.memory import estimate_memory
from retrofit.training.recipe import RecipeError, apply_overrides, format_recipe, load_recipe

REPO = Path(__file__).resolve().parents[2]
RECIPES = [p for d in ("llada8b", "tiny", "repro") for p in sorted((REPO / "recipes" / d).glob("*.yaml"))]
ACCEL = sorted((REPO / "recipes" / "accelerate").glob("*.yaml"))
DS_JSON = sorted((REPO / "recipes" / "deepspeed").glob("*.json"))
CPU_OK = ["training.use_cpu=true"]  # bf16 recipes validate on CPU-only machines


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_recipe_loads_and_names_its_launch_command(path):
    text = path.read_text()
    header = text.split("\nmode:")[0]
    assert text.startswith("#") and all(line.startswith("#") for line in header.splitlines())
    assert "Launch" in header and "retrofit" in header, (
        f"{path}: the opening comment must give the launch command"
    )
    recipe = load_recipe(path, CPU_OK)
    assert recipe.source == str(path)
    assert recipe.training.output_dir
    assert format_recipe(recipe).startswith("mode:")


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_recipe_launch_configs_exist(path):
    for token in path.read_text().split():
        if token.startswith("recipes/") and token.endswith((".yaml", ".json", ".sbatch")):
            assert (REPO / token).is_file(), f"{path} names {token}, which does not exist"


def test_8b_recipes_follow_the_spec():
    gsm = load_recipe(REPO / "recipes/llada8b/gsm8k-ift.yaml", CPU_OK)
    t = gsm.training
    assert (t.per_device_train_batch_size, t.gradient_accumulation_steps, t.num_train_epochs) == (4, 2, 100)
    assert (t.lora_lr, t.learning_rate, t.lora_weight_decay, t.weight_decay) == (1e-4, 1e-4, 0.1, 0.1)
    assert (gsm.lora.r, gsm.lora.alpha, gsm.lora.dropout) == (128, 128, 0.1)
    assert gsm.lora.target_modules == ["q_proj", "k_proj", "v_proj", "transformer.ff_out"]
    assert t.lr_scheduler_kwargs == {"num_cycles": 5} and t.warmup_steps == 0.05 and t.bf16
    transfer = load_recipe(REPO / "recipes/llada8b/transfer.yaml", CPU_OK)
    assert (transfer.training.lora_weight_decay, transfer.training.weight_decay) == (0.0, 0.01)
    assert transfer.training.head_lr == 2.5e-5 and transfer.training.max_steps == 500_000
    base = load_recipe(REPO / "recipes/llada8b/baseline-gsm8k.yaml", CPU_OK)
    assert base.training.loss == "mdm" and base.training.loss_normalizer == 4096


def test_overrides_coerce_types_and_reach_lists():
    path = REPO / "recipes/tiny/flexmdm-sft.yaml"
    recipe = load_recipe(
        path,
        [
            "training.learning_rate=2e-4",  # a string to PyYAML: coerced to float
            "training.max_steps=12",
            "lora.train_token_head=true",
            "lora.target_modules=q_proj,v_proj",
            "data.train.0.limit=7",
            "objective.insertion_schedule.name=linear",
            "training.lr_scheduler_kwargs={num_cycles: 2}",
        ],
    )
    assert recipe.training.learning_rate == 2e-4 and isinstance(recipe.training.learning_rate, float)
    assert recipe.training.max_steps == 12 and recipe.lora.train_token_head is True
    assert recipe.lora.target_modules == ["q_proj", "v_proj"]
    assert recipe.data.train[0]["limit"] == 7
    assert recipe.objective.insertion_schedule["name"] == "linear"
    assert recipe.training.lr_scheduler_kwargs == {"num_cycles": 2}
    printed = yaml.safe_load(format_recipe(recipe))
    assert printed["training"]["max_steps"] == 12 and printed["training"]["learning_rate"] == 2e-4


def test_yaml11_words_in_overrides_stay_words_for_text_fields():
    """`save_strategy=no` is the strategy "no" (PyYAML would read False); bool fields still read it."""
    recipe = load_recipe(REPO / "recipes/tiny/flexmdm-sft.yaml",
                         ["training.save_strategy=no", "lora.train_token_head=yes", "objective.trim=off"])  # fmt: skip
    assert recipe.training.save_strategy == "no"
    assert recipe.lora.train_token_head is True and recipe.objective.trim is False


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("training.lerning_rate=1", "did you mean 'learning_rate'"),
        ("lora.r=eight", "lora.r: 'eight' is not a valid int"),
        ("training.max_steps", "must look like section.key=value"),
        ("data.train.5.limit=1", "not an index"),
        ("model.dtype=float8", "model.dtype='float8' is not one of"),
        ("training.loss=ce", "training.loss='ce' is not one of"),
        ("bogus.x=1", "unknown section 'bogus'"),
    ],
)
def test_bad_overrides_name_the_key(override, message):
    with pytest.raises(RecipeError, match=message.replace("(", r"\(").replace("[", r"\[")):
        load_recipe(REPO / "recipes/tiny/flexmdm-sft.yaml", [override])


def test_apply_overrides_does_not_mutate_input():
    raw = {"training": {"max_steps": 1}}
    out = apply_overrides(raw, ["training.max_steps=3", "model.base=x"])
    assert raw == {"training": {"max_steps": 1}} and out == {
        "training": {"max_steps": 3},
        "model": {"base": "x"},
    }


# ----------------------------------------------------------------------------- shipped configs


@pytest.mark.parametrize("path", ACCEL, ids=lambda p: p.name)
def test_accelerate_configs_parse(path):
    from accelerate.commands.config.config_args import ClusterConfig

    config = ClusterConfig.from_yaml_file(str(path))
    assert config.num_processes >= 2 and config.num_machines >= 1
    assert config.num_processes % config.num_machines == 0
    assert path.read_text().startswith("#") and "accelerate launch" in path.read_text()
    if config.distributed_type.value == "DEEPSPEED":
        assert (REPO / config.deepspeed_config["deepspeed_config_file"]).is_file()
    if config.num_machines > 1:
        assert config.num_processes == 16 and config.rdzv_backend == "static"
        assert "main_process_port" in yaml.safe_load(path.read_text())


def _fill_auto(ds: dict, *, micro: int, accum: int, world: int, hidden: int, clip: float, bf16: bool) -> dict:
    """Replace HF "auto" values as the Trainer does (batch sizes, clipping, bf16, bucket sizes)."""
    ds = copy.deepcopy(ds)
    ds["train_micro_batch_size_per_gpu"] = micro
    ds["gradient_accumulation_steps"] = accum
    ds["train_batch_size"] = micro * accum * world
    ds["gradient_clipping"] = clip
    ds["bf16"]["enabled"] = bf16
    zero = ds["zero_optimization"]
    sizes = {
        "reduce_bucket_size": hidden * hidden,
        "stage3_prefetch_bucket_size": int(0.9 * hidden * hidden),
        "stage3_param_persistence_threshold": 10 * hidden,
    }
    for key, value in sizes.items():
        if zero.get(key) == "auto":
            zero[key] = value
    assert '"auto"' not in json.dumps(ds)
    return ds


class _DataParallel:
    """Minimal mpu so DeepSpeedConfig checks the batch size against the configured world size."""

    def __init__(self, world: int):
        self.world = world

    def get_data_parallel_world_size(self) -> int:
        return self.world


@pytest.mark.parametrize("path", [p for p in ACCEL if "DEEPSPEED" in p.read_text()], ids=lambda p: p.name)
def test_deepspeed_configs_parse_with_the_paired_world_size(path, monkeypatch):
    import deepspeed.runtime.config as ds_config
    from accelerate.commands.config.config_args import ClusterConfig

    accel = ClusterConfig.from_yaml_file(str(path))
    ds_path = REPO / accel.deepspeed_config["deepspeed_config_file"]
    raw = json.loads(ds_path.read_text())
    recipe = load_recipe(REPO / "recipes/llada8b/gsm8k-ift.yaml", CPU_OK).training
    filled = _fill_auto(
        raw,
        micro=recipe.per_device_train_batch_size,
        accum=recipe.gradient_accumulation_steps,
        world=accel.num_processes,
        hidden=4096,
        clip=recipe.max_grad_norm,
        bf16=recipe.bf16,
    )
    monkeypatch.setattr(ds_config.dist, "get_rank", lambda *a, **k: 0)
    parsed = ds_config.DeepSpeedConfig(filled, mpu=_DataParallel(accel.num_processes))
    assert parsed.world_size == accel.num_processes
    assert parsed.train_batch_size == 4 * 2 * accel.num_processes
    assert parsed.zero_optimization_stage == (3 if "zero3" in ds_path.name else 2)
    assert parsed.bfloat16_config.enabled is True and parsed.gradient_clipping == 1.0
    if parsed.zero_optimization_stage == 3:
        assert parsed.zero_config.gather_16bit_weights_on_model_save is True
    bad = dict(filled, train_batch_size=filled["train_batch_size"] + 1)
    with pytest.raises(AssertionError, match="train_batch_size"):
        ds_config.DeepSpeedConfig(bad, mpu=_DataParallel(accel.num_processes))


@pytest.mark.parametrize("path", DS_JSON, ids=lambda p: p.name)
def test_every_deepspeed_json_is_paired_with_an_accelerate_config(path):
    assert any(path.name in p.read_text() for p in ACCEL), f"{path.name} is not used by any accelerate config"


# ----------------------------------------------------------------------------- schedule and memory


def test_cosine_schedule_matches_spec_7_5_table():
    """docs/method.md §7.5: 500k horizon, warmup 0.05 (25k), 5 cycles; both param groups follow it."""
    from transformers import get_scheduler

    args = load_recipe(REPO / "recipes/llada8b/transfer.yaml", CPU_OK).training
    assert args.get_warmup_steps(args.max_steps) == 25_000
    params = [torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))]
    opt = torch.optim.SGD([{"params": [params[0]], "lr": 1.0}, {"params": [params[1]], "lr": 0.25}])
    sched = get_scheduler(
        args.lr_scheduler_type,
        optimizer=opt,
        num_warmup_steps=args.get_warmup_steps(args.max_steps),
        num_training_steps=args.max_steps,
        scheduler_specific_kwargs=args.lr_scheduler_kwargs,
    )
    table = {0: 0, 12_500: 0.5, 25_000: 1, 72_500: 0, 120_000: 1, 167_500: 0, 200_000: 0.7735, 215_000: 1}
    table.update({262_500: 0, 500_000: 1})
    for step, want in table.items():
        got = [f(step) for f in sched.lr_lambdas]
        assert got[0] == pytest.approx(want, abs=5e-5) and got[1] == got[0], step


def test_memory_formula_closed_form():
    kw = dict(total_params=1000, trainable_params=100, micro_batch=2, seq_len=8, d_model=4, mlp_hidden=8)
    kw.update(n_layers=3, vocab=16, weight_bytes=2, gradient_checkpointing=True)
    z2 = estimate_memory(stage=2, world_size=4, **kw)
    assert (z2.weights, z2.gradients, z2.optimizer, z2.gathered) == (2000, 50, 300, 0)
    block = 2 * 8 * (4 * 4 + 3 * 8) * 2 * 2  # B L (4D + 3H) b x2
    assert z2.activations == 3 * 2 * 8 * 4 * 2 + block + 2 * 8 * 16 * 12  # token head: B L V x 12 bytes
    chunked = estimate_memory(stage=2, world_size=4, head_chunk=5, **kw)
    assert z2.activations - chunked.activations == (2 * 8 - 5) * 16 * 12  # one chunk of 5 slots
    z3 = estimate_memory(stage=3, world_size=4, **kw)
    assert (z3.weights, z3.gathered) == (500, 2 * 2 * (4 * 16 + 3 * 4 * 8))
    assert z3.total < z2.total
    with pytest.raises(ValueError, match="stage must be 2 or 3"):
        estimate_memory(stage=1, world_size=4, **kw)


def test_dry_run_8b_gsm8k(capsys):
    """No weights: meta device; docs/method.md §2.9 counts with the default (LoRA) token head."""
    from retrofit.commands import train as train_cmd

    args = argparse.Namespace(
        recipe=str(REPO / "recipes/llada8b/gsm8k-ift.yaml"),
        overrides=[],
        dry_run=True,
        world_size=None,
        accelerate_config=str(REPO / "recipes/accelerate/zero2-2x8.yaml"),
    )
    assert train_cmd.run(args) == 0
    out = capsys.readouterr().out
    assert "4 per device x 2 accumulation x 16 GPUs = 128 sequences" in out
    assert "sequence length 1025 tokens" in out
    assert "optimizer steps 5800 (100 epochs x 58 steps; 7473 rows)" in out
    assert "402,657,281" in out
    lines = {line.split()[0]: line for line in out.splitlines() if line.split()}
    assert lines["lora"].split()[-1] == "117,374,976" and lines["new_modules"].split()[-1] == "285,282,305"
    assert lines["token_head"].split()[-1] == "0"
    rows = [line.split() for line in out.splitlines() if line.split()[:1] in (["2"], ["3"])]
    assert {(r[0], r[1]) for r in rows} == {("2", "8"), ("2", "16"), ("3", "8"), ("3", "16")}
    totals = {(r[0], r[1]): float(r[-1]) for r in rows}
    assert totals[("3", "16")] < totals[("2", "16")]  # ZeRO-3 partitions the 16 GB of weights
