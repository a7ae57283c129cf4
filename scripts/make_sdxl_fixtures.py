#!/usr/bin/env python3
"""Builds sdrt's SDXL test fixtures: tiny random-weight SDXL base and refiner folders in diffusers layout, and
reference outputs made by diffusers (fp32, CPU) from those folders as loaded back from disk.

Run from the repository root (needs torch, transformers, diffusers, safetensors, numpy, pillow):

    /work/venv/bin/python scripts/make_sdxl_fixtures.py

Deterministic: every random weight and input comes from a seeded torch generator, and every pipeline run from
torch.Generator("cpu").manual_seed(seed). Re-running replaces the outputs below.

Writes:
  tests/fixtures/tiny-sdxl/            StableDiffusionXLPipeline folder: tokenizer/ (pads with <|endoftext|>),
                                       tokenizer_2/ (pads with "!"), text_encoder/ (CLIPTextModel, quick_gelu),
                                       text_encoder_2/ (CLIPTextModelWithProjection, gelu), unet/ (SDXL topology,
                                       text_time added embeddings), vae/ (scaling_factor 0.13025, force_upcast),
                                       scheduler/ (SDXL base's EulerDiscreteScheduler config), model_index.json.
  tests/fixtures/tiny-sdxl/reference/  encode_cases.json, unet_cases.json, pipeline_cases.json + .npy / .png.
  tests/fixtures/tiny-sdxl-refiner/    StableDiffusionXLImg2ImgPipeline folder as the SDXL refiner ships it:
                                       no text_encoder/tokenizer, the base's text_encoder_2/tokenizer_2/vae (as
                                       relative symbolic links to ../tiny-sdxl/<name>, not copies), its own unet
                                       (bigG context only, aesthetic-score time ids).
  tests/fixtures/tiny-sdxl-refiner/reference/  unet_cases.json + .npy for the refiner's UNet.

Weights are stored in fp16 for the text encoders and UNets (to keep the fixtures small) and fp32 for the VAE; the
references are computed in fp32 on exactly the stored (rounded) weights. About 14 MB in all, mostly the two
full-vocabulary tokenizers (1.5 MB each) and the two 49408 x 32 text encoders (3.2 MB each in fp16); the UNets (widths
16/32/32) take about 1.6 MB each and the VAE 1.1 MB.

reference/ files (tensors are float32 .npy, images 8-bit RGB PNG as make_fixtures.py writes them):
  encode_cases.json    {"cases": [{prompt, negative_prompt ("" if none), negative_prompt_is_none (diffusers got
                       None: force_zeros_for_empty_prompt zeroes the negatives), ids / ids_2 (tokenizer /
                       tokenizer_2, 77 each), negative_ids / negative_ids_2 (null if none), prompt_embeds
                       [1,77,64], negative_prompt_embeds, pooled_prompt_embeds [1,32],
                       negative_pooled_prompt_embeds: .npy names}]}: pipe.encode_prompt(..., CFG on).
  unet_cases.json      {"cases": [{timestep, time_ids_values, sample [2,4,h,w], context [2,77,64 | 32 refiner],
                       text_embeds [2,32], time_ids [2,6 | 5 refiner], out: .npy names}]}: one UNet call each.
  pipeline_cases.json  {"cases": [...]}: one txt2img run each (fields documented in write_pipeline_references).
"""
import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_fixtures import randomize_, randomize_diffusers_, write_npy, write_tokenizer_folder  # noqa: E402
import diffusers  # noqa: E402
from diffusers import (AutoencoderKL, DDIMScheduler, DiffusionPipeline, DPMSolverMultistepScheduler,  # noqa: E402
                       EulerAncestralDiscreteScheduler, StableDiffusionXLImg2ImgPipeline,
                       StableDiffusionXLPipeline, UNet2DConditionModel)

REPO = Path(__file__).resolve().parent.parent
TEXT_WIDTH = 32        # both encoders' hidden size; also text_encoder_2's projection_dim
TIME_EMBED_DIM = 8     # unet addition_time_embed_dim

