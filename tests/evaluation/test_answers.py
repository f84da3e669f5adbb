"""Tests for retrofit.evaluation.answers: GSM8K answer extraction and scoring (docs/method.md §6.1)."""

from __future__ import annotations

import pytest

from retrofit.data.gsm8k_format import SYSTEM_PROMPT
from retrofit.evaluation.answers import boxed_contents, extract_answer, first_number, is_correct, last_number

GENERATIONS = [
    # (generation, expected extraction)
    ("She makes 9 * 2 = 18.\n</reasoning>\n<answer>\\boxed{18}</answer>", "18"),
    ("The total is \\boxed{1,234} dollars.", "1234"),  # thousands comma
    ("So the answer is \\boxed{72.0}. Then some trailing text 99.", "72"),  # trailing text, 72.0 == 72
    ("\\boxed{\\$18}", "18"),  # escaped dollar
    ("\\boxed{18 dollars}", "18"),  # not a number as a whole: first number inside
    ("The temperature fell to \\boxed{-7} degrees.", "-7"),  # negative
    ("\\boxed{\\frac{1}{2}}", "0.5"),  # nested braces
    ("\\boxed{\\text{x = 3-5 = } -2}", "3"),  # first number in a non-numeric box
    ("\\boxed{} and \\boxed{...} then \\boxed{5}", "5"),  # placeholders skipped
    ("\\boxed{n} wait, it is \\boxed{6}", "6"),  # a box with no number is skipped
    ("first \\boxed{3} then \\boxed{4}", "3"),  # the first real box wins
    ("<answer>42</answer>", "42"),  # no box: <answer>
    ("<answer>so 5 + 7 = 12 apples</answer>", "12"),  # last number inside <answer>
    ("<answer>\\boxed{...}</answer> ... <answer>8</answer>", "8"),  # last <answer> with a number
    ("<answer>1,000.", "1000"),  # unterminated <answer> at the end of the canvas
    ("I think the answer is 15.", None),  # no box, no <answer>
    ("\\boxed{12", None),  # unclosed box
    ("", None),
    (SYSTEM_PROMPT + "\n\nQ?\n\n<reasoning>2+2=4</reasoning>\n<answer>\\boxed{4}</answer>", "4"),
]


@pytest.mark.parametrize(("generation", "expected"), GENERATIONS)
def test_extract_answer(generation, expected):
    assert extract_answer(generation) == expected


def test_boxed_contents_balances_braces():
    text = "a \\boxed{\\frac{1}{2}} b \\boxed{} c \\boxed{{x}} d \\boxed{open"
    assert boxed_contents(text) == ["\\frac{1}{2}", "", "{x}"]


def test_first_and_last_number():
    assert first_number("pages 3-5 cost $1,200.50 or -4") == "3"
    assert last_number("pages 3-5 cost $1,200.50 or -4") == "-4"
    assert last_number("cost $1,200.50.") == "1200.5"
    assert first_number("x-2 is wrong") == "2"  # a hyphen after a word is not a minus sign
    assert first_number("no digits") is None and last_number("") is None


@pytest.mark.parametrize(
    ("pred", "gold", "correct"),
    [
        ("72", "72", True),
        ("72.0", "72", True),
        ("1,000", "1000", True),
        ("0.5", "1/2", True),
        ("-5", "5", False),
        ("71", "72", False),
        (None, "72", False),
        ("72", None, False),
        ("seventy-two", "72", False),
        ("100000000", "100000001", False),
    ],
)
def test_is_correct(pred, gold, correct):
    assert is_correct(pred, gold) is correct
