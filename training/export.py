"""Writes the demo model as a diffusers StableDiffusionPipeline folder (fp16 weights) and packs it.

    model_index.json
    scheduler/scheduler_config.json   DPMSolverMultistepScheduler (DPM++ 2M) with SD 1.x's betas
    tokenizer/                        the real CLIP BPE vocabulary (vocab.json, merges.txt, configs), SD 1.x style
    text_encoder/                     config.json + model.safetensors (fp16)
    unet/                             config.json + diffusion_pytorch_model.safetensors (fp16)
    vae/                              config.json + diffusion_pytorch_model.safetensors (fp16)

Also usable on its own: `python export.py --ckpt DIR --out DIR` exports from a training checkpoint, and
`python export.py --card DIR --log log.json` rewrites DIR/README.md from a run's log (history: DIR/training.json).
"""
from __future__ import annotations

import copy
import gzip
import json
import sys
import tarfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
CLIP_MERGES_GZ = REPO / "data" / "clip" / "bpe_simple_vocab_16e6.txt.gz"

# SD 1.x's noise schedule (what the model is trained on), with DPM++ 2M as the default sampler.
SD1_BETAS = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear", "num_train_timesteps": 1000}
SCHEDULER_CONFIG = {
    "_class_name": "DPMSolverMultistepScheduler", "_diffusers_version": "0.42.1", **SD1_BETAS,
    "algorithm_type": "dpmsolver++", "solver_order": 2, "solver_type": "midpoint", "lower_order_final": True,
    "euler_at_final": False, "final_sigmas_type": "zero", "prediction_type": "epsilon", "sample_max_value": 1.0,
    "steps_offset": 1, "thresholding": False, "timestep_spacing": "linspace", "trained_betas": None,
    "use_karras_sigmas": False, "use_lu_lambdas": False, "variance_type": None,
}


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


