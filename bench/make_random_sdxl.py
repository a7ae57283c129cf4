#!/usr/bin/env python3
"""Writes a full-size SDXL base pipeline with random weights in diffusers layout, for benchmarks.

SDXL base's shapes (UNet 2.6 B parameters: widths 320/640/1280, transformer depths 1/2/10, head dim 64,
2048-wide context, text_time add-embedding; CLIP ViT-L and OpenCLIP ViT-bigG text encoders; the SDXL VAE,
scaling factor 0.13025), seeded random weights, tokenizer files derived from OpenAI's merges in data/clip/
(tokenizer_2 pads with "!"), SDXL's Euler scheduler config.

    python3 bench/make_random_sdxl.py /tmp/sdxl-random [--fp16] [--device cuda]
"""
import argparse
import json
import sys
from pathlib import Path

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
from make_fixtures import write_tokenizer_folder  # noqa: E402

UNET_CONFIG = dict(sample_size=128, in_channels=4, out_channels=4, layers_per_block=2,
                   block_out_channels=(320, 640, 1280), cross_attention_dim=2048, attention_head_dim=(5, 10, 20),
                   down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                   up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
                   transformer_layers_per_block=(1, 2, 10), use_linear_projection=True,
                   addition_embed_type="text_time", addition_time_embed_dim=256,
                   projection_class_embeddings_input_dim=2816)
VAE_CONFIG = dict(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, sample_size=1024,
                  block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
                  up_block_types=("UpDecoderBlock2D",) * 4, scaling_factor=0.13025, force_upcast=True)
SCHEDULER = {"_class_name": "EulerDiscreteScheduler", "beta_end": 0.012, "beta_schedule": "scaled_linear",
             "beta_start": 0.00085, "clip_sample": False, "interpolation_type": "linear",
             "num_train_timesteps": 1000, "prediction_type": "epsilon", "sample_max_value": 1.0,
             "set_alpha_to_one": False, "skip_prk_steps": True, "steps_offset": 1,
             "timestep_spacing": "leading", "trained_betas": None, "use_karras_sigmas": False}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--fp16", action="store_true", help="store weights as fp16")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="where to initialise the weights (cpu, cuda)")
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    torch.set_default_device(args.device)
    dtype = torch.float16 if args.fp16 else torch.float32
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    write_tokenizer_folder(out / "tokenizer", "<|endoftext|>")
    write_tokenizer_folder(out / "tokenizer_2", "!")
    CLIPTextModel(CLIPTextConfig(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                                 num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu",
                                 projection_dim=768)).to(dtype).save_pretrained(str(out / "text_encoder"))
    CLIPTextModelWithProjection(CLIPTextConfig(
        vocab_size=49408, hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=20,
        max_position_embeddings=77, hidden_act="gelu", projection_dim=1280)).to(dtype).save_pretrained(
            str(out / "text_encoder_2"))
    UNet2DConditionModel(**UNET_CONFIG).to(dtype).save_pretrained(str(out / "unet"))
    AutoencoderKL(**VAE_CONFIG).to(dtype).save_pretrained(str(out / "vae"))
    (out / "scheduler").mkdir(exist_ok=True)
    (out / "scheduler" / "scheduler_config.json").write_text(json.dumps(SCHEDULER, indent=2))
    (out / "model_index.json").write_text(json.dumps({
        "_class_name": "StableDiffusionXLPipeline", "_diffusers_version": "0.42.1",
        "force_zeros_for_empty_prompt": True, "feature_extractor": [None, None], "image_encoder": [None, None],
        "scheduler": ["diffusers", "EulerDiscreteScheduler"], "text_encoder": ["transformers", "CLIPTextModel"],
        "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
        "tokenizer": ["transformers", "CLIPTokenizer"], "tokenizer_2": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"]}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
