"""Apply a trained probe to new audio: `probekit predict --record R.json AUDIO...` and `Results.predict`.

`probekit.evaluate` (and `probekit probe`) save the probe of the first seed beside its result record,
`<record>.probe.safetensors` (`probekit.probes.io.save_probe`), with what rebuilds its input in the
header: the backbone's cache key (name, weights sha256 or random-init seed, architecture, the frontend
config of the scored split) plus the precision, the stored layers and the token dtype, the class names,
the decision threshold (multi-label) and the head chosen on validation data (layer sweep).

Prediction runs each file through the same code as extraction: `ClipFeatures` (decode + frontend on the
CPU), the encoder under the recorded precision, the recorded layers, and the token dtype's rounding
(`encode_for_storage` then `decode_to_float`, what the cache reader hands a probe), so a clip scores as it
did in evaluation.

What a prediction is follows the probe (`Predictor.kind`): class scores ("scores"); the greedy CTC
transcript of the ASR probe ("transcript", each file decoded over its own frames as `CTCTask.transcribe`);
the events of a frame-wise head ("events": the probe's recorded threshold and median filter on its per-row
probabilities, rows timed by the recorded frontend and token grid, `train.events.frames_to_events`); VQT
("live": the saved query tokens run inside the rebuilt encoder on each file's frontend features). Records
and their probe files may live on an fsspec URL (`s3://...`, `probekit.results.store.record_location`).
"""

from __future__ import annotations

import copy
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from probekit.errors import ConfigError, ProbeError

__all__ = ["PROBE_SUFFIX", "Predictor", "predict_files", "probe_path_for", "store_probe", "trained_probe"]

PROBE_SUFFIX = ".probe.safetensors"


def probe_path_for(record_path: str | os.PathLike) -> Path:
    """`dir/linear--fsdd.json` -> `dir/linear--fsdd.probe.safetensors`."""
    from probekit.results.store import record_location

    p = record_location(record_path)  # a local path, or a record's fsspec URL
    return p.with_name(p.stem + PROBE_SUFFIX)


# ---- saving (evaluate) -----------------------------------------------------------------------------------
def _record_stamp(record) -> dict:
    """What ties a probe file to one run of its record: a rerun of the same key in the same second still
    differs in its measured training time."""
    return {"date": record.date, "key": [str(k) for k in record.key],
            "train_s": [s.train_s for s in record.seeds], "score": record.score}


def trained_probe(first: tuple[int, Any], record, token_key: Mapping[str, Any], *, multilabel: bool,
                  cv: bool) -> dict:
    """What `store_probe` writes for one record: the first seed's probe and the facts of its input.

    first: (seed, ProtocolResult) of the first seed. token_key: the content key of the scored split's
    tokens (cache store key or online key): backbone (with precision), frontend, layers, dtype."""
    seed, res = first
    run = next(s for s in record.seeds if s.seed == seed)
    head = run.extras.get("best_layer")
    meta = {
        "record": _record_stamp(record),
        "seed": int(seed),
        "backbone": {"name": record.backbone.name, "checkpoint_sha256": record.backbone.checkpoint_sha256,
                     "init_seed": record.backbone.init_seed, "cache_key": dict(token_key["backbone"])},
        "tokens": {"frontend": dict(token_key["frontend"]), "layers": [int(i) for i in token_key["layers"]],
                   "dtype": str(token_key["dtype"]), "precision": token_key["backbone"].get("precision", "float32")},
        "classes": list(record.class_names),
        "multilabel": bool(multilabel),
        # multi-label: the threshold chosen on validation data for F1 (`f1_threshold`), else 0.5
        "threshold": float(run.extras.get("f1_threshold", 0.5)) if multilabel else None,
        "head": None if head is None else int(head),
        "head_name": run.extras["head_names"][int(head)] if head is not None and "head_names" in run.extras else None,
        "eval": {"batch_size": int(res.config.eval_batch_size), "amp": bool(res.config.amp)},
        "dataset": record.dataset,
        "protocol": record.protocol,
    }
    if cv:  # each fold trains its own probe; this is the last one
        meta["note"] = "cross-validation: the probe of the last fold"
    return {"probe": res.probe, "metadata": meta}


def store_probe(record_path: str | os.PathLike, trained: Mapping[str, Any] | None) -> Path | None:
    """Save `trained` (from `trained_probe`) beside the record; with None remove a probe file left there by
    an earlier run of the same record (it would no longer match the record)."""
    from probekit.probes.io import save_probe

    path = probe_path_for(record_path)
    if trained is None:
        path.unlink(missing_ok=True)
        return None
    return save_probe(trained["probe"], path, metadata=trained["metadata"])


