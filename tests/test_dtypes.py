"""The one dtype table (`retrofit.dtypes`): every spelling, everywhere (#17 item 3)."""

from __future__ import annotations

import argparse

import pytest
import torch

from retrofit.dtypes import canonical_dtype, dtype_argument, torch_dtype
from retrofit.training.sections import ModelRecipe


@pytest.mark.parametrize(
    ("spelling", "dtype"),
    [("bf16", torch.bfloat16), ("bfloat16", torch.bfloat16), ("BF16", torch.bfloat16), ("fp32", torch.float32),
     ("float32", torch.float32), ("F32", torch.float32), ("fp16", torch.float16), ("half", torch.float16),
     ("torch.float32", torch.float32), (torch.bfloat16, torch.bfloat16)],
)  # fmt: skip
def test_every_spelling_means_one_torch_dtype(spelling, dtype):
    assert torch_dtype(spelling) is dtype


def test_unknown_or_not_allowed_names_are_refused_with_the_spellings():
    with pytest.raises(ValueError, match=r"--dtype='int8' is not one of .*bf16.*float32"):
        canonical_dtype("int8", "--dtype")
    with pytest.raises(ValueError, match="model.dtype='float64' is not one of"):
        ModelRecipe(base="b", dtype="float64")
    assert ModelRecipe(base="b", dtype="bf16", trainable_dtype="fp32").dtype == "bfloat16"


def test_the_cli_type_accepts_auto_and_any_spelling():
    parse = dtype_argument(allow_auto=True)
    assert (parse("auto"), parse("bf16"), parse("float32")) == ("auto", "bfloat16", "float32")
    with pytest.raises(argparse.ArgumentTypeError, match="is not one of"):
        dtype_argument()("auto")
