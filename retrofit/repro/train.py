"""Train the three models of a small-scale reproduction through the product's own pipeline.

For one task and seed, at equal training compute (steps x global batch):

* ``mdm``: a fresh tiny LLaDA trained from scratch with the LLaDA (MDM) loss for ``N`` steps
  (`mode: pretrain`, `loss: mdm`); its halfway state (step N/2) is kept as ``mdm-half/``, and the
  run resumes from the step-N/2 checkpoint (optimizer, scheduler, data position) to step N;
* ``flexmdm``: the same fresh trunk grafted and trained whole with the FlexMDM loss for N steps
  (`mode: pretrain`, `loss: flexmdm`);
* ``retrofit``: ``mdm-half/`` grafted and fine-tuned with the FlexMDM loss for the remaining N/2
  steps with LoRA + the new modules (`mode: retrofit`, as the LLaDA-8B recipes), then merged and
  verified by `retrofit export`.

Every run is `retrofit.train.run_training` on a recipe of ``recipes/repro/`` with overrides, in
this process (one import of transformers for all runs); its output goes to ``<run>/train.log``.
The from-scratch models are saved by the trainer as ``<run>/final`` (LLaDA official layout /
FlexMDM `save_pretrained` folder); the retrofit goes through `retrofit export`.

Usage:
    >>> models = train_models(task, work_dir, recipes_dir, seed=0, steps=1200, data=files)
    >>> models["retrofit"]   # Path of the exported FlexMDM folder
"""

from __future__ import annotations

import contextlib
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["MODELS", "ModelRun", "train_models", "write_base"]

MODELS = ("mdm", "flexmdm", "retrofit")
"""The three models of every task, in training order."""


@dataclass
class ModelRun:
    """One trained model: its folder (loadable with ``from_pretrained``) and what it cost.

    Attributes:
        name: "mdm" | "flexmdm" | "retrofit". path: the model folder.
        steps: optimizer steps that produced it (the retrofit's include the MDM's first half: it
            starts from that checkpoint). seconds: wall time of those training runs.
        logs: the training logs.
    """

    name: str
    path: Path
    steps: int
    seconds: float = 0.0
    logs: list[Path] = field(default_factory=list)


def write_base(out: Path, words: list[str], seed: int, shape: dict[str, int]) -> Path:
    """A fresh tiny LLaDA with a word-level tokenizer over ``words`` (the task's symbols).

    Args:
        out: destination folder (replaced if it exists). words: vocabulary of the task.
        seed: weight initialisation seed. shape: ``layers``, ``d_model``, ``heads``.

    Returns:
        ``out``.
    """
    from retrofit.models.tiny import write_tiny_llada
    from retrofit.models.tokenizer import build_word_tokenizer

    return write_tiny_llada(out, seed=seed, tokenizer=build_word_tokenizer(words), overwrite=True, **shape)


def model_dirs(work: Path) -> dict[str, Path]:
    """Where `train_models` leaves each model folder under a task-seed ``work`` folder."""
    return {
        "mdm": work / "mdm" / "final",
        "flexmdm": work / "flexmdm" / "final",
        "retrofit": work / "retrofit" / "export",
    }


