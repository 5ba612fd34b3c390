"""VQT integrity: the probe that trains inside the encoder refuses what cannot serve it, in one line.

Each test fails on the base commit (no `vqt` probe: an unknown-probe error, never these messages) and passes
with the VQT probe.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from probekit.errors import ConfigError, ProbeError
from probekit.probes import make_probe
from probekit.tokens import InMemoryTokens, TokenBatch


@pytest.fixture(scope="module")
def manifest(fsdd_root, tmp_path_factory):
    root = tmp_path_factory.mktemp("fsdd_vqt_faults")
    (root / "audio").mkdir()
    rows = ["path,labels,split"]
    for digit in range(4):
        for take in range(2):
            name = f"{digit}_jackson_{take}.wav"
            shutil.copy(fsdd_root / "recordings" / name, root / "audio" / name)
            rows.append(f"audio/{name},{digit},{'test' if take < 1 else 'train'}")
    (root / "manifest.csv").write_text("\n".join(rows) + "\n")
    return f"manifest:{root / 'manifest.csv'}"


def test_evaluate_without_online_refuses_before_extracting(manifest, tmp_path):
    from probekit.api import evaluate

    with pytest.raises(ConfigError) as e:
        evaluate("bat-tiny", datasets=[manifest], probes=["linear", "vqt"], cache_dir=tmp_path / "c",
                 device="cpu", progress=False, write=False)
    msg = str(e.value)
    assert "vqt" in msg and "--online" in msg and "online=True" in msg and "\n" not in msg
    assert not (tmp_path / "c").exists()  # refused before any cache was made


def test_cli_probe_vqt_without_online_exits_2_with_one_line(manifest, tmp_path, capsys):
    from probekit.cli import main

    code = main(["probe", "vqt", "-b", "bat-tiny", "-d", manifest, "--cache-dir", str(tmp_path / "c"),
                 "--results-dir", str(tmp_path / "r"), "--device", "cpu", "--yes", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "--online" in err and "Traceback" not in err
    assert not (tmp_path / "c").exists()


def test_fit_and_predict_refuse_token_data():
    from probekit.train import TrainConfig, fit, predict

    # what a token cache hands a probe: fixed tokens, no encoder to run the queries through
    tokens = InMemoryTokens(torch.zeros(4, 2, 3, 16), torch.zeros(4, 2, 16), np.arange(4) % 2, num_classes=2,
                            multilabel=False, grid=(3, 1))
    probe = make_probe("vqt", num_layers=2, embed_dim=16, num_classes=2, seed=0)
    with pytest.raises(ConfigError, match="--online"):
        fit(probe, tokens, config=TrainConfig(steps=1, batch_size=2, device="cpu"), progress=False)
    with pytest.raises(ConfigError, match="cannot read a token cache"):
        predict(probe, tokens)


def test_forward_on_a_token_batch_says_what_to_do():
    probe = make_probe("vqt", num_layers=2, embed_dim=16, num_classes=3, seed=0)
    batch = TokenBatch(None, torch.zeros(2, 2, 16), torch.zeros(2, dtype=torch.long), torch.ones(2, dtype=torch.long),
                       torch.arange(2))
    with pytest.raises(ProbeError, match="--online"):
        probe(batch)


@pytest.mark.parametrize("name", ["audiomae-tiny", "dasheng-tiny"])
def test_families_without_query_support_are_refused_naming_those_with(manifest, tmp_path, name):
    from probekit.api import evaluate

    with pytest.raises(ConfigError) as e:
        evaluate(name, datasets=[manifest], probes=["vqt"], online=True, cache_dir=tmp_path / "c", device="cpu",
                 progress=False, write=False)
    msg = str(e.value) + str(e.value.hint)
    assert name in msg and all(f in msg for f in ("BAT", "EAT", "SSLAM", "BEATs"))


def test_backbone_capability_is_declared():
    from probekit.backbones import get_backbone

    assert get_backbone("bat-tiny").supports_queries and get_backbone("eat-tiny").supports_queries
    assert get_backbone("beats-tiny").supports_queries
    other = get_backbone("audiomae-tiny")
    assert not other.supports_queries
    with pytest.raises(Exception, match="query tokens"):
        other.encode_queries(torch.zeros(1, 1, 16, 128), None, torch.zeros(1, 1, 1, other.embed_dim))


def test_queries_of_one_encoder_do_not_run_another():
    from probekit.backbones import get_backbone
    from probekit.cache.live import InputBatch

    a, b = get_backbone("bat-tiny", seed=0), get_backbone("bat-tiny", seed=1)
    probe = make_probe("vqt", num_layers=a.num_layers, embed_dim=a.embed_dim, num_classes=3, num_queries=1, seed=0)
    feats = torch.zeros(1, 1, 32, 128)

    def batch(bb):
        return InputBatch(None, None, torch.zeros(1, dtype=torch.long), torch.ones(1, dtype=torch.long),
                          torch.arange(1), features=feats, valid_frames=torch.tensor([32]), backbone=bb)

    probe.eval()(batch(a))
    with pytest.raises(ProbeError, match="cannot run"):
        probe(batch(b))


@pytest.mark.parametrize("bad", [{"num_queries": 0}, {"num_queries": "ten"}, {"dropout": 1.0},
                                 {"query_dropout": -0.1}])
def test_bad_hyperparameters_are_refused_by_name(bad):
    with pytest.raises(ProbeError, match=next(iter(bad))):
        make_probe("vqt", num_layers=2, embed_dim=16, num_classes=3, **bad)



def test_cli_tune_vqt_refuses_before_extracting(manifest, tmp_path, capsys):
    # base: no vqt probe; then (before this check) the caches were extracted and fit refused afterwards
    from probekit.cli import main

    code = main(["tune", "vqt", "-b", "bat-tiny", "-d", manifest, "--cache-dir", str(tmp_path / "c"),
                 "--results-dir", str(tmp_path / "r"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "--online --tune" in err and "Traceback" not in err
    assert not (tmp_path / "c").exists()
