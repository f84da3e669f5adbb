"""GSM8K runner: generate answers in the training format and score them (docs/method.md §6.1).

Direct path (default, no lm-eval): every test question becomes `gsm8k_format.build_prompt`
(optionally preceded by K solved train examples as earlier chat turns), one sample per question
is generated with `TextGenerator` (stopping at "</answer>"), the answer is read with
`answers.extract_answer` and compared with the number after "####". Writes `samples.jsonl`
(prompt, generation, extracted answer, gold, correct, tokens) and `results.json` (accuracy and
its standard error, config, model hash, sampler settings, timings). Under `accelerate launch`
each rank answers questions[rank::world] and rank 0 writes the files; question i's sample is
keyed by (seed, i), so it is the same for any --batch-size and any number of processes.

The lm-eval path (`via_lm_eval=True`) runs the `gsm8k_flexmdm` task (with the chat template)
and lm-eval's stock few-shot `gsm8k` through `simple_evaluate` (see lm_eval_runner).

Example:
    retrofit eval gsm8k runs/flexmdm-ift --limit 100 --steps 256 --out eval-out/gsm8k
"""

from __future__ import annotations

import os
import random
import time
from pathlib import Path
from typing import Any

from retrofit.data.gsm8k_format import (
    REASONING_OPEN,
    build_prompt,
    build_target,
    load_gsm8k,
    parse_gold,
    user_turn,
)
from retrofit.evaluation.answers import extract_answer, is_correct
from retrofit.evaluation.generation import TextGenerator, gather_to_main, rank_and_world
from retrofit.evaluation.passk import mean_and_stderr
from retrofit.evaluation.results import write_results

STOP = ("</answer>",)


def fewshot_prompt(question: str, tokenizer: Any, shots: list[dict[str, str]]) -> str:
    """`build_prompt(question, tokenizer)` preceded by solved examples (docs/method.md §5.2 format).

    Each shot is a user turn (system prompt + its question) and an assistant turn
    "<reasoning>" + `build_target(answer)`; with a chat template they are chat turns, otherwise
    they are written in build_prompt's plain layout, one after the other.

    Args:
        question: the test question.
        tokenizer: the model's tokenizer (its chat template is used when present).
        shots: GSM8K rows {"question", "answer"}; empty = zero-shot (= build_prompt).
    """
    if not shots:
        return build_prompt(question, tokenizer)
    turns = [(user_turn(s["question"]), REASONING_OPEN + build_target(s["answer"])) for s in shots]
    if getattr(tokenizer, "chat_template", None):
        messages = [
            m for u, a in turns for m in ({"role": "user", "content": u}, {"role": "assistant", "content": a})
        ]
        messages.append({"role": "user", "content": user_turn(question)})
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return text + REASONING_OPEN
    return "".join(f"{u}\n\n{a}\n\n" for u, a in turns) + build_prompt(question, None)


def score(rows: list[dict[str, str]], prompts: list[str], texts: list[str], tokens: list[int]) -> list[dict]:
    """Per-sample records: index, prompt, generation, extracted, gold, correct, num_tokens."""
    records = []
    for i, (row, prompt, text, n) in enumerate(zip(rows, prompts, texts, tokens)):
        pred, gold = extract_answer(text), parse_gold(row["answer"])
        records.append({"index": i, "question": row["question"], "prompt": prompt, "generation": text,
                        "extracted": pred, "gold": gold, "correct": is_correct(pred, gold),
                        "num_tokens": n})  # fmt: skip
    return records


def summarize(records: list[dict]) -> dict[str, float]:
    """accuracy ± stderr, the share of generations without an answer, mean response tokens."""
    acc, acc_se = mean_and_stderr([float(r["correct"]) for r in records])
    none, none_se = mean_and_stderr([float(r["extracted"] is None) for r in records])
    return {"accuracy": acc, "accuracy_stderr": acc_se, "no_answer_rate": none, "no_answer_rate_stderr": none_se,
            "mean_response_tokens": sum(r["num_tokens"] for r in records) / len(records)}  # fmt: skip


