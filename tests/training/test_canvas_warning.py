"""Training a grafted FlexMDM on rows longer than its canvas says so (newcomer report, #16)."""

from __future__ import annotations

from pathlib import Path

from transformers import AutoTokenizer

from retrofit.train import canvas_width
from retrofit.training.model_builder import build_model
from retrofit.training.recipe import load_recipe

REPO = Path(__file__).resolve().parents[2]


def test_data_longer_than_the_grafted_canvas_warns(tiny_flexmdm_dir, capsys, tmp_path):
    recipe = load_recipe(REPO / "recipes/tiny/flexmdm-sft.yaml",
                         [f"model.base={tiny_flexmdm_dir}", "data.max_length=384", f"training.output_dir={tmp_path}",
                          "training.use_cpu=true"])  # fmt: skip
    build_model(
        recipe, str(tiny_flexmdm_dir), canvas_width(recipe, AutoTokenizer.from_pretrained(tiny_flexmdm_dir))
    )
    err = capsys.readouterr().err
    assert "data.max_length=384 exceeds the canvas_width 64" in err and "--canvas-width 384" in err
    recipe = load_recipe(REPO / "recipes/tiny/flexmdm-sft.yaml",
                         [f"model.base={tiny_flexmdm_dir}", "data.max_length=64", f"training.output_dir={tmp_path}",
                          "training.use_cpu=true"])  # fmt: skip
    build_model(
        recipe, str(tiny_flexmdm_dir), canvas_width(recipe, AutoTokenizer.from_pretrained(tiny_flexmdm_dir))
    )
    assert "exceeds the canvas_width" not in capsys.readouterr().err
