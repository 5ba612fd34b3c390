"""Probes: small modules trained on frozen per-layer tokens.

`make_probe(name, num_layers=..., embed_dim=..., num_classes=..., **hparams)` builds one;
`list_probes()` names them all. Importing this package registers every probe.
"""

# importing the probe modules registers their probes
from probekit.probes import asr, attentive, cgp, efficient, framewise, head2toe, linear, prototypes  # noqa: F401
from probekit.probes.asr import ASRProbe
from probekit.probes import vqt as _vqt  # noqa: F401
from probekit.probes.attentive import MHCA
from probekit.probes.base import PROBES, Probe, get_probe_class, list_probes, make_probe, register_probe
from probekit.probes.cgp import CGP, LinearCGP
from probekit.probes.efficient import ABMILP, AIMPool, EfficientProbe, SimPool
from probekit.probes.framewise import FrameCGP, FrameHead, FrameHead2Toe, FrameLinear, FrameLinearCGP, FrameProtobin
from probekit.probes.head2toe import Head2Toe
from probekit.probes.io import load_probe, read_probe_header, save_probe
from probekit.probes.linear import LayerSweep, LinearProbe, MLPProbe, TokenLinear
from probekit.probes.prototypes import ClassProto, Protobin
from probekit.probes.vqt import VQT

__all__ = [
    "ABMILP",
    "ASRProbe",
    "AIMPool",
    "CGP",
    "EfficientProbe",
    "FrameCGP",
    "FrameHead",
    "FrameHead2Toe",
    "FrameLinear",
    "FrameLinearCGP",
    "FrameProtobin",
    "Head2Toe",
    "MHCA",
    "PROBES",
    "ClassProto",
    "LayerSweep",
    "LinearCGP",
    "LinearProbe",
    "MLPProbe",
    "Probe",
    "Protobin",
    "SimPool",
    "TokenLinear",
    "VQT",
    "get_probe_class",
    "list_probes",
    "load_probe",
    "make_probe",
    "read_probe_header",
    "register_probe",
    "save_probe",
]