# scheduler_config.json as stabilityai/stable-diffusion-xl-base-1.0 (and the refiner) ship it.
SDXL_SCHEDULER = {
    "_class_name": "EulerDiscreteScheduler",
    "_diffusers_version": "0.19.0.dev0",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "interpolation_type": "linear",
    "num_train_timesteps": 1000,
    "prediction_type": "epsilon",
    "sample_max_value": 1.0,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "timestep_spacing": "leading",
    "trained_betas": None,
    "use_karras_sigmas": False,
}


# ---- model folders

def make_clip(dest: Path, cls, hidden_act: str, seed: int):
    """A tiny CLIP text encoder stored in fp16 with transformers 4's key names, as SDXL's folders ship them
    ("text_model.*", plus "text_projection.weight" for the projecting one)."""
    config = CLIPTextConfig(
        vocab_size=49408, hidden_size=TEXT_WIDTH, intermediate_size=37, num_hidden_layers=3, num_attention_heads=4,
        max_position_embeddings=77, hidden_act=hidden_act, layer_norm_eps=1e-5, projection_dim=TEXT_WIDTH,
        bos_token_id=49406, eos_token_id=49407, pad_token_id=1)
    model = cls(config).eval()
    randomize_(model, seed)
    dest.mkdir(parents=True, exist_ok=True)
    config_dict = model.config.to_dict()
    config_dict["architectures"] = [cls.__name__]
    (dest / "config.json").write_text(json.dumps(config_dict, indent=2, sort_keys=True))
    state = {}
    for k, v in model.state_dict().items():
        if k.endswith("position_ids"):
            continue
        if not k.startswith("text_model.") and not k.startswith("text_projection."):
            k = "text_model." + k  # transformers 5's CLIPTextModel drops the prefix; SDXL files have it
        state[k] = v.to(torch.float16).contiguous()
    save_file(state, str(dest / "model.safetensors"), metadata={"format": "pt"})


UNET_WIDTHS = (16, 32, 32)  # norm_num_groups 8 divides each; with 2/2/4 heads: head dims 8/16/8


def make_unet(dest: Path, cross_attention_dim: int, n_time_ids: int, seed: int):
    """SDXL's UNet topology at tiny width: no attention at the top level, 1/1/2 transformer layers (mid block: 2),
    linear projections, text_time added embeddings (pooled text + sinusoidal size/crop/aesthetic ids)."""
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=UNET_WIDTHS,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        transformer_layers_per_block=(1, 1, 2), attention_head_dim=(2, 2, 4),  # diffusers reads these as heads
        use_linear_projection=True, cross_attention_dim=cross_attention_dim, norm_num_groups=8,
        addition_embed_type="text_time", addition_time_embed_dim=TIME_EMBED_DIM,
        projection_class_embeddings_input_dim=n_time_ids * TIME_EMBED_DIM + TEXT_WIDTH)
    randomize_diffusers_(unet, seed)
    unet.eval().half().save_pretrained(str(dest), safe_serialization=True)  # fp16: half the size


def make_vae(dest: Path, seed: int):
    # tiny-sd1's shape (four levels: 8x downsampling, 4 latent channels) with SDXL's VAE settings.
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1,
                        block_out_channels=(16, 16, 32, 32), norm_num_groups=8, sample_size=64,
                        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                        scaling_factor=0.13025, force_upcast=True)
    randomize_diffusers_(vae, seed)
    vae.eval().save_pretrained(str(dest), safe_serialization=True)


def write_scheduler(folder: Path):
    (folder / "scheduler").mkdir(parents=True)
    (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps(SDXL_SCHEDULER, indent=2))


