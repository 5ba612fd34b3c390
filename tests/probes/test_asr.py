"""The ASR probe against re-derivations of the official BAT code (float64, outputs and gradients <= 1e-10),
and its training on real FSDD tokens read as a tiny ASR task: WER falls far below the untrained probe's."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from probekit.datasets.transcripts import CHARS, transcript_targets
from probekit.probes import make_probe
from probekit.tokens import InMemoryTokens, TokenBatch
from probekit.train import TrainConfig, fit
from probekit.train.ctc import CTCTask, greedy_decode, wer_cer


# ---- re-derivations of the official code (BAT_ICML2026 @ HEAD) ----------------------------------------
class OfficialASRHead(nn.Module):
    """models/heads.py `ASR_Head` (norm_layer = LayerNorm(eps=1e-6) as models/vit.py with head_norm=True).
    One change for the float64 check: the official `x.float()` before the LSTM casts to the LSTM's dtype."""

    def __init__(self, num_classes=29, dim=768, num_layers=12, norm=True, upsample_factor=8, dropout=0.0,
                 hidden=512):
        super().__init__()
        self.upsample = nn.ConvTranspose1d(dim, dim, kernel_size=upsample_factor, stride=upsample_factor)
        self.block_attention = nn.Parameter(torch.ones(num_layers))
        self.lstm = nn.LSTM(input_size=dim, hidden_size=hidden, num_layers=2, batch_first=True, bidirectional=True,
                            dropout=0.2)
        self.ln = nn.LayerNorm(2 * hidden, eps=1e-6) if norm else nn.Identity()
        self.dropout = nn.Dropout(p=dropout)
        self.fc = nn.Linear(2 * hidden, num_classes, bias=True)

    def forward(self, feat_cache):
        x = feat_cache["patch_tokens"]  # L, B, D, T, F
        a = torch.softmax(self.block_attention, dim=0).reshape(-1, 1, 1, 1, 1)
        x = x * a
        x = x.sum(dim=0)
        x = x.mean(dim=3)  # B, D, T
        x = self.upsample(x)
        x = x.transpose(1, 2)
        x = x.to(self.lstm.weight_ih_l0.dtype)
        x, _ = self.lstm(x)
        logits = self.fc(self.dropout(self.ln(x)))
        return F.log_softmax(logits, dim=-1).transpose(0, 1)  # T, B, C


class OfficialCharTokenizer:
    """data/bat_audio_datasets.py `CharTokenizer`."""

    def __init__(self):
        self.chars = ["<blank>", " ", "'"] + [chr(i) for i in range(97, 123)]
        self.char2idx = {c: i for i, c in enumerate(self.chars)}
        self.idx2char = dict(enumerate(self.chars))

    def encode(self, text):
        text = re.sub(r"[^a-z ']", "", text.lower())
        return [self.char2idx[c] for c in text]

    def decode(self, ids, ignore_blanks=True):
        return "".join([self.idx2char[i] for i in ids if not (ignore_blanks and i == 0)])


def official_greedy_decode(logits, tokenizer):
    """engine/evaluator.py `greedy_decode`."""
    preds = torch.argmax(logits, dim=-1)
    out = []
    for seq in preds:
        collapsed = [t.item() for i, t in enumerate(seq) if i == 0 or t != seq[i - 1]]
        out.append(tokenizer.decode(collapsed, ignore_blanks=True))
    return out


