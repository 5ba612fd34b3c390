"""probekit tune from the command line: a study on real FSDD tokens, --show, --space, --set, errors."""

from __future__ import annotations

import json

import optuna

import probekit.cli.tune as cli_tune
from probekit.cli import main


def test_cli_tunes_shows_and_writes_json(fsdd_train, fsdd_test, fsdd_root, tmp_path, monkeypatch, capsys):
    # The token source (cache extraction of a backbone) is another area's; here the splits are FSDD tokens.
    seen = {}

    def splits(backbone, dataset, protocol, **kw):
        seen.update(backbone=backbone.name, dataset=dataset, protocol=protocol)
        return fsdd_train, None, fsdd_test, protocol or "fsdd"

    monkeypatch.setattr(cli_tune, "token_splits", splits)
    monkeypatch.setenv("PROBEKIT_RESULTS", str(tmp_path / "results"))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space_file = tmp_path / "space.toml"
    space_file.write_text('[space]\nweight_decay = { low = 1e-3, high = 1e-1, log = true }\n')
    out_json = tmp_path / "res.json"
    args = ["tune", "linear", "--backbone", "bat-tiny", "--dataset", "fsdd", "--data-root", str(fsdd_root.parent), "--trials", "3", "--startup", "2",
            "--pruner", "none", "--seeds", "2", "--space", "lr=1e-3:1e-2:log", "--space-file", str(space_file),
            "--only", "lr,weight_decay", "--set", "steps=40", "--set", "eval_every=10", "--set", "dropout=0.1",
            "--no-progress", "--json", str(out_json)]
    assert main(args) == 0
    assert seen == {"backbone": "bat-tiny", "dataset": "fsdd", "protocol": None}
    res = json.loads(out_json.read_text())
    name = res["study_name"]  # the default name ends with a digest of what the trials measure
    assert name.startswith("linear-bat-tiny-fsdd-fsdd-") and len(name) == len("linear-bat-tiny-fsdd-fsdd-") + 8
    assert res["search_space"]["weight_decay"] == {"type": "float", "low": 1e-3, "high": 1e-1, "log": True}
    assert set(res["search_space"]) == {"lr", "weight_decay"} and res["trials"]["complete"] == 3
    assert len(res["seeds"]) == 2 and res["total_steps"] == 3 * 40
    assert (tmp_path / "results" / "studies" / f"{name}.db").is_file()
    capsys.readouterr()

    assert main(["tune", "--show", name]) == 0
    shown = capsys.readouterr().out
    assert "best trial" in shown and "weight_decay" in shown and "95% CI" in shown
    assert "optuna-dashboard sqlite:///" in shown

    assert main(["tune", "--show", "missing"]) == 2
    assert name in capsys.readouterr().err  # lists the studies there
    assert main(["tune", "linear", "--backbone", "bat-tiny", "--dataset", "fsdd", "--space", "lr=5:1", "--no-progress"]) == 2
    assert "low 5.0 is above high 1.0" in capsys.readouterr().err
    assert main(["tune", "linear"]) == 2


def test_cli_tune_writes_a_result_record(fsdd_root, tmp_path, capsys):
    # end to end, nothing mocked: a 3-digit FSDD manifest, a tiny random-init backbone, its token cache
    from probekit.results.records import load_records

    rows = ["path,labels,split"]
    for digit in (0, 1, 2):
        for take, split in ((0, "test"), (1, "test"), (5, "train"), (6, "train"), (7, "train"), (8, "train")):
            name = f"{digit}_jackson_{take}.wav"
            (tmp_path / name).write_bytes((fsdd_root / "recordings" / name).read_bytes())
            rows.append(f"{name},d{digit},{split}")
    manifest = tmp_path / "digits.csv"
    manifest.write_text("\n".join(rows) + "\n")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    results = tmp_path / "records"
    args = ["tune", "linear", "--backbone", "bat-tiny", "--dataset", f"manifest:{manifest}",
            "--cache-dir", str(tmp_path / "cache"), "--results-dir", str(results),
            "--storage", f"sqlite:///{tmp_path / 'study.db'}", "--trials", "2", "--startup", "2",
            "--pruner", "none", "--seeds", "2", "--only", "lr", "--set", "steps=8", "--set", "batch_size=4",
            "--val-fraction", "0.34", "--no-progress"]
    assert main(args) == 0
    out = capsys.readouterr().out
    records = load_records(results, include_published=False)
    assert len(records) == 1
    rec = records[0]
    assert (rec.probe, rec.dataset, rec.split, rec.backbone.name) == ("linear", "manifest:digits.csv", "test", "bat-tiny")
    assert len(rec.seeds) == 2 and rec.tuning is not None and rec.tuning.trials == 2
    assert rec.cache_key
    written = [p for p in results.rglob("*.json")]
    assert len(written) == 1 and "record:" in out and written[0].name in out.replace("\n", "")
