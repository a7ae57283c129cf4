"""The demo model's definition and its training checkpoint format, shared by train.py (which trains and exports
it), export.py (`--ckpt`: exports a checkpoint) and record_run.py, so that neither of train.py and export.py has
to import the other.

    IMAGE_SIZE, VAE_CONFIG, TE_CONFIG, UNET_CONFIG   the architecture (diffusers / transformers configs)
    make_models()                                    fresh AutoencoderKL, CLIPTextModel, UNet2DConditionModel
    save_checkpoint / load_checkpoint                ckpt.pt (or ckpt.pt.000, ...): fp16 weights, raw + EMA
    load_diffusers_folder                            the modules back from an exported folder (--init-from)
"""
from __future__ import annotations

import copy
import io
import json
from pathlib import Path

import torch


# ---------------------------------------------------------------------------------------------- models

IMAGE_SIZE = 128
VAE_CONFIG = dict(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1,
                  block_out_channels=(32, 64, 64, 64), norm_num_groups=16, sample_size=IMAGE_SIZE,
                  down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)
TE_CONFIG = dict(vocab_size=49408, hidden_size=64, intermediate_size=256, num_hidden_layers=4,
                 num_attention_heads=4, max_position_embeddings=77, hidden_act="quick_gelu", layer_norm_eps=1e-5,
                 projection_dim=64, bos_token_id=49406, eos_token_id=49407, pad_token_id=49407)
UNET_CONFIG = dict(sample_size=IMAGE_SIZE // 8, in_channels=4, out_channels=4, layers_per_block=1,
                   block_out_channels=(64, 128, 128),
                   down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
                   up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
                   norm_num_groups=32, cross_attention_dim=64, attention_head_dim=4)


def make_models():
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel
    vae = AutoencoderKL(**VAE_CONFIG)
    te = CLIPTextModel(CLIPTextConfig(**TE_CONFIG))
    unet = UNet2DConditionModel(**UNET_CONFIG)
    return vae, te, unet


def token_embedding(te):
    return te.get_input_embeddings().weight


# ---------------------------------------------------------------------------------------------- checkpoint

def _te_pack(sd: dict) -> dict:
    """Token-embedding rows that are all zero (tokens never seen in training) are left out."""
    out = {}
    for k, v in sd.items():
        if k.endswith("token_embedding.weight"):
            rows = torch.nonzero(v.abs().sum(1) > 0).flatten()
            out[k + ":rows"] = rows
            out[k + ":values"] = v[rows].half()
            out[k + ":shape"] = torch.tensor(v.shape)
        else:
            out[k] = v.half() if v.is_floating_point() else v
    return out


def _te_unpack(p: dict) -> dict:
    out = {}
    for k, v in p.items():
        if k.endswith(":rows"):
            base = k[:-5]
            w = torch.zeros(tuple(p[base + ":shape"].tolist()))
            w[v] = p[base + ":values"].float()
            out[base] = w
        elif k.endswith(":values") or k.endswith(":shape"):
            continue
        else:
            out[k] = v.float() if v.is_floating_point() else v
    return out


def _half(sd):
    return {k: (v.half() if v.is_floating_point() else v) for k, v in sd.items()}


def _float(sd):
    return {k: (v.float() if v.is_floating_point() else v) for k, v in sd.items()}


def save_checkpoint(out: Path, vae, te, unet, te_ema, unet_ema, state: dict, split_mib: float = 0) -> int:
    """fp16 weights (raw + EMA), no optimizer moments: resuming restarts AdamW with a short warmup. Returns the
    checkpoint's size in bytes."""
    ck = {"state": state, "vae": _half(vae.state_dict())}
    if unet is not None:
        ck.update(unet=_half(unet.state_dict()), unet_ema=_half(unet_ema.state_dict()),
                  te=_te_pack(te.state_dict()), te_ema=_te_pack(te_ema.state_dict()))
    buf = io.BytesIO()
    torch.save(ck, buf)
    data = buf.getvalue()
    for old in list(out.glob("ckpt.pt*")):
        old.unlink()
    if split_mib and len(data) > split_mib * 2**20:
        n = int(split_mib * 2**20)
        for i in range(0, len(data), n):
            (out / f"ckpt.pt.{i // n:03d}").write_bytes(data[i:i + n])
    else:
        (out / "ckpt.pt").write_bytes(data)
    return len(data)


def load_checkpoint(folder: Path, device="cpu"):
    parts = sorted(folder.glob("ckpt.pt.[0-9][0-9][0-9]"))
    data = b"".join(p.read_bytes() for p in parts) if parts else (folder / "ckpt.pt").read_bytes()
    ck = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    vae, te, unet = make_models()
    vae.load_state_dict(_float(ck["vae"]))
    te_ema = unet_ema = None
    if "unet" in ck:
        unet.load_state_dict(_float(ck["unet"]))
        te.load_state_dict(_te_unpack(ck["te"]), strict=False)
        unet_ema, te_ema = copy.deepcopy(unet), copy.deepcopy(te)
        unet_ema.load_state_dict(_float(ck["unet_ema"]))
        te_ema.load_state_dict(_te_unpack(ck["te_ema"]), strict=False)
    else:
        te = unet = None
    mv = lambda m: None if m is None else m.to(device)
    return mv(vae), mv(te), mv(unet), mv(te_ema), mv(unet_ema), ck["state"]


def load_diffusers_folder(folder: Path, device="cpu"):
    """(vae, text encoder, unet, state) from an exported diffusers folder (fp16 weights -> fp32), built with this
    file's configs so that a changed architecture fails loudly; state from its training.json (if any)."""
    from safetensors.torch import load_file
    folder = Path(folder)
    vae, te, unet = make_models()
    for m, f in ((vae, "vae/diffusion_pytorch_model.safetensors"), (unet, "unet/diffusion_pytorch_model.safetensors"),
                 (te, "text_encoder/model.safetensors")):
        sd = _float(load_file(str(folder / f)))
        missing, unexpected = m.load_state_dict(sd, strict=False)
        missing = [k for k in missing if not k.endswith("position_ids")]
        if missing or unexpected:
            raise SystemExit(f"--init-from {folder}/{f}: missing {missing[:5]}, unexpected {unexpected[:5]}")
    sf = json.loads((folder / "vae" / "config.json").read_text())["scaling_factor"]
    hist = folder / "training.json"
    state = json.loads(hist.read_text()) if hist.exists() else {
        "vae_steps": 0, "unet_steps": 0, "unet_seconds": 0.0, "runs": []}
    state.update(vae_done=True, scaling_factor=float(sf))
    return vae.to(device), te.to(device), unet.to(device), state
