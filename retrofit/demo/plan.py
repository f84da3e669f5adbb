"""The demo's stages as the exact public commands a user would type.

First the small-scale reproduction (`retrofit repro maze`: MDM vs FlexMDM vs retrofit on a task a
tiny model learns), then the real-data pipeline on a tiny LLaDA (tokenizer, pre-training, graft,
fine-tunes, export, GSM8K / HumanEval-infilling / length evaluations).

Every stage is a command line (`retrofit ...` or `accelerate launch -m retrofit.train ...`), run
as a subprocess by `retrofit.demo.runner`; nothing calls library internals directly. The sizes
below are tuned so the full demo fits in ~20 minutes on 2 CPU cores; `smoke` keeps every stage
but with minimal steps (CI).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import sysconfig
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
RECIPES = REPO_ROOT / "recipes"


@dataclass(frozen=True)
class DemoSizes:
    """Model size, step counts and evaluation subsets of one demo flavour."""

    layers: int = 4
    d_model: int = 128
    heads: int = 4
    vocab: int = 4096
    canvas: int = 384
    pretrain_steps: int = 150
    finetune_steps: int = 250  # 300 before the reproduction stage joined the 20-minute budget
    gsm8k_limit: int = 8
    infill_limit: int = 10
    length_samples: int = 24
    steps: int = 64  # sampler steps for every evaluation
    llada_gen: int = 256  # LLaDA baselines: generated tokens, decoded semi-autoregressively in
    llada_block: int = 32  # blocks of this size (LLaDA's recommended setting; steps % blocks == 0)
    processes: int = 2
    repro: str = "maze"  # the small-scale reproduction shown first (`retrofit repro TASK`)
    repro_quick: bool = False


FULL = DemoSizes()
SMOKE = DemoSizes(
    layers=2, d_model=64, heads=4, vocab=1024, canvas=256, pretrain_steps=4, finetune_steps=4,
    gsm8k_limit=2, infill_limit=2, length_samples=4, steps=8, repro_quick=True,
)  # fmt: skip


@dataclass(frozen=True)
class Stage:
    """One command of the demo.

    Attributes:
        name: short stage name shown in the table.
        argv: the command line.
        artefact: path that must exist after the stage (checked by the runner and the smoke test).
        env: extra environment variables.
        cached: skip the stage when `artefact` already exists (the pre-trained base, keyed by hash).
    """

    name: str
    argv: list[str]
    artefact: Path
    env: dict[str, str] = field(default_factory=dict)
    cached: bool = False


def _retrofit(*args: object) -> list[str]:
    return [sys.executable, "-m", "retrofit.cli", *map(str, args)]


def _launch(recipe: Path, processes: int, *overrides: str) -> tuple[list[str], dict[str, str]]:
    """`accelerate launch` on CPU with `processes` gloo ranks (or one plain process)."""
    if processes <= 1:
        return [sys.executable, "-m", "retrofit.train", str(recipe), *overrides], {}
    config = RECIPES / "accelerate" / "cpu-ddp-2proc.yaml"
    argv = [
        sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config),
        "--num_processes", str(processes), "-m", "retrofit.train", str(recipe), *overrides,
    ]  # fmt: skip
    return argv, {"ACCELERATE_USE_CPU": "1"}


def corpus_files(data_dir: Path) -> list[Path]:
    """Real text every machine has: GSM8K train + the Python standard library's own sources."""
    return [data_dir / "gsm8k" / "train.jsonl", Path(sysconfig.get_paths()["stdlib"])]


