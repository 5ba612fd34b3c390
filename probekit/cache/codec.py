"""The storage codec: which dtypes a store may hold, how tokens are encoded for it and decoded back.

bfloat16 has no numpy dtype: it is stored as its raw 16 bits in uint16 (plain zarr users read it with
`(a.astype(np.uint32) << 16).view(np.float32)`). int8 is symmetric per token with a float32 scale
(x ~= q * scale), kept in a `<name>_scale` array beside the tokens.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["DTYPES", "NUMPY_DTYPE", "decode_to_float", "encode_for_storage", "projected_bytes", "quantize_int8",
           "storage_dtype"]

DTYPES = ("float16", "bfloat16", "float32", "int8")
# numpy dtype each storage dtype is written as (bfloat16: raw bits)
NUMPY_DTYPE = {"float16": np.float16, "bfloat16": np.uint16, "float32": np.float32, "int8": np.int8}
_TORCH_DTYPE = {"float16": torch.float16, "float32": torch.float32}


def storage_dtype(dtype: str) -> np.dtype:
    """The numpy dtype the tokens of a `dtype` store are written as."""
    return np.dtype(NUMPY_DTYPE[dtype])


def projected_bytes(clips: int, layers: int, tokens: int, dim: int, dtype: str) -> int:
    """Token bytes of a store (labels, ids and shard indices are negligible beside them)."""
    item = storage_dtype(dtype).itemsize
    per_clip = layers * (tokens + 1) * dim * item
    if dtype == "int8":
        per_clip += layers * (tokens + 1) * 4  # float32 scale per token
    return clips * per_clip


def quantize_int8(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-token int8: x ~= q * scale, scale = max|x| / 127 over the last dim."""
    x = x.float()
    scale = x.abs().amax(dim=-1) / 127.0
    q = torch.where(scale[..., None] > 0, x / scale.clamp_min(torch.finfo(torch.float32).tiny)[..., None], 0.0)
    return q.round().clamp_(-127, 127).to(torch.int8), scale


def encode_for_storage(t: torch.Tensor, dtype: str) -> dict[str, np.ndarray]:
    """Tokens -> the arrays stored for them, by name suffix ("" and, for int8, "_scale")."""
    if dtype == "int8":
        q, s = quantize_int8(t)
        return {"": q.cpu().numpy(), "_scale": s.cpu().numpy()}
    if dtype == "bfloat16":
        return {"": t.to(torch.bfloat16).view(torch.int16).cpu().numpy().view(np.uint16)}
    return {"": t.to(_TORCH_DTYPE[dtype]).cpu().numpy()}


def decode_to_float(arr: np.ndarray, dtype: str, scale: np.ndarray | None) -> torch.Tensor:
    """Stored tokens (and int8 scales) -> float32 (int8 dequantised, bfloat16 widened)."""
    if dtype == "bfloat16":
        return torch.from_numpy(arr.view(np.int16)).view(torch.bfloat16).float()
    t = torch.from_numpy(arr)
    if dtype == "int8":
        return t.float().mul_(torch.from_numpy(scale).unsqueeze(-1))
    return t.float()
