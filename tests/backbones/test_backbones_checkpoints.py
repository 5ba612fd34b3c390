"""Every accepted checkpoint format, written in its official key layout with small random weights, loads;
unsafe pickles are refused by default; bad keys and shapes get precise errors."""

from __future__ import annotations

import argparse
import json

import pytest
import torch
from official_reference import random_vit_state, to_fairseq_keys, to_hf_eat_keys
from safetensors import safe_open
from safetensors.torch import save_file

from probekit.backbones import get_backbone
from probekit.backbones.checkpoints import (
    file_sha256,
    load_checkpoint,
    save_probekit_checkpoint,
)
from probekit.cli import main
from probekit.errors import CheckpointError

DIM, DEPTH, HEADS = 64, 2, 2
X = torch.randn(1, 1, 96, 128, generator=torch.Generator().manual_seed(0))


@pytest.fixture(autouse=True)
def _isolated_sha_index(tmp_path, monkeypatch):
    monkeypatch.setenv("PROBEKIT_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def bat_sd():
    return random_vit_state(dim=DIM, depth=DEPTH, gated=True, pos_rows=512, seed=11, table="bat")


@pytest.fixture(scope="module")
def bat_ema_sd():
    return random_vit_state(dim=DIM, depth=DEPTH, gated=True, pos_rows=512, seed=12, table="bat")


@pytest.fixture(scope="module")
def eat_sd():
    return random_vit_state(dim=DIM, depth=DEPTH, gated=False, pos_rows=768 * 8, seed=13, table="eat")


def _same_weights(loaded_sd, ref_sd):
    assert set(loaded_sd) == set(ref_sd)
    for k, v in ref_sd.items():
        assert torch.equal(loaded_sd[k], v.float()), k


def _tokens(name, path, **kw):
    return get_backbone(name, path, num_heads=HEADS, **kw).encode(X)


# ------------------------------------------------------------------------------------------ BAT formats
def test_bat_hf_safetensors(tmp_path, bat_sd):
    path = tmp_path / "model.safetensors"
    save_file(bat_sd, str(path))
    ck = load_checkpoint(path, num_heads=HEADS)
    assert ck.format == "bat-safetensors" and ck.family == "bat"
    assert (ck.config.embed_dim, ck.config.depth, ck.config.gated, ck.config.pos_len) == (DIM, DEPTH, True, 512)
    assert ck.config.window_rows == 64  # BAT's 64-time-patch chunks follow from its 512-row table
    _same_weights(ck.state_dict, bat_sd)


def test_bat_hf_folder_reads_heads_from_config_json(tmp_path, bat_sd):
    save_file(bat_sd, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps({"num_heads": 4}))
    assert load_checkpoint(tmp_path).config.num_heads == 4
    assert load_checkpoint(tmp_path, num_heads=2).config.num_heads == 2  # explicit override wins


def test_bat_lightning_pt(tmp_path, bat_sd, bat_ema_sd):
    state = {f"student.encoder.{k}": v for k, v in bat_sd.items()}
    state["student.decoder.mask_token"] = torch.zeros(1, 1, DIM)
    state.update({f"teacher.encoder.{k}": v for k, v in bat_ema_sd.items()})
    path = tmp_path / "BAT_base.pt"
    torch.save({"state_dict": state, "epoch": 3}, path)
    ck = load_checkpoint(path, num_heads=HEADS)
    assert ck.format == "bat-lightning"
    _same_weights(ck.state_dict, bat_sd)
    assert "student.decoder.mask_token" in ck.ignored
    ema = load_checkpoint(path, num_heads=HEADS, use_ema=True)
    assert ema.format == "bat-lightning-ema"
    _same_weights(ema.state_dict, bat_ema_sd)


def test_bat_official_pretraining_output(tmp_path, bat_sd, bat_ema_sd):
    path = tmp_path / "step(10)_BAT_state_x.pt"
    torch.save(
        {
            "encoder": bat_sd,
            "decoder": {"mask_token": torch.zeros(1, 1, DIM), "pos_embed": torch.zeros(1, 512, DIM)},
            "ema_encoder": bat_ema_sd,
            "optimized_steps": 10,
            "args": {"num_heads": HEADS, "dim": DIM, "depth": DEPTH, "lr": 5e-4},
        },
        path,
    )
    ck = load_checkpoint(path)  # heads from the saved args
    assert ck.format == "bat-pretrain" and ck.config.num_heads == HEADS
    _same_weights(ck.state_dict, bat_sd)
    ema = load_checkpoint(path, use_ema=True)
    assert ema.format == "bat-pretrain-ema"
    _same_weights(ema.state_dict, bat_ema_sd)
    a, b = _tokens("bat-tiny", path), _tokens("bat-tiny", path, use_ema=True)
    assert not torch.allclose(a.cls, b.cls)


def test_bat_plain_state_dict_with_ddp_prefix(tmp_path, bat_sd):
    path = tmp_path / "enc.pt"
    torch.save({f"module.{k}": v for k, v in bat_sd.items()}, path)
    ck = load_checkpoint(path, num_heads=HEADS)
    assert ck.format == "bat-state-dict"
    _same_weights(ck.state_dict, bat_sd)


# ------------------------------------------------------------------------------------------ EAT formats
def _fairseq(model_sd, ema=None, finetuned=False):
    model = {k: v.half() for k, v in to_fairseq_keys(model_sd).items()}
    model["modality_encoders.IMAGE.decoder.proj.weight"] = torch.zeros(4, DIM).half()
    model["recon_proj.weight"] = torch.zeros(DIM // 3, DIM).half()
    if ema is not None:
        model["_ema"] = {k: v for k, v in to_fairseq_keys(ema).items()}
    if finetuned:
        model = {f"model.{k}": v for k, v in model.items() if k != "_ema"}
        model.update({"fc_norm.weight": torch.ones(DIM), "fc_norm.bias": torch.zeros(DIM),
                      "head.weight": torch.zeros(527, DIM), "head.bias": torch.zeros(527)})
    cfg = {"model": {"_name": "data2vec_multi", "embed_dim": DIM, "depth": DEPTH, "num_heads": HEADS}}
    return {"args": None, "cfg": cfg, "model": model, "optimizer_history": [{"num_updates": 5}],
            "extra_state": {"epoch": 2}}


def test_eat_fairseq_pretrain_fp16_and_ema(tmp_path, eat_sd, bat_ema_sd):
    ema_sd = random_vit_state(dim=DIM, depth=DEPTH, gated=False, pos_rows=768 * 8, seed=14, table="eat")
    path = tmp_path / "EAT-base_epoch30_pt.pt"
    torch.save(_fairseq(eat_sd, ema=ema_sd), path)
    ck = load_checkpoint(path)
    assert ck.format == "eat-fairseq" and ck.family == "eat" and ck.config.num_heads == HEADS
    assert all(v.dtype == torch.float32 for v in ck.state_dict.values())  # fp16 students cast to fp32
    _same_weights(ck.state_dict, {k: v.half().float() for k, v in eat_sd.items()})
    assert "_ema" in ck.ignored and "recon_proj.weight" in ck.ignored
    assert ck.config.pos_len == 768 * 8 and ck.config.window_rows == 768  # one sequence up to 12,288 frames
    ema = load_checkpoint(path, use_ema=True)
    assert ema.format == "eat-fairseq-ema"
    _same_weights(ema.state_dict, ema_sd)


def test_eat_fairseq_ema_blocks_only(tmp_path, eat_sd):
    """ema_encoder_only=True: `_ema` holds the blocks ('0.norm1.weight'); the rest comes from the student."""
    data = _fairseq(eat_sd)
    data["model"]["_ema"] = {k[len("blocks."):]: v.float() * 2 for k, v in eat_sd.items() if k.startswith("blocks.")}
    path = tmp_path / "ema_blocks.pt"
    torch.save(data, path)
    ema = load_checkpoint(path, use_ema=True)
    assert torch.equal(ema.state_dict["blocks.0.norm1.weight"], eat_sd["blocks.0.norm1.weight"] * 2)
    assert torch.equal(ema.state_dict["cls_token"], eat_sd["cls_token"].half().float())


def test_eat_fairseq_finetuned(tmp_path, eat_sd):
    path = tmp_path / "EAT-base_epoch30_ft.pt"
    torch.save(_fairseq(eat_sd, finetuned=True), path)
    ck = load_checkpoint(path)
    assert ck.format == "eat-fairseq-finetuned"
    _same_weights(ck.state_dict, {k: v.half().float() for k, v in eat_sd.items()})
    assert {"head.weight", "fc_norm.weight"} <= set(ck.ignored)
    bare = tmp_path / "ft_state_dict.pt"  # the same `model` dict saved without the fairseq wrapper
    torch.save(_fairseq(eat_sd, finetuned=True)["model"], bare)
    ck2 = load_checkpoint(bare, num_heads=HEADS)
    assert ck2.format == "eat-fairseq-finetuned"
    _same_weights(ck2.state_dict, ck.state_dict)


def test_eat_hf_safetensors(tmp_path, eat_sd):
    keys = to_hf_eat_keys(eat_sd)
    keys.update({"model.fc_norm.weight": torch.ones(DIM), "model.head.weight": torch.zeros(527, DIM)})
    path = tmp_path / "model.safetensors"
    save_file({k: v.half() for k, v in keys.items()}, str(path))
    ck = load_checkpoint(path, num_heads=HEADS)
    assert ck.format == "eat-hf"
    _same_weights(ck.state_dict, {k: v.half().float() for k, v in eat_sd.items()})


# ------------------------------------------------------------------------------------------ probekit format
def test_probekit_checkpoint_roundtrip_keeps_metadata(tmp_path, bat_sd):
    from probekit.backbones.vit import AudioViT, ViTConfig

    cfg = ViTConfig(embed_dim=DIM, depth=DEPTH, num_heads=4, gated=True, pos_layout="bat", pos_len=512)
    model = AudioViT(cfg)
    model.load_state_dict(bat_sd)
    path = tmp_path / "pretrained.safetensors"
    save_probekit_checkpoint(path, model.state_dict(), {"step": 1234, "train_data": "as2m"}, config=cfg)
    with safe_open(str(path), "pt") as f:
        meta = json.loads(f.metadata()["probekit"])
    assert meta["step"] == 1234 and meta["vit_config"]["num_heads"] == 4 and meta["family"] == "bat"
    ck = load_checkpoint(path)
    assert ck.format == "probekit" and ck.config == cfg and ck.metadata["step"] == 1234
    assert list(tmp_path.glob(".*tmp")) == []  # written atomically, no leftovers
    bb = get_backbone("bat-tiny", path)
    assert bb.num_heads == 4 and bb.checkpoint_format == "probekit"


def test_probekit_save_refuses_a_broken_encoder(tmp_path, bat_sd):
    bad = dict(bat_sd)
    del bad["blocks.1.mlp.fc2.bias"]
    with pytest.raises(CheckpointError, match=r"missing keys \(1\): blocks\.1\.mlp\.fc2\.bias"):
        save_probekit_checkpoint(tmp_path / "x.safetensors", bad, {})
    assert not (tmp_path / "x.safetensors").exists()


# ------------------------------------------------------------------------------------------ safety
class _Meter:  # stands in for fairseq's meters: a class weights_only unpickling refuses
    def __init__(self):
        self.avg = 1.0


def test_unsafe_pickle_refused_by_default_and_loaded_when_trusted(tmp_path, eat_sd, capsys):
    data = _fairseq(eat_sd)
    data["args"] = argparse.Namespace(lr=1.0)
    data["extra_state"]["metrics"] = {"loss": _Meter()}
    path = tmp_path / "fairseq_full.pt"
    torch.save(data, path)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    msg = str(err.value)
    assert "refusing to unpickle" in msg and "--trust-checkpoint" in msg and "probekit convert" in msg
    assert str(path) in msg
    ck = load_checkpoint(path, trust_checkpoint=True)
    assert ck.format == "eat-fairseq"
    assert "fully unpickling" in capsys.readouterr().err


def test_convert_cli_makes_a_safe_file_with_identical_tokens(tmp_path, eat_sd):
    data = _fairseq(eat_sd)
    data["args"] = argparse.Namespace(lr=1.0)
    src, dst = tmp_path / "unsafe.pt", tmp_path / "eat.safetensors"
    torch.save(data, src)
    assert main(["convert", str(src), str(dst)]) == 2  # refused without --trust-checkpoint
    assert not dst.exists()
    assert main(["convert", str(src), str(dst), "--trust-checkpoint"]) == 0
    ck = load_checkpoint(dst)  # safe from now on
    assert ck.format == "probekit" and ck.family == "eat" and ck.metadata["source_format"] == "eat-fairseq"
    a = get_backbone("eat-tiny", src, trust_checkpoint=True).encode(X)
    b = get_backbone("eat-tiny", dst).encode(X)
    assert torch.equal(a.patch, b.patch) and torch.equal(a.cls, b.cls)


# ------------------------------------------------------------------------------------------ errors
def test_missing_and_unexpected_keys_are_listed(tmp_path, bat_sd):
    sd = dict(bat_sd)
    del sd["blocks.0.attn.proj.bias"]
    sd["blocks.0.attn.extra.weight"] = torch.zeros(2)
    path = tmp_path / "model.safetensors"
    save_file(sd, str(path))
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path, num_heads=HEADS)
    msg = str(err.value)
    assert "(bat-safetensors)" in msg and "blocks.0.attn.extra.weight" in msg and "unexpected keys (1)" in msg


def test_missing_key_is_named(tmp_path, bat_sd):
    sd = dict(bat_sd)
    del sd["blocks.1.norm2.weight"]
    path = tmp_path / "model.safetensors"
    save_file(sd, str(path))
    with pytest.raises(CheckpointError, match=r"missing keys \(1\): blocks\.1\.norm2\.weight"):
        load_checkpoint(path, num_heads=HEADS)


def test_wrong_shape_is_named(tmp_path, bat_sd):
    sd = dict(bat_sd)
    sd["blocks.1.attn.qkv.weight"] = torch.zeros(3 * DIM, DIM + 1)
    path = tmp_path / "model.safetensors"
    save_file(sd, str(path))
    with pytest.raises(CheckpointError, match=r"blocks\.1\.attn\.qkv\.weight: file \(192, 65\) vs model \(192, 64\)"):
        load_checkpoint(path, num_heads=HEADS)


def test_heads_must_divide_width(tmp_path, bat_sd):
    path = tmp_path / "model.safetensors"
    save_file(bat_sd, str(path))
    with pytest.raises(CheckpointError, match="not divisible by 3 heads"):
        load_checkpoint(path, num_heads=3)


def test_unknown_layout_and_garbage(tmp_path):
    p = tmp_path / "other.pt"
    torch.save({"weights": {"fc.weight": torch.zeros(2, 2)}}, p)
    with pytest.raises(CheckpointError, match="unrecognised checkpoint layout"):
        load_checkpoint(p)
    g = tmp_path / "garbage.pt"
    g.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="not a readable torch checkpoint"):
        load_checkpoint(g)
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope.pt")
    e = tmp_path / "empty.pt"
    e.write_bytes(b"")  # torch.load raises a message-less EOFError here
    with pytest.raises(CheckpointError, match=r"empty.pt: not a readable torch checkpoint \(EOFError"):
        load_checkpoint(e)


