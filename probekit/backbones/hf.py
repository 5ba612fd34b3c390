"""Hugging Face `transformers` audio encoders as backbones: `get_backbone("hf:<model id or local folder>")`.

Optional extra (`pip install probekit[hf]`); transformers is imported only when an `hf:` name is built,
so probekit works without it. Supported architectures (config.model_type): AST
("audio-spectrogram-transformer"), wav2vec 2.0, HuBERT, WavLM, data2vec-audio, and Whisper's encoder.

What probekit reads, exactly as the model's own pipeline makes it:
- features: the folder's own feature extractor (`AutoFeatureExtractor`), called on the list of clips as
  `fe(clips, sampling_rate=16000, return_tensors="pt"[, padding=...])`; 16 kHz.
- tokens: `model(**features, output_hidden_states=True).hidden_states[1:]` (blocks 1..L, the embedding
  output [0] left out), exactly as the installed transformers gives them (its version keys the cache). In
  transformers 5.24 Whisper's block L comes after the encoder's final LayerNorm (hidden_states[-1] ==
  last_hidden_state) while blocks 1..L-1 do not; AST's and the wav2vec-style blocks are raw layer outputs
  (transformers 4.x also put the final LayerNorm on block L of the pre-LN "stable layer norm" encoders).
- wav2vec-style models: grid (T, 1); the attention mask is passed when the feature extractor returns one
  (`return_attention_mask`; the group-norm base models are run without, as their authors trained them);
  valid_rows = the model's `_get_feat_extract_output_lengths(valid samples)`; no cls token: `cls` = mean of
  the valid rows (what `*ForSequenceClassification` pools given an attention mask).
- Whisper: the encoder only, on the extractor's 30 s (chunk_length) log-mel; grid (T, 1); the encoder takes
  no mask (it attends to the zero padding, as in Whisper); valid_rows = ceil(valid mel frames / 2); no cls
  token: `cls` = mean of all T rows (what `WhisperForAudioClassification` pools).
- AST: `cls` = AST's cls token (position 0); the distillation token (position 1) is not a patch and is
  dropped. AST flattens its patch grid frequency-major (n = f * T + t); probekit's tokens are time-major, so
  the patches are reordered to n = t * F + f with grid (T, F). valid_rows = time patches whose first
  fbank frame holds audio.

Lengths: AST and Whisper truncate clips past their extractor's fixed length (max_length fbank frames;
chunk_length seconds) and always pad to it. wav2vec-style models run at the batch's longest clip; a cache
store pads every clip to the split's longest (HFFrontendConfig.target_frames), and extractors without an
attention mask normalise over that padding too, as transformers does.

The cache key names the model (id or absolute folder), the sha256 of every weight file in the folder
(*.safetensors, *.bin), the model and feature-extractor configs and the transformers version.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from functools import partial
from pathlib import Path

import numpy as np
import torch

from probekit.backbones.protocol import BackboneBase, BackboneCard, LayerTokens
from probekit.backbones.registry import check_options, register_backbone_prefix
from probekit.errors import BackboneError

PREFIX = "hf"
#: config.model_type -> how the model reads its features ("wave", "ast", "whisper")
SUPPORTED = {
    "audio-spectrogram-transformer": "ast",
    "wav2vec2": "wave",
    "hubert": "wave",
    "wavlm": "wave",
    "data2vec-audio": "wave",
    "whisper": "whisper",
}
_OPTIONS = {"frontend", "device"}
_WEIGHT_SUFFIXES = (".safetensors", ".bin")
# config entries that name the file's history, not the computation (kept out of the cache key)
_VOLATILE = {"_name_or_path", "transformers_version", "_commit_hash", "processor_class", "_processor_class"}


def _transformers():
    try:
        import transformers
    except ImportError:
        raise BackboneError("hf: backbones need the transformers package",
                            hint="pip install 'probekit[hf]' (or: pip install transformers)") from None
    return transformers


def _jsonable(d: dict) -> dict:
    """The JSON-serialisable entries of a config dict (arrays such as Whisper's mel filters are dropped)."""
    out = {}
    for k, v in sorted(d.items()):
        if k in _VOLATILE:
            continue
        try:
            json.dumps(v)
        except (TypeError, ValueError):
            continue
        out[k] = v
    return out


# ---------------------------------------------------------------------------------------------- frontend
@dataclasses.dataclass(frozen=True)
class HFFrontendConfig:
    """The feature extractor's settings (JSON) plus the fixed frame count a store needs.

    frames are samples for wav2vec-style models (num_bins 1), fbank frames for AST, mel frames for Whisper.
    target_frames=None (wav2vec-style only): each batch is padded to its longest clip.
    """

    extractor: str
    settings: str  # JSON of the extractor's to_dict() (sorted, volatile keys dropped)
    input: str  # "wave" | "ast" | "whisper"
    num_bins: int
    target_frames: int | None = None
    kind: str = "hf-feature-extractor"

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["settings"] = json.loads(self.settings)
        return d


class HFFrontend:
    """The model's own feature extractor behind probekit's Frontend interface.

    `__call__(wave (B, samples), lengths)` -> ((B, 1, frames, bins), valid frames (B,)); `features(clip)` ->
    (1, frames, bins); `num_frames(n)` / `valid_frames(n)` count frames of a clip of n samples.
    """

    def __init__(self, extractor, config: HFFrontendConfig):
        self.extractor, self.config = extractor, config

    def to(self, device) -> "HFFrontend":
        """The extractor runs in numpy on the CPU wherever the model is (the Frontend contract's `to`)."""
        return self

    @property
    def num_bins(self) -> int:
        return self.config.num_bins

    def num_frames(self, num_samples: int) -> int:
        c, fe = self.config, self.extractor
        if c.input == "ast":
            return int(fe.max_length)
        if c.input == "whisper":
            return int(fe.nb_max_frames)
        return int(c.target_frames) if c.target_frames is not None else int(num_samples)

    def valid_frames(self, num_samples: int) -> int:
        n, fe = int(num_samples), self.extractor
        if self.config.input == "ast":  # kaldi fbank, 25 ms windows every 10 ms, snip_edges
            native = 1 + (n - 400) // 160 if n >= 400 else 0
            return max(0, min(native, int(fe.max_length)))
        if self.config.input == "whisper":  # the extractor's own frame mask: one frame per started hop
            return min(-(-n // int(fe.hop_length)), int(fe.nb_max_frames))
        return min(n, self.num_frames(n))

    def __call__(self, wave: torch.Tensor, lengths=None):
        if wave.ndim == 1:
            wave = wave.unsqueeze(0)
        if wave.ndim != 2:
            raise BackboneError(f"hf frontend takes (B, samples) waves, got shape {tuple(wave.shape)}")
        b, s = wave.shape
        lens = [s] * b if lengths is None else [int(v) for v in torch.as_tensor(lengths).reshape(-1).tolist()]
        if len(lens) != b or any(v <= 0 or v > s for v in lens):
            raise BackboneError(f"lengths {lens} do not fit a batch of {b} clips of {s} samples (need 1..{s})")
        clips = [wave[i, : lens[i]].detach().float().cpu().numpy() for i in range(b)]
        feats = self._extract(clips)
        valid = torch.tensor([self.valid_frames(n) for n in lens], dtype=torch.long)
        return feats, valid

    def features(self, wave: torch.Tensor) -> torch.Tensor:
        """One clip (samples,) -> (1, frames, bins)."""
        if wave.ndim != 1 or wave.numel() == 0:
            raise BackboneError(f"features() takes one non-empty 1-D clip, got shape {tuple(wave.shape)}")
        return self._extract([wave.detach().float().cpu().numpy()])[0]

    def _extract(self, clips: list[np.ndarray]) -> torch.Tensor:
        c, fe = self.config, self.extractor
        if c.input == "wave":
            pad = {"padding": True} if c.target_frames is None else {
                "padding": "max_length", "max_length": int(c.target_frames), "truncation": True}
            x = fe(clips, sampling_rate=16000, return_tensors="pt", **pad)["input_values"]  # (B, samples)
            return x.float()[:, None, :, None]
        out = fe(clips, sampling_rate=16000, return_tensors="pt")
        if c.input == "ast":
            return out["input_values"].float()[:, None]  # (B, 1, frames, mel)
        return out["input_features"].float().transpose(1, 2)[:, None]  # whisper (B, mel, frames) -> (B, 1, frames, mel)


def _frontend_config(extractor, kind: str, target_frames=None) -> HFFrontendConfig:
    bins = {"wave": 1, "ast": getattr(extractor, "num_mel_bins", 0), "whisper": getattr(extractor, "feature_size", 0)}[kind]
    settings = json.dumps(_jsonable(extractor.to_dict()), sort_keys=True)
    if kind == "ast":
        target_frames = int(extractor.max_length)
    elif kind == "whisper":
        target_frames = int(extractor.nb_max_frames)
    return HFFrontendConfig(type(extractor).__name__, settings, kind, int(bins), target_frames)


# ---------------------------------------------------------------------------------------------- backbone
class HFBackbone(BackboneBase):
    """A transformers audio encoder; BackboneBase supplies forward_tokens (frontend, then encode), to/eval."""

    def __init__(self, model, extractor, *, name: str, source: str, kind: str, weights_sha256: str,
                 weight_files: dict, frontend=None):
        # frozen by encode's no_grad, not requires_grad_(False): that switches torch's MultiheadAttention
        # (WavLM) to its fused fast path, 1 ulp away from the model as its users run it
        self.model = model.eval()
        self.extractor = extractor
        self.name, self.source, self.kind = name, source, kind
        cfg = model.config
        self.num_layers = int(cfg.num_hidden_layers if kind != "whisper" else cfg.encoder_layers)
        self.embed_dim = int(cfg.hidden_size if kind != "whisper" else cfg.d_model)
        self.num_heads = int(cfg.num_attention_heads if kind != "whisper" else cfg.encoder_attention_heads)
        self.checkpoint_sha256 = weights_sha256
        self.seed = None
        self.weight_files = weight_files
        self._frontend_spec = frontend
        self.card = BackboneCard(
            name=name, family="hf", embed_dim=self.embed_dim, num_layers=self.num_layers, num_heads=self.num_heads,
            frontend="", params=sum(p.numel() for p in model.parameters()), checkpoint_formats=("hf-folder",),
            url="" if os.path.isdir(source) else f"https://huggingface.co/{source.partition('@')[0]}", notes=_NOTES[kind],
            extra={"model_type": cfg.model_type, "architectures": list(getattr(cfg, "architectures", None) or [])},
        )

    # ------------------------------------------------------------------ frontend
    def default_frontend(self):
        return HFFrontend(self.extractor, _frontend_config(self.extractor, self.kind))

    def _build_frontend(self) -> None:
        spec = self._frontend_spec
        if spec is None:
            fe = self.default_frontend()
        elif isinstance(spec, HFFrontend):
            fe = spec
        elif isinstance(spec, HFFrontendConfig):
            fe = HFFrontend(self.extractor, spec)
        elif isinstance(spec, dict) and spec.get("kind") == HFFrontendConfig.kind:
            d = dict(spec)
            d["settings"] = json.dumps(d.get("settings", {}), sort_keys=True)
            fe = HFFrontend(self.extractor, HFFrontendConfig(**d))
        else:
            raise BackboneError(f"{self.name}: frontend {spec!r} is not this model's feature extractor",
                                hint="hf: backbones read their own feature extractor's output; leave frontend unset")
        own = _frontend_config(self.extractor, self.kind, fe.config.target_frames)
        if dataclasses.replace(fe.config, target_frames=own.target_frames) != own:
            raise BackboneError(f"{self.name}: frontend settings differ from the folder's feature extractor",
                                hint="only target_frames (wav2vec-style models) may change")
        self._frontend, self._frontend_config = fe, fe.config

    # ------------------------------------------------------------------ tokens
    def model_inputs(self, features: torch.Tensor, valid_frames: torch.Tensor | None) -> dict:
        """(B, 1, frames, bins) frontend output -> the keyword arguments the transformers model takes."""
        if features.ndim == 3:
            features = features.unsqueeze(1)
        if features.ndim != 4 or features.shape[1] != 1 or features.shape[-1] != self.frontend.num_bins:
            raise BackboneError(f"{self.name}: expected (B, 1, frames, {self.frontend.num_bins}) features, "
                                f"got {tuple(features.shape)}")
        x = features[:, 0].to(self.device, torch.float32)
        if self.kind == "ast":
            return {"input_values": x}
        if self.kind == "whisper":
            return {"input_features": x.transpose(1, 2)}
        x = x[..., 0]
        if not getattr(self.extractor, "return_attention_mask", False):
            return {"input_values": x}
        vf = torch.full((x.shape[0],), x.shape[1]) if valid_frames is None else torch.as_tensor(valid_frames)
        mask = torch.arange(x.shape[1], device=x.device)[None, :] < vf.to(x.device).reshape(-1, 1)
        return {"input_values": x, "attention_mask": mask.to(torch.int32)}

    @torch.no_grad()
    def encode(self, features, valid_frames=None, *, layers=None) -> LayerTokens:
        inputs = self.model_inputs(features, valid_frames)
        b = next(iter(inputs.values())).shape[0]
        frames = features.shape[-2]
        vf = torch.full((b,), frames, dtype=torch.long) if valid_frames is None else \
            torch.as_tensor(valid_frames).reshape(-1).cpu().long()
        hidden = self.model(**inputs, output_hidden_states=True).hidden_states[1:]
        idx = range(self.num_layers) if layers is None else [int(i) % self.num_layers for i in layers]
        h = torch.stack([hidden[i] for i in idx], dim=1).float()  # (B, L, tokens, D)
        if self.kind == "ast":
            emb = self.model.embeddings
            f_out, t_out = emb.get_shape(self.model.config)
            cls = h[:, :, 0]
            patch = h[:, :, 2:].reshape(b, h.shape[1], f_out, t_out, -1).transpose(2, 3)  # frequency- -> time-major
            patch = patch.reshape(b, h.shape[1], t_out * f_out, -1)
            stride = int(self.model.config.time_stride)
            valid_rows = torch.clamp((vf + stride - 1) // stride, 0, t_out)
            return LayerTokens(patch=patch.contiguous(), cls=cls.contiguous(), grid=(t_out, f_out), valid_rows=valid_rows)
        t = h.shape[2]
        if self.kind == "whisper":
            valid_rows = torch.clamp((vf + 1) // 2, 0, t)
            cls = h.mean(2)  # WhisperForAudioClassification pools every row, padding included
        else:
            valid_rows = torch.clamp(self.model._get_feat_extract_output_lengths(vf).long(), 0, t)
            keep = (torch.arange(t)[None, :] < valid_rows[:, None]).to(h)[:, None, :, None]
            cls = (h * keep).sum(2) / keep.sum(2).clamp(min=1)
        return LayerTokens(patch=h.contiguous(), cls=cls, grid=(t, 1), valid_rows=valid_rows)

    def cache_key(self) -> dict:
        cfg = self.model.config.to_dict()
        return {"backbone": self.name, "family": "hf", "source": self.source,
                "transformers": _transformers().__version__,
                "config": _jsonable(cfg),
                "weights": {"sha256": self.checkpoint_sha256, "files": self.weight_files},
                "frontend": self.frontend.config.to_dict()}


_NOTES = {
    "wave": "transformers wav2vec-style encoder: no cls token (cls = mean of the valid rows); grid (T, 1)",
    "whisper": "Whisper encoder: no cls token (cls = mean of all rows, as WhisperForAudioClassification); grid (T, 1)",
    "ast": "AST: cls = AST's cls token; distillation token dropped; patches reordered time-major, grid (T, F)",
}


# ---------------------------------------------------------------------------------------------- loading
def _local_folder(source: str) -> Path:
    """The folder holding the model: `source` itself, or the Hub snapshot of a model id."""
    p = Path(source).expanduser()
    if p.is_dir():
        return p.resolve()
    if p.exists():
        raise BackboneError(f"hf:{source} is a file, not a model folder",
                            hint="point hf: at the folder holding config.json and the weights")
    repo, _, revision = source.partition("@")  # org/name[@revision]
    if source.startswith((".", "/", "~")) or repo.count("/") > 1 or not repo.strip():
        raise BackboneError(f"hf:{source}: no such folder",
                            hint="give an existing folder, or a Hub model id: org/name or org/name@revision")
    try:
        from huggingface_hub import list_repo_files, snapshot_download

        try:  # one copy of the weights: safetensors where the repo has them, else the pickled .bin
            files = list_repo_files(repo, revision=revision or None)
            weights = ["*.safetensors"] if any(f.endswith(".safetensors") for f in files) else ["*.bin"]
        except Exception:  # noqa: BLE001 - offline (HF_HUB_OFFLINE): whatever the local snapshot holds
            weights = ["*.safetensors", "*.bin"]
        return Path(snapshot_download(repo, revision=revision or None, allow_patterns=["*.json", *weights]))
    except Exception as e:  # noqa: BLE001 - network, auth, unknown repo: one user-facing line
        first = str(e).splitlines()[0] if str(e) else ""
        raise BackboneError(f"hf:{source}: could not fetch from the Hugging Face Hub ({type(e).__name__}: {first})",
                            hint="check the model id and the network, or download it and pass the folder") from None


def _weights_digest(folder: Path) -> tuple[str, dict]:
    from probekit.backbones.checkpoint_io import file_sha256

    files = sorted(f for f in folder.iterdir() if f.is_file() and f.name.endswith(_WEIGHT_SUFFIXES))
    if not files:
        raise BackboneError(f"{folder}: no *.safetensors or *.bin weight files",
                            hint="save the model with save_pretrained into this folder")
    shas = {f.name: file_sha256(f) for f in files}
    digest = hashlib.sha256("".join(f"{n}:{s}\n" for n, s in shas.items()).encode()).hexdigest()
    return digest, shas


def build(name: str, checkpoint=None, *, source: str, **options) -> HFBackbone:
    o = check_options(name, options, accepted=_OPTIONS)
    if checkpoint is not None:
        raise BackboneError(f"{name}: the weights come from the folder in the name, not --checkpoint {checkpoint}",
                            hint="use --backbone hf:<folder> without --checkpoint")
    tf = _transformers()
    folder = _local_folder(source)
    if not (folder / "config.json").is_file():
        raise BackboneError(f"{folder}: no config.json", hint="point hf: at a folder written by save_pretrained")
    try:
        config = tf.AutoConfig.from_pretrained(str(folder))
    except Exception as e:  # noqa: BLE001
        raise BackboneError(f"{folder}/config.json: {type(e).__name__}: {str(e).splitlines()[0]}") from None
    kind = SUPPORTED.get(getattr(config, "model_type", ""))
    if kind is None:
        raise BackboneError(f"{folder}: model_type {config.model_type!r} is not supported by hf:",
                            hint=f"supported: {', '.join(SUPPORTED)}")
    sha, files = _weights_digest(folder)
    bars = tf.utils.logging.is_progress_bar_enabled()
    tf.utils.logging.disable_progress_bar()  # no per-load bars on the CLI's stderr
    try:
        extractor = tf.AutoFeatureExtractor.from_pretrained(str(folder))
        model = tf.AutoModel.from_pretrained(str(folder), dtype=torch.float32)
    except (OSError, ValueError) as e:
        raise BackboneError(f"{folder}: {type(e).__name__}: {str(e).splitlines()[0]}",
                            hint="the folder needs config.json, preprocessor_config.json and the weights") from None
    finally:
        if bars:
            tf.utils.logging.enable_progress_bar()
    if kind == "whisper":
        model = model.get_encoder()
    if int(getattr(extractor, "sampling_rate", 16000)) != 16000:
        raise BackboneError(f"{folder}: feature extractor expects {extractor.sampling_rate} Hz, probekit feeds 16 kHz")
    src = str(folder) if Path(source).expanduser().is_dir() else source
    bb = HFBackbone(model, extractor, name=name, source=src, kind=kind, weights_sha256=sha, weight_files=files,
                    frontend=o["frontend"])
    return bb.to(o["device"])


def _resolve(name: str, rest: str):
    """`hf:<rest>` -> a factory (the registry calls it like a registered one)."""
    if not rest:
        raise BackboneError("hf: needs a model id or folder", hint="e.g. --backbone hf:MIT/ast-finetuned-audioset-10-10-0.4593")
    return partial(build, name, source=rest)


register_backbone_prefix(PREFIX, _resolve)
