#!/usr/bin/env python3
"""Writes a full-size SD 1.5 pipeline with random weights in diffusers layout, for benchmarks.

Real SD 1.5 shapes (UNet 860 M parameters, CLIP ViT-L text encoder, the SD VAE), seeded random weights,
SD 1.5's tokenizer files (derived from OpenAI's merges shipped in data/clip/) and scheduler config.

    python3 bench/make_random_sd15.py /tmp/sd15-random [--fp16] [--device cuda]

--device cuda initialises the weights on the GPU: seconds there instead of ~20 s on 16 CPU cores (the default, cpu).
The values differ between devices (different generators), the shapes do not.
"""
import argparse
import json
import sys
from pathlib import Path

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
from make_fixtures import SD1_SCHEDULER, write_tokenizer_folder  # noqa: E402

UNET_CONFIG = dict(sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
                   block_out_channels=(320, 640, 1280, 1280), cross_attention_dim=768, attention_head_dim=8,
                   down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                   up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3)
VAE_CONFIG = dict(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, sample_size=512,
                  block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
                  up_block_types=("UpDecoderBlock2D",) * 4)


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
    text = CLIPTextModel(CLIPTextConfig(vocab_size=49408, hidden_size=768, intermediate_size=3072,
                                        num_hidden_layers=12, num_attention_heads=12, max_position_embeddings=77,
                                        hidden_act="quick_gelu", projection_dim=768))
    text.to(dtype).save_pretrained(str(out / "text_encoder"))
    UNet2DConditionModel(**UNET_CONFIG).to(dtype).save_pretrained(str(out / "unet"))
    AutoencoderKL(**VAE_CONFIG).to(dtype).save_pretrained(str(out / "vae"))
    (out / "scheduler").mkdir(exist_ok=True)
    (out / "scheduler" / "scheduler_config.json").write_text(json.dumps(SD1_SCHEDULER, indent=2))
    (out / "model_index.json").write_text(json.dumps({
        "_class_name": "StableDiffusionPipeline", "_diffusers_version": "0.42.1",
        "feature_extractor": [None, None], "safety_checker": [None, None], "requires_safety_checker": False,
        "scheduler": ["diffusers", "PNDMScheduler"], "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"], "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"]}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