def write_tokenizer_folder(dest: Path):
    """vocab.json + merges.txt exactly as SD 1.5 ships them (derived from OpenAI's merges file, as
    scripts/make_fixtures.py does), padding with <|endoftext|>, model_max_length 77."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    lines = gzip.open(CLIP_MERGES_GZ, "rt", encoding="utf-8").read().split("\n")
    merges = lines[1:49152 - 256 - 2 + 1]
    vocab = list(bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab]
    vocab += ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    (dest / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}, ensure_ascii=False),
                                     encoding="utf-8")
    (dest / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    special = lambda t: {"content": t, "lstrip": False, "normalized": True, "rstrip": False, "single_word": False}
    config = {
        "add_prefix_space": False, "bos_token": special("<|startoftext|>"), "do_lower_case": True,
        "eos_token": special("<|endoftext|>"), "errors": "replace", "model_max_length": 77,
        "pad_token": special("<|endoftext|>"), "tokenizer_class": "CLIPTokenizer",
        "unk_token": special("<|endoftext|>"),
    }
    (dest / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    (dest / "special_tokens_map.json").write_text(json.dumps({
        "bos_token": special("<|startoftext|>"), "eos_token": special("<|endoftext|>"),
        "pad_token": special("<|endoftext|>"), "unk_token": special("<|endoftext|>")}, indent=2))


def load_tokenizer(folder: Path):
    from transformers import CLIPTokenizer
    tok = CLIPTokenizer.from_pretrained(str(folder))
    tok.model_max_length = 77
    return tok


MODEL_INDEX = {
    "_class_name": "StableDiffusionPipeline", "_diffusers_version": "0.42.1",
    "feature_extractor": [None, None], "requires_safety_checker": False, "safety_checker": [None, None],
    "scheduler": ["diffusers", "DPMSolverMultistepScheduler"], "text_encoder": ["transformers", "CLIPTextModel"],
    "tokenizer": ["transformers", "CLIPTokenizer"], "unet": ["diffusers", "UNet2DConditionModel"],
    "vae": ["diffusers", "AutoencoderKL"],
}


def export_pipeline(dest: Path, vae, text_encoder, unet, scaling_factor: float) -> dict:
    """Writes the folder (fp16 copies of the given fp32 modules); returns {relative path: bytes}."""
    import torch
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    write_tokenizer_folder(dest / "tokenizer")
    (dest / "scheduler").mkdir(exist_ok=True)
    (dest / "scheduler" / "scheduler_config.json").write_text(json.dumps(SCHEDULER_CONFIG, indent=2) + "\n")
    (dest / "model_index.json").write_text(json.dumps(MODEL_INDEX, indent=2) + "\n")
    v = copy.deepcopy(vae).to("cpu", torch.float16)
    v.register_to_config(scaling_factor=float(scaling_factor))
    v.save_pretrained(str(dest / "vae"), safe_serialization=True)
    copy.deepcopy(unet).to("cpu", torch.float16).save_pretrained(str(dest / "unet"), safe_serialization=True)
    te = copy.deepcopy(text_encoder).to("cpu", torch.float16)
    te.config.architectures = ["CLIPTextModel"]
    te.save_pretrained(str(dest / "text_encoder"), safe_serialization=True)
    return {str(p.relative_to(dest)): p.stat().st_size for p in sorted(dest.rglob("*")) if p.is_file()}


def _run_line(i: int, r: dict, fmt) -> str:
    how = ("continued from the exported model of the run before" if r.get("init_from") else
           "resumed from a checkpoint" if r.get("resumed") else "from scratch (fresh UNet and text encoder)")
    over = r.get("oversample") or {}
    over_s = ""
    if over and any(v != 1 for v in over.values()):
        over_s = (f"; scene kinds oversampled: two shapes with a relation x{over['pair']}, one shape on a named "
                  f"background x{over['single_bg']}, two or three equal shapes x{over['multi']}")
    extras = ""
    if r.get("offset_noise"):
        extras += f"; offset noise {r['offset_noise']}"
    if r.get("layout_probe"):
        extras += f"; layout-probe loss x{r['layout_probe']}"
    if r.get("compile"):
        extras += "; torch.compile"
    stopped = f" ({r['stopped']})" if r.get("stopped") else ""
    return (f"   {i + 1}. {how}: {r['unet_steps']} steps of batch {r['unet_batch']} in "
            f"{fmt(r.get('unet_seconds'), '.0f')} s{stopped}, peak lr {r['unet_lr']} cosine to "
            f"{r.get('lr_floor', 0.1)} x peak{over_s}{extras}; final MSE {fmt(r.get('final_mse'))}")


def write_model_card(dest: Path, report: dict):
    """README.md of the model folder, with the numbers of the runs that made it (train.py's report; the
    history of earlier runs comes from report["state"], i.e. the folder's training.json)."""
    import dataset  # noqa
    args = report["info"]["args"]
    ev = report.get("eval")
    st = report.get("state", {})
    mib = report["export"]["total_bytes"] / 2**20
    files = "\n".join(f"| `{k}` | {v / 2**20:.2f} MiB |" for k, v in report["export"]["files"].items()
                      if v > 2**16)
    vae = st.get("vae", {})
    runs = st.get("runs", [])
    fmt = lambda x, f=".4f": "n/a" if x is None else format(x, f)
    eval_lines = "not run"
    if ev:
        eval_lines = (f"**{ev['passed']}/{ev['total']} prompts pass ({100 * ev['accuracy']:.0f}%)** at "
                      f"{ev['settings']['steps']} steps, guidance {ev['settings']['guidance']}, "
                      f"{ev['settings']['scheduler']} (DPM++ 2M), 128 x 128")
        if "extra_seeds" in ev:
            x = ev["extra_seeds"]
            eval_lines += f"; with {x['n']} other seeds per prompt: {x['passed']}/{x['total']}"
        for g, acc in report.get("eval_guidance", {}).items():
            eval_lines += f"; at guidance {g}: {100 * acc:.0f}%"
        fails = [r for r in ev["results"] if not r["pass"]]
        if fails:
            eval_lines += ".\n\nThe prompts that fail at guidance " + str(ev["settings"]["guidance"]) + ":\n\n" + "\n".join(
                f"- `{r['prompt']}` (seed {r['seed']}): {'; '.join(r['failures'])}" for r in fails)
    run_lines = "\n".join(_run_line(i, r, fmt) for i, r in enumerate(runs)) or "   (no record)"
    text = f"""# sdrt demo model

A tiny text-to-image model with the Stable Diffusion 1.x architecture ({mib:.0f} MiB in fp16), trained from scratch
on one GPU ({fmt(st.get('unet_seconds', 0) / 60, '.0f')} minutes of UNet training) on procedurally drawn scenes of flat coloured shapes. It ships with sdrt as its built-in model,
so that the first command draws a recognisable picture offline, in seconds, on any CPU:

```sh
sdrt txt2img --prompt "a red circle on a blue background" --seed 42 --output out.png
```

(`sdrt txt2img` and `sdrt info` use this folder when no `--model` is given and `SDRT_MODEL` is not set.) It is
an ordinary SD 1.x diffusers folder: `StableDiffusionPipeline.from_pretrained("models/demo")` loads it, and
diffusers and sdrt draw the same images from the same prompt and seed (`tests/test_demo_model.cpp` checks
both the pictures' contents and the parity).

## What it can draw

128 x 128 pictures of up to three flat shapes on a flat background.

- shapes: {", ".join(dataset.SHAPES)} (upright, not rotated)
- colours (objects and background): {", ".join(dataset.COLOURS)}
- counts: one / a / a single, two / a pair of / 2, three / 3 (`two green squares`)
- places of a single shape: on the left / right, at the top / bottom, in the center / middle, in the top left
  corner (and the other corners)
- two different shapes: `above`, `below` / `under`, `to the left of`, `to the right of`, `next to`, `and`
- backgrounds: `on a blue background`, `on blue`, `, blue background`, `with a blue background`,
  `a blue background with ...`; without one, the background colour is random
- optional openings: `a picture of`, `an image of`, `a drawing of`, `a simple drawing of`

Examples: `a red circle on a blue background`, `two green squares`, `a yellow star above a purple triangle`,
`three white stars on an orange background`, `a black square in the top right corner on a yellow background`.

## Limits

- Only the vocabulary above: the text encoder saw nothing else, and every other token has a zero embedding
  (unknown words are ignored, not understood). Not a general-purpose model: no people, objects, textures or
  styles, and nothing learnt from real images.
- 128 x 128 (16 x 16 latents) is the trained size; other sizes work but drift off the training distribution.
- Counts above three, overlapping or rotated shapes, sizes and mixed groups (`two red circles and a blue
  square`) were never trained.
- Two shapes with a relation are the hardest case: the layout the relation asks for is reliable, but now and
  then one object takes a similar colour (orange drawn as red or yellow) or the other object's shape (see the
  evaluation). Single shapes, backgrounds, places and counts are reliable.
- 20-50 steps of the default DPM++ 2M scheduler; guidance 3-7.5.

## Components ({mib:.2f} MiB, fp16)

| file | size |
|---|---|
{files}

- tokenizer: the real CLIP BPE tokenizer (SD 1.x's vocab.json / merges.txt, 77 tokens, padded with
  `<|endoftext|>`)
- text_encoder: CLIPTextModel, hidden 64, 4 layers, 4 heads, MLP 256, quick_gelu (3.37 M parameters, of which
  3.16 M are the token embeddings; only the 60 rows of tokens in the captions are non-zero)
- unet: UNet2DConditionModel, block_out_channels (64, 128, 128), 1 layer per block, cross-attention (dim 64, 4
  heads) in the two outer levels and the middle block, epsilon prediction (5.84 M parameters)
- vae: AutoencoderKL, block_out_channels (32, 64, 64, 64): 8x downsampling, 4 latent channels,
  scaling_factor {fmt(st.get('scaling_factor'), '.5f')} (1.25 M parameters)
- scheduler: DPMSolverMultistepScheduler (DPM++ 2M) on SD's scaled_linear betas (0.00085..0.012, 1000 steps)
- `training.json`: the training history below, as numbers (read by `training/train.py --init-from`)

## How it was trained

With `training/` of the sdrt repository (`training/README.md` has the commands), PyTorch
{report['info']['torch']}, diffusers {report['info']['diffusers']}, transformers {report['info']['transformers']},
on one {report['info'].get('device', '?')}; {fmt(st.get('unet_seconds'), '.0f')} s of UNet training in all.

1. Data: {args['scenes']} scenes of 128 x 128 rendered by `training/dataset.py` (seed {args['seed']}: scene i from
   numpy's PCG64 seeded with [{args['seed']}, i]), {args['captions']} phrasings each; 45% single shapes (with a
   place in 45% of those), 25% two or three equal shapes, 30% two different shapes with a relation; the
   background is named in 90% of the captions.
2. VAE: {vae.get('steps', '?')} steps of batch {vae.get('batch', '?')} ({fmt(vae.get('seconds'), '.0f')} s), L1 + MSE +
   {vae.get('kl', '?')} x KL, AdamW lr {vae.get('lr', '?')} with warmup and cosine decay; final loss
   {fmt(vae.get('final_loss'))}, reconstruction PSNR {fmt(vae.get('psnr_last16'), '.1f')} dB.
3. UNet and text encoder, jointly, {st.get('unet_steps', '?')} steps in all, DDPM epsilon loss with
   min-SNR-{args['min_snr']} weighting, {int(100 * args['cfg_drop'])}% empty captions (for classifier-free guidance),
   AdamW (0.9, 0.99, weight decay 0.01), warmup and cosine decay, bf16 autocast, EMA {args['ema']} of the
   weights (the EMA weights are shipped); offset noise adds a per-image, per-channel constant to the training
   noise (flat backgrounds); the layout probe (`train.py`'s `LayoutProbe`, training only, not shipped) asks the
   text encoder's padding states for the colour and shape of the object a relation puts at the top / bottom /
   left / right, which taught the model which way round a relation goes (without it, about half of the
   relation pictures had the two objects swapped). In {len(runs)} run(s):
{run_lines}

Each run's loss curve (global step, mean MSE of the last 100 steps, learning rate) and evaluation are in
`training.json` (`runs[i].curve`, `runs[i].eval`); the run's `log.json` has them with timestamps.

## Evaluation

`training/semantic_eval.py`: {ev['total'] if ev else 24} fixed seeded prompts (single shapes with their background, counts,
places, relations; the list is also `tests/fixtures/demo/semantic_prompts.json`), generated through diffusers'
StableDiffusionPipeline with each prompt's seed; every image is checked by nearest-palette colour masks,
connected components, fill ratios (the shape) and centroids (places, relations). Result: {eval_lines}

sdrt's CPU pipeline draws the same pictures (within 1 level of 255), and `tests/test_demo_model.cpp` repeats
the evaluation through sdrt.

## License

The weights were trained from scratch on synthetic pictures that the training script draws; no third-party
images or weights were used. They are released under the MIT License, like the sdrt code. The tokenizer files
(`tokenizer/vocab.json`, `tokenizer/merges.txt`) are OpenAI CLIP's BPE vocabulary, also under the MIT License
(see `data/clip/LICENSE` in the repository).
"""
    (Path(dest) / "README.md").write_text(text)


def rewrite_card(folder: Path, log_json: Path):
    """The model card of an exported folder from a run's log.json, with the history of the folder's
    training.json (which may be newer than the log's, e.g. after runs were merged by hand)."""
    folder = Path(folder)
    report = json.loads(Path(log_json).read_text())
    hist = folder / "training.json"
    if hist.exists():
        report["state"] = json.loads(hist.read_text())
    files = {str(p.relative_to(folder)): p.stat().st_size for p in sorted(folder.rglob("*"))
             if p.is_file() and p.name not in ("README.md", "training.json")}
    report["export"] = {"files": files, "total_bytes": sum(files.values())}
    write_model_card(folder, report)


def pack(folder: Path, tar_path: Path):
    """folder -> tar.gz whose top-level entry is the folder's name."""
    folder = Path(folder)
    with tarfile.open(tar_path, "w:gz", compresslevel=9) as tar:
        tar.add(str(folder), arcname=folder.name)


if __name__ == "__main__":
    import argparse
    import sys
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import model_def  # noqa: E402

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ckpt", help="folder with ckpt.pt (or ckpt.pt.000, ...)")
    ap.add_argument("--out")
    ap.add_argument("--raw", action="store_true", help="export the raw weights instead of the EMA weights")
    ap.add_argument("--card", help="rewrite the README.md of this exported folder from --log (and its training.json)")
    ap.add_argument("--log", help="a run's log.json, for --card")
    a = ap.parse_args()
    if a.card:
        rewrite_card(Path(a.card), Path(a.log))
        sys.exit(0)
    if not (a.ckpt and a.out):
        ap.error("--ckpt and --out (or --card and --log)")
    vae, te, unet, te_ema, unet_ema, state = model_def.load_checkpoint(Path(a.ckpt), "cpu")
    sizes = export_pipeline(Path(a.out), vae, te if a.raw else te_ema, unet if a.raw else unet_ema,
                            state["scaling_factor"])
    print(json.dumps(sizes, indent=1), f"total {sum(sizes.values()) / 2**20:.2f} MiB")
