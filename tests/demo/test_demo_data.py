"""The demo's data directory: local copies used as they are, missing files fetched atomically."""

from __future__ import annotations

import io
import urllib.request

import pytest

from retrofit.demo.runner import INFILL_URL, ensure_data_dir

SINGLE = "HumanEval-SingleLineInfilling.jsonl.gz"


def _gsm8k_only(root):
    for split in ("train", "test"):
        (root / "gsm8k").mkdir(parents=True, exist_ok=True)
        (root / "gsm8k" / f"{split}.jsonl").write_text(f'{{"question": "{split}", "answer": "1 #### 1"}}\n')
    return root


def test_a_complete_local_copy_is_used_in_place(data_dir, tmp_path):
    assert ensure_data_dir(data_dir, tmp_path / "out") == data_dir
    assert not (tmp_path / "out").exists()


def test_missing_infilling_file_is_downloaded_and_gsm8k_copied(tmp_path, monkeypatch):
    src = _gsm8k_only(tmp_path / "src")
    urls = []

    def fake_urlopen(url, timeout):
        urls.append(url)
        return io.BytesIO(b"gz-bytes")

    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    local = ensure_data_dir(src, tmp_path / "out")
    assert local == tmp_path / "out" / "data"
    assert urls == [INFILL_URL.format(name=SINGLE)]
    assert (local / "humaneval-infilling" / SINGLE).read_bytes() == b"gz-bytes"
    assert (local / "gsm8k" / "test.jsonl").read_text() == (src / "gsm8k" / "test.jsonl").read_text()
    assert sorted(p.name for p in local.rglob("*.tmp")) == []


def test_a_failed_download_names_the_url_and_leaves_no_partial_file(tmp_path, monkeypatch):
    src = _gsm8k_only(tmp_path / "src")

    def offline(url, timeout):
        raise OSError("network is unreachable")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(ConnectionError, match=f"could not download .*{SINGLE}.*RETROFIT_DATA_DIR"):
        ensure_data_dir(src, tmp_path / "out")
    assert list((tmp_path / "out" / "data" / "humaneval-infilling").iterdir()) == []
