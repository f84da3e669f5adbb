"""Prompts are formatted as the model was trained (recorded at export), unless told (#16 item 6)."""

from __future__ import annotations

import json
import shutil

import pytest

from retrofit.cli import main
from retrofit.commands.generate import encode_prompt
from retrofit.data.gsm8k_format import build_prompt
from retrofit.evaluation.generation import load_model_dir
from retrofit.evaluation.prompt_template import apply_prompt_template, recorded_prompt_template


class Tok:
    def __init__(self, chat_template):
        self.chat_template = chat_template


def with_record(tmp_path, value):
    (tmp_path / "generation_config.json").write_text(json.dumps({"prompt_template": value}))
    return tmp_path


def test_recorded_template_wins_over_the_tokenizer(tmp_path):
    tok = Tok("{{ messages }}")
    assert apply_prompt_template(tok, with_record(tmp_path, "plain")) == "plain" and tok.chat_template is None
    tok = Tok("{{ messages }}")
    assert apply_prompt_template(tok, with_record(tmp_path, "chat")) == "chat" and tok.chat_template


def test_without_a_record_the_tokenizer_decides(tmp_path):
    assert recorded_prompt_template(tmp_path) is None
    assert apply_prompt_template(Tok("{{ x }}"), tmp_path) == "chat"
    assert apply_prompt_template(Tok(None), tmp_path) == "plain"
    (tmp_path / "generation_config.json").write_text("{ not json")
    assert recorded_prompt_template(tmp_path) is None


def test_explicit_choice_overrides_the_record(tmp_path):
    tok = Tok("{{ messages }}")
    assert apply_prompt_template(tok, with_record(tmp_path, "chat"), "plain") == "plain"
    assert tok.chat_template is None
    with pytest.raises(ValueError, match="no chat template; use --prompt-template plain"):
        apply_prompt_template(Tok(None), tmp_path, "chat")
    with pytest.raises(ValueError, match="recorded at export"):
        apply_prompt_template(Tok(None), with_record(tmp_path, "chat"))
    with pytest.raises(ValueError, match="choose one of auto, chat, plain"):
        apply_prompt_template(Tok(None), tmp_path, "jinja")


def test_a_plain_trained_model_gets_plain_prompts(tiny_llada_dir, tmp_path):
    folder = shutil.copytree(tiny_llada_dir, tmp_path / "plain-model")
    _, tok, _ = load_model_dir(folder, device="cpu")
    assert tok.chat_template  # the tiny tokenizer has a chat template ...
    chat_ids = encode_prompt(tok, "What is 3 + 4?")
    with_record(folder, "plain")
    _, tok, _ = load_model_dir(folder, device="cpu")  # ... which a plain-trained model does not use
    assert (
        encode_prompt(tok, "What is 3 + 4?") == tok("What is 3 + 4?", add_special_tokens=False)["input_ids"]
    )
    assert encode_prompt(tok, "What is 3 + 4?") != chat_ids
    assert build_prompt("Q?", tok) == build_prompt("Q?", None)  # GSM8K eval: the plain layout
    _, tok, _ = load_model_dir(folder, device="cpu", prompt_template="chat")
    assert encode_prompt(tok, "What is 3 + 4?") == chat_ids


def test_generate_refuses_chat_for_a_tokenizer_without_one(tiny_llada_dir, tmp_path, capsys):
    folder = shutil.copytree(tiny_llada_dir, tmp_path / "no-chat")
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    (folder / "chat_template.jinja").unlink(missing_ok=True)
    argv = [
        "generate",
        str(folder),
        "--prompt",
        "x",
        "--gen-length",
        "4",
        "--steps",
        "4",
        "--prompt-template",
        "chat",
    ]
    assert main(argv) == 1
    assert "no chat template; use --prompt-template plain" in capsys.readouterr().err
