#!/usr/bin/env python3
"""Builds sdrt's test fixtures: tiny random-weight models in diffusers layout and reference outputs.

The references come from transformers / diffusers (fp32, CPU), so the C++ tests compare sdrt with the
libraries it must reproduce. Run from the repository root:

    pip install torch transformers diffusers safetensors numpy
    python3 scripts/make_fixtures.py            # writes tests/fixtures/

Deterministic: every random weight comes from a seeded torch generator.
"""
import argparse
import gzip
import json
import shutil
from pathlib import Path

import numpy as np
import torch
import transformers
from safetensors.torch import load_file, save_file
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer
from diffusers import AutoencoderKL, UNet2DConditionModel

REPO = Path(__file__).resolve().parent.parent
CLIP_MERGES_GZ = REPO / "data" / "clip" / "bpe_simple_vocab_16e6.txt.gz"

# Prompts that exercise every branch of the CLIP pre-tokenizer and normaliser.
TOKENIZER_PROMPTS = [
    "a photo of an astronaut riding a horse on mars",
    "",
    " ",
    "A Photo Of A CAT",
    "hello, world! how's it going?",
    "I'm sure they'll say we've done what you'd've liked, can't you?",
    "it's the cat's toy; THEY'RE here, 'tis 'sup",
    "1234567890 3.14159 1,000,000 v1.5 2x 4k 8K",
    "café naïve résumé façade Ångström",
    "Zoë's über-cool straße, GROẞE",
    "ΣΊΣΥΦΟΣ and Οδυσσέας",
    "İstanbul and DİYARBAKIR",
    "東京の夜景, 美しい風景",
    "한국어 텍스트와 中文字符",
    "a cute cat 🐱 with sparkles ✨✨ and a 🚀",
    "👨‍👩‍👧‍👦 family emoji with zero width joiners",
    "tom &amp; jerry &lt;3 &quot;quoted&quot; &#39;x&#39;",
    "runs   of    spaces\tand\ttabs\nand\n\nnewlines",
    "   leading and trailing whitespace   ",
    "masterpiece, best quality, (ultra detailed:1.2), [blurry], {sharp}",
    "a <|startoftext|> in the middle and <|endoftext|> too",
    "cat<|endoftext|>dog <|ENDOFTEXT|>",
    "e = mc^2 + α·β − γ/δ ≈ 42 ± 0.5 %",
    "snake_case_words and kebab-case-words and CamelCaseWords",
    "https://example.com/path?query=1&x=y#frag user@mail.org",
    "¡Hola! ¿Qué tal? ça va… «bien» — “quotes” ‘single’",
    "ﬁne ligatures ﬀ and fullwidth ＡＢＣ１２３",
    "e\u0301 combining acute becomes é after NFC",
    "non\u00a0breaking\u2003em space\u3000ideographic",
    "!!!???...,,,;;;:::",
    "''' quoted''s ''re triple",
    "Roman numerals Ⅻ and ½ ¾ superscript² digits ٣٤٥",
    " ".join(["word"] * 100),
    "a very long prompt " + ", ".join(f"detail number {i}" for i in range(60)),
]

TEXT_ENCODER_PROMPTS = [
    "a photo of an astronaut riding a horse on mars",
    "",
    "a red circle on a blue background, highly detailed, 8k",
]


