"""`retrofit verify-llada` runs the folder's own modeling code, never retrofit's registered class.

Issue #16 item 1: after `import retrofit.models`, transformers 5.x resolves
`AutoModel.from_pretrained(dir, trust_remote_code=True)` to retrofit's native LLaDA, so a
comparison through the Auto classes compared retrofit with itself and printed "matched" even for
a folder whose code computes other logits. The folders here ship retrofit's LLaDA code as their
remote code (`write_tiny_llada(modeling_code=True)`); one copy has its logits scaled by 3.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
import transformers

import retrofit.models  # noqa: F401  (registers the native classes, as every retrofit verb does)
from retrofit.cli import main
from retrofit.models.tiny import write_tiny_llada
from retrofit.models.verify import load_remote_model, verify_llada

LM_HEAD_LINE = "        logits = self.lm_head(hidden)\n"


@pytest.fixture(scope="module")
def coded_llada(tmp_path_factory) -> Path:
    """Tiny LLaDA (1 layer, d_model 32) shipping configuration_llada.py + modeling_llada.py."""
    return write_tiny_llada(
        tmp_path_factory.mktemp("coded") / "llada", layers=1, d_model=32, modeling_code=True
    )


def _with_modeling_edit(src: Path, dst: Path, old: str, new: str) -> Path:
    shutil.copytree(src, dst)
    code = (dst / "modeling_llada.py").read_text()
    assert code.count(old) == 1, "the modeling file changed; update the edit"
    (dst / "modeling_llada.py").write_text(code.replace(old, new))
    return dst


def test_auto_model_after_import_returns_retrofit_class_but_verify_loads_the_folder(coded_llada):
    from transformers import AutoModel

    auto = AutoModel.from_pretrained(coded_llada, trust_remote_code=True)
    own = load_remote_model(coded_llada, torch.float32, None)
    if int(transformers.__version__.split(".")[0]) >= 5:  # the documented 5.x behaviour
        assert type(auto).__module__ == "retrofit.models.llada"
    assert type(own).__module__.startswith("transformers_modules.") and type(own).__name__ == "LLaDAModelLM"
    assert type(own.config).__module__.startswith("transformers_modules.")


def test_folder_code_equal_to_native_matches(coded_llada, capsys):
    report = verify_llada(coded_llada)
    assert report.ok, report.format()
    assert report.remote.startswith(
        f"matched (folder's modeling_llada.LLaDAModelLM, transformers {transformers.__version__}): "
        "max|Δlogits| = 0 "
    )
    assert main(["verify-llada", str(coded_llada)]) == 0
    assert capsys.readouterr().out.rstrip().endswith("OK")


def test_folder_code_with_other_logits_fails(coded_llada, tmp_path, capsys):
    scaled = _with_modeling_edit(
        coded_llada, tmp_path / "scaled", LM_HEAD_LINE, "        logits = 3.0 * self.lm_head(hidden)\n"
    )
    assert main(["verify-llada", str(scaled)]) == 1
    out = capsys.readouterr().out
    assert "remote code: MISMATCH (folder's modeling_llada.LLaDAModelLM" in out and "matched" not in out
    assert (
        "PROBLEM: the folder's own modeling code (modeling_llada.LLaDAModelLM) and retrofit's native" in out
    )
    assert out.rstrip().endswith("FAILED (1 problem(s))")


def test_folder_code_that_cannot_run_is_reported_as_skipped(coded_llada, tmp_path):
    broken = _with_modeling_edit(
        coded_llada,
        tmp_path / "broken",
        "class LLaDAModelLM(PreTrainedModel):\n",
        'raise ImportError("needs transformers 4.x")\n\n\nclass LLaDAModelLM(PreTrainedModel):\n',
    )
    report = verify_llada(broken)
    version = transformers.__version__
    assert report.remote == (
        f"skipped: the folder's modeling code failed on transformers {version} "
        "(ImportError: needs transformers 4.x); native and folder logits were NOT compared"
    )
    assert "matched" not in report.format()
    if int(version.split(".")[0]) >= 5:
        assert report.ok and report.warnings[0].startswith("remote-code comparison skipped")
    else:
        assert not report.ok


def test_no_remote_code_flag_says_skipped(coded_llada):
    assert verify_llada(coded_llada, remote_code=False).remote == "skipped: --no-remote-code"
