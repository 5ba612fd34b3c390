"""save_probe / load_probe: exact round trip for every probe; another width, depth or class count is refused."""

from __future__ import annotations

import pytest
import torch

from probekit.errors import ProbeError
from probekit.cache.live import needs_encoder
from probekit.probes import get_probe_class, list_probes, load_probe, make_probe, read_probe_header, save_probe
from probekit.tokens import TokenBatch

L, D, C, B = 3, 64, 5, 4


def _batch(d: int = D, layers: int = L) -> TokenBatch:
    g = torch.Generator().manual_seed(0)
    return TokenBatch(
        patch=torch.randn(B, layers, 12, d, generator=g),
        cls=torch.randn(B, layers, d, generator=g),
        labels=torch.zeros(B, dtype=torch.long),
        valid_rows=torch.full((B,), 3),
        index=torch.arange(B),
        grid=(3, 4),  # frame-wise heads fold the 12 tokens into 3 time rows
    )


SMALL = {"cgp": {"prototypes": 16}, "protobin": {"prototypes": 16},
         "proto": {"prototypes_per_class": 2, "grid_rows": 4},
         "mlp": {"hidden_dim": 32}, "sed-cgp": {"prototypes": 16}, "sed-protobin": {"prototypes": 16}}  # fmt: skip


@pytest.mark.parametrize("name", [n for n in list_probes() if not needs_encoder(get_probe_class(n)) and n != "asr"])  # vqt, asr: own files
def test_round_trip_gives_the_same_outputs(tmp_path, name):
    probe = make_probe(name, num_layers=L, embed_dim=D, num_classes=C, seed=3, **SMALL.get(name, {}))
    with torch.no_grad():  # trained state: move every parameter off its init
        for p in probe.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    probe.eval()
    path = save_probe(probe, tmp_path / f"{name}.safetensors", metadata={"backbone": "bat-tiny"})
    back = load_probe(path, embed_dim=D, num_layers=L, num_classes=C)
    assert type(back) is type(probe) and back.get_params() == probe.get_params()
    with torch.no_grad():
        assert torch.equal(back(_batch()), probe(_batch()))
    assert read_probe_header(path)["metadata"] == {"backbone": "bat-tiny"}
    assert not list(tmp_path.glob(".*.tmp"))


def test_other_width_depth_or_classes_are_refused(tmp_path):
    probe = make_probe("cgp", num_layers=L, embed_dim=D, num_classes=C, prototypes=16)
    path = save_probe(probe, tmp_path / "cgp.safetensors")
    with pytest.raises(ProbeError, match=r"cgp.safetensors: probe 'cgp' was trained for other tokens: embed_dim 64 "
                                         r"\(file\) vs 768 \(asked\)"):  # fmt: skip
        load_probe(path, embed_dim=768, num_layers=L)
    with pytest.raises(ProbeError, match=r"num_layers 3 \(file\) vs 12 \(asked\)"):
        load_probe(path, embed_dim=D, num_layers=12)
    with pytest.raises(ProbeError, match=r"num_classes 5 \(file\) vs 10 \(asked\)"):
        load_probe(path, num_classes=10)


def test_damaged_or_foreign_files(tmp_path):
    from safetensors.torch import save_file

    with pytest.raises(ProbeError, match="probe file not found"):
        load_probe(tmp_path / "nope.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 40)
    with pytest.raises(ProbeError, match="junk.safetensors: not a readable probe file"):
        load_probe(tmp_path / "junk.safetensors")
    save_file({"w": torch.zeros(2)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(ProbeError, match="without a probekit probe header"):
        load_probe(tmp_path / "plain.safetensors")
    # weights that do not fit the sizes in the header (a hand-edited file)
    probe = make_probe("linear", num_layers=L, embed_dim=D, num_classes=C)
    path = save_probe(probe, tmp_path / "lin.safetensors")
    wide = make_probe("linear", num_layers=L, embed_dim=2 * D, num_classes=C)
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    save_file({k: v.contiguous() for k, v in wide.state_dict().items()}, str(path), metadata=meta)
    with pytest.raises(ProbeError, match="lin.safetensors: weights do not fit probe 'linear'"):
        load_probe(path, embed_dim=D)
