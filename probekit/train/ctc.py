"""Speech recognition with CTC: the character vocabulary, transcript targets, the loss, greedy decoding and
WER/CER -- each as the official BAT code does it (data/bat_audio_datasets.py `CharTokenizer`,
engine/trainer.py `CTCLoss(blank=0, zero_infinity=True)`, engine/evaluator.py `greedy_decode` and
`evaluate_asr` with jiwer).

Targets travel as the labels of an ASR dataset: (clips, S) int64 character ids padded with 0 (the CTC blank,
as the official collate pads them), so `TokenBatch.target_lengths` counts the non-zero ids. The training loop
asks a probe for its `task` (`CTCTask` for the `asr` probe) and lets it compute the loss and the metrics.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from probekit.errors import ConfigError, ProbeError

from probekit.datasets.transcripts import (  # noqa: F401  (re-exported: the vocabulary lives with the data)
    BLANK,
    CHARS,
    decode,
    encode,
    normalize_transcript,
    transcript_targets,
)


def lengths_of(targets: Tensor | np.ndarray) -> Tensor:
    """(B,) characters per padded target row (ids > 0)."""
    t = torch.as_tensor(targets)
    return (t > 0).sum(dim=1).long()


def is_transcript_labels(labels: np.ndarray, multilabel: bool) -> bool:
    """Labels of an ASR dataset: 2-D integer ids (not multi-hot)."""
    return not multilabel and np.ndim(labels) == 2


def greedy_decode(log_probs: Tensor, lengths: Tensor | None = None) -> list[str]:
    """Best path per clip: argmax per frame, repeats collapsed, blanks dropped (the official
    `greedy_decode`). `log_probs` (B, T, C); `lengths` (B,) frames to read per clip (default all)."""
    preds = log_probs.argmax(dim=-1).cpu()
    out = []
    for b, seq in enumerate(preds):
        if lengths is not None:
            seq = seq[: int(lengths[b])]
        ids = [int(t) for i, t in enumerate(seq) if i == 0 or t != seq[i - 1]]
        out.append(decode(ids))
    return out


def wer_cer(refs: list[str], hyps: list[str]) -> dict[str, float]:
    """{"WER", "CER"} in percent (jiwer's corpus-level rates, as the official evaluator)."""
    try:
        import jiwer
    except ImportError as e:  # optional extra
        raise ConfigError("WER/CER need the jiwer library", hint="pip install 'probekit[asr]'") from e
    return {"WER": float(jiwer.wer(refs, hyps) * 100), "CER": float(jiwer.cer(refs, hyps) * 100)}


class CTCTask:
    """What the training loop needs of a CTC probe: its loss on a batch, and WER/CER of a split.

    The probe's forward returns (B, T', C) log-probabilities with T' = grid rows x `upsample`; clip b's
    CTC input length is `valid_rows[b] x upsample` (the official `(frames // patch) * upsample_factor`).
    """

    higher_is_better = False
    loss_names = ("auto", "ctc")

    def __init__(self, upsample: int):
        self.upsample = int(upsample)

    def input_lengths(self, valid_rows: Tensor, frames: int) -> Tensor:
        return (valid_rows.long() * self.upsample).clamp(1, frames)

    def check_data(self, probe_name: str, data, what: str) -> None:
        if not is_transcript_labels(data.labels, data.multilabel):
            raise ProbeError(f"probe {probe_name!r} trains on transcripts, but the {what} data holds class labels",
                             hint="use an ASR dataset (fsdd-asr, librispeech) or a clip-level probe")

    def loss(self, log_probs: Tensor, batch) -> Tensor:
        """torch's CTCLoss(blank=0, reduction='mean', zero_infinity=True) on (T', B, C) log-probs."""
        targets = batch.labels.long()
        lp = log_probs.transpose(0, 1)
        return F.ctc_loss(lp, targets, self.input_lengths(batch.valid_rows, lp.shape[0]), batch.target_lengths,
                          blank=BLANK, reduction="mean", zero_infinity=True)

    @torch.no_grad()
    def transcribe(self, probe, data, indices=None, *, batch_size: int = 64, device=None,
                   amp: bool = True) -> tuple[list[str], list[str]]:
        """(references, greedy hypotheses) in `indices` order; each clip decoded over its own frames."""
        dev = next(probe.parameters()).device if device is None else torch.device(device)
        was = probe.training
        probe.to(dev).eval()
        use_amp = amp and dev.type == "cuda"
        refs, hyps, pos = {}, {}, []
        try:
            for batch in data.batches(probe.request, batch_size, indices=indices, shuffle=False):
                b = batch.to(dev)
                with torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=use_amp):
                    lp = probe(b)
                lp = lp.float()
                lens = self.input_lengths(batch.valid_rows, lp.shape[1])
                for i, r, h in zip(batch.index.tolist(), batch.labels.tolist(), greedy_decode(lp, lens)):
                    refs[i], hyps[i] = decode(r), h
                    pos.append(i)
        finally:
            probe.train(was)
        if not pos:
            raise ProbeError("no clips to transcribe", hint="the indices given for evaluation are empty")
        order = list(range(data.num_clips)) if indices is None else [int(i) for i in indices]
        return [refs[i] for i in order], [hyps[i] for i in order]

    def evaluate(self, probe, data, indices=None, *, batch_size: int = 64, device=None, amp: bool = True):
        """EvalResult with primary "WER" (and "CER"), percent."""
        from probekit.train.metrics import EvalResult

        refs, hyps = self.transcribe(probe, data, indices, batch_size=batch_size, device=device, amp=amp)
        return EvalResult(primary_name="WER", metrics=wer_cer(refs, hyps), num_examples=len(refs))


def check_probe_fits_dataset(probe_name: str, spec) -> None:
    """Before any extraction: refuse a clip-level probe on an ASR dataset and the ASR probe on clip labels."""
    from probekit.probes.base import get_probe_class

    wants = getattr(get_probe_class(probe_name), "task_kind", "classification")
    has = getattr(spec, "task", "classification")
    if wants == "asr" and has != "asr":
        raise ConfigError(f"probe {probe_name!r} trains on transcripts, but dataset {spec.name!r} has class labels",
                          hint="use an ASR dataset (fsdd-asr, librispeech) or a clip-level probe")
    if wants != "asr" and has == "asr":
        raise ConfigError(f"probe {probe_name!r} predicts one label per clip, but dataset {spec.name!r} is an ASR "
                          "dataset (transcripts)", hint="use probe 'asr' on it")
