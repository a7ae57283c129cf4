#!/usr/bin/env python3
"""Builds tests/fixtures/single_file/: tiny SD 1.x / 2.x models as diffusers folders and as single files in the
original CompVis / Stability key layout, plus diffusers reference images.

    python3 scripts/make_single_file_fixtures.py      # from the repository root

The UNets have SD's topology (4 down blocks x 2 layers, attention in the first three, conv_in/out, mid block with
attention) at tiny widths. sdrt derives what the checkpoint cannot say by SD's conventions, so the widths are
chosen so that the conventions hold:
  - SD 1.x: 8 heads per UNet attention -> widths (8, 8, 16, 16), head dims 1 and 2.
  - SD 2.x: UNet head dim 64 -> heads = max(1, width / 64): 1 head per block at these widths.
  - text encoders: head dim 64 -> heads = max(1, hidden / 64): hidden 8, one head.
  - GroupNorm groups: 32 when every width is a multiple of 32, else the widths' gcd (here 8).
The text encoders keep CLIP's full 49408-token vocabulary (the built-in tokenizer needs it) at width 8, so that
the fixtures stay small (about 4 MB).

Files:
  sd1/            diffusers folder (fp16) without tokenizer/ (tests copy tiny-sd1's), the reference; sd1.safetensors: the same weights, SD 1.x layout, with
                  EMA weights (model_ema.*) that are the real ones while model.diffusion_model.* is perturbed.
  sd2/            diffusers folder (bf16, tokenizer/ from tiny-sd2), v-prediction; sd2.safetensors + sd2.yaml (parameterization: "v"),
                  OpenCLIP text encoder with one layer more than the folder (SD 2.x uses the penultimate one).
  sd1_vae_ldm.safetensors: sd1's VAE alone in the original layout (encoder.* / decoder.*), for --vae.
  reference.json + *.png: diffusers StableDiffusionPipeline runs on the folders.
Each single file is checked by converting it back with diffusers' own single-file conversion functions.
"""
import json
import shutil
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from transformers import CLIPTextConfig, CLIPTextModel

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_fixtures import SD1_SCHEDULER, randomize_, randomize_diffusers_, write_tokenizer_folder  # noqa: E402
from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel  # noqa: E402
from diffusers.loaders import single_file_utils as sfu  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "tests" / "fixtures" / "single_file"
WIDTHS = (8, 8, 16, 16)
LAYERS = 2
TEXT_WIDTH = 8

SCHEDULER = dict(SD1_SCHEDULER, timestep_spacing="leading", prediction_type="epsilon")

CASES = [  # (model, prompt, negative, steps, guidance, seed)
    ("sd1", "a red circle on a blue background", "", 4, 7.5, 42),
    ("sd2", "two green squares", "blurry", 4, 7.5, 7),
]


# ---- diffusers -> original layout (the inverse of diffusers' conversion)

def unet_to_ldm(sd: dict, attn_blocks=(0, 1, 2)) -> dict:
    out = {}
    res = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1", "norm2": "out_layers.0",
           "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}

    def put_resnet(src, dst):
        for k, v in sd.items():
            if k.startswith(src + "."):
                rest = k[len(src) + 1:]
                name, _, param = rest.partition(".")
                out[f"{dst}.{res[name]}.{param}"] = v

    def put_prefix(src, dst):
        for k, v in sd.items():
            if k.startswith(src + "."):
                out[dst + k[len(src):]] = v

    put_prefix("time_embedding.linear_1", "time_embed.0")
    put_prefix("time_embedding.linear_2", "time_embed.2")
    put_prefix("conv_in", "input_blocks.0.0")
    put_prefix("conv_norm_out", "out.0")
    put_prefix("conv_out", "out.2")
    n = len(WIDTHS)
    i = 1
    for b in range(n):
        for l in range(LAYERS):
            put_resnet(f"down_blocks.{b}.resnets.{l}", f"input_blocks.{i}.0")
            if b in attn_blocks:
                put_prefix(f"down_blocks.{b}.attentions.{l}", f"input_blocks.{i}.1")
            i += 1
        if b < n - 1:
            put_prefix(f"down_blocks.{b}.downsamplers.0.conv", f"input_blocks.{i}.0.op")
            i += 1
    put_resnet("mid_block.resnets.0", "middle_block.0")
    put_prefix("mid_block.attentions.0", "middle_block.1")
    put_resnet("mid_block.resnets.1", "middle_block.2")
    i = 0
    for b in range(n):
        has_attn = (n - 1 - b) in attn_blocks
        for l in range(LAYERS + 1):
            put_resnet(f"up_blocks.{b}.resnets.{l}", f"output_blocks.{i}.0")
            if has_attn:
                put_prefix(f"up_blocks.{b}.attentions.{l}", f"output_blocks.{i}.1")
            if l == LAYERS and b < n - 1:
                put_prefix(f"up_blocks.{b}.upsamplers.0.conv", f"output_blocks.{i}.{2 if has_attn else 1}.conv")
            i += 1
    assert len(out) == len(sd), (len(out), len(sd))
    return out


