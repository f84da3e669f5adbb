"""The one GSM8K prompt / target / answer format (docs/method.md §5.2, §6.1).

Training data, sampler prompts and the GSM8K evaluation all import this module, so the model
is always asked the same way it was trained:

    prompt = chat_template(user: SYSTEM_PROMPT + "\\n\\n" + question, generation prompt) + "<reasoning>"
    target = rationale + "</reasoning>\\n<answer>\\boxed{ANS}</answer>"

Example:
    >>> from retrofit.data.gsm8k_format import build_prompt, build_target, load_gsm8k
    >>> row = load_gsm8k("test")[0]          # reads $RETROFIT_DATA_DIR/gsm8k/test.jsonl
    >>> text = build_prompt(row["question"], tokenizer) + build_target(row["answer"])
"""

from __future__ import annotations

import json
import os
import re
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

# Own paraphrase of the research system prompt. It deliberately contains only the empty
# `\boxed{}` and the dots-only `\boxed{...}` so that answer extraction over the decoded canvas
# (prompt included) skips them (docs/method.md §6.1, step 1).
SYSTEM_PROMPT = (
    "Work through the following math problem one step at a time, showing your reasoning. "
    "Give the final answer as a single number written inside \\boxed{}. "
    "Reply in exactly this format:\n"
    "<reasoning>\nyour step-by-step reasoning\n</reasoning>\n"
    "<answer>\\boxed{...}</answer>"
)
REASONING_OPEN = "<reasoning>"
ANSWER_SEPARATOR = "####"

# A plain decimal number after "$", "," and a trailing "." were removed; the minus sign is
# kept (the research regex drops it, docs/method.md §6.1).
_NUMBER_RE = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)")
_FRACTION_RE = re.compile(
    r"\\[dt]?frac\{\s*([-+]?[\d.]+)\s*\}\{\s*([-+]?[\d.]+)\s*\}|([-+]?[\d.]+)\s*/\s*([-+]?[\d.]+)"
)


def user_turn(question: str) -> str:
    """The content of the single user turn: `SYSTEM_PROMPT + "\\n\\n" + question` (docs/method.md §5.2)."""
    return f"{SYSTEM_PROMPT}\n\n{question}"


def build_prompt(question: str, tokenizer: Any = None) -> str:
    """Prompt text for one GSM8K question, ending with the literal `<reasoning>` (docs/method.md §5.2).

    Args:
        question: the GSM8K question text.
        tokenizer: optional Hugging Face tokenizer. If it has a chat template, the template is
            applied to one user turn with `add_generation_prompt=True` (the template supplies
            BOS and headers, so tokenize the result as the training code does). Without a
            tokenizer or template a plain-text layout is used: the user turn, a blank line.

    Returns:
        The prompt string; `build_prompt(q, tok) + build_target(a)` is one training example.
    """
    content = user_turn(question)
    if tokenizer is not None and getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True
        )
    else:
        text = f"{content}\n\n"
    return text + REASONING_OPEN


def split_answer(answer: str) -> tuple[str, str]:
    """Split a GSM8K solution into (rationale, final-answer text) at the last `####`.

    Args:
        answer: the dataset's `answer` field, e.g. "3 + 4 = <<3+4=7>>7\\n#### 7".

    Returns:
        (rationale with calculator annotations kept, stripped text after `####`).

    Raises:
        ValueError: if the solution has no `####` marker.
    """
    if ANSWER_SEPARATOR not in answer:
        raise ValueError(f"GSM8K answer has no {ANSWER_SEPARATOR!r} marker: {answer[-80:]!r}")
    rationale, final = answer.rsplit(ANSWER_SEPARATOR, 1)
    return rationale, final.strip()


def build_target(answer: str) -> str:
    """Target text: rationale + `</reasoning>\\n<answer>\\boxed{ANS}</answer>` (docs/method.md §5.2).

    Args:
        answer: the dataset's `answer` field (rationale, `####`, final answer).

    Returns:
        The target string; ANS is the stripped text after `####` exactly as in the data.

    Raises:
        ValueError: if the solution has no `####` marker.
    """
    rationale, final = split_answer(answer)
    return f"{rationale}</reasoning>\n<answer>\\boxed{{{final}}}</answer>"


