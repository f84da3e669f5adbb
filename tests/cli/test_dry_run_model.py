"""`retrofit train --dry-run` counts the model the run would build, for a grafted base too."""

from __future__ import annotations

from pathlib import Path

from retrofit.cli import main

REPO = Path(__file__).resolve().parents[2]


def _count(out: str, name: str) -> int:
    line = next(line for line in out.splitlines() if line.split()[:1] == [name])
    return int(line.split()[-1].replace(",", ""))


def test_grafted_base_is_counted_from_its_own_config(capsys, tiny_llada_dir, tiny_flexmdm_dir):
    """A `retrofit graft` folder keeps its backbone's sizes under "backbone": the plan must read
    them (it used to fall back to LLaDA-8B's defaults and report 8.3B frozen parameters)."""
    from retrofit.models import FlexMDMModel, LLaDAModelLM

    recipe = str(REPO / "recipes/tiny/flexmdm-sft.yaml")
    assert main(["train", recipe, "--dry-run", f"model.base={tiny_flexmdm_dir}"]) == 0
    out = capsys.readouterr().out
    llada = LLaDAModelLM.from_pretrained(tiny_llada_dir)
    flex = FlexMDMModel.from_pretrained(tiny_flexmdm_dir)
    new = sum(p.numel() for n, p in flex.named_parameters() if not n.startswith("backbone."))
    assert _count(out, "new_modules") == new
    # frozen: the backbone, plus peft's frozen originals of the modules_to_save (the new modules)
    assert _count(out, "frozen") == sum(p.numel() for p in llada.parameters()) + new


def test_dry_run_reports_packing_and_the_chunked_head(capsys, tiny_flexmdm_dir):
    """The plan says whether micro-batches are packed (and their position budget: B x (canvas + 1)
    of the graft) and how the token head is run; the memory term of the chunk is tested in
    tests/training/test_recipes.py::test_memory_formula_closed_form."""
    recipe = str(REPO / "recipes/tiny/flexmdm-sft.yaml")
    plain = ["train", recipe, "--dry-run", f"model.base={tiny_flexmdm_dir}"]
    assert main([*plain, "data.packing=false"]) == 0
    before = capsys.readouterr().out
    assert main([*plain, "data.packing=true", "training.token_head_chunk=64"]) == 0
    after = capsys.readouterr().out
    assert (
        "packing         off: each micro-batch trimmed to its longest x_t (at most 520 positions)" in before
    )
    assert "token head      one call at the masked slots (up to 520 x vocab logits)" in before
    assert (
        "packing         on: one row per micro-batch (at most 520 positions per micro-batch" in after
    )  # 8 x 65
    assert "token head      chunks of 64 masked slots, recomputed in backward" in after