def bytes_to_unicode():
    """GPT-2's reversible byte -> printable unicode table (the standard construction)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(
        range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, [chr(c) for c in chars]))


def write_tokenizer_folder(dest: Path, pad_token: str):
    """vocab.json + merges.txt as SD 1.5 / 2.1 folders ship them, derived from OpenAI's merges file."""
    dest.mkdir(parents=True, exist_ok=True)
    lines = gzip.open(CLIP_MERGES_GZ, "rt", encoding="utf-8").read().split("\n")
    merges = lines[1:49152 - 256 - 2 + 1]
    vocab = list(bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab]
    vocab += ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    (dest / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}, ensure_ascii=False))
    (dest / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    special = lambda t: {"content": t, "lstrip": False, "normalized": True, "rstrip": False, "single_word": False}
    config = {
        "add_prefix_space": False,
        "bos_token": special("<|startoftext|>"),
        "do_lower_case": True,
        "eos_token": special("<|endoftext|>"),
        "errors": "replace",
        "model_max_length": 77,
        "pad_token": pad_token,
        "tokenizer_class": "CLIPTokenizer",
        "unk_token": special("<|endoftext|>"),
    }
    (dest / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    (dest / "special_tokens_map.json").write_text(json.dumps({
        "bos_token": special("<|startoftext|>"), "eos_token": special("<|endoftext|>"),
        "pad_token": pad_token if pad_token == "!" else special(pad_token), "unk_token": special("<|endoftext|>")
    }, indent=2))


def randomize_(module: torch.nn.Module, seed: int):
    """Replaces every parameter with seeded noise so that each one visibly affects the output."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(module.named_parameters()):
            noise = torch.randn(p.shape, generator=g)
            if name.endswith("layer_norm1.weight") or name.endswith("layer_norm2.weight") or name.endswith(
                    "final_layer_norm.weight"):
                p.copy_(1.0 + 0.1 * noise)
            elif name.endswith(".bias"):
                p.copy_(0.05 * noise)
            elif "embedding" in name:
                p.copy_(0.5 * noise)
            else:  # linear weights: keep activations O(1) through the layers
                p.copy_(noise / np.sqrt(p.shape[-1]))


def make_text_encoder(dest: Path, hidden_act: str, seed: int, dtype: torch.dtype, key_prefix: str, filename: str):
    config = CLIPTextConfig(
        vocab_size=49408, hidden_size=32, intermediate_size=37, num_hidden_layers=3, num_attention_heads=4,
        max_position_embeddings=77, hidden_act=hidden_act, layer_norm_eps=1e-5, projection_dim=32,
        bos_token_id=49406, eos_token_id=49407, pad_token_id=1)
    model = CLIPTextModel(config).eval()
    randomize_(model, seed)
    dest.mkdir(parents=True, exist_ok=True)
    config_dict = model.config.to_dict()
    config_dict["architectures"] = ["CLIPTextModel"]
    (dest / "config.json").write_text(json.dumps(config_dict, indent=2, sort_keys=True))
    # Keys as written by transformers 5 ("encoder.layers...") or transformers 4 ("text_model.encoder.layers...").
    state = {key_prefix + k: v.to(dtype).contiguous() for k, v in model.state_dict().items()
             if not k.endswith("position_ids")}
    save_file(state, str(dest / filename), metadata={"format": "pt"})
    # The reference runs in fp32 on exactly the stored (rounded) weights.
    stored = {k[len(key_prefix):]: v.float() for k, v in load_file(str(dest / filename)).items()}
    model.load_state_dict(stored, strict=False)
    return model


# scheduler_config.json as SD 1.5 (PNDM, epsilon) and SD 2.1 (DDIM, v-prediction) folders ship it.
SD1_SCHEDULER = {"_class_name": "PNDMScheduler", "_diffusers_version": "0.6.0", "beta_end": 0.012,
                 "beta_schedule": "scaled_linear", "beta_start": 0.00085, "clip_sample": False,
                 "num_train_timesteps": 1000, "set_alpha_to_one": False, "skip_prk_steps": True, "steps_offset": 1,
                 "trained_betas": None}
SD2_SCHEDULER = {"_class_name": "DDIMScheduler", "_diffusers_version": "0.8.0", "beta_end": 0.012,
                 "beta_schedule": "scaled_linear", "beta_start": 0.00085, "clip_sample": False,
                 "num_train_timesteps": 1000, "prediction_type": "v_prediction", "set_alpha_to_one": False,
                 "skip_prk_steps": True, "steps_offset": 1, "trained_betas": None}


def randomize_diffusers_(module: torch.nn.Module, seed: int):
    """Seeded weights with O(1) activations: norms near 1, small biases, fan-in scaled convolutions/linears."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(module.named_parameters()):
            noise = torch.randn(p.shape, generator=g)
            if "norm" in name and name.endswith(".weight"):
                p.copy_(1.0 + 0.1 * noise)
            elif name.endswith(".bias"):
                p.copy_(0.05 * noise)
            else:
                fan_in = int(np.prod(p.shape[1:])) if p.dim() > 1 else p.shape[0]
                p.copy_(noise / np.sqrt(fan_in))


def make_unet(dest: Path, sd2: bool, seed: int):
    common = dict(sample_size=8, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(32, 64, 64),
                  down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
                  up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
                  norm_num_groups=8, cross_attention_dim=32)
    if sd2:  # per-block head counts, linear projections, upcast attention (as SD 2.x configs)
        unet = UNet2DConditionModel(**common, attention_head_dim=(2, 4, 4), use_linear_projection=True,
                                    upcast_attention=True)
    else:  # SD 1.x: one int "attention_head_dim" (diffusers reads it as the number of heads), conv projections
        unet = UNet2DConditionModel(**common, attention_head_dim=4)
    randomize_diffusers_(unet, seed)
    unet.eval().save_pretrained(str(dest), safe_serialization=True)
    return unet


def make_vae(dest: Path, seed: int):
    # Four blocks as in SD: 8x spatial downsampling, 4 latent channels; tiny widths.
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1,
                        block_out_channels=(16, 16, 32, 32), norm_num_groups=8, sample_size=64,
                        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)
    randomize_diffusers_(vae, seed)
    vae.eval().save_pretrained(str(dest), safe_serialization=True)
    return vae


def write_npy(path: Path, array: np.ndarray):
    np.save(path, np.ascontiguousarray(array.astype(np.float32)))


def make_model(root: Path, name: str, *, pad_token: str, hidden_act: str, seed: int, dtype, key_prefix, filename,
               sd2: bool):
    folder = root / name
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    write_tokenizer_folder(folder / "tokenizer", pad_token)
    text_encoder = make_text_encoder(folder / "text_encoder", hidden_act, seed, dtype, key_prefix, filename)
    unet = make_unet(folder / "unet", sd2, seed + 100)
    vae = make_vae(folder / "vae", seed + 200)
    (folder / "scheduler").mkdir()
    scheduler_config = SD2_SCHEDULER if sd2 else SD1_SCHEDULER
    (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps(scheduler_config, indent=2))
    model_index = {
        "_class_name": "StableDiffusionPipeline",
        "_diffusers_version": "0.42.1",
        "feature_extractor": [None, None],
        "requires_safety_checker": False,
        "safety_checker": [None, None],
        "scheduler": ["diffusers", scheduler_config["_class_name"]],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }
    (folder / "model_index.json").write_text(json.dumps(model_index, indent=2))

    tokenizer = CLIPTokenizer.from_pretrained(str(folder / "tokenizer"))
    assert tokenizer.model_max_length == 77, tokenizer.model_max_length
    ref = folder / "reference"
    ref.mkdir()
    cases = []
    for i, prompt in enumerate(TEXT_ENCODER_PROMPTS):
        ids = tokenizer(prompt, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
        with torch.no_grad():
            out = text_encoder(ids, output_hidden_states=True)
        case = {"prompt": prompt, "ids": ids[0].tolist(), "last_hidden_state": f"te{i}_last_hidden_state.npy",
                "pooler_output": f"te{i}_pooler_output.npy", "hidden_states": f"te{i}_hidden_states.npy"}
        write_npy(ref / case["last_hidden_state"], out.last_hidden_state.numpy())
        write_npy(ref / case["pooler_output"], out.pooler_output.numpy())
        write_npy(ref / case["hidden_states"], torch.stack(out.hidden_states).numpy())  # [layers+1, 1, 77, H]
        cases.append(case)
    (ref / "text_encoder_cases.json").write_text(json.dumps({"cases": cases}, indent=2, ensure_ascii=False))
    write_unet_and_vae_references(ref, unet, vae, seed)
    return tokenizer


def write_unet_and_vae_references(ref: Path, unet, vae, seed: int):
    """One UNet call and one VAE decode/encode on seeded inputs, square and non-square."""
    g = torch.Generator().manual_seed(seed + 300)
    cases = []
    for i, (h, w, t) in enumerate([(8, 8, 981), (8, 5, 1), (6, 7, 500)]):
        sample = torch.randn(2, 4, h, w, generator=g)
        context = torch.randn(2, 77, 32, generator=g)
        timestep = torch.tensor(t)
        with torch.no_grad():
            out = unet(sample, timestep, encoder_hidden_states=context).sample
        files = {k: f"unet{i}_{k}.npy" for k in ("sample", "context", "out")}
        write_npy(ref / files["sample"], sample.numpy())
        write_npy(ref / files["context"], context.numpy())
        write_npy(ref / files["out"], out.numpy())
        cases.append({"timestep": t, **files})
    (ref / "unet_cases.json").write_text(json.dumps({"cases": cases}, indent=2))

    cases = []
    for i, (h, w) in enumerate([(8, 8), (8, 5)]):
        latents = torch.randn(1, 4, h, w, generator=g)
        with torch.no_grad():
            image = vae.decode(latents).sample  # before the pipeline's /2 + 0.5 and clamp
            moments = vae.quant_conv(vae.encoder(image.clamp(-1, 1))) if vae.quant_conv is not None else None
        files = {"latents": f"vae{i}_latents.npy", "image": f"vae{i}_image.npy", "moments": f"vae{i}_moments.npy"}
        write_npy(ref / files["latents"], latents.numpy())
        write_npy(ref / files["image"], image.numpy())
        write_npy(ref / files["moments"], moments.numpy())  # encoder(decoded image, clamped): [1, 8, h, w]
        cases.append(files)
    (ref / "vae_cases.json").write_text(json.dumps({"cases": cases}, indent=2))


# (scheduler, karras, prompt, negative prompt, guidance, steps, height, width, seed, init noise from a file)
PIPELINE_CASES = [
    ("default", False, "a red circle on a blue background", "", 7.5, 6, 64, 64, 42, False),
    ("pndm", False, "a red circle on a blue background", "blurry, dark", 7.5, 6, 64, 64, 7, False),
    ("ddim", False, "two green squares", "", 7.5, 5, 64, 64, 1, False),
    ("ddim", False, "two green squares", "", 1.0, 5, 64, 64, 1, False),
    ("euler", False, "a yellow star above a purple triangle", "", 7.5, 6, 64, 40, 3, False),
    ("euler", True, "a yellow star above a purple triangle", "ugly", 5.0, 6, 64, 64, 3, False),
    ("euler_a", False, "a cat", "", 7.5, 6, 64, 64, 1234, False),
    ("euler_a", False, "a cat", "a dog", 7.5, 6, 48, 64, 99, True),
    ("dpmpp_2m", False, "mountains at sunset", "", 7.5, 6, 64, 64, 5, False),
    ("dpmpp_2m", True, "mountains at sunset", "", 1.0, 6, 64, 56, 5, False),
]


def pipeline_scheduler(pipe, name: str, karras: bool):
    from diffusers import (DDIMScheduler, DPMSolverMultistepScheduler, EulerAncestralDiscreteScheduler,
                           EulerDiscreteScheduler, PNDMScheduler)
    classes = {"pndm": PNDMScheduler, "ddim": DDIMScheduler, "euler": EulerDiscreteScheduler,
               "euler_a": EulerAncestralDiscreteScheduler, "dpmpp_2m": DPMSolverMultistepScheduler}
    if name == "default":
        return pipe.scheduler
    extra = {"use_karras_sigmas": True} if karras else {}
    return classes[name].from_config(pipe.scheduler.config, **extra)


def write_pipeline_references(folder: Path):
    """Whole txt2img runs through diffusers' StableDiffusionPipeline: final latents and the 8-bit image."""
    from diffusers import StableDiffusionPipeline
    from PIL import Image

    extra = {}
    if not (folder / "text_encoder" / "model.safetensors").exists():  # tiny-sd1 ships only the fp16 variant
        extra["text_encoder"] = CLIPTextModel.from_pretrained(str(folder / "text_encoder"), variant="fp16",
                                                              dtype=torch.float32)
    pipe = StableDiffusionPipeline.from_pretrained(str(folder), safety_checker=None, requires_safety_checker=False,
                                                   feature_extractor=None, torch_dtype=torch.float32, **extra)
    assert pipe.text_encoder.dtype == torch.float32
    pipe.set_progress_bar_config(disable=True)
    default_scheduler = pipe.scheduler
    ref = folder / "reference"
    cases = []
    for i, (sched, karras, prompt, negative, guidance, steps, height, width, seed, from_file) in enumerate(
            PIPELINE_CASES):
        pipe.scheduler = default_scheduler
        pipe.scheduler = pipeline_scheduler(pipe, sched, karras)
        case = {"scheduler": sched, "karras": karras, "prompt": prompt, "negative_prompt": negative,
                "guidance": guidance, "steps": steps, "height": height, "width": width, "seed": seed,
                "image": f"pipe{i}_image.png", "latents": f"pipe{i}_latents.npy"}
        kwargs = dict(prompt=prompt, negative_prompt=negative or None, num_inference_steps=steps,
                      guidance_scale=guidance, height=height, width=width)
        if from_file:
            noise = torch.randn(1, 4, height // 8, width // 8, generator=torch.Generator().manual_seed(seed + 1))
            case["init_noise"] = f"pipe{i}_init_noise.npy"
            write_npy(ref / case["init_noise"], noise.numpy())
            kwargs["latents"] = noise
        with torch.no_grad():
            latents = pipe(**kwargs, generator=torch.Generator("cpu").manual_seed(seed), output_type="latent").images
            image = pipe(**kwargs, generator=torch.Generator("cpu").manual_seed(seed), output_type="np").images[0]
        write_npy(ref / case["latents"], latents.numpy())
        Image.fromarray((image * 255).round().astype("uint8")).save(ref / case["image"])
        cases.append(case)
    (ref / "pipeline_cases.json").write_text(json.dumps({"cases": cases}, indent=2))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO / "tests" / "fixtures")
    args = parser.parse_args()
    torch.manual_seed(0)
    args.out.mkdir(parents=True, exist_ok=True)

    # SD 1.x style: quick_gelu, pads with <|endoftext|>, fp16 variant file, transformers-5 key names.
    tok1 = make_model(args.out, "tiny-sd1", pad_token="<|endoftext|>", hidden_act="quick_gelu", seed=1,
                      dtype=torch.float16, key_prefix="", filename="model.fp16.safetensors", sd2=False)
    # SD 2.x style: gelu, pads with "!", bf16 weights, transformers-4 key names ("text_model." prefix).
    tok2 = make_model(args.out, "tiny-sd2", pad_token="!", hidden_act="gelu", seed=2, dtype=torch.bfloat16,
                      key_prefix="text_model.", filename="model.safetensors", sd2=True)

    write_pipeline_references(args.out / "tiny-sd1")
    write_pipeline_references(args.out / "tiny-sd2")

    cases = []
    for prompt in TOKENIZER_PROMPTS:
        enc = lambda tok: tok(prompt, padding="max_length", max_length=77, truncation=True).input_ids
        cases.append({"prompt": prompt, "sd1": enc(tok1), "sd2": enc(tok2)})
    (args.out / "tokenizer_cases.json").write_text(json.dumps(
        {"generator": f"transformers {transformers.__version__} CLIPTokenizer", "cases": cases},
        indent=1, ensure_ascii=False))
    print(f"wrote fixtures to {args.out}")


if __name__ == "__main__":
    main()
