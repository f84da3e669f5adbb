"""Run lm-eval offline on our tasks: task YAMLs generated at run time + `simple_evaluate`.

Two GSM8K tasks are prepared in a work folder, each `include:`-ing its source YAML:

* `gsm8k_flexmdm` (eval/tasks/gsm8k_flexmdm.yaml): zero-shot, the training prompt format,
  `extract_answer` scoring (docs/method.md §6.1); run with the chat template when the tokenizer has one.
* `gsm8k`: lm-eval's stock task (few-shot "Question: ... Answer:", `####` extraction), the
  secondary number; its built-in YAML is found in the installed lm-eval, not hard-coded.

With a data directory (RETROFIT_DATA_DIR layout: gsm8k/{train,test}.jsonl) both read the local
files through absolute `data_files` paths (relative ones would resolve against the CWD);
otherwise the public Hub dataset. `TaskManager(include_path=work_dir, include_defaults=False)`
indexes only these files (indexing every built-in task costs ~14 s).

Example:
    >>> results = run_lm_eval(lm, ["gsm8k_flexmdm"], limit=5, data_dir="../shared/data")
    >>> results["results"]["gsm8k_flexmdm"]["exact_match,none"]
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

FLEXMDM_TASK = "gsm8k_flexmdm"
STOCK_TASK = "gsm8k"
TASKS = (FLEXMDM_TASK, STOCK_TASK)


def repo_tasks_dir() -> Path:
    """`eval/tasks` of the retrofit source checkout (holds gsm8k_flexmdm.yaml and its utils).

    Raises:
        FileNotFoundError: retrofit is not run from a source checkout with eval/tasks.
    """
    path = Path(__file__).resolve().parents[2] / "eval" / "tasks"
    if not (path / f"{FLEXMDM_TASK}.yaml").is_file():
        raise FileNotFoundError(
            f"{path / (FLEXMDM_TASK + '.yaml')} not found: the lm-eval tasks live in the retrofit source "
            "checkout (eval/tasks); install retrofit from a clone (pip install -e .)"
        )
    return path


def stock_gsm8k_yaml() -> Path:
    """The installed lm-eval's built-in gsm8k.yaml."""
    import lm_eval.tasks

    return Path(lm_eval.tasks.__file__).resolve().parent / "gsm8k" / "gsm8k.yaml"


def resolve_data_dir(data_dir: str | os.PathLike | None) -> Path | None:
    """`data_dir`, else env RETROFIT_DATA_DIR, else None (Hub); checks gsm8k/test.jsonl exists.

    Raises:
        FileNotFoundError: a data dir is set but has no gsm8k/test.jsonl.
    """
    value = data_dir if data_dir is not None else os.environ.get("RETROFIT_DATA_DIR") or None
    if value is None:
        return None
    path = Path(value).expanduser().resolve()
    if not (path / "gsm8k" / "test.jsonl").is_file():
        raise FileNotFoundError(
            f"{path / 'gsm8k' / 'test.jsonl'} not found: --data-dir / RETROFIT_DATA_DIR must hold "
            "gsm8k/{train,test}.jsonl (unset it to use the Hub dataset openai/gsm8k)"
        )
    return path


def task_configs(data_dir: Path | None, stock_num_fewshot: int | None = None) -> dict[str, dict[str, Any]]:
    """YAML contents of the two generated tasks, keyed by task name.

    Args:
        data_dir: resolved local data folder, or None for the Hub dataset.
        stock_num_fewshot: override of the stock task's few-shot count (None = its default, 5).
    """
    flex: dict[str, Any] = {"include": str(repo_tasks_dir() / f"{FLEXMDM_TASK}.yaml")}
    stock: dict[str, Any] = {"include": str(stock_gsm8k_yaml())}
    if data_dir is not None:
        files = {split: str(data_dir / "gsm8k" / f"{split}.jsonl") for split in ("train", "test")}
        local = {"dataset_path": "json", "dataset_name": None}
        flex.update(local, dataset_kwargs={"data_files": {"test": files["test"]}})
        stock.update(local, dataset_kwargs={"data_files": dict(files)})
        if not Path(files["train"]).is_file():  # no few-shot pool: zero-shot from the test file
            stock.update(dataset_kwargs={"data_files": {"test": files["test"]}}, training_split=None,
                         fewshot_split=None, num_fewshot=0)  # fmt: skip
    if stock_num_fewshot is not None:
        stock["num_fewshot"] = int(stock_num_fewshot)
    return {FLEXMDM_TASK: flex, STOCK_TASK: stock}