def base_key(sizes: DemoSizes) -> str:
    """Cache key of the pre-trained base: the pretrain recipe text + sizes that shape it."""
    recipe = (RECIPES / "tiny" / "pretrain.yaml").read_text()
    shape = {k: v for k, v in asdict(sizes).items() if k in ("layers", "d_model", "heads", "vocab", "canvas")}
    blob = json.dumps([recipe, shape, sizes.pretrain_steps], sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def base_model_dir(out: Path, sizes: DemoSizes) -> Path:
    """The pre-trained base MDM of the demo (cached under out/cache by `base_key`)."""
    return out / "cache" / f"base-{base_key(sizes)}" / "pretrain" / "final"


def build_plan(out: Path, sizes: DemoSizes, data_dir: Path, seed: int = 0) -> list[Stage]:
    """The demo's stages in order (see the module docstring)."""
    base = base_model_dir(out, sizes)
    cache = base.parent.parent
    init = cache / "init"
    tiny = RECIPES / "tiny"
    common = [
        f"data.max_length={sizes.canvas}",
        f"training.loss_normalizer={sizes.canvas}",
        f"training.seed={seed}",
    ]
    repro = out / "repro"
    stages = [
        Stage(f"repro {sizes.repro}", _retrofit(
            "repro", sizes.repro, "--out", repro, "--seeds", 1, *(["--quick"] if sizes.repro_quick else [])),
            repro / "results.json"),
        Stage("tokenizer + tiny LLaDA", _retrofit(
            "tiny-llada", "--out", init, "--layers", sizes.layers, "--d-model", sizes.d_model,
            "--heads", sizes.heads, "--vocab", sizes.vocab, "--seed", seed, "--overwrite",
            "--train-on", *corpus_files(data_dir)), init / "config.json", cached=True),
    ]  # fmt: skip
    argv, env = _launch(
        tiny / "pretrain.yaml",
        sizes.processes,
        f"model.base={init}",
        f"training.output_dir={cache / 'pretrain'}",
        f"training.max_steps={sizes.pretrain_steps}",
        *common,
    )
    stages.append(Stage("pre-train base MDM", argv, base / "config.json", env, cached=True))
    flex_init = out / "flexmdm-init"
    # canvas_width sets the length scale / loss normaliser; the infilling rows' canvas adds 2k.
    stages.append(Stage("graft", _retrofit(
        "graft", "--base", base, "--out", flex_init, "--canvas-width", sizes.canvas, "--dtype", "fp32",
        "--seed", seed, "--overwrite"), flex_init / "config.json"))  # fmt: skip
    for name, recipe, start in (("flexmdm", "flexmdm-sft.yaml", flex_init), ("mdm", "mdm-sft.yaml", base)):
        run_dir = out / f"train-{name}"
        argv, env = _launch(
            tiny / recipe,
            sizes.processes,
            f"model.base={start}",
            f"training.output_dir={run_dir}",
            f"training.max_steps={sizes.finetune_steps}",
            f"training.save_steps={sizes.finetune_steps}",
            *common,
        )
        ckpt = run_dir / f"checkpoint-{sizes.finetune_steps}"
        stages.append(Stage(f"fine-tune {name}", argv, ckpt / "retrofit_checkpoint.json", env))
        stages.append(Stage(f"export {name}", _retrofit(
            "export", ckpt, "--out", out / f"export-{name}", "--dtype", "fp32", "--overwrite"),
            out / f"export-{name}" / "config.json"))  # fmt: skip
    return stages + eval_stages(out, sizes, base, seed)


def demo_models(out: Path, base: Path) -> dict[str, Path]:
    """The three models compared in the table: name -> folder."""
    return {"base MDM": base, "MDM fine-tune": out / "export-mdm", "FlexMDM": out / "export-flexmdm"}


def _caps(sizes: DemoSizes, llada_budget: bool = True) -> list[str]:
    """Sampler caps: FlexMDM prompt + generation <= 2 canvases; LLaDA generates `llada_gen` tokens
    in blocks of `llada_block` (a single block lets a weak LLaDA fill its canvas with EOS from
    the right); infilling keeps the eval's own LLaDA middle budget, 64 tokens for single lines."""
    llada = ["--gen-length", str(sizes.llada_gen), "--block-length", str(sizes.llada_block)]
    return ["--max-length", str(2 * sizes.canvas)] + (llada if llada_budget else [])


def eval_stages(out: Path, sizes: DemoSizes, base: Path, seed: int) -> list[Stage]:
    """GSM8K, HumanEval single-line infilling and length statistics for the three models."""
    stages = []
    for key, (name, folder) in zip(("base", "mdm", "flexmdm"), demo_models(out, base).items()):
        res = out / "eval" / key
        stages.append(Stage(f"eval gsm8k: {name}", _retrofit(
            "eval", "gsm8k", folder, "--limit", sizes.gsm8k_limit, "--steps", sizes.steps, *_caps(sizes),
            "--seed", seed, "--out", res / "gsm8k"), res / "gsm8k" / "results.json"))  # fmt: skip
        stages.append(Stage(f"eval infill: {name}", _retrofit(
            "eval", "humaneval-infill", folder, "--benchmark", "single-line", "--limit", sizes.infill_limit,
            "--steps", sizes.steps, *_caps(sizes, llada_budget=False), "--seed", seed, "--out", res / "humaneval"),
            res / "humaneval" / "results.json"))  # fmt: skip
    length = out / "eval" / "length"
    stages.append(Stage("eval length (3 models)", _retrofit(
        "eval", "length", *demo_models(out, base).values(), "--data", "gsm8k",
        "--num-samples", sizes.length_samples, "--steps", sizes.steps, *_caps(sizes), "--seed", seed, "--out", length),
        length / "results.json"))  # fmt: skip
    return stages


def default_data_dir() -> Path:
    """RETROFIT_DATA_DIR, else ../shared/data beside the repo (our machines)."""
    env = os.environ.get("RETROFIT_DATA_DIR")
    return Path(env) if env else REPO_ROOT.parent / "shared" / "data"
