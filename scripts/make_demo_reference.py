#!/usr/bin/env python3
"""Fixtures of tests/test_demo_model.cpp for the built-in demo model (models/demo), under tests/fixtures/demo/:

  semantic_prompts.json   training/semantic_eval.py's fixed seeded prompts, settings and analysis constants (the
                          one list that Python and C++ share; the C++ test runs exactly these)
  groundtruth/            ground-truth scenes rendered by training/dataset.py (gtNN.png) and Python's analysis of
                          them (groundtruth.json): the C++ port of the analysis must find the same
  reference/              a few prompts through diffusers' StableDiffusionPipeline on the CPU in fp32 (final
                          latents .npy, image .png, cases.json with the model files' checksums, so that a
                          replaced model with stale references fails with a clear message)

Re-run after replacing models/demo:  PYTHONPATH=.ref python3 scripts/make_demo_reference.py   (about 10 s)
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "training"))
import dataset  # noqa: E402
import semantic_eval  # noqa: E402

# Pipeline reference cases: indexes into the prompt list (one shape, a count, a relation).
REFERENCE_PROMPTS = [0, 13, 21]
MODEL_FILES = ["text_encoder/model.safetensors", "unet/diffusion_pytorch_model.safetensors",
               "vae/diffusion_pytorch_model.safetensors"]


def checksum(path: Path) -> str:
    """sum over the file's bytes of (index + 1) * byte, mod 2^64, as 16 hex digits (the C++ test computes the
    same): enough to notice that the model was replaced after the references were made."""
    data = np.frombuffer(path.read_bytes(), dtype=np.uint8).astype(np.uint64)
    idx = np.arange(1, data.size + 1, dtype=np.uint64)
    with np.errstate(over="ignore"):
        h = int(np.sum(idx * data, dtype=np.uint64))
    return f"{h:016x}"


def write_prompts(dest: Path):
    doc = {
        "comment": "written by scripts/make_demo_reference.py from training/semantic_eval.py; do not edit",
        "steps": semantic_eval.EVAL_STEPS, "guidance": semantic_eval.EVAL_GUIDANCE, "size": semantic_eval.EVAL_SIZE,
        "palette": [{"name": c, "rgb": list(dataset.PALETTE[c])} for c in dataset.COLOURS],  # class order
        "min_area_fraction": semantic_eval.MIN_AREA_FRACTION,
        "shape_thresholds": [[t, n] for t, n in semantic_eval.SHAPE_THRESHOLDS],
        "prompts": [{"prompt": p["prompt"], "seed": p["seed"], "spec": p["spec"]} for p in semantic_eval.EVAL_PROMPTS],
    }
    dest.write_text(json.dumps(doc, indent=1) + "\n")


def write_groundtruth(dest: Path):
    """Rendered scenes: each eval spec once (laid out with a fixed rng, named background or the first free
    colour), plus 8 random data-set scenes; Python's analysis and check result for each."""
    from PIL import Image
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    cases = []
    items = []
    for i, p in enumerate(semantic_eval.EVAL_PROMPTS):
        spec = dict(p["spec"])
        spec["bg"] = spec["bg"] or [c for c in dataset.COLOURS if c not in [o["colour"] for o in spec["objects"]]][0]
        img = dataset.render(dataset.layout(spec, np.random.default_rng([4242, i])), spec["bg"])
        items.append((img, p["spec"]))
    for i in range(8):
        img, spec, _ = dataset.scene(777, i)
        items.append((img, spec))
    for k, (img, spec) in enumerate(items):
        name = f"gt{k:02d}.png"
        Image.fromarray(img).save(dest / name)
        found = semantic_eval.analyse(img)
        r = semantic_eval.check(spec, found)
        cases.append({"image": name, "spec": spec, "found": found, "pass": r["pass"]})
    (dest / "groundtruth.json").write_text(json.dumps({"cases": cases}, indent=1) + "\n")
    return sum(c["pass"] for c in cases), len(cases)


def write_references(model: Path, dest: Path):
    import torch
    from PIL import Image
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    pipe = semantic_eval.load_pipeline(model, "cpu")
    cases = []
    for i, k in enumerate(REFERENCE_PROMPTS):
        p = semantic_eval.EVAL_PROMPTS[k]
        kw = dict(prompt=p["prompt"], num_inference_steps=semantic_eval.EVAL_STEPS,
                  guidance_scale=semantic_eval.EVAL_GUIDANCE, height=semantic_eval.EVAL_SIZE,
                  width=semantic_eval.EVAL_SIZE)
        with torch.no_grad():  # the pipeline's own decode + postprocess, on its final latents
            lat = pipe(**kw, generator=torch.Generator("cpu").manual_seed(p["seed"]), output_type="latent").images
            dec = pipe.vae.decode(lat / pipe.vae.config.scaling_factor, return_dict=False)[0]
            img = pipe.image_processor.postprocess(dec, output_type="np")[0]
        u8 = (img * 255).round().astype(np.uint8)
        case = {"prompt": p["prompt"], "seed": p["seed"], "steps": semantic_eval.EVAL_STEPS,
                "guidance": semantic_eval.EVAL_GUIDANCE, "size": semantic_eval.EVAL_SIZE,
                "latents": f"ref{i}_latents.npy", "image": f"ref{i}_image.png",
                "semantic_pass": semantic_eval.check(p["spec"], semantic_eval.analyse(u8))["pass"]}
        np.save(dest / case["latents"], np.ascontiguousarray(lat.numpy().astype(np.float32)))
        Image.fromarray(u8).save(dest / case["image"])
        cases.append(case)
    doc = {"model_files": {f: checksum(model / f) for f in MODEL_FILES}, "cases": cases}
    (dest / "cases.json").write_text(json.dumps(doc, indent=1) + "\n")
    return cases


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=REPO / "models" / "demo")
    ap.add_argument("--out", type=Path, default=REPO / "tests" / "fixtures" / "demo")
    ap.add_argument("--no-references", action="store_true", help="only the prompt list and the ground truth")
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    write_prompts(a.out / "semantic_prompts.json")
    ok, n = write_groundtruth(a.out / "groundtruth")
    print(f"ground truth: {ok}/{n} pass the Python check")
    for c in [] if a.no_references else write_references(a.model, a.out / "reference"):
        print(f"reference: {c['prompt']!r} seed {c['seed']} -> {c['image']} (semantic pass: {c['semantic_pass']})")


if __name__ == "__main__":
    main()
