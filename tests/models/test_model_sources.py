"""Where a model reference points (retrofit.models.loading): local path, Hub id, or the wrong kind.

* `looks_like_path`: ./ ../ / ~ prefixes, more than one "/", or an existing first component make
  a path; "org/name" and "name" stay Hub ids.
* `resolve_model_dir`: a missing path says "no such folder: PATH" (not a Hub-id validation
  error); a Hub id missing from the cache while HF_HUB_OFFLINE is set says it is offline and how
  to download it.
* A training checkpoint is refused by `load_llada` and `refuse_training_checkpoint` with the
  export command (and, as `model.base`, the `model.init_from` alternative with its own base).
"""

from __future__ import annotations

import shutil

import pytest

from retrofit.models.loading import (
    CheckpointError,
    load_llada,
    looks_like_path,
    refuse_training_checkpoint,
    resolve_model_dir,
)


def test_looks_like_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    for text in ("./x", "../x", "/abs/x", "~/x", "a/b/c", "runs/x", ".", ".."):
        assert looks_like_path(text), text
    for text in ("GSAI-ML/LLaDA-8B-Base", "gpt2", "org/name"):
        assert not looks_like_path(text), text


def test_missing_path_says_no_such_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    for text in ("./nosuch", "models/x/nosuch", "runs/nosuch"):
        with pytest.raises(
            FileNotFoundError, match=rf"^model.base: no such folder: {text} \(looked in {tmp_path}"
        ):
            resolve_model_dir(text, field="model.base")
    with pytest.raises(FileNotFoundError, match=r"^no such folder: \./nosuch$"):
        load_llada("./nosuch")
    assert resolve_model_dir(str(tmp_path / "runs")) == str(tmp_path / "runs")


def test_offline_hub_id_says_how_to_download(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))  # nothing cached
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(OSError) as info:
        resolve_model_dir("some-org/some-model", field="model.base")
    message = str(info.value)
    assert message.startswith("model.base=some-org/some-model: not a local folder, and HF_HUB_OFFLINE=1")
    assert "`hf download some-org/some-model`" in message and "unset HF_HUB_OFFLINE" in message


def test_training_checkpoint_is_refused_with_the_export_command(trained_checkpoint, tmp_path):
    ckpt = trained_checkpoint.ckpt
    export = f"retrofit export {ckpt} --out OUT"
    with pytest.raises(CheckpointError) as info:
        load_llada(ckpt)
    assert (
        str(info.value) == f"{ckpt} is a training checkpoint, not a model folder; export it first: {export}"
    )
    with pytest.raises(CheckpointError) as info:
        refuse_training_checkpoint(ckpt, field="model.base")
    assert str(info.value).startswith(
        f"model.base={ckpt} is a training checkpoint, not a model folder: use "
        f"model.base={trained_checkpoint.base} model.init_from={ckpt} to start a new stage"
    )
    assert f"or export it first ({export}) and use OUT as model.base" in str(info.value)
    # a model folder that also holds trainer files (full-parameter checkpoint: config.json + weights) loads
    full = tmp_path / "full"
    shutil.copytree(trained_checkpoint.base, full)
    (full / "trainer_state.json").write_text("{}")
    refuse_training_checkpoint(full, field="model.base")
    assert load_llada(full).config.n_layers == 2
