"""YAML recipes: load, apply dotted `key=value` overrides, coerce types, print the effective config.

Usage::

    recipe = load_recipe("recipes/tiny/flexmdm-sft.yaml", ["training.max_steps=20", "lora.r=8"])
    print(format_recipe(recipe))

Override keys are dotted paths into the YAML (`training.learning_rate=1e-4`,
`data.train.0.limit=100`, `objective.insertion_schedule.name=linear`). Values are parsed as YAML
(`true`, `null`, `[a, b]`, `{k: v}`) and then coerced to the annotated type of the dataclass
field they land in, so `1e-4` (a string to PyYAML) becomes a float and `8` an int. Unknown keys
are errors that name the section and suggest the closest field.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from retrofit.training.args import Recipe, RetrofitTrainingArguments
from retrofit.training.sections import DataRecipe, LoraRecipe, ModelRecipe, ObjectiveRecipe

__all__ = ["RecipeError", "apply_overrides", "build_recipe", "coerce", "format_recipe", "load_recipe"]

SECTIONS: dict[str, type] = {
    "model": ModelRecipe,
    "lora": LoraRecipe,
    "data": DataRecipe,
    "objective": ObjectiveRecipe,
    "training": RetrofitTrainingArguments,
}
TOP_LEVEL = ("mode",)
RETROFIT_FIELDS = (
    "loss",
    "loss_normalizer",
    "lora_learning_rate",
    "lora_weight_decay",
    "head_learning_rate",
    "head_weight_decay",
    "save_on_interrupt",
)


class RecipeError(ValueError):
    """A recipe file or override is malformed; the message names the file / key and the fix."""


def load_recipe(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """Read a YAML recipe, apply `key=value` overrides and build the validated :class:`Recipe`.

    Args:
        path: recipe YAML file.
        overrides: dotted `key=value` strings, applied in order.

    Returns:
        The Recipe, with `source` set to `path`.

    Raises:
        RecipeError: unreadable YAML, unknown keys, bad values (naming the file and key).
        FileNotFoundError: `path` does not exist.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"recipe file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise RecipeError(f"{path}: not valid YAML: {err}") from err
    if not isinstance(raw, dict):
        raise RecipeError(f"{path}: a recipe is a mapping with sections {', '.join(SECTIONS)}")
    raw = apply_overrides(raw, overrides)
    try:
        recipe = build_recipe(raw)
    except (TypeError, ValueError) as err:
        raise RecipeError(f"{path}: {err}") from err
    recipe.source = str(path)
    return recipe


