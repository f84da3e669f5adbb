"""Recipe values as HF users write them, and overrides without a section (issue #16, items 11, 3).

`save_strategy: no` in a YAML file is the boolean False to PyYAML; text-valued TrainingArguments
fields read it back as HF spells it. An override such as `max_steps=5` is blamed on the override,
with the section that owns the field.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from retrofit.training.recipe import RecipeError, apply_overrides, load_recipe

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "recipes/tiny/flexmdm-sft.yaml"


def _recipe_with_training(tmp_path: Path, text: str) -> Path:
    """A small recipe file whose `training:` section is `text`, verbatim (unquoted YAML words)."""
    path = tmp_path / "recipe.yaml"
    lines = "".join(f"  {line}\n" for line in text.strip().splitlines())
    path.write_text(
        f"model: {{base: tiny-base}}\ndata: {{train: [{{format: sft, source: gsm8k}}]}}\ntraining:\n  output_dir: {tmp_path / 'out'}\n{lines}"
    )
    return path


def test_yaml_booleans_in_a_recipe_file_are_hf_words_for_text_fields(tmp_path) -> None:
    path = _recipe_with_training(
        tmp_path, "save_strategy: no\neval_strategy: no\nlogging_strategy: no\nreport_to: no\n"
    )
    raw = yaml.safe_load(path.read_text())["training"]
    assert raw["save_strategy"] is False and raw["report_to"] is False  # what PyYAML gives
    t = load_recipe(path).training
    assert (t.save_strategy, t.eval_strategy, t.logging_strategy) == ("no", "no", "no")
    assert t.report_to == []  # False -> "none", which transformers turns into no integration


def test_bool_fields_keep_yaml_booleans(tmp_path) -> None:
    path = _recipe_with_training(tmp_path, "save_on_interrupt: yes\ngradient_checkpointing: off")
    t = load_recipe(path).training
    assert t.save_on_interrupt is True and t.gradient_checkpointing is False


def test_yaml_boolean_for_an_enum_without_that_word_lists_the_choices(tmp_path) -> None:
    path = _recipe_with_training(tmp_path, "hub_strategy: no")
    with pytest.raises(RecipeError) as err:
        load_recipe(path)
    assert str(err.value) == (
        f"{path}: training.hub_strategy: False (YAML reads an unquoted no / yes / off / on as a boolean) "
        "is not one of end, every_save, checkpoint, all_checkpoints; write one of them"
    )


def test_a_numeric_field_still_refuses_a_boolean(tmp_path) -> None:
    path = _recipe_with_training(tmp_path, "max_steps: no")
    with pytest.raises(RecipeError, match="training.max_steps: False is not a valid int"):
        load_recipe(path)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "max_steps=5",
            "override 'max_steps=5' has no section: write training.max_steps=5 "
            "(sections: model, lora, data, objective, training)",
        ),
        (
            "r=8",
            "override 'r=8' has no section: write lora.r=8 (sections: model, lora, data, objective, training)",
        ),
        ("max_step=5", "override 'max_step=5' has no section: write training.max_steps=5 (sections:"),
        (
            "foo=1",
            "override 'foo=1' has no section, and no section has a field 'foo': write section.field=value",
        ),
        (
            "train.max_steps=5",
            "override 'train.max_steps=5': unknown section 'train' (sections: model, lora, data, objective, training); "
            "did you mean training.max_steps=5?",
        ),  # fmt: skip
    ],
)
def test_override_without_a_section_blames_the_override(override, message) -> None:
    with pytest.raises(RecipeError) as err:
        load_recipe(TINY, [override])
    assert str(err.value).startswith(message)
    assert str(TINY) not in str(err.value)  # the recipe file is not at fault


def test_top_level_mode_override_still_works() -> None:
    assert apply_overrides({"mode": "retrofit"}, ["mode=pretrain"]) == {"mode": "pretrain"}


def test_renamed_training_fields_reach_transformers_under_the_installed_name(tmp_path):
    """A recipe's `gradient_checkpointing` (the name transformers 4 knows) does not warn on 5."""
    import dataclasses
    import warnings

    from retrofit.training.args import RetrofitTrainingArguments
    from retrofit.training.recipe import _current_names

    names = [f.name for f in dataclasses.fields(RetrofitTrainingArguments)]
    new_api = "activation_checkpointing" in names
    values = _current_names({"gradient_checkpointing": True, "max_steps": 3}, names)
    assert values == {
        ("activation_checkpointing" if new_api else "gradient_checkpointing"): True,
        "max_steps": 3,
    }
    back = _current_names({"activation_checkpointing": True}, names)
    assert back == {("activation_checkpointing" if new_api else "gradient_checkpointing"): True}
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        RetrofitTrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to=[], **values)
