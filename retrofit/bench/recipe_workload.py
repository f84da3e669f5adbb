"""A training recipe's own examples as a benchmark workload.

`recipe_workload` builds the tokenizer and the training set exactly as `retrofit train` does
(`retrofit.train.build_datasets`, `canvas_width`), so the benchmarks measure the batches of that
run: its x1 lengths, protected prompts and infilling rows (e.g. the demo's GSM8K + code
mixture, `recipes/tiny/flexmdm-sft.yaml`).

    >>> work = recipe_workload("recipes/tiny/flexmdm-sft.yaml", ["model.base=demo-out/flexmdm-init"])
    >>> work.features[0]["input_ids"][:5], work.canvas, work.collator_kwargs["tokenizer"]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["RecipeWorkload", "recipe_workload"]


@dataclass
class RecipeWorkload:
    """Examples and collator settings of a recipe.

    Attributes:
        features: up to `limit` training examples (dicts with input_ids, prompt_length,
            infill_cutoff, ...), in the dataset's (seeded, shuffled) order.
        canvas: the run's canvas width (data.max_length, plus the infilling boundary tokens).
        batch, accum: per_device_train_batch_size, gradient_accumulation_steps.
        insertion_schedule, time_mode: the recipe's objective.
        mask_id, pad_id: from the base model's config (LLaDA or FlexMDM).
        collator_kwargs: extra FlexMDMCollator fields (the tokenizer, for infilling rows).
    """

    features: list[dict[str, Any]]
    canvas: int
    batch: int
    accum: int
    insertion_schedule: Any
    time_mode: str
    mask_id: int
    pad_id: int
    collator_kwargs: dict[str, Any]


def recipe_workload(
    path: str, overrides: list[str] | tuple[str, ...] = (), limit: int = 20000
) -> RecipeWorkload:
    """Build a recipe's training examples and collator settings (no model weights are read).

    Args:
        path: recipe YAML. overrides: `key=value` overrides (e.g. model.base=DIR).
        limit: examples kept (the first `limit` of the shuffled training set).

    Raises:
        RecipeError / FileNotFoundError / DataFileError: as `retrofit train` would for this recipe.
    """
    from transformers import AutoConfig, AutoTokenizer

    import retrofit.models  # noqa: F401  (registers llada / flexmdm with AutoConfig)
    from retrofit.train import build_datasets, canvas_width
    from retrofit.training.model_builder import resolve_local
    from retrofit.training.recipe import load_recipe

    recipe = load_recipe(path, list(overrides))
    base = resolve_local(recipe.model.base)
    tokenizer = AutoTokenizer.from_pretrained(base)
    config = AutoConfig.from_pretrained(base)
    train, _ = build_datasets(recipe, tokenizer)
    features = [dict(row) for row in train.select(range(min(limit, len(train))))]
    args = recipe.training
    return RecipeWorkload(
        features=features,
        canvas=canvas_width(recipe, tokenizer),
        batch=args.per_device_train_batch_size,
        accum=args.gradient_accumulation_steps,
        insertion_schedule=recipe.objective.insertion_schedule,
        time_mode=recipe.objective.time_sampling,
        mask_id=int(config.mask_token_id),
        pad_id=int(config.pad_token_id),
        collator_kwargs={"tokenizer": tokenizer},
    )