def write_task_dir(
    work_dir: str | os.PathLike,
    data_dir: str | os.PathLike | None = None,
    stock_num_fewshot: int | None = None,
) -> Path:
    """Write `<task>.yaml` for both tasks into `work_dir` (created); returns it (an include_path).

    Raises:
        FileNotFoundError: see `resolve_data_dir` and `repo_tasks_dir`.
    """
    out = Path(work_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name, config in task_configs(resolve_data_dir(data_dir), stock_num_fewshot).items():
        (out / f"{name}.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return out


def run_lm_eval(
    model: Any,
    tasks: Sequence[str],
    *,
    limit: int | float | None = None,
    data_dir: str | os.PathLike | None = None,
    stock_num_fewshot: int | None = None,
    apply_chat_template: bool | None = None,
    seed: int = 1234,
    log_samples: bool = True,
    model_args: str | dict | None = None,
) -> dict[str, Any]:
    """Evaluate with lm-eval's `simple_evaluate` on our generated task folder.

    Args:
        model: an lm-eval `LM` instance (e.g. `FlexMDMLM(pretrained=...)`) or a registered name.
        tasks: names among `TASKS` (run together in one `simple_evaluate` call).
        limit: documents per task (lm-eval's `--limit`).
        data_dir: local data folder (default env RETROFIT_DATA_DIR, else the Hub).
        stock_num_fewshot: few-shot count of the stock gsm8k task (default 5).
        apply_chat_template: None = on iff the model's tokenizer has a chat template and only
            `gsm8k_flexmdm` is requested (the stock task is run without it, as lm-eval does for
            base models).
        seed: lm-eval's random / numpy / torch / few-shot seeds.
        log_samples: keep per-sample records in the result ("samples").
        model_args: constructor arguments when `model` is a name.

    Returns:
        lm-eval's result dict ("results" -> {task: {"alias", "exact_match,<filter>", ...}},
        "samples", "configs", ...).

    Raises:
        ValueError: an unknown task name.
    """
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    unknown = sorted(set(tasks) - set(TASKS))
    if unknown:
        raise ValueError(f"unknown task(s) {unknown}; retrofit prepares {list(TASKS)}")
    if apply_chat_template is None:
        tokenizer = getattr(model, "tokenizer", None)
        apply_chat_template = bool(getattr(tokenizer, "chat_template", None)) and list(tasks) == [
            FLEXMDM_TASK
        ]
    with tempfile.TemporaryDirectory(prefix="retrofit-lm-eval-tasks-") as work:
        include = write_task_dir(work, data_dir, stock_num_fewshot)
        manager = TaskManager(include_path=str(include), include_defaults=False)
        return simple_evaluate(
            model=model,
            model_args=model_args,
            tasks=list(tasks),
            limit=limit,
            task_manager=manager,
            apply_chat_template=apply_chat_template,
            log_samples=log_samples,
            random_seed=seed,
            numpy_random_seed=seed,
            torch_random_seed=seed,
            fewshot_random_seed=seed,
        )


def metric_summary(results: dict[str, Any]) -> dict[str, float]:
    """Flat `{"<task>/<metric>,<filter>": value}` of the numeric entries of lm-eval's "results"."""
    out = {}
    for task, metrics in (results.get("results") or {}).items():
        for key, value in metrics.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and "," in key:
                out[f"{task}/{key}"] = float(value)
    return out


LM_EVAL_HELP = """usage: retrofit eval lm-eval [lm-eval arguments]

lm-eval's own command line, with two more models and our GSM8K tasks:
  --model flexmdm   a FlexMDM folder (retrofit export output); --model_args pretrained=DIR,steps=256,...
  --model llada     a LLaDA folder (the fixed-length baseline); --model_args pretrained=DIR,gen_length=256,...
  --tasks gsm8k_flexmdm   GSM8K with the chat template and our answer extraction (local data when
                          $RETROFIT_DATA_DIR is set); every stock lm-eval task works too.
model_args keys: pretrained, steps, seed, device, dtype, gen_length, block_length, max_length, mc_num,
  mc_batch_size and any sampler config field (temperature=0, confidence=top_prob, ...).
example:
  retrofit eval lm-eval --model flexmdm --model_args pretrained=out/export --tasks gsm8k_flexmdm --limit 5

lm-eval's help follows.
"""


def lm_eval_cli(argv: Sequence[str], data_dir: str | os.PathLike | None = None) -> int:
    """lm-eval's own CLI with `flexmdm` / `llada` registered and our GSM8K tasks on the include path.

    Imports `lm_eval.models` (built-in models stay registered) and our model module, writes the
    task YAMLs (local data when `data_dir` / RETROFIT_DATA_DIR is set) into a temporary folder,
    appends `--include_path <it>` unless the arguments already have one, then runs
    `lm_eval.__main__.cli_evaluate()` with `argv` as its command line.

    Args:
        argv: lm-eval arguments, e.g. ["--model", "flexmdm", "--model_args", "pretrained=DIR",
            "--tasks", "gsm8k_flexmdm", "--limit", "5"].

    Returns:
        0 on success, else lm-eval's SystemExit code.
    """
    import sys

    from lm_eval.__main__ import cli_evaluate

    if not argv or argv[0] in ("-h", "--help"):
        print(LM_EVAL_HELP)
        return _run_cli(cli_evaluate, ["--help"])
    import lm_eval.models  # noqa: F401  (registers the built-in models)

    import retrofit.evaluation.lm_eval_models  # noqa: F401  (registers flexmdm / llada)

    argv = list(argv)
    with tempfile.TemporaryDirectory(prefix="retrofit-lm-eval-tasks-") as work:
        if "--include_path" not in argv:
            try:
                argv += ["--include_path", str(write_task_dir(work, data_dir))]
            except FileNotFoundError as err:  # e.g. installed without the eval/ folder
                print(
                    f"retrofit eval lm-eval: warning: our GSM8K tasks are unavailable: {err}", file=sys.stderr
                )
        return _run_cli(cli_evaluate, argv)


def _run_cli(cli_evaluate: Any, argv: list[str]) -> int:
    """lm-eval's `cli_evaluate()` with `argv` as its command line; its SystemExit -> exit code."""
    import sys

    saved = sys.argv
    sys.argv = ["lm-eval", *argv]
    try:
        cli_evaluate()
    except SystemExit as exit_:
        return int(exit_.code or 0) if isinstance(exit_.code, (int, type(None))) else 1
    finally:
        sys.argv = saved
    return 0
