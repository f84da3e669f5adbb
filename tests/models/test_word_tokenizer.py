"""The word-level tokenizer of the synthetic tasks: one token per word, LLaDA's special tokens after."""

from __future__ import annotations

import pytest

from retrofit.models.tokenizer import SPECIAL_TOKENS, build_word_tokenizer, save_tokenizer


def test_one_token_per_word_and_specials_after(tmp_path) -> None:
    tok = build_word_tokenizer(["(", ")", "c0_1"])
    assert tok("( c0_1 ) (", add_special_tokens=False)["input_ids"] == [0, 2, 1, 0]
    assert tok.convert_tokens_to_ids(list(SPECIAL_TOKENS)) == list(range(3, 3 + len(SPECIAL_TOKENS)))
    assert tok("( <|endoftext|> )", add_special_tokens=False)["input_ids"] == [0, tok.eos_token_id, 1]
    assert tok.pad_token_id == tok.eos_token_id and tok.decode([0, 2, 1]) == "( c0_1 )"
    save_tokenizer(tok, tmp_path)
    from transformers import AutoTokenizer

    again = AutoTokenizer.from_pretrained(tmp_path)
    assert again("c0_1 (", add_special_tokens=False)["input_ids"] == [2, 0] and len(again) == len(tok)


@pytest.mark.parametrize("words", [[], ["a", "a"], ["a b"], [""], ["<|endoftext|>"]])
def test_bad_vocabularies_are_refused(words) -> None:
    with pytest.raises(ValueError, match="build_word_tokenizer"):
        build_word_tokenizer(words)
