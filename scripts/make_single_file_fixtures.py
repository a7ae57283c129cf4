#!/usr/bin/env python3
"""Builds tests/fixtures/single_file/: tiny SD 1.x / 2.x / XL models as diffusers folders and as single files in the
original CompVis / Stability key layout, plus diffusers reference images.

    python3 scripts/make_single_file_fixtures.py               # everything, from the repository root
    python3 scripts/make_single_file_fixtures.py --only sdxl   # the SDXL files alone (sd1 / sd2 left as they are)
    python3 scripts/make_single_file_fixtures.py --only sd     # the SD 1.x / 2.x files alone

The UNets have SD's topology (4 down blocks x 2 layers, attention in the first three, conv_in/out, mid block with
attention) at tiny widths. sdrt derives what the checkpoint cannot say by SD's conventions, so the widths are
chosen so that the conventions hold:
  - SD 1.x: 8 heads per UNet attention -> widths (8, 8, 16, 16), head dims 1 and 2.
  - SD 2.x / XL: UNet head dim 64 -> heads = max(1, width / 64): 1 head per block at these widths.
  - text encoders: head dim 64 -> heads = max(1, hidden / 64): hidden 8, one head.
  - GroupNorm groups: 32 when every width is a multiple of 32, else the widths' gcd (here 8).
  - SDXL: 6 time ids (base) / 5 (refiner), pooled width = text_encoder_2's projection_dim (16 here), so
    addition_time_embed_dim = (label_emb input width - 16) / time ids (8 here).
The text encoders keep CLIP's full 49408-token vocabulary (the built-in tokenizer needs it) at width 8, so that
the fixtures stay small (about 4 MB for SD 1.x / 2.x, 6 MB for SDXL).

Files:
  sd1/            diffusers folder (fp16) without tokenizer/ (tests copy tiny-sd1's), the reference; sd1.safetensors: the same weights, SD 1.x layout, with
                  EMA weights (model_ema.*) that are the real ones while model.diffusion_model.* is perturbed.
  sd2/            diffusers folder (bf16, tokenizer/ from tiny-sd2), v-prediction; sd2.safetensors + sd2.yaml (parameterization: "v"),
                  OpenCLIP text encoder with one layer more than the folder (SD 2.x uses the penultimate one).
  sd1_vae_ldm.safetensors: sd1's VAE alone in the original layout (encoder.* / decoder.*), for --vae.
  reference.json + *.png: diffusers StableDiffusionPipeline runs on the folders.
  sdxl_base/      SDXL base as diffusers' save_pretrained writes it (fp16): UNet widths (8, 8, 16), transformer depths
                  (1, 2, 1), no attention in the first block; text_encoder (CLIP ViT-L, 2 layers) is sd1's, so its
                  weights are not kept here (tests copy sd1/text_encoder/model.safetensors in); text_encoder_2 (bigG:
                  3 layers, projection 16); VAE (8, 8, 8, 8) with SDXL's scaling 0.13025; no tokenizer/ or
                  tokenizer_2/ (tests copy tiny-sd1's and tiny-sd2's).
  sdxl_base.safetensors: the same in the Stability layout (conditioner.embedders.0.transformer.* CLIP,
                  conditioner.embedders.1.model.* OpenCLIP with fused in_proj and text_projection [hidden, proj],
                  model.diffusion_model.* with label_emb, first_stage_model.*) plus extra tensors real files carry
                  (position_ids, logit_scale, denoiser.sigmas).
  sdxl_refiner/   the refiner (StableDiffusionXLImg2ImgPipeline): UNet widths (8, 8, 8, 8), 4 blocks, the last without
                  attention but transformer depth 2 (the mid block's); text_encoder_2 and VAE are the base's (as in
                  SDXL 1.0), so their weights are not kept here either; null text_encoder / tokenizer.
  sdxl_refiner.safetensors / .ckpt: the refiner in the Stability layout (bigG as conditioner.embedders.0.model.*).
                  The base's .ckpt is not made: two 49408-token tables would take the fixtures past 6 MB.
  reference_sdxl.json + sdxl_*.png: StableDiffusionXLPipeline (64x64, Euler, guidance 5; one case with a negative
                  prompt, one without, which conditions on zeros) and a refiner img2img run from the first image.
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

def unet_to_ldm(sd: dict, attn_blocks=(0, 1, 2), widths=WIDTHS, layers=LAYERS) -> dict:
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
    put_prefix("add_embedding.linear_1", "label_emb.0.0")  # SDXL's micro-conditioning embedding
    put_prefix("add_embedding.linear_2", "label_emb.0.2")
    n = len(widths)
    i = 1
    for b in range(n):
        for l in range(layers):
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
        for l in range(layers + 1):
            put_resnet(f"up_blocks.{b}.resnets.{l}", f"output_blocks.{i}.0")
            if has_attn:
                put_prefix(f"up_blocks.{b}.attentions.{l}", f"output_blocks.{i}.1")
            if l == layers and b < n - 1:
                put_prefix(f"up_blocks.{b}.upsamplers.0.conv", f"output_blocks.{i}.{2 if has_attn else 1}.conv")
            i += 1
    assert len(out) == len(sd), (len(out), len(sd))
    return out


def vae_to_ldm(sd: dict, n=len(WIDTHS)) -> dict:
    out = {}
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


def openclip_from_clip(sd: dict, extra_layer: dict, text_projection=None) -> dict:
    """CLIPTextModel weights -> OpenCLIP's text tower names, fused in_proj; `extra_layer` (if any) is the last
    resblock; `text_projection` is OpenCLIP's [hidden, projection] matrix (random when not given)."""
    out = {}
    layers = {}
    for k, v in sd.items():
        if k.endswith("position_ids") or k == "text_projection.weight":
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
    if extra_layer is not None:
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
    if text_projection is None:
        text_projection = torch.randn(TEXT_WIDTH, TEXT_WIDTH, generator=torch.Generator().manual_seed(5))
    out["text_projection"] = text_projection
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


