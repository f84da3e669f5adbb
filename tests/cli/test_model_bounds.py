"""Lengths beyond the model's max_sequence_length fail before any weight is read (#16 item 4)."""

from __future__ import annotations

import json

import pytest

from retrofit.cli import main
from retrofit.commands.arg_types import check_lengths


def config_only(tmp_path, config):
    """A folder with a config.json and nothing else: loading it would fail on the missing weights."""
    (tmp_path / "config.json").write_text(json.dumps(config))
    return tmp_path


def test_llada_limit(tmp_path):
    folder = config_only(tmp_path, {"model_type": "llada", "max_sequence_length": 4096})
    check_lengths(folder, gen_length=4096, max_length=None)  # the limit itself is fine
    with pytest.raises(ValueError, match=r"--gen-length 4097 exceeds the model's max_sequence_length 4096 .*"
                                         r"use --gen-length 4096 or less"):  # fmt: skip
        check_lengths(folder, gen_length=4097)


def test_flexmdm_limit_comes_from_the_backbone(tmp_path):
    folder = config_only(tmp_path, {"model_type": "flexmdm", "backbone": {"max_sequence_length": 512}})
    with pytest.raises(ValueError, match="--max-length 513 exceeds the model's max_sequence_length 512"):
        check_lengths(folder, max_length=513)
    check_lengths(tmp_path / "missing", max_length=10**9)  # no config: the loader reports the folder


@pytest.mark.parametrize(
    "argv",
    [
        ["generate", "{dir}", "--prompt", "x", "--max-length", "9999"],
        ["infill", "{dir}", "--prefix", "a", "--suffix", "b", "--gen-length", "9999"],
        ["eval", "gsm8k", "{dir}", "--max-length", "9999"],
    ],
)
def test_verbs_check_before_loading(tmp_path, capsys, argv):
    folder = config_only(tmp_path, {"model_type": "flexmdm", "backbone": {"max_sequence_length": 512}})
    code = main([a.replace("{dir}", str(folder)) for a in argv])
    assert code in (1, 2)
    err = capsys.readouterr().err
    assert "exceeds the model's max_sequence_length 512" in err and "safetensors" not in err


def test_graft_canvas_width_is_checked_against_the_base(tmp_path, capsys):
    (tmp_path / "base").mkdir()
    base = config_only(tmp_path / "base", {"model_type": "llada", "max_sequence_length": 4096})
    assert main(["graft", "--base", str(base), "--out", str(tmp_path / "out"), "--canvas-width", "8192"]) == 1
    assert "--canvas-width 8192 exceeds the model's max_sequence_length 4096" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