# ---- prediction ----------------------------------------------------------------------------------------
def _is_object_path(x: Any) -> bool:
    return type(x).__name__ == "ObjectPath"  # probekit.cache.fs, not imported for local records

@dataclass(frozen=True)
class _Clip:  # what ClipFeatures reads of a dataset clip
    id: str
    path: Path
    offset: float = 0.0
    duration: float | None = None


class Predictor:
    """A saved probe with the backbone it reads, ready for `predict(paths)`.

    Args:
        record: a result record file (its probe file beside it), or a read ResultRecord with `probe_path`.
        checkpoint: the backbone's weights file (must have the record's sha256); None for a random-init record.
        backbone: an already built backbone instead of rebuilding it by name (its weights are checked too).
        device: where the encoder and the probe run.
        trust_checkpoint: allow full unpickling of the checkpoint.
        batch_size: files per encoder call.
    """

    def __init__(self, record, *, checkpoint: str | os.PathLike | None = None, backbone: Any = None,
                 device: str = "auto", trust_checkpoint: bool = False, batch_size: int = 16,
                 probe_path: str | os.PathLike | None = None):
        from probekit._device import resolve_device
        from probekit.probes.io import load_probe, read_probe_header
        from probekit.results.store import read_record

        from probekit.results.store import record_location

        if isinstance(record, (str, os.PathLike)) or _is_object_path(record):
            record_path = record_location(record)  # a local file, or an fsspec URL (s3://...)
            record = read_record(record_path)
        else:
            record_path = record.path
        if probe_path is None:
            if record_path is None:
                raise ConfigError("this record was not read from a file, so no saved probe can be found beside it",
                                  hint="pass probe_path=, or write the record (evaluate(write=True))")
            probe_path = probe_path_for(record_path)
        probe_path = record_location(probe_path)
        if not probe_path.is_file():
            raise ProbeError(f"{probe_path}: no saved probe beside record {record_path}",
                             hint="rerun `probekit probe ...` (probes are saved by default; --save-probe)")
        local_probe = self._local_copy(probe_path)
        header = read_probe_header(local_probe)
        meta = header.get("metadata") or {}
        stamp = meta.get("record") or {}
        if json.dumps(stamp, sort_keys=True) != json.dumps(_record_stamp(record), sort_keys=True):
            raise ProbeError(f"{probe_path}: saved by another run (record date {stamp.get('date')!r}) than "
                             f"{record_path} (date {record.date!r})",
                             hint="rerun `probekit probe` to save the probe of this record")
        self.record, self.record_path, self.probe_path, self.meta = record, record_path, probe_path, meta
        self.device = resolve_device(device)
        self.batch_size = int(batch_size)
        if self.batch_size < 1:
            raise ConfigError(f"batch size must be >= 1, got {batch_size}")
        self.classes = list(meta["classes"])
        self.multilabel = bool(meta["multilabel"])
        self.threshold = float(meta["threshold"]) if meta.get("threshold") is not None else 0.5
        self.backbone = self._backbone(backbone, checkpoint, trust_checkpoint)
        tok = meta["tokens"]
        from probekit.cache.live import needs_encoder
        from probekit.probes import get_probe_class

        cls = get_probe_class(header["probe"])
        live = needs_encoder(cls)  # VQT: its query tokens run inside the encoder (checked when attached)
        self.probe = load_probe(local_probe, embed_dim=self.backbone.embed_dim,
                                num_layers=None if live else len(tok["layers"]), num_classes=len(self.classes),
                                device=self.device)
        # what a prediction is: a clip's class scores, a transcript (ASR, CTC), or events (frame-wise heads)
        self.kind = ("transcript" if getattr(cls, "task_kind", None) == "asr" else
                     "events" if getattr(cls, "frame_wise", False) else "live" if live else "scores")

    _tmp = None

    def _local_copy(self, path):
        """`path` itself, or for a probe file on an object store a local copy (safetensors reads files)."""
        if isinstance(path, Path):
            return path
        import tempfile

        self._tmp = tempfile.TemporaryDirectory(prefix="probekit-probe-")  # removed with the Predictor
        local = Path(self._tmp.name) / path.name
        try:
            local.write_bytes(path.read_bytes())
        except OSError as e:
            raise ProbeError(f"{path}: cannot read the saved probe: {e.strerror or e}",
                             hint="check the URL and the object store's credentials") from None
        return local

    def _backbone(self, bb, checkpoint, trust_checkpoint):
        from probekit.audio.frontends import config_from_dict
        from probekit.cache.keys import canonical, key_differences
        from probekit.errors import BackboneError

        want = self.meta["backbone"]
        sha, seed = want.get("checkpoint_sha256"), want.get("init_seed")
        recorded = f"sha256 {sha}" if sha else f"random init (seed {seed})"
        if bb is None:
            from probekit.backbones import get_backbone

            if sha and checkpoint is None:
                raise BackboneError(f"record {self.record_path} was measured with {want['name']} weights {recorded}",
                                    hint="pass that weights file with --checkpoint")
            opts = {"use_ema": bool(want["cache_key"].get("weights", {}).get("use_ema", False))} if sha else {}
            bb = get_backbone(want["name"], checkpoint, seed=int(seed or 0), trust_checkpoint=trust_checkpoint,
                              **opts)
        got = (f"sha256 {bb.checkpoint_sha256}" if bb.checkpoint_sha256
               else f"random init (seed {getattr(bb, 'seed', None)})")
        if bb.name != want["name"] or (bb.checkpoint_sha256 or None) != (sha or None) or (
                not sha and getattr(bb, "seed", None) != seed):
            where = f" ({checkpoint})" if checkpoint is not None else ""
            raise BackboneError(
                f"the probe of {self.record_path} was trained on {want['name']} weights {recorded}; "
                f"given {bb.name} weights {got}{where}",
                hint="pass the checkpoint the record names (its sha256 is in the record's backbone field)")
        config = config_from_dict(self.meta["tokens"]["frontend"])
        if bb.frontend.config != config:
            bb = bb.with_frontend(config)
        key = dict(bb.cache_key())
        key["precision"] = self.meta["tokens"]["precision"]
        diff = key_differences(canonical(want["cache_key"]), canonical(key))
        if diff:  # same weights, but another architecture or frontend than evaluation used
            raise BackboneError(f"{bb.name} does not rebuild the tokens the probe of {self.record_path} was "
                                f"trained on: " + "; ".join(diff[:3]).replace("store has", "probe has"),
                                hint="use the probekit version (and backbone options) the record was made with")
        return bb.eval().to(self.device)

    # ---- tokens ------------------------------------------------------------------------------------
    def _features(self, paths: Sequence[Path]):
        """(features, valid frames) per readable file, and {position: error} for the others."""
        from probekit.cache.pipeline import ClipFeatures

        clips = [_Clip(str(p), Path(p)) for p in paths]
        source = ClipFeatures(clips, copy.deepcopy(self.backbone.frontend).to("cpu"), self.backbone.sample_rate)
        good, errors = {}, {}
        for i, p in enumerate(paths):
            if not Path(p).exists():
                errors[i] = f"{p}: file not found"
                continue
            if Path(p).is_dir():
                errors[i] = f"{p}: a directory, not an audio file"
                continue
            try:
                _, feats, valid, err = source[i]
            except Exception as e:  # noqa: BLE001 - one unreadable file must not stop the others
                feats, err = None, f"{p}: {type(e).__name__}: {str(e).strip()[:200]}"
            if err is not None:
                errors[i] = err
            else:
                good[i] = (feats, valid)
        return good, errors

    def _tokens(self, feats):
        """Tokens of a batch of features exactly as the cache holds them (layers, dtype rounding)."""
        import torch

        from probekit.cache.codec import decode_to_float, encode_for_storage

        tok = self.meta["tokens"]
        dev, prec, dtype = self.device, tok["precision"], tok["dtype"]
        amp = prec.startswith("autocast")
        amp_dtype = torch.bfloat16 if prec.endswith("bfloat16") else torch.float16
        x = torch.stack([f for f, _ in feats]).to(dev)
        valid = torch.tensor([v for _, v in feats], dtype=torch.long, device=dev)
        layer_idx = torch.tensor(tok["layers"], dtype=torch.long, device=dev)
        with torch.inference_mode(), torch.autocast(dev.type, dtype=amp_dtype, enabled=amp):
            lt = self.backbone.encode(x, valid)
            patch = lt.patch.index_select(1, layer_idx)
            cls = lt.cls.index_select(1, layer_idx)
        out = []
        for t in (patch, cls):
            arrays = encode_for_storage(t, dtype)
            out.append(decode_to_float(arrays[""], dtype, arrays.get("_scale")))
        return out[0], out[1], lt.valid_rows.cpu().numpy(), tuple(int(g) for g in lt.grid)

    def _batches(self, good: Mapping[int, Any]):
        """(positions, features) of the readable files, `batch_size` at a time."""
        order = sorted(good)
        for s in range(0, len(order), self.batch_size):
            rows = order[s: s + self.batch_size]
            yield rows, [good[i] for i in rows]

    def _live_scores(self, feats) -> np.ndarray:
        """VQT: the saved query tokens run inside the live encoder on a batch of frontend features."""
        import torch

        from probekit.cache.live import InputBatch

        tok, dev = self.meta["tokens"], self.device
        prec = tok.get("precision", "float32")
        amp = prec.startswith("autocast")
        amp_dtype = torch.bfloat16 if prec.endswith("bfloat16") else torch.float16
        x = torch.stack([f for f, _ in feats]).to(dev)
        valid = torch.tensor([v for _, v in feats], dtype=torch.long)
        n = len(feats)
        batch = InputBatch(None, None, torch.zeros(n, dtype=torch.long, device=dev),
                           torch.div(valid + 15, 16, rounding_mode="floor").to(dev), torch.arange(n),
                           features=x, valid_frames=valid.to(dev), backbone=self.backbone)
        self.probe.eval()
        with torch.inference_mode(), torch.autocast(dev.type, dtype=amp_dtype, enabled=amp):
            logits = self.probe(batch).float()
        return (torch.sigmoid(logits) if self.multilabel else torch.softmax(logits, dim=-1)).cpu().numpy()

    def scores(self, paths: Sequence[str | os.PathLike]) -> tuple[np.ndarray, dict[int, str]]:
        """(n, C) scores of the readable files (NaN rows for the others) and {position: error}.
        Frame-wise (event) heads: (n, T, C) per token row; ASR: see `transcripts`."""
        import torch

        from probekit.tokens import InMemoryTokens
        from probekit.train.fit import predict

        if self.kind == "transcript":
            raise ProbeError(f"{self.probe_path}: {self.probe.name!r} transcribes speech; it has no class scores",
                             hint="use Predictor.transcripts(paths) or predict(paths) (column 'transcript')")
        paths = [Path(p) for p in paths]
        good, errors = self._features(paths)
        out = None if self.kind == "events" else np.full((len(paths), len(self.classes)), np.nan, dtype=np.float32)
        ev = self.meta.get("eval", {})
        for rows, feats in self._batches(good):
            if self.kind == "live":
                out[rows] = self._live_scores(feats)
                continue
            patch, cls, valid_rows, grid = self._tokens(feats)
            data = InMemoryTokens(patch, cls, np.zeros(len(rows), dtype=np.int64), num_classes=len(self.classes),
                                  multilabel=self.multilabel, grid=grid, valid_rows=valid_rows)
            with torch.no_grad():
                sc = predict(self.probe, data, batch_size=int(ev.get("batch_size", 256)), device=self.device,
                             amp=bool(ev.get("amp", True)))
            if sc.ndim == (4 if self.kind == "events" else 3):  # a head per layer: the one chosen on validation data
                head = self.meta.get("head")
                if head is None:
                    raise ProbeError(f"{self.probe_path}: a probe with {sc.shape[1]} heads and no chosen head",
                                     hint="cross-validated layer sweeps choose a head per fold; predict with "
                                     "another probe")
                sc = sc[:, int(head)]
            if out is None:  # event rows: (n, T, C), T the token grid's rows
                out = np.full((len(paths), *sc.shape[1:]), np.nan, dtype=np.float32)
                self._grid = grid
            out[rows] = sc
        if out is None:
            out = np.full((len(paths), 0, len(self.classes)), np.nan, dtype=np.float32)
        return out, errors

    def transcripts(self, paths: Sequence[str | os.PathLike]) -> tuple[list[str | None], dict[int, str]]:
        """ASR probe: the greedy CTC transcript of each readable file (None for the others), {position: error}.
        Each file is decoded over its own frames, as in evaluation (`CTCTask.transcribe`)."""
        import torch

        from probekit.tokens import TokenBatch
        from probekit.train.ctc import greedy_decode

        if self.kind != "transcript":
            raise ProbeError(f"{self.probe_path}: {self.probe.name!r} is not a speech recognition (CTC) probe",
                             hint="use Predictor.predict(paths) or scores(paths)")
        paths = [Path(p) for p in paths]
        good, errors = self._features(paths)
        out: list[str | None] = [None] * len(paths)
        self.probe.eval()
        for rows, feats in self._batches(good):
            patch, cls, valid_rows, grid = self._tokens(feats)
            vr = torch.as_tensor(valid_rows, dtype=torch.long)
            batch = TokenBatch(patch, None, torch.zeros(len(rows), 1, dtype=torch.long, device=self.device),
                               vr.to(self.device), torch.arange(len(rows)), grid)
            with torch.inference_mode():
                lp = self.probe(batch).float()
            for i, text in zip(rows, greedy_decode(lp, self.probe.task.input_lengths(vr, lp.shape[1]))):
                out[i] = text
        return out, errors

    def events(self, paths: Sequence[str | os.PathLike]) -> tuple[list[list[tuple[float, float, str]] | None], dict[int, str]]:
        """Frame-wise heads: each readable file's events (onset s, offset s, label), the record's post-processing
        (the probe's threshold and median filter) on its token rows timed by the recorded frontend and grid."""
        from probekit.audio.frontends import config_from_dict
        from probekit.datasets.events import file_duration
        from probekit.train.events import frames_to_events, seconds_per_row

        if self.kind != "events":
            raise ProbeError(f"{self.probe_path}: {self.probe.name!r} scores whole clips; it detects no events",
                             hint="use Predictor.predict(paths)")
        paths = [Path(p) for p in paths]
        sc, errors = self.scores(paths)
        post = self.probe.postprocessing()
        out: list[list[tuple[float, float, str]] | None] = [None] * len(paths)
        if sc.shape[1] == 0:
            return out, errors
        row_s = seconds_per_row(config_from_dict(self.meta["tokens"]["frontend"]), self._grid)
        for i, p in enumerate(paths):
            if i in errors:
                continue
            rows = sc.shape[1]
            dur = file_duration(p)  # rows starting after the audio are not read (as `EventTask.valid_rows`)
            if dur is not None:
                rows = int(min(rows, max(1, math.ceil(dur / row_s - 1e-9))))
            found = []
            for c, name in enumerate(self.classes):
                for on, off in frames_to_events(sc[i, :rows, c], row_s, post["threshold"], post["median_filter"]):
                    found.append((float(on), float(off), name))
            out[i] = sorted(found)
        return out, errors

    def predict(self, paths: Sequence[str | os.PathLike]):
        """A pandas DataFrame, one row per file in order: path, prediction (the top class; multi-label:
        every class at or above the threshold, by score, joined with ';'), score (the top class's),
        error (None, or why the file could not be read), then one score column per class.

        ASR probe: path, transcript (greedy CTC), error. Frame-wise (event) heads: one row per detected
        event, path, onset, offset (seconds), label, error (a file with no event: one row, label None)."""
        import pandas as pd

        paths = [str(p) for p in paths]
        if self.kind == "transcript":  # ASR: path, transcript, error
            texts, errors = self.transcripts(paths)
            return pd.DataFrame({"path": paths, "transcript": texts, "error": [errors.get(i) for i in range(len(paths))]},
                                columns=["path", "transcript", "error"])
        if self.kind == "events":  # one row per event (onset, offset in seconds); a file without any: one empty row
            found, errors = self.events(paths)
            rows = []
            for i, p in enumerate(paths):
                evs = found[i] or [(np.nan, np.nan, None)]
                rows += [{"path": p, "onset": on, "offset": off, "label": lab, "error": errors.get(i)}
                         for on, off, lab in evs]
            return pd.DataFrame(rows, columns=["path", "onset", "offset", "label", "error"])
        sc, errors = self.scores(paths)
        rows = []
        for i, p in enumerate(paths):
            row: dict[str, Any] = {"path": p, "prediction": None, "score": np.nan, "error": errors.get(i)}
            if i not in errors:
                s = sc[i]
                top = int(np.argmax(s))
                if self.multilabel:
                    above = [j for j in np.argsort(-s, kind="stable") if s[j] >= self.threshold]
                    row["prediction"] = ";".join(self.classes[j] for j in above)
                else:
                    row["prediction"] = self.classes[top]
                row["score"] = float(s[top])
            rows.append(row)
        df = pd.DataFrame(rows, columns=["path", "prediction", "score", "error"])
        names = [c if c not in df.columns else f"class:{c}" for c in self.classes]
        return pd.concat([df, pd.DataFrame(sc, columns=names)], axis=1)


def predict_files(record, paths: Sequence[str | os.PathLike], **options):
    """`Predictor(record, **options).predict(paths)`: a DataFrame of predictions (see `Predictor.predict`)."""
    return Predictor(record, **options).predict(paths)
