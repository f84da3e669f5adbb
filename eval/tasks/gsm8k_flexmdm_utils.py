"""Helpers of the lm-eval task `gsm8k_flexmdm` (eval/tasks/gsm8k_flexmdm.yaml).

They reuse retrofit's one GSM8K format (retrofit.data.gsm8k_format) and answer extraction
(retrofit.evaluation.answers), so lm-eval scores exactly what `retrofit eval gsm8k` scores.
"""

from __future__ import annotations

from retrofit.data.gsm8k_format import parse_gold, user_turn
from retrofit.evaluation.answers import extract_answer, is_correct


def doc_to_text(doc: dict) -> str:
    """The user turn: SYSTEM_PROMPT + "\\n\\n" + question (docs/method.md §5.2)."""
    return user_turn(doc["question"])


def doc_to_target(doc: dict) -> str:
    """The gold number after "####", normalised (docs/method.md §6.1)."""
    return parse_gold(doc["answer"]) or ""


def process_results(doc: dict, results: list[str]) -> dict[str, float]:
    """exact_match = 1.0 iff the extracted answer equals the gold number (docs/method.md §6.1 scoring).

    Args:
        doc: a GSM8K row with "question" and "answer".
        results: [generation] (one generation per document; the prompt is not included).

    Returns:
        {"exact_match": 0.0 or 1.0}.
    """
    return {"exact_match": float(is_correct(extract_answer(results[0]), parse_gold(doc["answer"])))}