def test_family_mismatch_and_ema_absent(tmp_path, eat_sd):
    path = tmp_path / "eat.pt"
    torch.save(_fairseq(eat_sd), path)
    with pytest.raises(CheckpointError, match=r"EAT-family encoder.*backbone 'bat-tiny' is BAT"):
        get_backbone("bat-tiny", path)
    with pytest.raises(CheckpointError, match=r"no EMA teacher \(_ema\)"):
        load_checkpoint(path, use_ema=True)


def test_sha256_computed_once_and_keys_the_cache(tmp_path, bat_sd, monkeypatch):
    import hashlib

    import probekit.backbones.checkpoint_io as ckmod

    path = tmp_path / "model.safetensors"
    save_file(bat_sd, str(path))
    expected = hashlib.sha256(path.read_bytes()).hexdigest()
    assert file_sha256(path) == expected
    ckmod._SHA_MEMO.clear()  # a new process: the on-disk index answers without reading the file again
    calls = []
    real = hashlib.sha256
    monkeypatch.setattr(ckmod.hashlib, "sha256", lambda *a: calls.append(1) or real(*a))
    assert file_sha256(path) == expected and calls == []
    bb = get_backbone("bat-tiny", path)
    key = bb.cache_key()
    assert key["weights"]["sha256"] == expected and key["vit"]["num_heads"] == HEADS


def test_cli_check_backbone_and_info_on_a_checkpoint(tmp_path, bat_sd, bat_ema_sd, capsys, monkeypatch):
    from probekit.cli import console

    path = tmp_path / "bat_pretrain.pt"
    torch.save({"encoder": bat_sd, "ema_encoder": bat_ema_sd, "decoder": {}, "optimized_steps": 7,
                "args": {"num_heads": HEADS}}, path)
    monkeypatch.setattr(console, "width", 200)  # a wide terminal for the tables
    assert main(["check-backbone", "bat-tiny", "--checkpoint", str(path), "--use-ema"]) == 0
    assert main(["checkpoint-info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "bat-pretrain" in out and f"{DIM} / {DEPTH} / {HEADS}" in out and file_sha256(path) in out
    assert main(["check-backbone", "eat-tiny", "--checkpoint", str(path)]) == 2  # BAT weights, EAT name