def vae_to_ldm(sd: dict) -> dict:
    out = {}
    n = len(WIDTHS)
    attn = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}
    for k, v in sd.items():
        parts = k.split(".")
        coder = parts[0]
        if coder in ("quant_conv", "post_quant_conv") or parts[1] in ("conv_in", "conv_out", "conv_norm_out"):
            key = k.replace("conv_norm_out", "norm_out")
        elif parts[1] in ("down_blocks", "up_blocks"):
            b = int(parts[2])
            ldm_b = b if coder == "encoder" else n - 1 - b
            kind = "down" if coder == "encoder" else "up"
            if parts[3] == "resnets":
                rest = ".".join(parts[5:]).replace("conv_shortcut", "nin_shortcut")
                key = f"{coder}.{kind}.{ldm_b}.block.{parts[4]}.{rest}"
            else:  # downsamplers.0.conv / upsamplers.0.conv
                key = f"{coder}.{kind}.{ldm_b}.{'downsample' if coder == 'encoder' else 'upsample'}.conv.{parts[-1]}"
        elif parts[1] == "mid_block":
            if parts[2] == "resnets":
                rest = ".".join(parts[4:]).replace("conv_shortcut", "nin_shortcut")
                key = f"{coder}.mid.block_{int(parts[3]) + 1}.{rest}"
            else:
                name = ".".join(parts[4:-1])
                key = f"{coder}.mid.attn_1.{attn[name]}.{parts[-1]}"
                if parts[-1] == "weight" and name != "group_norm":
                    v = v.reshape(*v.shape, 1, 1)  # 1x1 convolutions in the original
        else:
            raise KeyError(k)
        out[key] = v
    return out


def openclip_from_clip(sd: dict, extra_layer: dict) -> dict:
    """CLIPTextModel weights -> OpenCLIP's text tower names, fused in_proj; `extra_layer` is the last resblock."""
    out = {}
    layers = {}
    for k, v in sd.items():
        if k.endswith("position_ids"):
            continue
        k = k.removeprefix("text_model.")
        if k == "embeddings.token_embedding.weight":
            out["token_embedding.weight"] = v
        elif k == "embeddings.position_embedding.weight":
            out["positional_embedding"] = v
        elif k.startswith("final_layer_norm."):
            out["ln_final." + k.split(".")[-1]] = v
        else:
            p = k.split(".")  # encoder.layers.i.<module>.<param>
            layers.setdefault(int(p[2]), {})[".".join(p[3:])] = v
    layers[len(layers)] = extra_layer
    names = {"layer_norm1": "ln_1", "layer_norm2": "ln_2", "self_attn.out_proj": "attn.out_proj", "mlp.fc1": "mlp.c_fc",
             "mlp.fc2": "mlp.c_proj"}
    for i, layer in layers.items():
        pre = f"transformer.resblocks.{i}."
        for param in ("weight", "bias"):
            out[pre + f"attn.in_proj_{param}"] = torch.cat(
                [layer[f"self_attn.{x}_proj.{param}"] for x in ("q", "k", "v")], 0).contiguous()
        for src, dst in names.items():
            for param in ("weight", "bias"):
                out[pre + f"{dst}.{param}"] = layer[f"{src}.{param}"]
    out["text_projection"] = torch.randn(TEXT_WIDTH, TEXT_WIDTH, generator=torch.Generator().manual_seed(5))
    return out


