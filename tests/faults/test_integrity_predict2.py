"""Hostile inputs around predict, tune and hf: transcripts (helper w3-predict). Each case failed on the base
commit and passes now:

* `probekit predict --record s3://bucket/none.json`: the URL went through pathlib (`s3:/bucket/...`) and was
  read as a local file; now it is read through fsspec and the one-line error names the real URL;
* tuning the ASR probe without a validation split: the stratified hold-out crashed on 2-D transcript labels
  (numpy's bincount); now the held-out part is random and the plan says so;
* an `hf:` dataset option `text_column=` naming an absent column: refused as an unknown option before; now a
  DatasetError naming the column and the columns there are.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
from _faults import assert_user_error, cli


def test_predict_record_url_that_does_not_exist_names_the_url(capsys, tmp_path, fsdd_root):
    pytest.importorskip("s3fs")
    pytest.importorskip("moto.server")
    if "_s3server" not in sys.modules:
        spec = importlib.util.spec_from_file_location("_s3server", Path(__file__).parents[1] / "cache" / "_s3server.py")
        sys.modules["_s3server"] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules["_s3server"])
    gen = sys.modules["_s3server"].moto_s3.__wrapped__()  # the module fixture's generator, run here
    next(gen)
    try:
        wav = fsdd_root / "recordings" / "0_jackson_0.wav"
        rc, _, err = cli(capsys, "predict", "--record", "s3://probekit-test/results/none.json", "--device", "cpu", wav)
        assert_user_error(rc, err, "s3://probekit-test/results/none.json")
    finally:
        gen.close()


def test_tuning_asr_without_a_validation_split_holds_out_a_random_part():
    import torch

    from probekit.datasets.transcripts import CHARS, transcript_targets
    from probekit.tokens import InMemoryTokens
    from probekit.tune.plan import plan_tuning

    n = 40
    clips = [type("C", (), {"transcript": ("one", "seven two")[i % 2], "id": str(i), "path": "-"})() for i in range(n)]
    tokens = InMemoryTokens(torch.randn(n, 2, 6, 8), torch.randn(n, 2, 8), transcript_targets(clips),
                            num_classes=len(CHARS), multilabel=False, grid=(3, 2), valid_rows=np.full(n, 3))
    plan = plan_tuning("asr", tokens, protocol="fsdd-asr")
    assert len(plan.val_idx) == 4 and "random" in plan.validation and plan.direction == "minimize"


def test_hf_text_column_that_is_absent_is_named(tmp_path, fsdd_root, monkeypatch):
    datasets = pytest.importorskip("datasets")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("PROBEKIT_HF_AUDIO", str(tmp_path / "a"))
    from probekit.datasets import get_dataset
    from probekit.errors import DatasetError

    f = fsdd_root / "recordings" / "3_theo_0.wav"
    feats = datasets.Features({"audio": datasets.Audio(sampling_rate=8000), "text": datasets.Value("string")})
    rows = {"audio": [{"bytes": f.read_bytes(), "path": f.name}], "text": ["three"]}
    datasets.DatasetDict({"train": datasets.Dataset.from_dict(rows).cast(feats)}).save_to_disk(str(tmp_path / "d"))
    with pytest.raises(DatasetError, match=r"no column 'words' \(text_column\)"):
        get_dataset(f"hf:{tmp_path / 'd'}?text_column=words")