def train_models(
    recipes: dict[str, Path],
    work: Path,
    base: Path,
    overrides: dict[str, list[str]],
    *,
    seed: int,
    steps: int,
    echo=print,
) -> dict[str, ModelRun]:
    """Train the MDM, the from-scratch FlexMDM and the retrofit (module docstring) for one seed.

    Args:
        recipes: model name -> recipe YAML (recipes/repro/<task>-<model>.yaml).
        work: this seed's work folder (``<work>/<model>/`` per run).
        base: the fresh LLaDA folder (`write_base`).
        overrides: model name -> extra ``key=value`` overrides (data files, sizes).
        seed: run seed (training.seed; data order and noise). steps: N (even, >= 2).
        echo: progress printer.

    Returns:
        model name -> ModelRun, in `MODELS` order.

    Raises:
        ValueError: steps < 2 or odd. RuntimeError: a run did not write its model.
    """
    if steps < 2 or steps % 2:
        raise ValueError(
            f"repro: steps must be even and >= 2 (half go to the retrofit's MDM start), got {steps}"
        )
    half = steps // 2
    runs: dict[str, ModelRun] = {}
    mdm_dir = work / "mdm"
    common = [f"training.seed={seed}", f"model.base={base}"]
    # 1. MDM to N/2: keep its final state as the retrofit's start, and its checkpoint to resume.
    first = _train(recipes["mdm"], mdm_dir, common + overrides.get("mdm", []) + [
        f"training.max_steps={half}", "training.save_strategy=steps", f"training.save_steps={half}"])  # fmt: skip
    halfway = work / "mdm-half"
    _replace(mdm_dir / "final", halfway)
    # 2. MDM from N/2 to N (the Trainer restores optimizer, scheduler, RNG and data position).
    second = _train(recipes["mdm"], mdm_dir, common + overrides.get("mdm", []) + [
        f"training.max_steps={steps}", "training.save_strategy=no",
        f"training.resume_from_checkpoint={mdm_dir / f'checkpoint-{half}'}"])  # fmt: skip
    runs["mdm"] = ModelRun(
        "mdm", model_dirs(work)["mdm"], steps, first.seconds + second.seconds, [first.log, second.log]
    )
    echo(f"[repro]   mdm: {steps} steps in {runs['mdm'].seconds:.0f} s")
    # 3. FlexMDM from scratch, N steps.
    flex = _train(recipes["flexmdm"], work / "flexmdm", common + overrides.get("flexmdm", []) + [
        f"training.max_steps={steps}", "training.save_strategy=no"])  # fmt: skip
    runs["flexmdm"] = ModelRun("flexmdm", model_dirs(work)["flexmdm"], steps, flex.seconds, [flex.log])
    echo(f"[repro]   flexmdm: {steps} steps in {flex.seconds:.0f} s")
    # 4. Retrofit: graft mdm-half, LoRA + new modules for N/2 steps, then `retrofit export`.
    retro = _train(recipes["retrofit"], work / "retrofit", [f"training.seed={seed}", f"model.base={halfway}"]
                   + overrides.get("retrofit", []) + [f"training.max_steps={half}", "training.save_strategy=steps",
                                                      f"training.save_steps={half}"])  # fmt: skip
    exported = _export(work / "retrofit" / f"checkpoint-{half}", model_dirs(work)["retrofit"])
    runs["retrofit"] = ModelRun(
        "retrofit", exported, steps, first.seconds + retro.seconds, [first.log, retro.log]
    )
    echo(f"[repro]   retrofit: {half} + {half} steps in {runs['retrofit'].seconds:.0f} s")
    return runs


@dataclass
class _Run:
    seconds: float
    log: Path


def _train(recipe: Path, out: Path, overrides: list[str]) -> _Run:
    """One `run_training` of ``recipe`` into ``out`` (stdout / stderr to ``out/train.log``)."""
    from retrofit.train import run_training
    from retrofit.training.recipe import load_recipe

    resuming = any(o.startswith("training.resume_from_checkpoint=") for o in overrides)
    if out.exists() and not resuming:
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    log = out / ("train-resumed.log" if resuming else "train.log")
    start = time.perf_counter()
    with open(log, "w") as fh, contextlib.redirect_stdout(fh), contextlib.redirect_stderr(fh):
        recipe_obj = load_recipe(recipe, [*overrides, f"training.output_dir={out}"])
        code = run_training(recipe_obj)
    if code != 0:
        raise RuntimeError(f"repro: training {recipe} exited with {code}; see {log}")
    return _Run(time.perf_counter() - start, log)


def _replace(src: Path, dst: Path) -> None:
    """Move a finished model folder to ``dst`` (replacing it)."""
    if not (src / "config.json").is_file():
        raise RuntimeError(f"repro: {src} has no config.json; the training run did not finish")
    if dst.exists():
        shutil.rmtree(dst)
    src.rename(dst)


def _export(checkpoint: Path, out: Path) -> Path:
    """`retrofit export` of the retrofit's LoRA checkpoint (merged in fp32, verified)."""
    from retrofit.export.pipeline import export_checkpoint

    export_checkpoint(checkpoint, out, dtype="fp32", overwrite=True)
    return out
