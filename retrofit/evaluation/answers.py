"""GSM8K answer extraction and scoring (docs/method.md §6.1).

`extract_answer` reads a decoded generation (the prompt may be included: the `\\boxed{}` and
`\\boxed{...}` of the system prompt are skipped) and returns a canonical number string;
`is_correct` compares it with the gold answer from `parse_gold`.

Example:
    >>> extract_answer("... so she earns \\\\boxed{1,200} dollars.")
    '1200'
    >>> is_correct("72.0", parse_gold("...\\n#### 72"))
    True
"""

from __future__ import annotations

import re

from retrofit.data.gsm8k_format import normalize_number

__all__ = ["extract_answer", "first_number", "is_correct", "last_number"]

_BOXED = "\\boxed{"
# A number as written in text: optional minus (not when it is a hyphen after a word or ")"),
# digits with optional thousands commas, optional decimals; or a bare ".5".
_TEXT_NUMBER_RE = re.compile(r"(?:(?<![\w)])[-\u2212])?(?:\d[\d,]*(?:\.\d+)?|\.\d+)")
_ANSWER_RE = re.compile(r"<answer>(.*?)(?:</answer>|$)", re.DOTALL)


def boxed_contents(text: str) -> list[str]:
    """Contents of every `\\boxed{...}` in `text`, left to right, with nested braces balanced.

    `\\boxed{\\frac{1}{2}}` yields `\\frac{1}{2}` (the research regex is non-greedy and would cut
    it at the first `}`). An unclosed box at the end of the text is ignored.
    """
    out, start = [], text.find(_BOXED)
    while start != -1:
        i, depth = start + len(_BOXED), 1
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        if depth:
            break
        out.append(text[start + len(_BOXED) : i - 1])
        start = text.find(_BOXED, i)
    return out


def first_number(text: str) -> str | None:
    """First number written in `text`, normalised (see `normalize_number`), or None."""
    for match in _TEXT_NUMBER_RE.finditer(text):
        value = normalize_number(match.group())
        if value is not None:
            return value
    return None


def last_number(text: str) -> str | None:
    """Last number written in `text`, normalised (see `normalize_number`), or None."""
    for match in reversed(list(_TEXT_NUMBER_RE.finditer(text))):
        value = normalize_number(match.group())
        if value is not None:
            return value
    return None


def _is_placeholder(content: str) -> bool:
    """Empty or dots-only box contents: the system prompt's `\\boxed{}` / `\\boxed{...}`."""
    return not content.strip().strip(".").strip()


def extract_answer(generation: str) -> str | None:
    """Predicted final answer of a GSM8K generation (docs/method.md §6.1 extraction order).

    1. Scan the `\\boxed{...}` in order, skipping empty and dots-only ones. The first one that
       holds a number decides: the whole content if it is one number (or a simple fraction),
       else the first number in it.
    2. Otherwise the `<answer>...</answer>` blocks, last first (an unterminated final block
       counts): the whole content if it is a number, else its last number.

    Args:
        generation: decoded text (special tokens skipped); may include the prompt.

    Returns:
        Canonical number string (commas, `$` and a trailing `.` removed; `72.0` -> `72`; minus
        kept), or None if no answer is found.
    """
    for content in boxed_contents(generation):
        if _is_placeholder(content):
            continue
        value = normalize_number(content) or first_number(content)
        if value is not None:
            return value
    for content in reversed(_ANSWER_RE.findall(generation)):
        value = normalize_number(content) or last_number(content)
        if value is not None:
            return value
    return None


def is_correct(pred: str | None, gold: str | None) -> bool:
    """Whether a predicted answer equals the gold answer numerically (docs/method.md §6.1 scoring).

    Both sides go through `normalize_number`; values are compared as floats with a relative
    tolerance of 1e-9 (so `0.5`, `1/2` and `.50` all match `0.5`; the research code uses exact
    float equality, which agrees on every integer answer).

    Args:
        pred: extracted prediction (or raw text of one number); None counts as wrong.
        gold: gold answer, e.g. from `parse_gold`; None counts as wrong.

    Returns:
        True iff both parse as numbers and are equal.
    """
    a, b = normalize_number(pred), normalize_number(gold)
    if a is None or b is None:
        return False
    x, y = float(a), float(b)
    return abs(x - y) <= 1e-9 * max(1.0, abs(y))
