"""Loaders on small copies of the official layouts (real FSDD audio inside) and on the real FSDD."""

from __future__ import annotations

from collections import Counter

import pytest

from probekit.audio.frontends import PRESETS, frontend_for
from probekit.audio.io import load_audio
from probekit.datasets import DATASET_SPECS, get_dataset, get_spec, list_datasets
from probekit.errors import ConfigError, DatasetError


def test_real_fsdd(shared_data, fsdd_root):
    for ds in (get_dataset("fsdd", shared_data), get_dataset("fsdd", root=fsdd_root),
               get_dataset("fsdd", root=fsdd_root / "recordings")):  # fmt: skip
        train, test = ds.clips("train"), ds.clips("test")
        assert (len(train), len(test)) == (2700, 300)
        assert Counter(c.labels[0] for c in test) == {d: 30 for d in range(10)}
        assert all(int(c.id.split("_")[2]) < 5 for c in test) and all(
            int(c.id.split("_")[2]) >= 5 for c in train
        )
        assert all(str(c.labels[0]) == c.id[0] for c in train)
    assert ds.spec.classes == tuple("0123456789") and ds.spec.frames["fbank"] == 256
    assert ds.fingerprint("test") == get_dataset("fsdd", shared_data).fingerprint("test")
    assert ds.fingerprint("test") != ds.fingerprint("train")
    # the fixed 256 frames cover the longest clip in every recipe
    assert frontend_for("bat", ds.spec) == PRESETS["bat-fsdd"]
    assert frontend_for("fbank", ds.spec) == PRESETS["eat-fsdd"]


def test_data_root_from_environment(monkeypatch, shared_data, tmp_path):
    monkeypatch.setenv("PROBEKIT_DATA", f"{tmp_path}:{shared_data}")
    assert len(get_dataset("fsdd").clips("test")) == 300
    monkeypatch.delenv("PROBEKIT_DATA")
    with pytest.raises(DatasetError, match="no data root"):
        get_dataset("fsdd")


def test_not_found_names_the_layout_and_where(tmp_path):
    with pytest.raises(DatasetError) as info:
        get_dataset("esc50", tmp_path)
    msg = str(info.value)
    assert str(tmp_path / "ESC-50") in msg and "meta/esc50.csv" in msg
    with pytest.raises(DatasetError, match="did you mean 'esc50'"):
        get_dataset("esc-50", tmp_path)


def test_audioset_layouts(audioset_root):
    ds = get_dataset("as20k", audioset_root.parent)
    train, test = ds.clips("train"), ds.clips("test")
    assert [c.id for c in train] == ["--PJHxphWEs", "--ZhevVpy1s", "-0Gj8-vB1q4", "YabcdEFGH_1"]
    assert ds.missing == {"train": 1, "test": 0}
    speech, music, dog = (ds.spec.classes.index(n) for n in ("Speech", "Music", "Dog"))
    assert train[0].labels == tuple(sorted((speech, music))) and test[0].labels == tuple(
        sorted((speech, dog, music))
    )
    assert ds.spec.multilabel and ds.spec.num_classes == 527 and ds.spec.class_ids[0] == "/m/09x0r"
    assert load_audio(train[0].path).shape[0] > 0
    as2m = get_dataset("as2m", audioset_root.parent)
    assert len(as2m.clips("train")) == 3 and as2m.clips("train")[2].path.name == "2gBM2nVwfPk_30000_40000.wav"
    ev = get_dataset("as-eval", root=audioset_root)
    assert ev.spec.splits == ("test",) and len(ev.clips("test")) == 3
    assert frontend_for("fbank", ds.spec) == PRESETS["eat-audioset"]
    assert frontend_for("fbank", ds.spec, "bat-paper") == PRESETS["batpaper-fbank-audioset"]
    assert frontend_for("bat", ds.spec) == PRESETS["bat-audioset"]


def test_audioset_bad_rows(audioset_root):
    csv = audioset_root / "eval_segments.csv"
    csv.write_text(csv.read_text() + 'zzzzzzzzzzz, 0.000, 10.000, "/m/not_a_class"\n')
    with pytest.raises(DatasetError, match=r"eval_segments.csv line 7: unknown class id '/m/not_a_class'"):
        get_dataset("as-eval", root=audioset_root).clips("test")