# ---- models

def make_text_encoder(hidden_act: str, layers: int, seed: int) -> CLIPTextModel:
    config = CLIPTextConfig(vocab_size=49408, hidden_size=TEXT_WIDTH, intermediate_size=16, num_hidden_layers=layers,
                            num_attention_heads=1, max_position_embeddings=77, hidden_act=hidden_act,
                            projection_dim=TEXT_WIDTH, bos_token_id=49406, eos_token_id=49407, pad_token_id=1)
    model = CLIPTextModel(config).eval()
    randomize_(model, seed)
    return model


def make_unet(sd2: bool, seed: int) -> UNet2DConditionModel:
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=LAYERS, block_out_channels=WIDTHS,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3, norm_num_groups=8,
        cross_attention_dim=TEXT_WIDTH, attention_head_dim=[1, 1, 1, 1] if sd2 else 8, use_linear_projection=sd2)
    randomize_diffusers_(unet, seed)
    return unet.eval()


def make_vae(seed: int) -> AutoencoderKL:
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, block_out_channels=WIDTHS,
                        norm_num_groups=8, sample_size=64, scaling_factor=0.18215,
                        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)
    randomize_diffusers_(vae, seed)
    return vae.eval()


def rounded(sd: dict, dtype) -> dict:
    return {k: v.detach().to(dtype).contiguous() for k, v in sd.items() if not k.endswith("position_ids")}


def write_folder(folder: Path, pad_token: str, te, unet, vae, dtype, prediction: str):
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    write_tokenizer_folder(folder / "tokenizer", pad_token)
    te.to(dtype).save_pretrained(str(folder / "text_encoder"), safe_serialization=True)
    unet.to(dtype).save_pretrained(str(folder / "unet"), safe_serialization=True)
    vae.to(dtype).save_pretrained(str(folder / "vae"), safe_serialization=True)
    for m in (te, unet, vae):
        m.float()
    (folder / "scheduler").mkdir()
    (folder / "scheduler" / "scheduler_config.json").write_text(
        json.dumps(dict(SCHEDULER, prediction_type=prediction), indent=2))
    (folder / "model_index.json").write_text(json.dumps({
        "_class_name": "StableDiffusionPipeline", "_diffusers_version": "0.30.0", "feature_extractor": [None, None],
        "requires_safety_checker": False, "safety_checker": [None, None], "scheduler": ["diffusers", "PNDMScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"], "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"]}, indent=2))


def assert_same(expected: dict, got: dict, what: str):
    expected = {k.removeprefix("text_model."): v for k, v in expected.items()}
    got = {k.removeprefix("text_model."): v for k, v in got.items()}
    expected = {k: v for k, v in expected.items() if not k.endswith("position_ids")}
    got = {k: v for k, v in got.items() if not k.endswith("position_ids")}
    assert set(expected) == set(got), (what, sorted(set(expected) ^ set(got))[:10])
    for k in expected:
        assert torch.equal(expected[k].float(), got[k].float()), (what, k)


