"""LoRA wrapping (peft), the three AdamW parameter groups and the trainable-parameter report.

docs/method.md §2.8 (LoRA r = alpha = 128, dropout 0.1 on q/k/v and the LM head `transformer.ff_out`) and
§2.9 (parameter groups). The graft modules (time MLP, AdaLN groups, length head) go into peft's
`modules_to_save`, so they train fully and are saved with the adapter; with
`train_token_head: true` the LM head is trained fully the same way instead of through LoRA.

    model = wrap_with_lora(flexmdm, LoraRecipe(), modules_to_save=flexmdm.new_module_names())
    groups = build_param_groups(model, args)          # -> torch.optim.AdamW(groups)
    print(trainable_report(model).format())
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from retrofit.training.sections import LoraRecipe

if TYPE_CHECKING:  # peft is imported lazily (~8 s)
    from peft import PeftModel

    from retrofit.training.args import RetrofitTrainingArguments

__all__ = [
    "GROUPS",
    "HEAD_SUFFIX",
    "TrainableReport",
    "build_param_groups",
    "cast_trainable",
    "lora_config",
    "param_group_of",
    "quiet_peft_rename_warning",
    "trainable_report",
    "wrap_with_lora",
]

GROUPS = ("lora", "token_head", "new_modules")
HEAD_SUFFIX = "transformer.ff_out"
"""Module-name suffix of the LM head (`model.transformer.ff_out`; blocks' `ff_out` do not match)."""


def param_group_of(name: str) -> str:
    """Parameter group of a trainable parameter name (docs/method.md §2.9 selection rule).

    "lora" if the name holds a LoRA tensor; "token_head" if it belongs to the LM head
    `transformer.ff_out`; "new_modules" otherwise (graft modules, or every other weight in
    full-parameter pretraining).
    """
    if "lora_" in name:
        return "lora"
    if f"{HEAD_SUFFIX}." in name or name.startswith("ff_out."):
        return "token_head"
    return "new_modules"


def lora_config(recipe: LoraRecipe, modules_to_save: list[str]) -> Any:
    """The peft `LoraConfig` of a recipe (no task_type: our models take (input_ids, t, ...)).

    With `train_token_head` the head suffix is removed from the LoRA targets and appended to
    `modules_to_save` (a module cannot be both).
    """
    from peft import LoraConfig

    targets = list(recipe.target_modules)
    to_save = list(modules_to_save)
    if recipe.train_token_head:
        if "ff_out" in targets:
            raise ValueError(
                "recipe lora.target_modules: 'ff_out' also matches the LM head; with train_token_head: true "
                "name block projections explicitly or drop it"
            )
        targets = [t for t in targets if t != HEAD_SUFFIX]
        to_save.append(HEAD_SUFFIX)
    return LoraConfig(
        r=recipe.r,
        lora_alpha=recipe.alpha,
        lora_dropout=recipe.dropout,
        target_modules=targets,
        bias="none",
        modules_to_save=to_save or None,
    )


PEFT_RENAME_WARNING = r"`is_gradient_checkpointing` is deprecated"
"""Start of the FutureWarning transformers 5.x raises when peft's `PeftModel.__init__` reads the
renamed `is_gradient_checkpointing` (now `is_activation_checkpointing`); nothing a user can fix."""


@contextlib.contextmanager
def quiet_peft_rename_warning() -> Iterator[None]:
    """Within the block, drop the one FutureWarning of `PEFT_RENAME_WARNING` (others still show).

    Wrap `get_peft_model(...)` / `PeftModel(...)` calls in it:

        with quiet_peft_rename_warning():
            peft_model = get_peft_model(model, config)
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=PEFT_RENAME_WARNING, category=FutureWarning)
        yield


def wrap_with_lora(model: nn.Module, recipe: LoraRecipe, modules_to_save: list[str]) -> PeftModel:
    """Wrap a model with LoRA and check the result.

    Args:
        model: FlexMDMModel (graft) or LLaDAModelLM (MDM baseline).
        recipe: LoRA settings (docs/method.md §2.8).
        modules_to_save: names of modules trained fully (e.g. `FlexMDMModel.new_module_names()`).

    Returns:
        The peft model: LoRA A/B, `modules_to_save` copies trainable; every base weight frozen.

    Raises:
        ValueError: a target suffix or module to save matches nothing, or after wrapping a module
            to save does not require grad / a base weight is still trainable.
    """
    from peft import get_peft_model

    config = lora_config(recipe, modules_to_save)
    names = [n for n, _ in model.named_modules()]
    for target in config.target_modules:
        if not any(n == target or n.endswith(f".{target}") for n in names):
            raise ValueError(
                f"recipe lora.target_modules: {target!r} matches no module of {type(model).__name__}"
            )
    for target in config.modules_to_save or []:
        if not any(n == target or n.endswith(f".{target}") for n in names):
            raise ValueError(f"modules_to_save: {target!r} matches no module of {type(model).__name__}")
    with quiet_peft_rename_warning():
        peft_model = get_peft_model(model, config)
    _check_trainable(peft_model, config.modules_to_save or [])
    return peft_model


def _check_trainable(model: nn.Module, modules_to_save: list[str]) -> None:
    for name, param in model.named_parameters():
        saved = ".modules_to_save." in name
        if saved and not param.requires_grad:
            raise ValueError(f"after peft wrapping, {name} (modules_to_save) does not require grad")
        if not saved and "lora_" not in name and param.requires_grad:
            raise ValueError(f"after peft wrapping, base weight {name} is still trainable")
    wrapped = {
        n.split(".modules_to_save.")[0] for n, _ in model.named_parameters() if ".modules_to_save." in n
    }
    for target in modules_to_save:
        if not any(w == target or w.endswith(f".{target}") for w in wrapped):
            raise ValueError(f"modules_to_save {target!r} was not wrapped by peft (no trainable copy)")


def cast_trainable(model: nn.Module, dtype: torch.dtype) -> None:
    """Cast trainable parameters in place (docs/method.md §2.9: keep LoRA / new modules in fp32)."""
    for param in model.parameters():
        if param.requires_grad and param.dtype != dtype:
            param.data = param.data.to(dtype)


def build_param_groups(model: nn.Module, args: RetrofitTrainingArguments) -> list[dict[str, Any]]:
    """AdamW parameter groups (docs/method.md §2.9) with a `name` key each; empty groups are left out.

    | group       | lr                         | weight decay             |
    | lora        | args.lora_lr               | args.lora_weight_decay   |
    | token_head  | args.head_lr (lora_lr / 4) | args.head_wd             |
    | new_modules | args.learning_rate         | args.weight_decay        |

    Returns:
        list of {"name", "params", "lr", "weight_decay"} dicts; parameters appear once each.
    """
    settings = {
        "lora": (args.lora_lr, args.lora_weight_decay),
        "token_head": (args.head_lr, args.head_wd),
        "new_modules": (args.learning_rate, args.weight_decay),
    }
    params: dict[str, list[nn.Parameter]] = {g: [] for g in GROUPS}
    for name, param in model.named_parameters():  # named_parameters de-duplicates shared tensors
        if param.requires_grad:
            params[param_group_of(name)].append(param)
    return [
        {"name": g, "params": params[g], "lr": settings[g][0], "weight_decay": settings[g][1]}
        for g in GROUPS
        if params[g]
    ]


@dataclass
class TrainableReport:
    """Parameter counts per group (trainable) and frozen, from `named_parameters`."""

    counts: dict[str, int] = field(default_factory=dict)
    tensors: dict[str, int] = field(default_factory=dict)
    frozen: int = 0

    @property
    def trainable(self) -> int:
        """Total trainable parameters."""
        return sum(self.counts.values())

    def format(self) -> str:
        """Human-readable table (one line per group)."""
        total = self.trainable + self.frozen
        lines = [f"{'group':<12} {'tensors':>8} {'parameters':>16}"]
        for g in GROUPS:
            lines.append(f"{g:<12} {self.tensors.get(g, 0):>8} {self.counts.get(g, 0):>16,}")
        lines.append(
            f"{'trainable':<12} {'':>8} {self.trainable:>16,} ({100 * self.trainable / max(total, 1):.2f}%)"
        )
        lines.append(f"{'frozen':<12} {'':>8} {self.frozen:>16,}")
        return "\n".join(lines)


def trainable_report(model: nn.Module) -> TrainableReport:
    """Count trainable parameters per group (docs/method.md §2.9 table) and frozen parameters.

    Works on the meta device (counts come from shapes). Shared tensors count once.
    """
    report = TrainableReport(counts=dict.fromkeys(GROUPS, 0), tensors=dict.fromkeys(GROUPS, 0))
    for name, param in model.named_parameters():
        if param.requires_grad:
            group = param_group_of(name)
            report.counts[group] += param.numel()
            report.tensors[group] += 1
        else:
            report.frozen += param.numel()
    return report