def apply_overrides(raw: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """Return a copy of `raw` with dotted `key=value` overrides applied (values parsed as YAML).

    Raises:
        RecipeError: an override without `=`, without a known section (the message names the
            section that has the field), or a path through a non-container / bad list index.
    """
    raw = yaml.safe_load(yaml.safe_dump(raw))  # deep copy of plain data
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise RecipeError(
                f"override {item!r} must look like section.key=value (e.g. training.max_steps=20)"
            )
        _check_override_section(item, key, text)
        node: Any = raw
        parts = key.split(".")
        for depth, part in enumerate(parts):
            last = depth == len(parts) - 1
            where = ".".join(parts[: depth + 1])
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise RecipeError(f"override {key}: {where} is not an index of a {len(node)}-item list")
                part = int(part)
            elif not isinstance(node, dict):
                raise RecipeError(f"override {key}: {'.'.join(parts[:depth])} is a value, not a section")
            if last:
                node[part] = _override_value(text)
            else:
                if isinstance(node, dict) and node.get(part) is None:
                    node[part] = {}
                node = node[part]
    return raw


def _check_override_section(item: str, key: str, text: str) -> None:
    """Blame an override whose first part is not a section: suggest the section owning the field.

    Raises:
        RecipeError: e.g. "override 'max_steps=5' has no section: write training.max_steps=5
            (sections: model, lora, data, objective, training)".
    """
    head, dot, rest = key.partition(".")
    if head in SECTIONS or head in TOP_LEVEL:
        return
    sections = ", ".join(SECTIONS)
    fields = {name: [f.name for f in dataclasses.fields(cls) if f.init] for name, cls in SECTIONS.items()}
    if not dot:  # `max_steps=5`: the field itself, without a section
        targets = [f"{name}.{key}" for name, names in fields.items() if key in names]
        targets = targets or _close_fields(key, fields)
        if targets:
            fixes = " or ".join(f"{target}={text}" for target in targets)
            raise RecipeError(f"override {item!r} has no section: write {fixes} (sections: {sections})")
        raise RecipeError(
            f"override {item!r} has no section, and no section has a field {key!r}: write "
            f"section.field=value (sections: {sections}; `retrofit train --help` lists the fields)"
        )
    close = difflib.get_close_matches(head, list(SECTIONS), n=1)
    hint = f"; did you mean {close[0]}.{rest}={text}?" if close else ""
    raise RecipeError(f"override {item!r}: unknown section {head!r} (sections: {sections}){hint}")


def _close_fields(key: str, fields: dict[str, list[str]]) -> list[str]:
    """`section.field` names close to `key` (a misspelt field given without a section)."""
    dotted = {f"{section}.{name}": name for section, names in fields.items() for name in names}
    names = difflib.get_close_matches(key, list(set(dotted.values())), n=1)
    return [full for full, name in dotted.items() if names and name == names[0]]


_YAML11_WORDS = {"yes", "no", "on", "off", "y", "n"}


def _override_value(text: str) -> Any:
    """A command-line value parsed as YAML, except YAML 1.1's yes / no / on / off, kept as text.

    `training.save_strategy=no` must mean the strategy "no", not False; bool fields still read
    these words (see `coerce`).
    """
    if not text.strip():
        return ""
    return text.strip() if text.strip().lower() in _YAML11_WORDS else yaml.safe_load(text)


def build_recipe(raw: dict[str, Any]) -> Recipe:
    """Build a :class:`Recipe` from plain data (coercing field types). Raises ValueError/TypeError."""
    unknown = set(raw) - set(SECTIONS) - set(TOP_LEVEL)
    if unknown:
        raise RecipeError(
            f"unknown top-level keys {sorted(unknown)}; sections are {list(SECTIONS)} and {list(TOP_LEVEL)}"
        )
    parts = {}
    for name, cls in SECTIONS.items():
        section = raw.get(name) or {}
        if not isinstance(section, dict):
            raise RecipeError(f"section {name}: must be a mapping, got {type(section).__name__}")
        parts[name] = _build_section(name, cls, section)
    recipe = Recipe(mode=raw.get("mode", "retrofit"), **parts)
    recipe.training_keys = list(raw.get("training") or {})
    return recipe


def _build_section(name: str, cls: type, values: dict[str, Any]) -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    kwargs = {}
    for key, value in _current_names(values, names).items():
        if key not in names:
            close = difflib.get_close_matches(key, names, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise RecipeError(f"section {name}: unknown key {key!r}{hint}")
        kwargs[key] = coerce(value, hints[key], f"{name}.{key}")
    return cls(**kwargs)


RENAMED_TRAINING_FIELDS = {
    "gradient_checkpointing": "activation_checkpointing",
    "gradient_checkpointing_kwargs": "activation_checkpointing_kwargs",
}
"""transformers 5 renamed these TrainingArguments fields (the old names warn): a recipe may use
either spelling, and it reaches transformers under the name the installed version has."""


def _current_names(values: dict[str, Any], names: list[str]) -> dict[str, Any]:
    """`values` with each renamed field under the name the installed transformers prefers."""
    out = dict(values)
    for old, new in RENAMED_TRAINING_FIELDS.items():
        if old in out and new in names:  # transformers 5: the new name (no deprecation warning)
            out[new] = out.pop(old)
        elif new in out and new not in names and old in names:  # transformers 4
            out[old] = out.pop(new)
    return out


def coerce(value: Any, annotation: Any, where: str) -> Any:
    """Coerce a YAML value to a field annotation (int, float, bool, str, list, dict, unions).

    Raises:
        RecipeError: the value cannot be read as the annotated type (names `where`).
    """
    if annotation is Any:
        return value
    options = _union_options(annotation)
    if value is None:
        if type(None) in options or annotation is Any:
            return None
        raise RecipeError(f"{where}: null is not allowed (expected {_type_name(annotation)})")
    if isinstance(value, bool) and bool not in options and _is_word_field(options):
        return _bool_as_word(value, options, where)
    for option in options:  # already the right type: keep (bool is not an int here)
        base = typing.get_origin(option) or option
        if (
            isinstance(base, type)
            and isinstance(value, base)
            and not (base is int and isinstance(value, bool))
        ):
            return value
    for option in options:
        converted = _convert(value, option)
        if converted is not _FAIL:
            return converted
    raise RecipeError(f"{where}: {value!r} is not a valid {_type_name(annotation)}")


_FAIL = object()

_BOOL_WORDS: dict[str, tuple[str, str]] = {"report_to": ("none", "all")}
"""Field -> (word for False, word for True) where HF's spelling is not "no" / "yes"."""


def _is_word_field(options: tuple[Any, ...]) -> bool:
    """A text-valued field: every option is str, an Enum, or a list of those (None allowed)."""

    def word(option: Any) -> bool:
        return option is str or (isinstance(option, type) and issubclass(option, enum.Enum))

    def ok(option: Any) -> bool:
        if typing.get_origin(option) is list:
            return all(word(arg) for arg in typing.get_args(option))
        return option is type(None) or word(option)

    return all(ok(o) for o in options) and any(word(o) for o in options)


def _bool_as_word(value: bool, options: tuple[Any, ...], where: str) -> str:
    """The word YAML 1.1 read as a boolean (`save_strategy: no` -> False), back as HF spells it.

    Raises:
        RecipeError: an enum field that has no such word (e.g. hub_strategy); lists the choices.
    """
    word = _BOOL_WORDS.get(where.rpartition(".")[2], ("no", "yes"))[value]
    enums = [o for o in options if isinstance(o, type) and issubclass(o, enum.Enum)]
    choices = [str(member.value) for e in enums for member in e]
    if enums and word not in choices:
        raise RecipeError(
            f"{where}: {value!r} (YAML reads an unquoted no / yes / off / on as a boolean) is not one of "
            f"{', '.join(choices)}; write one of them"
        )
    return word


def _convert(value: Any, option: Any) -> Any:
    if option is Any:
        return value
    if option is bool:
        if isinstance(value, str) and value.lower() in ("true", "yes", "on", "1", "false", "no", "off", "0"):
            return value.lower() in ("true", "yes", "on", "1")
        return _FAIL
    if option in (int, float) and not isinstance(value, bool):
        try:
            number = float(value)
        except (TypeError, ValueError):
            return _FAIL
        if option is int:
            return int(number) if number.is_integer() else _FAIL
        return number
    if option is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if typing.get_origin(option) is list and isinstance(value, (str, tuple)):
        return [v.strip() for v in value.split(",")] if isinstance(value, str) else list(value)
    if isinstance(option, type) and isinstance(value, str):  # enums such as SchedulerType
        try:
            return option(value)
        except (TypeError, ValueError):
            return _FAIL
    return _FAIL


def _union_options(annotation: Any) -> tuple[Any, ...]:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = typing.get_args(annotation)
        # try str last so "1e-4" becomes a float where a float is allowed
        return tuple(sorted(args, key=lambda a: a is str))
    return (annotation,)


def _type_name(annotation: Any) -> str:
    return getattr(annotation, "__name__", None) or str(annotation)


def format_recipe(recipe: Recipe) -> str:
    """The effective configuration as YAML: every section in full, `training` minus HF defaults.

    Returns:
        A YAML string (stable key order) suitable for printing and saving next to checkpoints.
    """
    return yaml.safe_dump(recipe_to_dict(recipe, only_changed_training=True), sort_keys=False)


def recipe_to_dict(recipe: Recipe, only_changed_training: bool = False) -> dict[str, Any]:
    """Plain-data form of a recipe (the `recipe` dict stored in checkpoint manifests)."""
    out: dict[str, Any] = {"mode": recipe.mode, "source": recipe.source}
    for name in ("model", "lora", "data", "objective"):
        out[name] = _plain(dataclasses.asdict(getattr(recipe, name)))
    out["training"] = _training_dict(recipe, only_changed_training)
    return out


def _training_dict(recipe: Recipe, only_changed: bool) -> dict[str, Any]:
    values = _plain(recipe.training.to_dict())
    if not only_changed:
        return values
    # the keys the recipe / overrides set, plus retrofit's own fields (no default instance is built:
    # constructing TrainingArguments sets up devices and DeepSpeed state as a side effect)
    own = {f.name for f in dataclasses.fields(RetrofitTrainingArguments) if f.name in RETROFIT_FIELDS}
    keys = ["output_dir", *recipe.training_keys, *sorted(own - set(recipe.training_keys))]
    return {k: values[k] for k in dict.fromkeys(keys) if k in values}


def _plain(value: Any) -> Any:
    """Convert enums / tuples / nested containers to YAML-safe plain data."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "value") and not isinstance(value, (int, float, str, bool)):
        return _plain(value.value)
    if value is None or isinstance(value, (int, float, str, bool)):
        return value
    return str(value)