def write_torch_ckpt(safetensors_path: Path):
    """The same tensors as a PyTorch .ckpt, nested under "state_dict" with trainer metadata, as SD releases are."""
    tensors = load_file(str(safetensors_path))
    torch.save({"state_dict": tensors, "global_step": 1000, "epoch": 3}, str(safetensors_path.with_suffix(".ckpt")))


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    for name, sd2, seed, dtype in (("sd1", False, 11, torch.float16), ("sd2", True, 12, torch.bfloat16)):
        te = make_text_encoder("gelu" if sd2 else "quick_gelu", 2, seed)
        unet, vae = make_unet(sd2, seed + 100), make_vae(seed + 200)
        folder = OUT / name
        write_folder(folder, "!" if sd2 else "<|endoftext|>", te, unet, vae, dtype,
                     "v_prediction" if sd2 else "epsilon")
        te_sd, unet_sd, vae_sd = (rounded(m.state_dict(), dtype) for m in (te, unet, vae))
        ckpt = {}
        if sd2:
            extra = make_text_encoder("gelu", 1, seed + 7).state_dict()
            extra = {k.split("layers.0.")[1]: v for k, v in extra.items() if "layers.0." in k}
            for k, v in openclip_from_clip(te_sd, extra).items():
                ckpt["cond_stage_model.model." + k] = v.to(dtype).contiguous()
        else:
            for k, v in te_sd.items():
                ckpt["cond_stage_model.transformer.text_model." + k.removeprefix("text_model.")] = v
        ldm_unet = unet_to_ldm(unet_sd)
        g = torch.Generator().manual_seed(seed + 300)
        for k, v in ldm_unet.items():
            if sd2:
                ckpt["model.diffusion_model." + k] = v
            else:  # EMA holds the real weights; the live ones are perturbed so that using them shows
                ckpt["model.diffusion_model." + k] = (v.float() + 0.5 * torch.randn(v.shape, generator=g)).to(dtype)
                ckpt["model_ema.diffusion_model" + k.replace(".", "")] = v
        if not sd2:
            ckpt["model_ema.decay"] = torch.tensor(0.9999)
            ckpt["model_ema.num_updates"] = torch.tensor(1000, dtype=torch.int32)
        ldm_vae = vae_to_ldm(vae_sd)
        for k, v in ldm_vae.items():
            ckpt["first_stage_model." + k] = v.contiguous()
        ckpt_path = OUT / f"{name}.safetensors"
        save_file(ckpt, str(ckpt_path), metadata={"format": "pt"})
        write_torch_ckpt(ckpt_path)
        if sd2:
            (OUT / "sd2.yaml").write_text(
                "model:\n  target: ldm.models.diffusion.ddpm.LatentDiffusion\n  params:\n"
                "    parameterization: \"v\"\n    linear_start: 0.00085\n    linear_end: 0.012\n")
        else:
            save_file({k: v.contiguous() for k, v in ldm_vae.items()}, str(OUT / "sd1_vae_ldm.safetensors"))

        # Check the file against diffusers' own conversion of it.
        back = load_file(str(ckpt_path))
        assert_same(unet_sd, sfu.convert_ldm_unet_checkpoint(back, unet.config, extract_ema=True), "unet")
        assert_same(vae_sd, sfu.convert_ldm_vae_checkpoint(back, vae.config), "vae")
        if sd2:
            conv = sfu.convert_open_clip_checkpoint(te, back)
            conv = {k: v for k, v in conv.items() if "layers.2." not in k and k != "text_projection.weight"}
        else:
            conv = sfu.convert_ldm_clip_checkpoint(back)
        assert_same(te_sd, conv, "text_encoder")

    cases = []
    for i, (name, prompt, negative, steps, guidance, seed) in enumerate(CASES):
        pipe = StableDiffusionPipeline.from_pretrained(str(OUT / name), safety_checker=None,
                                                       requires_safety_checker=False, feature_extractor=None,
                                                       torch_dtype=torch.float32)
        pipe.set_progress_bar_config(disable=True)
        with torch.no_grad():
            image = pipe(prompt=prompt, negative_prompt=negative or None, num_inference_steps=steps,
                         guidance_scale=guidance, height=64, width=64,
                         generator=torch.Generator("cpu").manual_seed(seed), output_type="np").images[0]
        from PIL import Image
        png = f"{name}_case{i}.png"
        Image.fromarray((image * 255).round().astype("uint8")).save(OUT / png)
        cases.append({"model": name, "prompt": prompt, "negative_prompt": negative, "steps": steps,
                      "guidance": guidance, "seed": seed, "width": 64, "height": 64, "image": png})
    (OUT / "reference.json").write_text(json.dumps({"cases": cases}, indent=2))
    # The tokenizer folders are those of tiny-sd1 / tiny-sd2 (same writer, same pad tokens): the tests copy them
    # in rather than keeping two more 1.5 MB copies here.
    for name in ("sd1", "sd2"):
        shutil.rmtree(OUT / name / "tokenizer")
    total = sum(p.stat().st_size for p in OUT.rglob("*") if p.is_file())
    print(f"wrote {OUT} ({total / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
