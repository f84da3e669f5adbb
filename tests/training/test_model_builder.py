"""The dry run and the run build the model with one builder (`retrofit.training.model_builder`).

`retrofit train` calls `build_model(recipe, base, width)` with the base's weights; `retrofit train
--dry-run` calls the same function with `meta=True` (no weight read or allocated). Pinned here:
the two builds have the same parameter names, shapes and trainable flags and the same manifest
info, with exact counts for the tiny LLaDA of tests/conftest.py (2 layers, width 64, 4 heads);
the dry run goes through that builder and prints those numbers; a recipe the run refuses is
refused by the dry run with the same message.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import retrofit.training.model_builder as model_builder
from retrofit.cli import main
from retrofit.training.lora import trainable_report
from retrofit.training.model_builder import build_model
from retrofit.training.recipe import load_recipe

REPO = Path(__file__).resolve().parents[2]

# (recipe, base) -> (trainable, frozen) parameters of the tiny model. flexmdm-sft: LoRA r=16 on
# q/k/v/ff_out (18,432) + the graft's new modules (45,761), frozen: the LLaDA trunk (147,776) plus
# peft's frozen originals of the modules_to_save (45,761).
EXPECTED = {
    ("flexmdm-sft", "llada"): (64_193, 193_537),
    ("flexmdm-sft", "grafted"): (64_193, 193_537),
    ("mdm-sft", "llada"): (18_432, 147_776),
    ("pretrain", "llada"): (147_776, 0),
}


def _recipe(name: str, base: Path, out: Path, *overrides: str):
    overrides = (f"model.base={base}", f"training.output_dir={out}", "training.use_cpu=true", *overrides)
    return load_recipe(REPO / f"recipes/tiny/{name}.yaml", list(overrides))


def _layout(model) -> dict[str, tuple[tuple[int, ...], bool]]:
    return {name: (tuple(p.shape), p.requires_grad) for name, p in model.named_parameters()}


@pytest.mark.parametrize(("name", "kind"), sorted(EXPECTED))
def test_meta_build_is_the_real_build_without_weights(name, kind, tiny_llada_dir, tiny_flexmdm_dir, tmp_path):
    base = str(tiny_flexmdm_dir if kind == "grafted" else tiny_llada_dir)
    recipe = _recipe(name, base, tmp_path)
    real, info = build_model(recipe, base, recipe.data.max_length)
    plan, plan_info = build_model(recipe, base, recipe.data.max_length, meta=True)
    assert {p.device.type for p in real.parameters()} == {"cpu"}
    assert {p.device.type for p in plan.parameters()} == {"meta"}
    assert _layout(plan) == _layout(real)
    assert plan_info == info
    for model in (real, plan):
        report = trainable_report(model)
        assert (report.trainable, report.frozen) == EXPECTED[name, kind]


def test_init_from_merge_plans_the_same_model(trained_checkpoint, tiny_llada_dir, tmp_path):
    """`model.init_from` with `init_lora: merge` (merge, then a fresh LoRA) on meta and for real
    (the conftest checkpoint: LoRA r=4, alpha 8, adaln_group_size 1, canvas 64)."""
    base = str(tiny_llada_dir)
    recipe = _recipe(
        "flexmdm-sft", base, tmp_path, f"model.init_from={trained_checkpoint.ckpt}", "model.init_lora=merge",
        "lora.r=4", "lora.alpha=8",
        "model.graft.adaln_group_size=1", "model.graft.canvas_width=64",
    )  # fmt: skip
    real, _ = build_model(recipe, base, recipe.data.max_length)
    plan, _ = build_model(recipe, base, recipe.data.max_length, meta=True)
    assert _layout(plan) == _layout(real)
    report = trainable_report(plan)  # a fresh LoRA r=4 (4,608) + the new modules with one AdaLN per block
    assert (report.trainable, report.frozen) == (4_608 + 54_081, 147_776 + 54_081)


def _count(out: str, name: str) -> int:
    line = next(line for line in out.splitlines() if line.split()[:1] == [name])
    return int(line.split()[1 if name in ("trainable", "frozen") else -1].replace(",", ""))


@pytest.mark.parametrize("kind", ["llada", "grafted"])
def test_dry_run_counts_with_the_run_builder_on_meta(
    kind, monkeypatch, capsys, tiny_llada_dir, tiny_flexmdm_dir
):
    calls: list[bool] = []

    def spy(*args, **kwargs):
        calls.append(kwargs.get("meta", False))
        return build_model(*args, **kwargs)

    monkeypatch.setattr(model_builder, "build_model", spy)
    base = tiny_flexmdm_dir if kind == "grafted" else tiny_llada_dir
    assert (
        main(["train", str(REPO / "recipes/tiny/flexmdm-sft.yaml"), "--dry-run", f"model.base={base}"]) == 0
    )
    assert calls == [True]
    out = capsys.readouterr().out
    assert (_count(out, "lora"), _count(out, "new_modules")) == (18_432, 45_761)
    assert (_count(out, "trainable"), _count(out, "frozen")) == EXPECTED["flexmdm-sft", kind]


def test_dry_run_refuses_what_the_run_refuses(capsys, tiny_flexmdm_dir, tmp_path):
    """A grafted folder as the base of the MDM baseline: the run refuses it, so does its plan."""
    recipe = _recipe("mdm-sft", tiny_flexmdm_dir, tmp_path)
    with pytest.raises(ValueError) as real:
        build_model(recipe, str(tiny_flexmdm_dir), recipe.data.max_length)
    assert str(real.value) == (
        f"model.base={tiny_flexmdm_dir}: {tiny_flexmdm_dir / 'config.json'} (model_type flexmdm) "
        "needs mode: retrofit and training.loss: flexmdm"
    )
    code = main(
        ["train", str(REPO / "recipes/tiny/mdm-sft.yaml"), "--dry-run", f"model.base={tiny_flexmdm_dir}"]
    )
    assert code == 1
    assert f"ValueError: {real.value}" in capsys.readouterr().err