def _tokens(B=3, L=4, T=5, Fq=3, D=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    patch = torch.randn(B, L, T * Fq, D, generator=g, dtype=torch.float64)  # probekit: (B, L, N, D) time-major
    official = patch.reshape(B, L, T, Fq, D).permute(1, 0, 4, 2, 3).contiguous()  # (L, B, D, T, F)
    return patch, official


@pytest.mark.parametrize("layer_norm", [True, False])
def test_asr_probe_matches_official_head_float64(layer_norm):
    B, L, T, Fq, D = 3, 4, 5, 3, 16
    probe = make_probe("asr", num_layers=L, embed_dim=D, num_classes=len(CHARS), hidden=24, layer_norm=layer_norm,
                       seed=0).double().eval()
    ref = OfficialASRHead(num_classes=len(CHARS), dim=D, num_layers=L, norm=layer_norm, hidden=24).double().eval()
    with torch.no_grad():
        probe.block_attention.copy_(torch.randn(L, dtype=torch.float64))  # non-uniform gates
    assert ref.load_state_dict(probe.state_dict()) is not None  # the official parameter names, one to one
    patch, official = _tokens(B, L, T, Fq, D)
    patch.requires_grad_(True)
    official = official.detach().requires_grad_(True)
    batch = TokenBatch(patch, None, torch.zeros(B, 1, dtype=torch.long), torch.full((B,), T), torch.arange(B), (T, Fq))
    ours = probe(batch)
    theirs = ref({"patch_tokens": official})
    assert ours.shape == (B, T * 8, len(CHARS))
    assert (ours - theirs.transpose(0, 1)).abs().max() <= 1e-10
    w = torch.randn(ours.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    (ours * w).sum().backward()
    (theirs.transpose(0, 1) * w).sum().backward()
    # the token gradients in the official (L, B, D, T, F) layout
    g_ours = patch.grad.reshape(B, L, T, Fq, D).permute(1, 0, 4, 2, 3)
    assert (g_ours - official.grad).abs().max() <= 1e-10
    ref_params = dict(ref.named_parameters())
    for name, p in probe.named_parameters():
        assert (p.grad - ref_params[name].grad).abs().max() <= 1e-10, name


def test_ctc_loss_and_decoding_match_the_official_trainer_and_evaluator():
    g = torch.Generator().manual_seed(1)
    B, Tp, C = 4, 24, len(CHARS)
    log_probs = torch.randn(B, Tp, C, generator=g, dtype=torch.float64).log_softmax(-1).requires_grad_(True)
    tok = OfficialCharTokenizer()
    texts = ["Seven", "it's ONE", "z", "two  three"]
    targets = torch.as_tensor(transcript_targets([type("C", (), {"transcript": t, "id": t, "path": "-"})() for t in texts]))
    # the official collate: pad_sequence(padding_value=0); lengths as given
    off_y = nn.utils.rnn.pad_sequence([torch.tensor(tok.encode(t)) for t in texts], batch_first=True)
    assert torch.equal(targets, off_y)
    valid_rows = torch.tensor([3, 2, 1, 3])  # time rows of real audio; x8 frames each (official input_length)
    batch = TokenBatch(None, None, targets, valid_rows, torch.arange(B), (3, 1))
    task = CTCTask(8)
    ours = task.loss(log_probs, batch)
    lp2 = log_probs.detach().clone().requires_grad_(True)
    theirs = nn.CTCLoss(blank=0, zero_infinity=True)(lp2.transpose(0, 1), off_y, valid_rows * 8,
                                                      torch.tensor([len(tok.encode(t)) for t in texts]))
    assert abs(ours.item() - theirs.item()) <= 1e-12 * abs(theirs.item())
    ours.backward()
    theirs.backward()
    assert (log_probs.grad - lp2.grad).abs().max() <= 1e-10
    # greedy decoding: each clip over its own frames == the official evaluator at test batch size 1
    lens = valid_rows * 8
    ours_txt = greedy_decode(log_probs.detach(), lens)
    theirs_txt = [official_greedy_decode(log_probs.detach()[b : b + 1, : lens[b]], tok)[0] for b in range(B)]
    assert ours_txt == theirs_txt
    import jiwer

    refs = [tok.decode(off_y[b][: len(tok.encode(texts[b]))].tolist()) for b in range(B)]
    m = wer_cer(refs, ours_txt)
    assert m == {"WER": jiwer.wer(refs, ours_txt) * 100, "CER": jiwer.cer(refs, ours_txt) * 100}


WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def _asr_tokens(data: InMemoryTokens) -> InMemoryTokens:
    """The FSDD fixture tokens with transcripts (the digit's word) as CTC targets."""
    clips = [type("C", (), {"transcript": WORDS[d], "id": str(i), "path": "-"})() for i, d in enumerate(data.labels)]
    return InMemoryTokens(data.patch, data.cls, transcript_targets(clips), num_classes=len(CHARS), multilabel=False,
                          grid=data.grid, valid_rows=data.valid_rows)


def test_asr_probe_learns_fsdd_words(fsdd_train, fsdd_test):
    train, test = _asr_tokens(fsdd_train), _asr_tokens(fsdd_test)
    probe = make_probe("asr", num_layers=train.num_layers, embed_dim=train.embed_dim, num_classes=len(CHARS),
                       hidden=64, dropout=0.0, lstm_dropout=0.0, seed=0)
    before = probe.task.evaluate(probe, test)["WER"]
    cfg = TrainConfig(steps=300, batch_size=32, lr=1e-2, warmup_steps=20, weight_decay=0.0, seed=0, loss="ctc")
    res = fit(probe, train, config=cfg, val_data=test, progress=False)
    after = res.val_metrics
    assert before >= 99.0  # untrained: nothing right
    # measured: 70.0 % WER after 300 steps (these stand-in tokens are weak; the digit probe gets ~60 %)
    assert after.primary_name == "WER" and after["WER"] < 85.0, (before, after.metrics)
    assert after["CER"] < after["WER"]
    assert res.history[-1]["loss"] < 0.5 * res.history[0]["loss"]


def test_cli_probe_asr_on_fsdd_asr_writes_wer_records_and_the_leaderboard_column(fsdd_root, tmp_path, capsys):
    import json
    import shutil

    from probekit.cli import main

    root = tmp_path / "fsdd"
    (root / "recordings").mkdir(parents=True)
    for d in range(10):
        for t in (0, 5, 6):
            shutil.copy(fsdd_root / "recordings" / f"{d}_jackson_{t}.wav", root / "recordings")
    res = tmp_path / "res"
    args = ["probe", "asr", "-b", "bat-tiny", "-d", "fsdd-asr", "--data-root", str(root), "--set", "steps=4",
            "--set", "batch_size=8", "--set", "hidden=16", "--cache-dir", str(tmp_path / "cache"),
            "--results-dir", str(res), "--device", "cpu", "--yes"]
    assert main(args) == 0
    (path,) = [p for p in res.rglob("*.json")]
    rec = json.loads(path.read_text())
    assert rec["probe"] == "asr" and rec["metric"] == "WER" and rec["protocol"] == "fsdd-asr"
    assert set(rec["aggregate"]) == {"WER", "CER"} and rec["split"] == "test"
    capsys.readouterr()
    assert main(["leaderboard", "--results-dir", str(res), "-d", "fsdd-asr", "-f", "markdown"]) == 0
    out = capsys.readouterr().out
    assert "| backbone | ASR |" in out and "WER" in out


def test_asr_probe_contract_round_trip_and_official_weight_decay(tmp_path):
    from probekit.probes import load_probe, save_probe

    L, D = 3, 16
    probe = make_probe("asr", num_layers=L, embed_dim=D, num_classes=len(CHARS), hidden=8, seed=3)
    twin = type(probe)(**probe.get_params())
    assert {k: v.shape for k, v in twin.state_dict().items()} == {k: v.shape for k, v in probe.state_dict().items()}
    # engine/optim.py: every parameter of ndim >= 2 but the gates is decayed; biases, norms and gates are not
    decayed = {n for n, p in probe.named_parameters()
               if any(p is q for g in probe.param_groups(0.05) if g["weight_decay"] > 0 for q in g["params"])}
    assert decayed == {n for n, p in probe.named_parameters() if p.ndim >= 2}
    assert "fc.weight" in decayed and "upsample.weight" in decayed and "lstm.weight_hh_l1_reverse" in decayed
    with torch.no_grad():
        for p in probe.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    probe.eval()
    path = save_probe(probe, tmp_path / "asr.safetensors")
    back = load_probe(path, embed_dim=D, num_layers=L, num_classes=len(CHARS))
    patch = torch.randn(2, L, 6, D)
    b = TokenBatch(patch, None, torch.ones(2, 3, dtype=torch.long), torch.tensor([3, 2]), torch.arange(2), (3, 2))
    with torch.no_grad():
        assert torch.equal(back(b), probe(b))


def test_padded_clip_equals_the_official_head_on_the_clip_alone():
    """Tokens padded to the split's grid: with pack=True each clip's frames equal the official head run on
    that clip alone (the official test loader's batch size 1), padding never leaks in through the BiLSTM."""
    B, L, T, Fq, D = 2, 3, 6, 2, 8
    probe = make_probe("asr", num_layers=L, embed_dim=D, num_classes=len(CHARS), hidden=12, seed=1).double().eval()
    ref = OfficialASRHead(num_classes=len(CHARS), dim=D, num_layers=L, hidden=12).double().eval()
    ref.load_state_dict(probe.state_dict())
    patch, official = _tokens(B, L, T, Fq, D, seed=5)
    rows = torch.tensor([6, 4])
    batch = TokenBatch(patch, None, torch.ones(B, 2, dtype=torch.long), rows, torch.arange(B), (T, Fq))
    with torch.no_grad():
        ours = probe(batch)
        alone = ref({"patch_tokens": official[:, 1:2, :, :4]}).transpose(0, 1)[0]  # clip 1, its 4 rows
        full = ref({"patch_tokens": official[:, 0:1]}).transpose(0, 1)[0]
        unpacked = type(probe)(**{**probe.get_params(), "pack": False}).double().eval()
        unpacked.load_state_dict(probe.state_dict())
        leaky = unpacked(batch)
    assert (ours[1, :32] - alone).abs().max() <= 1e-10 and (ours[0] - full).abs().max() <= 1e-10
    assert (leaky[1, :32] - alone).abs().max() > 1e-6  # without packing the reverse LSTM reads the padding


def test_asr_probe_runs_online(fsdd_root, tmp_path):
    """Live encoder tokens (--online) carry the grid and the transcript targets like the cache does."""
    import shutil

    from probekit.api import evaluate

    root = tmp_path / "fsdd"
    (root / "recordings").mkdir(parents=True)
    for d in range(10):
        for t in (0, 5):
            shutil.copy(fsdd_root / "recordings" / f"{d}_george_{t}.wav", root / "recordings")
    res = evaluate("bat-tiny", datasets=["fsdd-asr"], probes=["asr"], online=True, data_root=root,
                   cache_dir=tmp_path / "o", results_dir=tmp_path / "r", device="cpu", progress=False, workers=0,
                   hparams={"hidden": 16}, train_overrides={"steps": 3, "batch_size": 5}, write=False)
    (rec,) = res.records
    assert rec.metric == "WER" and rec.cache_key.endswith("(online)") and not (tmp_path / "o").exists()
    assert 0.0 <= rec.seeds[0].metrics["WER"] and 0.0 <= rec.seeds[0].metrics["CER"]