def test_esc50_folds(esc50_root):
    ds = get_dataset("esc50", esc50_root.parent)
    assert len(ds.clips("all")) == 10 and sorted({c.fold for c in ds.clips("all")}) == [1, 2, 3, 4, 5]
    assert {c.fold for c in ds.clips("test")} == {1} and len(ds.clips("train")) == 8
    ds3 = get_dataset("esc50", root=esc50_root, test_fold=3)
    assert [c.id for c in ds3.clips("test")] == ["3-100018-A-18.wav", "3-107219-A-49.wav"]
    assert ds3.clips("test")[1].labels == (49,) and ds3.spec.classes[49] == "hand_saw"
    assert ds.fingerprint("test") != ds3.fingerprint("test")
    assert frontend_for("fbank", ds.spec, "bat-paper") == PRESETS["batpaper-fbank-esc50"]
    with pytest.raises(ConfigError):
        get_dataset("esc50", root=esc50_root, test_fold=6)
    with pytest.raises(ConfigError, match="no option"):
        get_dataset("esc50", root=esc50_root, fold=2)
    (esc50_root / "audio" / "1-100032-A-0.wav").unlink()
    ds = get_dataset("esc50", root=esc50_root)
    assert len(ds.clips("all")) == 9 and ds.missing["all"] == 1


def test_esc50_category_mismatch(esc50_root):
    meta = esc50_root / "meta" / "esc50.csv"
    meta.write_text(meta.read_text().replace(",0,dog,", ",0,cat,", 1))
    with pytest.raises(DatasetError, match="line 2: target 0 is 'cat', expected 'dog'"):
        get_dataset("esc50", root=esc50_root)


def test_speech_commands_12(sc2_root):
    ds = get_dataset("sc2", sc2_root.parent)
    names = ds.spec.classes
    assert names[-2:] == ("_unknown_", "_silence_") and len(names) == 12
    train, valid, test = (ds.clips(s) for s in ("train", "valid", "test"))
    words = lambda clips: sorted((c.id, names[c.labels[0]]) for c in clips if c.duration is None)
    assert words(valid) == [("bed/1aed7c6d_nohash_0.wav", "_unknown_"), ("yes/0a7c2a8d_nohash_1.wav", "yes")]
    assert words(test) == [("no/0c40e715_nohash_0.wav", "no"), ("yes/0b09edd3_nohash_0.wav", "yes")]
    assert ("three/0a7c2a8d_nohash_0.wav", "_unknown_") in words(train) and len(words(train)) == 4
    silence = lambda clips: [c for c in clips if names[c.labels[0]] == "_silence_"]
    assert [len(silence(x)) for x in (train, valid, test)] == [8, 1, 1]  # 10 one-second crops, 80/10/10
    crop = silence(test)[0]
    assert (crop.offset, crop.duration) == (9.0, 1.0)
    assert load_audio(crop.path, offset=crop.offset, duration=crop.duration).shape == (16000,)
    assert ds.missing["test"] == 1  # three/gone_nohash_0.wav is listed but absent
    assert frontend_for("bat", ds.spec) == PRESETS["bat-sc2"]
    assert frontend_for("fbank", ds.spec) == PRESETS["eat-sc2"]
    assert frontend_for("fbank", ds.spec, "bat-paper") == PRESETS["batpaper-fbank-sc2"]


def test_speech_commands_35(sc2_root):
    ds = get_dataset("sc2-35", root=sc2_root)
    assert ds.spec.num_classes == 35
    assert sum(len(ds.clips(s)) for s in ds.spec.splits) == 8  # no silence crops
    assert {ds.spec.classes[c.labels[0]] for c in ds.clips("train")} == {"yes", "no", "bed", "three"}
    (sc2_root / "marvinn").mkdir()
    (sc2_root / "marvinn" / "x_nohash_0.wav").write_bytes(
        (sc2_root / "bed" / "0a7c2a8d_nohash_0.wav").read_bytes()
    )
    with pytest.raises(DatasetError, match="marvinn: not one of the 35"):
        get_dataset("sc2-35", root=sc2_root).clips("train")


def test_registry_specs_are_complete():
    birdset = {f"birdset-{c}" for c in ("hsn", "pow", "per", "nes", "uhh", "nbp", "ssw", "sne")}
    assert {"as20k", "as2m", "as-eval", "esc50", "sc2", "sc2-35", "fsdd", "fsdd-asr", "librispeech"} | birdset <= set(list_datasets())
    for name, spec in DATASET_SPECS.items():
        assert spec.name == name and get_spec(name) is spec
        assert len(spec.classes) == len(spec.class_ids) == len(set(spec.classes))
        assert spec.license and spec.citation and spec.layout and spec.protocol and spec.metric
        if spec.name == "librispeech":  # utterances of 1-35 s: each split pads to its longest, as BAT per batch
            continue
        assert spec.frames["fbank"] % 16 == 0 and spec.frames["bat"] % 16 == 0
    assert DATASET_SPECS["esc50"].folds == 5 and DATASET_SPECS["sc2"].splits == ("train", "valid", "test")
