"""`load_model` (the loader of `generate` / `infill` / `eval`) refuses the wrong kind of folder.

A training checkpoint gets "PATH is a training checkpoint ...; export it first: retrofit export
PATH --out OUT", through the function and through each verb (exit code and first stderr line);
a folder that does not exist gets "no such folder: PATH".
"""

from __future__ import annotations

import pytest

from retrofit.cli import main
from retrofit.models.loading import CheckpointError
from retrofit.sampling.load import load_model


def test_load_model_refuses_a_training_checkpoint(trained_checkpoint, tmp_path):
    ckpt = trained_checkpoint.ckpt
    with pytest.raises(CheckpointError, match=rf"^{ckpt} is a training checkpoint, not a model folder; export it first: retrofit export {ckpt} --out OUT$"):  # fmt: skip
        load_model(ckpt, device="cpu")
    with pytest.raises(FileNotFoundError, match=rf"^no such folder: {tmp_path / 'nosuch'} "):
        load_model(tmp_path / "nosuch", device="cpu")


@pytest.mark.parametrize(
    ("verb", "extra", "code"),
    [
        ("generate", ["--prompt", "hi"], 1),
        ("infill", ["--prefix", "a", "--suffix", "b"], 1),
        ("eval", ["gsm8k", "--limit", "1"], None),  # eval's own exit code for a load failure
    ],
)
def test_verbs_say_export_it_first(trained_checkpoint, capsys, verb, extra, code):
    ckpt = str(trained_checkpoint.ckpt)
    argv = [verb, *extra[:1], ckpt, *extra[1:]] if verb == "eval" else [verb, ckpt, *extra]
    exit_code = main([*argv, "--device", "cpu"])
    first = capsys.readouterr().err.strip().splitlines()[0]
    assert exit_code != 0 and (code is None or exit_code == code)
    assert first.endswith(
        f"{ckpt} is a training checkpoint, not a model folder; export it first: retrofit export {ckpt} --out OUT"
    ), first
