"""The CLI's last line of defence: an error's text is printed as text, whatever characters it holds."""

from __future__ import annotations

from _faults import assert_user_error, cli


def test_error_text_with_brackets_is_printed_verbatim(tmp_path, capsys):
    # rich would read "[bold red]" in a path as markup (and "[/x]" as a closing tag error): print it as typed
    odd = tmp_path / "[bold red]data[/x]" / "m.csv"
    rc, _, err = cli(capsys, "extract", "--backbone", "bat-tiny", "--dataset", f"manifest:{odd}", "--dry-run")
    assert_user_error(rc, err, "[bold red]data[/x]")


def test_one_long_clip_that_pads_a_split_is_named(tmp_path, fsdd_root):
    # #29's legitimate cousin: a 40 s recording among 1 s digits pads all of them to 40 s; it is named
    import numpy as np
    import pytest
    import soundfile as sf

    from probekit.backbones import get_backbone
    from probekit.cache import plan
    from probekit.datasets import get_dataset

    rows = ["path,labels,split"]
    for i, name in enumerate(["0_jackson_0.wav", "1_theo_3.wav", "2_george_5.wav"]):
        (tmp_path / name).write_bytes((fsdd_root / "recordings" / name).read_bytes())
        rows.append(f"{name},d{i},test")
    sf.write(tmp_path / "long.wav", np.zeros(8000 * 40, dtype=np.float32) + 1e-3, 8000)
    rows.append("long.wav,d9,test")
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    ds = get_dataset(f"manifest:{tmp_path / 'm.csv'}")
    with pytest.warns(UserWarning, match=r"long\.wav: 40\.0 s, .*every clip of the split is padded"):
        plan(get_backbone("bat-tiny", seed=0), ds, "test", device="cpu")