def make_base(folder: Path):
    folder.mkdir(parents=True)
    write_tokenizer_folder(folder / "tokenizer", "<|endoftext|>")  # CLIP ViT-L's
    write_tokenizer_folder(folder / "tokenizer_2", "!")  # OpenCLIP bigG's
    make_clip(folder / "text_encoder", CLIPTextModel, "quick_gelu", seed=11)
    make_clip(folder / "text_encoder_2", CLIPTextModelWithProjection, "gelu", seed=12)
    # context = [ViT-L penultimate (32) | bigG penultimate (32)]; time ids: orig (h, w), crop (top, left), target (h, w)
    make_unet(folder / "unet", cross_attention_dim=2 * TEXT_WIDTH, n_time_ids=6, seed=13)
    make_vae(folder / "vae", seed=14)
    write_scheduler(folder)
    model_index = {
        "_class_name": "StableDiffusionXLPipeline",
        "_diffusers_version": diffusers.__version__,
        "force_zeros_for_empty_prompt": True,
        "scheduler": ["diffusers", "EulerDiscreteScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "tokenizer_2": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }
    (folder / "model_index.json").write_text(json.dumps(model_index, indent=2))
    (folder / "README.md").write_text(
        "# tiny-sdxl\n\n"
        "A tiny random-weight SDXL base model in diffusers layout (StableDiffusionXLPipeline: two CLIP text\n"
        "encoders of width 32, an SDXL-topology UNet of widths 16/32/32, a 4-level VAE with scaling_factor\n"
        "0.13025, SDXL base's Euler scheduler config; 64x64 default images), plus `reference/`: diffusers'\n"
        "encode_prompt outputs, UNet calls and whole pipeline runs (including a base + refiner run with\n"
        "`../tiny-sdxl-refiner`). Weights are meaningless; the fixture only checks that sdrt computes what\n"
        "diffusers computes.\n\n"
        "Made by `scripts/make_sdxl_fixtures.py` (run `/work/venv/bin/python scripts/make_sdxl_fixtures.py` from\n"
        "the repository root; deterministic). Do not edit by hand.\n")


def make_refiner(folder: Path, base: Path):
    folder.mkdir(parents=True)
    # The real refiner ships the base's OpenCLIP bigG encoder, tokenizer and VAE unchanged: relative symbolic links
    # to the base's folders (../tiny-sdxl/<name>) rather than copies, so that the weights are stored once.
    for name in ("tokenizer_2", "text_encoder_2", "vae"):
        (folder / name).symlink_to(Path("..") / base.name / name, target_is_directory=True)
        assert (folder / name).resolve() == (base / name).resolve(), name
    # context = bigG penultimate only (32); time ids: orig (h, w), crop (top, left), aesthetic score
    make_unet(folder / "unet", cross_attention_dim=TEXT_WIDTH, n_time_ids=5, seed=15)
    write_scheduler(folder)
    model_index = {
        "_class_name": "StableDiffusionXLImg2ImgPipeline",
        "_diffusers_version": diffusers.__version__,
        "force_zeros_for_empty_prompt": False,
        "requires_aesthetics_score": True,
        "scheduler": ["diffusers", "EulerDiscreteScheduler"],
        "text_encoder": [None, None],
        "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
        "tokenizer": [None, None],
        "tokenizer_2": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }
    (folder / "model_index.json").write_text(json.dumps(model_index, indent=2))


# ---- references

def load_base(folder: Path) -> StableDiffusionXLPipeline:
    pipe = StableDiffusionXLPipeline.from_pretrained(str(folder), torch_dtype=torch.float32, add_watermarker=False)
    for m in (pipe.text_encoder, pipe.text_encoder_2, pipe.unet, pipe.vae):
        assert m.dtype == torch.float32, m.dtype
    assert pipe.watermark is None and pipe.config.force_zeros_for_empty_prompt
    check_loaded_exactly(pipe.text_encoder, folder / "text_encoder" / "model.safetensors")
    check_loaded_exactly(pipe.text_encoder_2, folder / "text_encoder_2" / "model.safetensors")
    pipe.set_progress_bar_config(disable=True)
    return pipe


def check_loaded_exactly(model, path: Path):
    """Every parameter came from the file (a key-name mismatch would leave random init weights instead)."""
    stored = load_file(str(path))
    state = {k: v for k, v in model.state_dict().items() if not k.endswith("position_ids")}
    for k, v in state.items():
        want = stored[k] if k in stored else stored["text_model." + k]
        assert torch.equal(v, want.float()), k
    assert len(state) == len(stored), (len(state), len(stored))


def load_refiner(folder: Path) -> StableDiffusionXLImg2ImgPipeline:
    pipe = StableDiffusionXLImg2ImgPipeline.from_pretrained(str(folder), torch_dtype=torch.float32,
                                                            add_watermarker=False)
    assert pipe.text_encoder is None and pipe.tokenizer is None and pipe.watermark is None
    assert pipe.config.requires_aesthetics_score and not pipe.config.force_zeros_for_empty_prompt
    check_loaded_exactly(pipe.text_encoder_2, folder / "text_encoder_2" / "model.safetensors")  # through the link
    pipe.set_progress_bar_config(disable=True)
    return pipe


LONG_PROMPT = "a very long prompt " + ", ".join(f"detail number {i}" for i in range(60))
ENCODE_CASES = [  # (prompt, negative prompt; None = not given)
    ("a photo of a cat", ""),
    ("a red circle on a blue background", "blurry, low quality"),
    (LONG_PROMPT, ""),
    ("a photo of a cat", None),  # force_zeros_for_empty_prompt: zero negative embeddings, no encoder call
]


def write_encode_references(pipe, ref: Path):
    def ids(tokenizer, text):
        return tokenizer(text, padding="max_length", max_length=tokenizer.model_max_length, truncation=True).input_ids

    cases = []
    for i, (prompt, negative) in enumerate(ENCODE_CASES):
        with torch.no_grad():
            pe, npe, ppe, nppe = pipe.encode_prompt(prompt, device="cpu", num_images_per_prompt=1,
                                                    do_classifier_free_guidance=True, negative_prompt=negative)
        assert pe.shape == (1, 77, 2 * TEXT_WIDTH) and ppe.shape == (1, TEXT_WIDTH), (pe.shape, ppe.shape)
        case = {"prompt": prompt, "negative_prompt": negative or "", "negative_prompt_is_none": negative is None,
                "ids": ids(pipe.tokenizer, prompt), "ids_2": ids(pipe.tokenizer_2, prompt),
                "negative_ids": None if negative is None else ids(pipe.tokenizer, negative),
                "negative_ids_2": None if negative is None else ids(pipe.tokenizer_2, negative)}
        for key, tensor in (("prompt_embeds", pe), ("negative_prompt_embeds", npe),
                            ("pooled_prompt_embeds", ppe), ("negative_pooled_prompt_embeds", nppe)):
            case[key] = f"enc{i}_{key}.npy"
            write_npy(ref / case[key], tensor.numpy())
        if negative is None:
            assert not npe.any() and not nppe.any()
        cases.append(case)
    (ref / "encode_cases.json").write_text(json.dumps({"cases": cases}, indent=2, ensure_ascii=False))


def write_unet_references(unet, ref: Path, specs, context_dim: int, seed: int):
    """Seeded UNet calls with SDXL's added conditioning; batch row 0 and row 1 get different time ids."""
    g = torch.Generator().manual_seed(seed)
    cases = []
    for i, (h, w, t, time_ids) in enumerate(specs):
        sample = torch.randn(2, 4, h, w, generator=g)
        context = torch.randn(2, 77, context_dim, generator=g)
        text_embeds = torch.randn(2, TEXT_WIDTH, generator=g)
        time_ids = torch.tensor(time_ids, dtype=torch.float32)
        with torch.no_grad():
            out = unet(sample, torch.tensor(t), encoder_hidden_states=context,
                       added_cond_kwargs={"text_embeds": text_embeds, "time_ids": time_ids}).sample
        files = {k: f"unet{i}_{k}.npy" for k in ("sample", "context", "text_embeds", "time_ids", "out")}
        for k, tensor in (("sample", sample), ("context", context), ("text_embeds", text_embeds),
                          ("time_ids", time_ids), ("out", out)):
            write_npy(ref / files[k], tensor.numpy())
        cases.append({"timestep": t, "time_ids_values": time_ids.tolist(), **files})
    (ref / "unet_cases.json").write_text(json.dumps({"cases": cases}, indent=2))


SCHEDULER_CLASSES = {"euler": "EulerDiscreteScheduler", "euler_a": "EulerAncestralDiscreteScheduler",
                     "dpmpp_2m": "DPMSolverMultistepScheduler", "ddim": "DDIMScheduler"}

# name, scheduler, karras, prompt, negative (None = not given), guidance, steps, height, width, seed, extra
PIPELINE_CASES = [
    ("euler", "euler", False, "a red circle on a blue background", "blurry, dark", 5.0, 6, 64, 64, 42, {}),
    ("euler_a", "euler_a", False, "a cat", "a dog", 5.0, 6, 64, 64, 1234, {}),
    ("dpmpp_2m_karras", "dpmpp_2m", True, "mountains at sunset", "ugly", 5.0, 6, 64, 64, 5, {}),
    ("ddim", "ddim", False, "two green squares", "blurry", 5.0, 5, 64, 64, 1, {}),
    ("no_negative", "euler", False, "a yellow star above a purple triangle", None, 5.0, 6, 64, 64, 3, {}),
    ("guidance_1", "euler", False, "a yellow star above a purple triangle", None, 1.0, 5, 64, 64, 3, {}),
    ("non_square", "euler", False, "a tall tower", "low quality", 5.0, 5, 96, 64, 7, {}),
    ("size_conditioning", "euler", False, "a photo of a cat", "blurry", 5.0, 5, 64, 64, 11,
     {"original_size": (128, 96), "crops_coords_top_left": (8, 16), "target_size": (64, 64)}),
    ("base_refiner", "euler", False, "a lighthouse on a cliff", None, 5.0, 6, 64, 64, 21,
     {"denoising_end": 0.8, "denoising_start": 0.8, "aesthetic_score": 6.0, "negative_aesthetic_score": 2.5}),
    # ancestral: the refiner draws its step noise from the generator the base left off with
    ("base_refiner_euler_a", "euler_a", False, "a lighthouse on a cliff", "fog", 5.0, 6, 64, 64, 22,
     {"denoising_end": 0.8, "denoising_start": 0.8, "aesthetic_score": 6.0, "negative_aesthetic_score": 2.5}),
]


def scheduler_for(folder_scheduler, name: str, karras: bool):
    if name == "euler" and not karras:
        return folder_scheduler  # the folder's own EulerDiscreteScheduler
    cls = {"euler_a": EulerAncestralDiscreteScheduler, "dpmpp_2m": DPMSolverMultistepScheduler,
           "ddim": DDIMScheduler}[name]
    return cls.from_config(folder_scheduler.config, **({"use_karras_sigmas": True} if karras else {}))


class StepRecorder:
    """callback_on_step_end that records the timesteps a run evaluates the UNet at and the time_ids it passes."""
    tensor_inputs = ["add_time_ids"]

    def __init__(self):
        self.timesteps = []
        self.time_ids = None

    def __call__(self, pipe, i, t, kwargs):
        self.timesteps.append(float(t))
        if self.time_ids is None:
            self.time_ids = kwargs["add_time_ids"].tolist()
        return {}


def recording(rec):
    return {} if rec is None else {"callback_on_step_end": rec, "callback_on_step_end_tensor_inputs": rec.tensor_inputs}


def save_png(path: Path, image: np.ndarray):
    from PIL import Image
    Image.fromarray((image * 255).round().astype("uint8")).save(path)  # as make_fixtures' pipeline PNGs


def write_pipeline_references(base_folder: Path, refiner_folder: Path):
    """Whole runs of diffusers' StableDiffusionXLPipeline (and, for "refiner" cases, the base to denoising_end
    then StableDiffusionXLImg2ImgPipeline from denoising_start on the same latents and generator). Per case:
      name; scheduler (sdrt's name: euler, euler_a, dpmpp_2m, ddim), karras, scheduler_class, uses_folder_scheduler
      (the folder's EulerDiscreteScheduler itself, else <class>.from_config(its config)); prompt, negative_prompt
      ("" when none), negative_prompt_is_none (diffusers got negative_prompt=None); guidance, steps, height, width,
      seed (torch.Generator("cpu").manual_seed); size_conditioning_explicit, original_size_hw, crops_coords_top_left_yx,
      target_size_hw (diffusers' (height, width) and (top, left) order), time_ids (the rows the UNet got: [uncond,
      cond] with CFG, [cond] at guidance 1); timesteps (those the UNet ran at); refiner; image (PNG of the normal
      run), latents (the final latents, before the VAE's 1/scaling_factor).
      Refiner cases add: denoising_end (base), refiner_model (folder name), refiner_denoising_start,
      refiner_scheduler, refiner_karras, refiner_steps, refiner_guidance, refiner_timesteps, aesthetic_score,
      negative_aesthetic_score, refiner_time_ids ([uncond, cond]: orig h, orig w, crop top, crop left, score),
      handoff_latents (the base's output latents, the refiner's input).
    """
    pipe = load_base(base_folder)
    refiner = load_refiner(refiner_folder)
    folder_scheduler, refiner_folder_scheduler = pipe.scheduler, refiner.scheduler
    ref = base_folder / "reference"
    cases = []
    for i, (name, sched, karras, prompt, negative, guidance, steps, height, width, seed, extra) in enumerate(
            PIPELINE_CASES):
        pipe.scheduler = scheduler_for(folder_scheduler, sched, karras)
        original = extra.get("original_size", (height, width))
        crop = extra.get("crops_coords_top_left", (0, 0))
        target = extra.get("target_size", (height, width))
        time_ids = [float(v) for v in (*original, *crop, *target)]
        cfg = guidance > 1.0
        case = {
            "name": name,
            "scheduler": sched, "karras": karras, "scheduler_class": SCHEDULER_CLASSES[sched],
            "uses_folder_scheduler": pipe.scheduler is folder_scheduler,
            "prompt": prompt, "negative_prompt": negative or "", "negative_prompt_is_none": negative is None,
            "guidance": guidance, "steps": steps, "height": height, "width": width, "seed": seed,
            # SDXL micro-conditioning in diffusers' (height, width) / (top, left) order
            "size_conditioning_explicit": "original_size" in extra,
            "original_size_hw": list(original), "crops_coords_top_left_yx": list(crop), "target_size_hw": list(target),
            # the UNet's time_ids rows as diffusers builds them: [uncond, cond] with CFG, [cond] without
            "time_ids": [time_ids, time_ids] if cfg else [time_ids],
            "refiner": "denoising_end" in extra,
        }
        kwargs = dict(prompt=prompt, negative_prompt=negative, num_inference_steps=steps, guidance_scale=guidance,
                      height=height, width=width)
        for k in ("original_size", "crops_coords_top_left", "target_size"):
            if k in extra:
                kwargs[k] = extra[k]
        if not case["refiner"]:
            rec = StepRecorder()
            with torch.no_grad():
                latents = pipe(**kwargs, generator=torch.Generator("cpu").manual_seed(seed), output_type="latent",
                               **recording(rec)).images
                image = pipe(**kwargs, generator=torch.Generator("cpu").manual_seed(seed),
                             output_type="np").images[0]
            case["timesteps"] = rec.timesteps
            assert rec.time_ids == case["time_ids"], (rec.time_ids, case["time_ids"])
        else:
            refiner.scheduler = scheduler_for(refiner_folder_scheduler, sched, karras)
            aesthetic = (extra["aesthetic_score"], extra["negative_aesthetic_score"])
            rkw = dict(prompt=prompt, negative_prompt=negative, num_inference_steps=steps, guidance_scale=guidance,
                       denoising_start=extra["denoising_start"], aesthetic_score=aesthetic[0],
                       negative_aesthetic_score=aesthetic[1])

            def run(output_type, base_rec=None, ref_rec=None):
                g = torch.Generator("cpu").manual_seed(seed)  # one generator through both stages
                with torch.no_grad():
                    handoff = pipe(**kwargs, denoising_end=extra["denoising_end"], generator=g, output_type="latent",
                                   **recording(base_rec)).images
                    out = refiner(**rkw, image=handoff, generator=g, output_type=output_type,
                                  **recording(ref_rec)).images
                return handoff, out

            base_rec, ref_rec = StepRecorder(), StepRecorder()
            handoff, latents = run("latent", base_rec, ref_rec)
            assert base_rec.time_ids == case["time_ids"], (base_rec.time_ids, case["time_ids"])
            _, images = run("np")
            image = images[0]
            case.update({
                "timesteps": base_rec.timesteps,
                "denoising_end": extra["denoising_end"],
                "refiner_model": refiner_folder.name,
                "refiner_denoising_start": extra["denoising_start"],
                "refiner_scheduler": sched, "refiner_karras": karras, "refiner_steps": steps,
                "refiner_guidance": guidance,  # and the base's prompt / negative prompt (or None)
                "refiner_timesteps": ref_rec.timesteps,
                "aesthetic_score": aesthetic[0], "negative_aesthetic_score": aesthetic[1],
                # refiner time_ids rows [uncond, cond]: (orig h, orig w, crop top, crop left, aesthetic score)
                "refiner_time_ids": [[float(v) for v in (*original, *crop, a)] for a in (aesthetic[1], aesthetic[0])],
                "handoff_latents": f"pipe{i}_handoff_latents.npy",
            })
            assert ref_rec.time_ids == case["refiner_time_ids"], (ref_rec.time_ids, case["refiner_time_ids"])
            write_npy(ref / case["handoff_latents"], handoff.numpy())
        case["image"] = f"pipe{i}_image.png"
        case["latents"] = f"pipe{i}_latents.npy"
        write_npy(ref / case["latents"], latents.numpy())
        save_png(ref / case["image"], image)
        cases.append(case)
        print(f"  pipeline case {i} ({name}): timesteps {case['timesteps']}"
              + (f" + refiner {case['refiner_timesteps']}" if case["refiner"] else ""))
    (ref / "pipeline_cases.json").write_text(json.dumps({"cases": cases}, indent=2))


def walk_no_follow(folder: Path):
    """Every file, directory and symbolic link under folder, without following links."""
    for p in sorted(folder.iterdir()):
        yield p
        if p.is_dir() and not p.is_symlink():
            yield from walk_no_follow(p)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO / "tests" / "fixtures")
    args = parser.parse_args()
    torch.manual_seed(0)
    base, refiner = args.out / "tiny-sdxl", args.out / "tiny-sdxl-refiner"
    for folder in (base, refiner):
        if folder.exists():
            shutil.rmtree(folder)
    make_base(base)
    make_refiner(refiner, base)
    (base / "reference").mkdir()
    (refiner / "reference").mkdir()

    pipe = load_base(base)
    write_encode_references(pipe, base / "reference")
    # time ids rows: (orig h, orig w, crop top, crop left, target h, target w); the 8x12 case is a 64x96 (h x w) image
    write_unet_references(pipe.unet, base / "reference", [
        (8, 8, 999, [[64, 64, 0, 0, 64, 64], [128, 96, 8, 16, 64, 64]]),
        (8, 12, 412.5, [[64, 96, 0, 0, 64, 96], [1024, 1024, 4, 8, 64, 96]]),
    ], context_dim=2 * TEXT_WIDTH, seed=300)
    del pipe
    write_unet_references(load_refiner(refiner).unet, refiner / "reference", [
        (8, 8, 167, [[64, 64, 0, 0, 2.5], [64, 64, 0, 0, 6.0]]),  # [uncond: negative aesthetic, cond: aesthetic]
    ], context_dim=TEXT_WIDTH, seed=301)
    write_pipeline_references(base, refiner)

    for folder, cls in ((base, StableDiffusionXLPipeline), (refiner, StableDiffusionXLImg2ImgPipeline)):
        loaded = DiffusionPipeline.from_pretrained(str(folder))  # diffusers' generic entry point, no arguments
        assert type(loaded) is cls, type(loaded)

    total = 0
    for folder in (base, refiner):
        # symbolic links count as links (the refiner's shared folders are not counted twice)
        size = sum(p.lstat().st_size for p in walk_no_follow(folder) if p.is_symlink() or p.is_file())
        print(f"{folder.relative_to(REPO) if folder.is_relative_to(REPO) else folder}: {size / 1e6:.2f} MB")
        total += size
    print(f"total: {total / 1e6:.2f} MB ({total} bytes)")


if __name__ == "__main__":
    main()
