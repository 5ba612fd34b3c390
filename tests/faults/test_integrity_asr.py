"""Hostile inputs around the ASR probe and its transcript data: each case fails on the base commit (no ASR
support) and is refused with one line naming the probe, dataset, clip or option after it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from probekit.cli import main
from probekit.datasets.base import Clip
from probekit.datasets.transcripts import transcript_targets
from probekit.errors import ConfigError, DatasetError, ProbeError
from probekit.probes import make_probe
from probekit.tokens import InMemoryTokens, TokenBatch
from probekit.train import TrainConfig, fit


@pytest.fixture(scope="module")
def tiny_fsdd(fsdd_root, tmp_path_factory):
    import shutil

    root = tmp_path_factory.mktemp("fsdd_tiny")
    (root / "recordings").mkdir()
    for d in range(10):
        for t in (0, 5):
            shutil.copy(fsdd_root / "recordings" / f"{d}_theo_{t}.wav", root / "recordings")
    return root


@pytest.mark.parametrize("probe,dataset,words", [("linear", "fsdd-asr", "ASR dataset"),
                                                 ("asr", "fsdd", "class labels")])
def test_cli_refuses_probe_and_dataset_of_other_kinds_before_extraction(tiny_fsdd, tmp_path, capsys, probe,
                                                                        dataset, words):
    rc = main(["probe", probe, "-b", "bat-tiny", "-d", dataset, "--data-root", str(tiny_fsdd), "--cache-dir",
               str(tmp_path / "c"), "--results-dir", str(tmp_path / "r"), "--device", "cpu", "--yes"])
    err = capsys.readouterr().err
    assert rc == 2 and f"probe {probe!r}" in err and repr(dataset) in err and words in err, err
    assert not (tmp_path / "c").exists()  # nothing extracted


def _tokens(labels, num_classes=29):
    n = len(labels)
    patch = torch.randn(n, 2, 4, 8, generator=torch.Generator().manual_seed(0))
    return InMemoryTokens(patch, patch.mean(2), np.asarray(labels), num_classes=num_classes, multilabel=False,
                          grid=(2, 2))


def _asr_labels(n):
    return transcript_targets([Clip(id=str(i), path="-", labels=(), split="train", transcript="one")
                               for i in range(n)])


def test_python_fit_refuses_clip_probe_on_transcripts_and_asr_probe_on_labels():
    asr_data = _tokens(_asr_labels(4))
    lin = make_probe("linear", num_layers=2, embed_dim=8, num_classes=29)
    with pytest.raises(ProbeError, match="'linear' predicts one label per clip, but the training data holds transcripts"):
        fit(lin, asr_data, config=TrainConfig(steps=1, batch_size=2), progress=False)
    cls_data = _tokens(np.arange(4) % 3)  # 29 classes, one label per clip
    asr = make_probe("asr", num_layers=2, embed_dim=8, num_classes=29, hidden=4)
    with pytest.raises(ProbeError, match="'asr' trains on transcripts, but the training data holds class labels"):
        fit(asr, cls_data, config=TrainConfig(steps=1, batch_size=2), progress=False)


@pytest.mark.parametrize("loss", ["bce", "asl"])
def test_asr_probe_refuses_a_clip_loss_and_clip_probes_refuse_ctc(loss):
    data = _tokens(_asr_labels(4))
    asr = make_probe("asr", num_layers=2, embed_dim=8, num_classes=29, hidden=4)
    with pytest.raises(ConfigError, match=f"trains with CTC, not loss '{loss}'"):
        fit(asr, data, config=TrainConfig(steps=1, batch_size=2, loss=loss), progress=False)
    lin = make_probe("linear", num_layers=2, embed_dim=8, num_classes=3)
    with pytest.raises(ConfigError, match="loss 'ctc' trains the ASR probe"):
        fit(lin, _tokens(np.arange(4) % 3, 3), config=TrainConfig(steps=1, batch_size=2, loss="ctc"), progress=False)


@pytest.mark.parametrize("text", ["", "   ", "123 ?!"])
def test_transcript_without_vocabulary_characters_is_refused_by_clip(text):
    clips = [Clip(id="a", path="x.flac", labels=(), split="train", transcript="one"),
             Clip(id="b", path="y.flac", labels=(), split="train", transcript=text)]
    with pytest.raises(DatasetError, match=r"clip 'b' \(y.flac\) has transcript .* no character of the vocabulary"):
        transcript_targets(clips, "my-asr")
    with pytest.raises(DatasetError, match="clip 'a' .* has no transcript"):
        transcript_targets([Clip(id="a", path="x.flac", labels=(), split="train")], "my-asr")


def test_asr_probe_without_the_token_grid_says_so():
    asr = make_probe("asr", num_layers=2, embed_dim=8, num_classes=29, hidden=4)
    b = TokenBatch(torch.randn(2, 2, 4, 8), None, torch.ones(2, 3, dtype=torch.long), torch.tensor([2, 2]),
                   torch.arange(2))
    with pytest.raises(ProbeError, match="needs the token grid"):
        asr(b)