def make_sd():
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


# ---- SDXL base + refiner (`--only sdxl`)

SDXL_TEXT_WIDTH = 8  # both encoders: one head (head dim 64 -> max(1, 8 / 64))
SDXL_PROJECTION = 16  # text_encoder_2's projection_dim (the pooled width); not 8, so that a missed transpose shows
SDXL_TIME_DIM = 8  # addition_time_embed_dim
# SDXL's UNet topology (no attention in the first block, per-block transformer depth, linear proj_in) at tiny widths.
# The base's depths (1, 2, 1) differ per block; the refiner's last block has no attention but its depth (2) is the mid
# block's, as diffusers reads transformer_layers_per_block[-1] there.
SDXL_BASE = dict(widths=(8, 8, 16), depth=(1, 2, 1), time_ids=6, cross=2 * SDXL_TEXT_WIDTH,
                 down=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                 up=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"))
SDXL_REFINER = dict(widths=(8, 8, 8, 8), depth=(1, 1, 1, 2), time_ids=5, cross=SDXL_TEXT_WIDTH,
                    down=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
                    up=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"))
SDXL_VAE_WIDTHS = (8, 8, 8, 8)
# SDXL 1.0 base's scheduler_config.json (the refiner's is the same).
SDXL_SCHEDULER = {"_class_name": "EulerDiscreteScheduler", "_diffusers_version": "0.19.0.dev0", "beta_end": 0.012,
                  "beta_schedule": "scaled_linear", "beta_start": 0.00085, "clip_sample": False,
                  "interpolation_type": "linear", "num_train_timesteps": 1000, "prediction_type": "epsilon",
                  "sample_max_value": 1.0, "set_alpha_to_one": False, "skip_prk_steps": True, "steps_offset": 1,
                  "timestep_spacing": "leading", "trained_betas": None, "use_karras_sigmas": False}
SDXL_CASES = [  # (model, prompt, negative, steps, guidance, seed); "" = no negative prompt (zeros: force_zeros...)
    ("sdxl_base", "a red circle on a blue background", "blurry, low quality", 4, 5.0, 42),
    ("sdxl_base", "two green squares", "", 4, 5.0, 7),
]
# The refiner's img2img case starts from the first base image (its PNG, as sdrt would read it).
SDXL_REFINER_CASE = dict(model="sdxl_refiner", prompt="a red circle on a blue background",
                         negative="blurry, low quality",
                         steps=8, strength=0.5, guidance=5.0, seed=3, aesthetic_score=6.0,
                         negative_aesthetic_score=2.5, init_image="sdxl_base_case0.png")


def make_sdxl_text_encoder_2(seed: int):
    from transformers import CLIPTextModelWithProjection
    config = CLIPTextConfig(vocab_size=49408, hidden_size=SDXL_TEXT_WIDTH, intermediate_size=32, num_hidden_layers=3,
                            num_attention_heads=1, max_position_embeddings=77, hidden_act="gelu",
                            projection_dim=SDXL_PROJECTION, bos_token_id=49406, eos_token_id=49407, pad_token_id=1)
    model = CLIPTextModelWithProjection(config).eval()
    randomize_(model, seed)
    return model


def make_sdxl_unet(spec: dict, seed: int) -> UNet2DConditionModel:
    n = len(spec["widths"])
    unet = UNet2DConditionModel(
        sample_size=128, in_channels=4, out_channels=4, layers_per_block=LAYERS, block_out_channels=spec["widths"],
        down_block_types=spec["down"], up_block_types=spec["up"], norm_num_groups=8,
        cross_attention_dim=spec["cross"], attention_head_dim=[1] * n, use_linear_projection=True,
        transformer_layers_per_block=spec["depth"], addition_embed_type="text_time",
        addition_time_embed_dim=SDXL_TIME_DIM,
        projection_class_embeddings_input_dim=SDXL_PROJECTION + spec["time_ids"] * SDXL_TIME_DIM)
    randomize_diffusers_(unet, seed)
    return unet.eval()


def make_sdxl_vae(seed: int) -> AutoencoderKL:
    n = len(SDXL_VAE_WIDTHS)
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1,
                        block_out_channels=SDXL_VAE_WIDTHS, norm_num_groups=8, sample_size=1024,
                        scaling_factor=0.13025, force_upcast=True, down_block_types=("DownEncoderBlock2D",) * n,
                        up_block_types=("UpDecoderBlock2D",) * n)
    randomize_diffusers_(vae, seed)
    return vae.eval()


def sdxl_single_file(te1_sd, te2_sd, unet_sd, vae_sd, spec: dict, refiner: bool) -> dict:
    """The Stability layout: conditioner.embedders.N (CLIP ViT-L in transformers' names, then OpenCLIP bigG; the
    refiner has bigG alone, as embedder 0), model.diffusion_model.* with label_emb, first_stage_model.*"""
    ckpt = {}
    if te1_sd is not None:
        for k, v in te1_sd.items():
            ckpt["conditioner.embedders.0.transformer.text_model." + k.removeprefix("text_model.")] = v
    pre = "conditioner.embedders.0.model." if refiner else "conditioner.embedders.1.model."
    # OpenCLIP keeps text_projection as [hidden, projection] (x @ P); transformers' Linear holds its transpose.
    for k, v in openclip_from_clip(te2_sd, None, te2_sd["text_projection.weight"].T).items():
        ckpt[pre + k] = v.contiguous()
    attn = [b for b, t in enumerate(spec["down"]) if t.startswith("CrossAttn")]
    for k, v in unet_to_ldm(unet_sd, attn, spec["widths"], LAYERS).items():
        ckpt["model.diffusion_model." + k] = v.contiguous()
    for k, v in vae_to_ldm(vae_sd, len(SDXL_VAE_WIDTHS)).items():
        ckpt["first_stage_model." + k] = v.contiguous()
    if not refiner:  # tensors real SDXL files carry that no diffusers component uses
        ckpt["conditioner.embedders.0.transformer.text_model.embeddings.position_ids"] = torch.arange(77).unsqueeze(0)
        ckpt[pre + "logit_scale"] = torch.tensor(4.6052, dtype=torch.float32)
        ckpt["denoiser.sigmas"] = torch.linspace(0.03, 14.6, 1000, dtype=torch.float32)
    return ckpt


def write_sdxl_folder(folder: Path, refiner: bool, te1, te2, unet, vae):
    """The folder as diffusers' save_pretrained writes it (fp16), with the tokenizers of tiny-sd1 (pad <|endoftext|>)
    and tiny-sd2 (pad "!"), as SDXL's tokenizer / tokenizer_2 pad."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLImg2ImgPipeline, StableDiffusionXLPipeline
    from transformers import CLIPTokenizer
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    write_tokenizer_folder(folder / "tokenizer", "<|endoftext|>")
    write_tokenizer_folder(folder / "tokenizer_2", "!")
    tok2 = CLIPTokenizer.from_pretrained(str(folder / "tokenizer_2"))
    scheduler = EulerDiscreteScheduler.from_config(SDXL_SCHEDULER)
    if refiner:
        pipe = StableDiffusionXLImg2ImgPipeline(vae=vae, text_encoder=None, text_encoder_2=te2, tokenizer=None,
                                                tokenizer_2=tok2, unet=unet, scheduler=scheduler,
                                                requires_aesthetics_score=True, force_zeros_for_empty_prompt=False,
                                                add_watermarker=False)
    else:
        tok1 = CLIPTokenizer.from_pretrained(str(folder / "tokenizer"))
        pipe = StableDiffusionXLPipeline(vae=vae, text_encoder=te1, text_encoder_2=te2, tokenizer=tok1,
                                         tokenizer_2=tok2, unet=unet, scheduler=scheduler,
                                         force_zeros_for_empty_prompt=True, add_watermarker=False)
    pipe.to(torch.float16)
    pipe.save_pretrained(str(folder), safe_serialization=True)
    for m in (te1, te2, unet, vae):
        if m is not None:
            m.float()
    # The tokenizer folders as sdrt's fixtures have them (save_pretrained rewrites them in its own format).
    for name, pad in (("tokenizer", "<|endoftext|>"), ("tokenizer_2", "!")):
        if (folder / name).exists():
            shutil.rmtree(folder / name)
            write_tokenizer_folder(folder / name, pad)


def same_safetensors(a: Path, b: Path) -> bool:
    x, y = load_file(str(a)), load_file(str(b))
    return set(x) == set(y) and all(torch.equal(x[k], y[k]) for k in x)


def make_sdxl():
    from diffusers import StableDiffusionXLImg2ImgPipeline, StableDiffusionXLPipeline
    from PIL import Image
    dtype = torch.float16
    # SDXL's text_encoder is SD 1.x's CLIP ViT-L: the base reuses sd1's (the tests copy its weights in); the
    # refiner's text_encoder_2 and VAE are the base's, as in SDXL 1.0.
    te1 = CLIPTextModel.from_pretrained(str(OUT / "sd1" / "text_encoder"), torch_dtype=torch.float32).eval()
    te2 = make_sdxl_text_encoder_2(21)
    vae = make_sdxl_vae(221)
    models = {"sdxl_base": (SDXL_BASE, False, te1, make_sdxl_unet(SDXL_BASE, 121)),
              "sdxl_refiner": (SDXL_REFINER, True, None, make_sdxl_unet(SDXL_REFINER, 122))}
    for name, (spec, refiner, te1_, unet) in models.items():
        folder = OUT / name
        write_sdxl_folder(folder, refiner, te1_, te2, unet, vae)
        te1_sd = rounded(te1_.state_dict(), dtype) if te1_ is not None else None
        te2_sd, unet_sd, vae_sd = (rounded(m.state_dict(), dtype) for m in (te2, unet, vae))
        ckpt = sdxl_single_file(te1_sd, te2_sd, unet_sd, vae_sd, spec, refiner)
        path = OUT / f"{name}.safetensors"
        save_file(ckpt, str(path), metadata={"format": "pt"})
        if refiner:  # the base's .ckpt would be ~1.9 MB (two 49408-token tables): the refiner's carries the format
            write_torch_ckpt(path)

        # Check the file against diffusers' own conversion of it.
        back = load_file(str(path))
        assert_same(unet_sd, sfu.convert_ldm_unet_checkpoint(back, unet.config), name + " unet")
        assert_same(vae_sd, sfu.convert_ldm_vae_checkpoint(back, vae.config), name + " vae")
        pre = "conditioner.embedders.0.model." if refiner else "conditioner.embedders.1.model."
        assert_same(te2_sd, sfu.convert_open_clip_checkpoint(te2, back, prefix=pre), name + " text_encoder_2")
        if not refiner:
            assert_same(te1_sd, sfu.convert_ldm_clip_checkpoint(back), name + " text_encoder")

    cases = []
    base = StableDiffusionXLPipeline.from_pretrained(str(OUT / "sdxl_base"), torch_dtype=torch.float32,
                                                     add_watermarker=False)
    base.set_progress_bar_config(disable=True)
    for i, (name, prompt, negative, steps, guidance, seed) in enumerate(SDXL_CASES):
        with torch.no_grad():
            image = base(prompt=prompt, negative_prompt=negative or None, num_inference_steps=steps,
                         guidance_scale=guidance, height=64, width=64,
                         generator=torch.Generator("cpu").manual_seed(seed), output_type="np").images[0]
        png = f"{name}_case{i}.png"
        Image.fromarray((image * 255).round().astype("uint8")).save(OUT / png)
        cases.append({"model": name, "pipeline": "StableDiffusionXLPipeline", "prompt": prompt,
                      "negative_prompt": negative, "steps": steps, "guidance": guidance, "seed": seed, "width": 64,
                      "height": 64, "image": png})
    r = SDXL_REFINER_CASE
    refiner = StableDiffusionXLImg2ImgPipeline.from_pretrained(str(OUT / "sdxl_refiner"), torch_dtype=torch.float32,
                                                               add_watermarker=False)
    refiner.set_progress_bar_config(disable=True)
    with torch.no_grad():
        image = refiner(prompt=r["prompt"], negative_prompt=r["negative"] or None,
                        image=Image.open(OUT / r["init_image"]).convert("RGB"), strength=r["strength"],
                        num_inference_steps=r["steps"], guidance_scale=r["guidance"],
                        aesthetic_score=r["aesthetic_score"], negative_aesthetic_score=r["negative_aesthetic_score"],
                        generator=torch.Generator("cpu").manual_seed(r["seed"]), output_type="np").images[0]
    png = f"sdxl_refiner_case{len(cases)}.png"
    Image.fromarray((image * 255).round().astype("uint8")).save(OUT / png)
    cases.append({"model": r["model"], "pipeline": "StableDiffusionXLImg2ImgPipeline", "prompt": r["prompt"],
                  "negative_prompt": r["negative"], "steps": r["steps"], "strength": r["strength"],
                  "guidance": r["guidance"], "seed": r["seed"], "aesthetic_score": r["aesthetic_score"],
                  "negative_aesthetic_score": r["negative_aesthetic_score"], "init_image": r["init_image"],
                  "width": 64, "height": 64, "image": png})
    (OUT / "reference_sdxl.json").write_text(json.dumps({
        "scheduler": "EulerDiscreteScheduler", "generator": "torch.Generator('cpu').manual_seed(seed)",
        "note": "an empty negative_prompt was passed as None (SDXL base: force_zeros_for_empty_prompt)",
        "cases": cases}, indent=2))

    # Shared weights and the tokenizers are kept once: the tests copy them in (sd1/text_encoder's weights into
    # sdxl_base/text_encoder, sdxl_base's text_encoder_2 and vae weights into sdxl_refiner, tiny-sd1 / tiny-sd2's
    # tokenizer folders as tokenizer / tokenizer_2).
    shared = [(OUT / "sdxl_base/text_encoder/model.safetensors", OUT / "sd1/text_encoder/model.safetensors"),
              (OUT / "sdxl_refiner/text_encoder_2/model.safetensors",
               OUT / "sdxl_base/text_encoder_2/model.safetensors"),
              (OUT / "sdxl_refiner/vae/diffusion_pytorch_model.safetensors",
               OUT / "sdxl_base/vae/diffusion_pytorch_model.safetensors")]
    for copy, original in shared:
        assert same_safetensors(copy, original), copy
        copy.unlink()
    for name in ("sdxl_base", "sdxl_refiner"):
        for tok in ("tokenizer", "tokenizer_2"):
            if (OUT / name / tok).exists():
                shutil.rmtree(OUT / name / tok)
    files = [p for p in OUT.rglob("*") if p.is_file() and p.relative_to(OUT).parts[0].startswith(
        ("sdxl", "reference_sdxl"))]
    total = sum(p.stat().st_size for p in files)
    print(f"wrote {len(files)} SDXL files to {OUT} ({total / 1e6:.2f} MB)")


def main():
    import argparse
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=("sd", "sdxl"),
                        help="make only the SD 1.x / 2.x fixtures or only the SDXL ones (default: both)")
    args = parser.parse_args()
    if args.only != "sdxl":
        make_sd()
    if args.only != "sd":
        make_sdxl()


if __name__ == "__main__":
    main()
