"""The ASR probe: BAT's `ASR_Head` (official models/heads.py, LibriSpeech config) on per-layer patch tokens.

softmax-gated sum of every layer's patch tokens -> mean over the frequency patches -> ConvTranspose1d
(kernel = stride = `upsample`, 8 officially) along time -> 2-layer bidirectional LSTM (hidden 512, dropout
0.2 between the layers, run in float32 outside autocast) -> [LayerNorm(2 x hidden, eps 1e-6)] -> dropout ->
linear to the 29 characters -> log-softmax. Trained with CTC and scored by greedy decoding and WER/CER
(`probekit.train.ctc.CTCTask`).

forward returns (B, T x upsample, C) log-probabilities: the official head's (T', B, C) output transposed
to probekit's batch-first layout. Tokens of a split are padded to one grid; with `pack=True` (default) the
LSTM reads only each clip's `valid_rows x upsample` frames, which is exactly the official test (batch size 1,
no padding); `pack=False` lets it read the padding too, as the official padded training batches do. Frames
past a clip's length are never scored (CTC input lengths, decoding).
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from probekit.errors import ProbeError
from probekit.probes.base import Probe, register_probe
from probekit.probes.cgp import _GatedMixin, _layer_request
from probekit.probes.constraints import Interval
from probekit.probes.space import Choice, Float, Param
from probekit.tokens import TokenBatch
from probekit.train.ctc import CTCTask


@register_probe
class ASRProbe(_GatedMixin, Probe):
    """BAT's ASR head: gated all-layer patch tokens, frequency mean, transposed-conv upsampling, BiLSTM, CTC."""

    name = "asr"
    display_name = "ASR"
    task_kind: ClassVar[str] = "asr"  # reads transcripts (DatasetSpec.task == "asr"), not clip labels
    description = "ASR probe (BAT ASR_Head): gated layers, frequency mean, x8 transposed conv, 2-layer BiLSTM, CTC"
    search_space: ClassVar[dict[str, Param]] = {
        "dropout": Float(0.0, 0.5),
        "layer_norm": Choice((True, False)),
    }
    param_constraints: ClassVar[dict[str, list]] = {
        "upsample": [Interval("int", 1, None)], "hidden": [Interval("int", 1, None)],
        "lstm_layers": [Interval("int", 1, None)], "lstm_dropout": [Interval("real", 0, 1, "left")],
        "dropout": [Interval("real", 0, 1, "left")],
    }

    def __init__(
        self,
        *,
        num_layers: int,
        embed_dim: int,
        num_classes: int,
        upsample: int = 8,
        hidden: int = 512,
        lstm_layers: int = 2,
        lstm_dropout: float = 0.2,
        layer_norm: bool = True,
        dropout: float = 0.2,
        layers: str | tuple[int, ...] = "all",
        pack: bool = True,
    ):
        super().__init__()
        self._store_hparams(locals())
        self.request, n_read = _layer_request(layers, num_layers, patch=True, cls=False)
        self.task = CTCTask(upsample)
        self.pack = bool(pack)
        self.upsample = nn.ConvTranspose1d(embed_dim, embed_dim, kernel_size=upsample, stride=upsample)
        self.block_attention = nn.Parameter(torch.ones(n_read))  # official init: ones (uniform softmax)
        self.lstm = nn.LSTM(input_size=embed_dim, hidden_size=hidden, num_layers=lstm_layers, batch_first=True,
                            bidirectional=True, dropout=lstm_dropout if lstm_layers > 1 else 0.0)
        self.ln = nn.LayerNorm(2 * hidden, eps=1e-6) if layer_norm else nn.Identity()
        self.dropout = nn.Dropout(p=dropout)
        self.fc = nn.Linear(2 * hidden, num_classes)

    def decayed_parameters(self) -> list[nn.Parameter]:
        # the official probe optimiser (engine/optim.py) decays every parameter of ndim >= 2 except the
        # gates: here fc, the LSTM matrices and the transposed-conv kernel (biases, norms, gates: none)
        return [p for n, p in self.named_parameters() if p.ndim >= 2 and p.requires_grad
                and n != "block_attention"]

    def frames(self, batch: TokenBatch) -> Tensor:
        """(B, T, D): the gate-mixed patch tokens averaged over the frequency patches."""
        patch = self._patch(batch)  # (B, L, N, D), time-major
        grid = getattr(batch, "grid", None)
        B, L, N, D = patch.shape
        if grid is None or int(grid[0]) * int(grid[1]) != N:
            raise ProbeError(f"probe 'asr' needs the token grid (time x frequency) of its {N} patch tokens, "
                             f"got grid={grid}", hint="read tokens through probekit's cache, online or "
                             "InMemoryTokens sources (they carry the grid)")
        x = patch.reshape(B, L, int(grid[0]), int(grid[1]), D)
        a = torch.softmax(self.block_attention, dim=0).to(x.dtype).reshape(1, -1, 1, 1, 1)
        return (x * a).sum(dim=1).mean(dim=2)

    def forward(self, batch: TokenBatch) -> Tensor:
        x = self.frames(batch)  # (B, T, D)
        x = self.upsample(x.transpose(1, 2)).transpose(1, 2)  # (B, T * upsample, D)
        x = x.to(self.lstm.weight_ih_l0.dtype)
        lengths = self.task.input_lengths(batch.valid_rows, x.shape[1]).cpu()
        with torch.autocast(device_type=x.device.type, enabled=False):
            if self.pack and bool((lengths < x.shape[1]).any()):
                # each clip's own frames only: what the official evaluator sees at test batch size 1 (no padding)
                packed = nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
                x, _ = nn.utils.rnn.pad_packed_sequence(self.lstm(packed)[0], batch_first=True,
                                                        total_length=x.shape[1])
            else:
                x, _ = self.lstm(x)
        logits = self.fc(self.dropout(self.ln(x)))  # (B, T', C)
        return F.log_softmax(logits, dim=-1)
