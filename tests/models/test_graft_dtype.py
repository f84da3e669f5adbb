"""`retrofit.graft.stored_dtype` and the graft's default dtype (issue #16 item 10).

`retrofit graft` used to write bf16 whatever the base stored, so an fp32 base's graft was not
its identity at init. The default is now the base's stored dtype.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from retrofit.graft import graft_checkpoint, stored_dtype
from retrofit.models import FlexMDMModel, LLaDAModelLM


def test_stored_dtype_reads_headers_then_config(tmp_path: Path) -> None:
    save_file({"a": torch.zeros(10, dtype=torch.bfloat16), "b": torch.zeros(3), "i": torch.zeros(99, dtype=torch.int64)},
              str(tmp_path / "model.safetensors"))  # fmt: skip
    (tmp_path / "config.json").write_text(json.dumps({"torch_dtype": "float32"}))
    assert stored_dtype(tmp_path) == torch.bfloat16  # the dtype holding most floating elements wins
    (tmp_path / "model.safetensors").unlink()
    assert stored_dtype(tmp_path) == torch.float32
    (tmp_path / "config.json").write_text(json.dumps({"dtype": "float16", "torch_dtype": "float32"}))
    assert stored_dtype(tmp_path) == torch.float16
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ValueError, match="cannot tell the stored dtype .* pass --dtype bf16 or --dtype fp32"):
        stored_dtype(tmp_path)


def test_default_graft_of_fp32_base_is_fp32_and_identity(tiny_llada_dir: Path, tmp_path: Path) -> None:
    out = graft_checkpoint(tiny_llada_dir, tmp_path / "graft", canvas_width=64, adaln_group_size=1)
    assert stored_dtype(tiny_llada_dir) == torch.float32 and stored_dtype(out) == torch.float32
    model = FlexMDMModel.from_pretrained(out).eval()
    base = LLaDAModelLM.from_pretrained(tiny_llada_dir).eval()
    ids = torch.randint(0, 256, (2, 12), generator=torch.Generator().manual_seed(0))
    canvas = torch.cat([ids, torch.full((2, 1), model.config.pad_token_id)], dim=1)  # + length slot
    with torch.no_grad():
        grafted = model(ids, torch.tensor([0.2, 0.7])).logits  # zero-init AdaLN: identity at every t
        reference = base(canvas, attention_mask=torch.ones_like(canvas, dtype=torch.bool)).logits[:, :12]
    assert grafted.dtype == torch.float32
    assert (grafted - reference).abs().max().item() == 0.0


def test_default_graft_of_bf16_base_stays_bf16(tiny_llada_dir: Path, tmp_path: Path) -> None:
    base = LLaDAModelLM.from_pretrained(tiny_llada_dir, dtype=torch.bfloat16)
    base.save_pretrained(tmp_path / "bf16-base")
    out = graft_checkpoint(tmp_path / "bf16-base", tmp_path / "graft", canvas_width=64)
    assert stored_dtype(out) == torch.bfloat16