def normalize_number(text: str | None) -> str | None:
    """Canonical string of a number, or None if `text` is not a single number (docs/method.md §6.1).

    Removes surrounding space, `$` / `\\$`, thousands commas, a trailing `.`, and a leading `+`;
    keeps the minus sign (also U+2212); `72.0` -> `72`, `0.50` -> `0.5`. Simple fractions
    (`3/4`, `\\frac{3}{4}`) become their decimal value.

    Args:
        text: candidate answer text, e.g. "$1,200.00".

    Returns:
        e.g. "1200", "-3.5"; None when the text is not one number or a fraction (or is None).
    """
    if text is None:
        return None
    s = text.strip().replace("\\$", "").replace("$", "").replace(",", "").replace("\u2212", "-").strip()
    s = s.rstrip(".").strip()
    fraction = _FRACTION_RE.fullmatch(s)
    try:
        if fraction:
            num, den = (g for g in fraction.groups() if g is not None)
            value = Decimal(num) / Decimal(den)
        elif _NUMBER_RE.fullmatch(s):
            value = Decimal(s)
        else:
            return None
    except (InvalidOperation, ZeroDivisionError):
        return None
    if value == value.to_integral_value():
        return str(int(value))
    return format(value.normalize(), "f")


def parse_gold(answer: str) -> str | None:
    """Gold answer of a GSM8K solution: the number after `####`, normalised (docs/method.md §6.1).

    Args:
        answer: the dataset's `answer` field.

    Returns:
        The canonical number string (see `normalize_number`; negatives supported), or None when
        there is no `####` or the text after it is not a number.
    """
    if ANSWER_SEPARATOR not in answer:
        return None
    return normalize_number(split_answer(answer)[1])


def _read_jsonl(path: Path) -> list[dict[str, str]]:
    rows = []
    with path.open(encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            row = json.loads(line)
            if "question" not in row or "answer" not in row:
                raise ValueError(f"{path}:{line_no}: a GSM8K row needs 'question' and 'answer' fields")
            rows.append({"question": row["question"], "answer": row["answer"]})
    return rows


def load_gsm8k(split: str, data_dir: str | os.PathLike | None = None) -> list[dict[str, str]]:
    """Load a GSM8K split as a list of `{"question", "answer"}` dicts.

    Args:
        split: "train" (7473 rows) or "test" (1319 rows).
        data_dir: folder laid out like `../shared/data` (reads `<data_dir>/gsm8k/<split>.jsonl`).
            Defaults to the env var RETROFIT_DATA_DIR; if that is unset or empty, the Hub
            dataset "openai/gsm8k" (config "main") is loaded with `datasets`.

    Returns:
        Rows in file order.

    Raises:
        FileNotFoundError: if a data dir is given but the split file is missing.
        ConnectionError: no data dir and the Hub is unreachable (the message says how to fix it).
    """
    data_dir = data_dir if data_dir is not None else os.environ.get("RETROFIT_DATA_DIR") or None
    if data_dir is None:
        import datasets  # lazy: heavy import, only needed without local data

        try:
            ds = datasets.load_dataset("openai/gsm8k", "main", split=split)
        except (ConnectionError, OSError) as err:  # offline / Hub unreachable
            raise ConnectionError(
                f"could not download GSM8K ({split}) from the Hub dataset openai/gsm8k ({err}); "
                "without network, set RETROFIT_DATA_DIR (or --data-dir) to a folder holding "
                f"gsm8k/{split}.jsonl"
            ) from err
        return [{"question": r["question"], "answer": r["answer"]} for r in ds]
    path = Path(data_dir) / "gsm8k" / f"{split}.jsonl"
    if not path.is_file():
        raise FileNotFoundError(
            f"GSM8K file {path} not found. Point RETROFIT_DATA_DIR (or data_dir=) at a folder with "
            f"gsm8k/{split}.jsonl (rows with 'question' and 'answer', as in the Hub dataset "
            "openai/gsm8k 'main'), or unset RETROFIT_DATA_DIR to download it from the Hub."
        )
    return _read_jsonl(path)