def run_gsm8k(
    generator: TextGenerator,
    out_dir: str | os.PathLike,
    *,
    model_dir: str | os.PathLike | None = None,
    limit: int | None = None,
    num_fewshot: int = 0,
    seed: int = 0,
    data_dir: str | os.PathLike | None = None,
    split: str = "test",
) -> dict[str, Any] | None:
    """Direct GSM8K evaluation; returns the metrics on rank 0 (None on other ranks).

    Args:
        generator: the model's TextGenerator.
        out_dir: where results.json and samples.jsonl go.
        model_dir: the checkpoint folder (recorded with its hash).
        limit: first N questions (None = all 1319).
        num_fewshot: K solved train examples before each question (same K for all, drawn with
            `seed`); 0 = the paper's zero-shot protocol.
        seed: sampling seed and the shot draw; question i draws from row_seed(seed, i, 0), so its
            answer does not depend on the batch size or the number of processes.
        data_dir: local data folder (default env RETROFIT_DATA_DIR, else the Hub).
        split: GSM8K split to evaluate.

    Returns:
        {"accuracy", "accuracy_stderr", "no_answer_rate", ...} on rank 0, else None.
    """
    start = time.monotonic()
    rows = load_gsm8k(split, data_dir)[:limit]
    shots = random.Random(seed).sample(load_gsm8k("train", data_dir), num_fewshot) if num_fewshot else []
    prompts = [fewshot_prompt(r["question"], generator.tokenizer, shots) for r in rows]
    rank, world = rank_and_world()
    mine = list(range(len(rows)))[rank::world]
    t_gen = time.monotonic()
    done = generator.generate([prompts[i] for i in mine], stop=STOP, seed=seed, example_ids=mine)
    gen_s = time.monotonic() - t_gen
    gathered = gather_to_main([(i, c.text, c.num_tokens) for i, c in zip(mine, done)], world)
    passes = gather_to_main([generator.forward_passes], world)
    if gathered is None:
        return None
    gathered.sort()
    records = score(rows, prompts, [g[1] for g in gathered], [g[2] for g in gathered])
    metrics = summarize(records)
    config = {"task": "gsm8k", "protocol": "direct", "split": split, "limit": limit, "num_examples": len(rows),
              "num_fewshot": num_fewshot, "seed": seed, "data_dir": _data_source(data_dir), "world_size": world,
              "stop": list(STOP), "forward_passes": sum(passes)}  # fmt: skip
    timings = {"generate_s": gen_s, "total_s": time.monotonic() - start}
    write_results(out_dir, config=config, metrics=metrics, samples=records, timings=timings,
                  model_dir=model_dir, sampler=generator.settings())  # fmt: skip
    return metrics


def run_gsm8k_lm_eval(
    generator: TextGenerator,
    out_dir: str | os.PathLike,
    *,
    model_dir: str | os.PathLike | None = None,
    limit: int | None = None,
    num_fewshot: int | None = None,
    seed: int = 0,
    data_dir: str | os.PathLike | None = None,
    tasks: tuple[str, ...] = ("gsm8k_flexmdm", "gsm8k"),
) -> dict[str, Any] | None:
    """GSM8K through lm-eval: `gsm8k_flexmdm` (chat template when the tokenizer has one) and the
    stock few-shot `gsm8k` (`num_fewshot` shots, default 5), each in its own `simple_evaluate`.

    Writes results.json (metrics "accuracy" = gsm8k_flexmdm exact match, plus every lm-eval metric
    as "<task>/<metric>,<filter>") and samples.jsonl (task, prompt, generation, extracted, gold,
    correct). Returns the metrics on rank 0, else None.
    """
    from retrofit.evaluation.lm_eval_models import FlexMDMLM, LLaDALM
    from retrofit.evaluation.lm_eval_runner import FLEXMDM_TASK, metric_summary, run_lm_eval

    start = time.monotonic()
    lm = (FlexMDMLM if generator.kind == "flexmdm" else LLaDALM)(generator=generator, seed=seed)
    metrics: dict[str, Any] = {}
    records: list[dict] = []
    for task in tasks:
        result = run_lm_eval(lm, [task], limit=limit, data_dir=data_dir, seed=seed,
                             stock_num_fewshot=None if task == FLEXMDM_TASK else num_fewshot)  # fmt: skip
        if result is None:  # not rank 0
            continue
        metrics.update(metric_summary(result))
        records.extend(_lm_eval_records(task, result.get("samples", {}).get(task, [])))
    if lm.rank != 0:
        return None
    if f"{FLEXMDM_TASK}/exact_match,none" in metrics:
        metrics["accuracy"] = metrics[f"{FLEXMDM_TASK}/exact_match,none"]
        metrics["accuracy_stderr"] = metrics[f"{FLEXMDM_TASK}/exact_match_stderr,none"]
    config = {"task": "gsm8k", "protocol": "lm-eval", "tasks": list(tasks), "limit": limit, "seed": seed,
              "stock_num_fewshot": num_fewshot, "data_dir": _data_source(data_dir), "world_size": lm.world_size}  # fmt: skip
    write_results(out_dir, config=config, metrics=metrics, samples=records,
                  timings={"total_s": time.monotonic() - start}, model_dir=model_dir,
                  sampler=generator.settings())  # fmt: skip
    return metrics


def _lm_eval_records(task: str, samples: list[dict]) -> list[dict]:
    """lm-eval's logged samples -> our record layout; `correct` is lm-eval's exact_match and
    `extracted` the filter's output (our extract_answer for the unfiltered gsm8k_flexmdm)."""
    out = []
    for s in samples:
        text = s["resps"][0][0] if s.get("resps") else ""
        filtered = s.get("filtered_resps") or [None]
        pred = extract_answer(text) if s.get("filter") in (None, "none") else filtered[0]
        out.append({"task": task, "doc_id": s["doc_id"], "filter": s.get("filter"), "prompt": s["arguments"][0][0],
                    "generation": text, "extracted": pred, "gold": parse_gold(s["doc"]["answer"]),
                    "correct": bool(s.get("exact_match"))})  # fmt: skip
    return out


def _data_source(data_dir: str | os.PathLike | None) -> str:
    value = data_dir if data_dir is not None else os.environ.get("RETROFIT_DATA_DIR") or None
    return str(Path(value).resolve()) if value else "hub:openai/gsm8k"
