"""Semantic check of generated demo-model images: are the requested colours, shapes, counts and places there?

The analysis is deliberately simple so that it can be ported to C++ exactly. For an RGB uint8 image of
H x W pixels:

1. Palette classes. Each pixel gets the index (0..7) of the nearest colour of PALETTE (dataset.py order: red,
   orange, yellow, green, blue, purple, white, black) by squared Euclidean distance in RGB (ints); a tie goes to
   the lower index.
2. Background. The class with the most pixels (a tie goes to the lower index).
3. Erosion. For every class c other than the background, mask_c = (class == c), eroded once with the
   4-neighbourhood: a pixel stays if it and its 4 neighbours are all in mask_c; neighbours outside the image
   count as in the mask. (This removes the thin rims of blended colour that antialiased edges leave.)
4. Components. 4-connected components of each eroded mask, labelled in raster order; only components with
   area >= MIN_AREA_FRACTION * H * W pixels (rounded up) are objects.
5. Object features (on the eroded component): area A, bounding box (x0..x1, y0..y1 inclusive) with
   w = x1 - x0 + 1, h = y1 - y0 + 1, fill = A / (w * h), centroid (cx, cy) = mean pixel coordinates + 0.5,
   as fractions of W and H.
6. Shape. fill >= 0.90: square; 0.65 <= fill < 0.90: circle; 0.46 <= fill < 0.65: triangle; fill < 0.46: star.
   (On rendered ground truth the eroded fills are: square 1.0, circle 0.75-0.85, triangle 0.50-0.54,
   star 0.36-0.43.)

A prompt's spec (see EVAL_PROMPTS) passes when all of these hold:
  - bg named: the background class is that colour;
  - for every requested object group (colour, shape, count): the image has exactly `count` objects of that
    colour and all of them are classified as that shape;
  - no other objects: the number of objects of all colours equals the total requested count;
  - place (single object): left: cx < 0.4; right: cx > 0.6; top: cy < 0.4; bottom: cy > 0.6; center:
    |cx - 0.5| < 0.15 and |cy - 0.5| < 0.15; corners combine the two sides;
  - relation (two objects A, B): above: cy_A + 0.1 < cy_B; below: cy_A > cy_B + 0.1; left of: cx_A + 0.1 < cx_B;
    right of: cx_A > cx_B + 0.1; "and" / "next to": no position condition.

Usage:
  python semantic_eval.py --model DIR [--device cuda] [--out DIR]   # diffusers pipeline + analysis
  python semantic_eval.py --images DIR                              # analyse DIR/NN.png (NN = prompt index)
  python semantic_eval.py --selftest                                # analysis on rendered ground truth
                                                                    # (and tests/fixtures/demo's copy of the list)
"""
from __future__ import annotations

import argparse
import json
import math
from collections import deque
from pathlib import Path

import numpy as np

try:
    from . import dataset  # noqa
except ImportError:  # run as a script
    import dataset  # type: ignore

PALETTE_RGB = np.array([dataset.PALETTE[c] for c in dataset.COLOURS], dtype=np.int32)
MIN_AREA_FRACTION = 0.0025
SHAPE_THRESHOLDS = [(0.90, "square"), (0.65, "circle"), (0.46, "triangle"), (-1.0, "star")]

# Evaluation settings (also what the sdrt semantic test uses).
EVAL_STEPS = 20
EVAL_GUIDANCE = 7.5
EVAL_SIZE = 128


def _spec(objects, bg=None, place=None, relation=None):
    kind = "pair" if len(objects) == 2 else ("multi" if objects[0][2] > 1 else "single")
    return {"kind": kind, "bg": bg, "bg_named": bg is not None, "place": place, "relation": relation,
            "objects": [{"colour": c, "shape": s, "count": n} for c, s, n in objects]}


# A fixed list of seeded prompts: fundamentals (one shape, colour, background) first, then counts, places and
# relations. The prompt text is dataset.canonical_caption(spec).
_EVAL_SPECS = [
    _spec([("red", "circle", 1)], "blue"),
    _spec([("green", "square", 1)], "white"),
    _spec([("yellow", "star", 1)], "black"),
    _spec([("purple", "triangle", 1)], "yellow"),
    _spec([("blue", "circle", 1)], "orange"),
    _spec([("white", "star", 1)], "red"),
    _spec([("orange", "square", 1)], "purple"),
    _spec([("black", "triangle", 1)], "green"),
    _spec([("yellow", "circle", 1)], "purple"),
    _spec([("red", "square", 1)], "white"),
    _spec([("blue", "star", 1)], "yellow"),
    _spec([("green", "triangle", 1)], "black"),
    _spec([("green", "square", 2)]),
    _spec([("red", "circle", 3)], "white"),
    _spec([("yellow", "star", 2)], "blue"),
    _spec([("purple", "circle", 2)], "yellow"),
    _spec([("red", "square", 1)], "white", place="top left"),
    _spec([("blue", "circle", 1)], "yellow", place="right"),
    _spec([("green", "star", 1)], "black", place="bottom"),
    _spec([("orange", "triangle", 1)], "blue", place="top"),
    _spec([("yellow", "star", 1), ("purple", "triangle", 1)], relation="above"),
    _spec([("red", "circle", 1), ("blue", "square", 1)], "white", relation="left of"),
    _spec([("green", "triangle", 1), ("orange", "circle", 1)], "black", relation="below"),
    _spec([("white", "square", 1), ("red", "star", 1)], "blue", relation="right of"),
]
EVAL_PROMPTS = [{"prompt": dataset.canonical_caption(s), "seed": 1000 + i, "spec": s}
                for i, s in enumerate(_EVAL_SPECS)]

# ---------------------------------------------------------------------------------------------- analysis


def classify_pixels(img: np.ndarray) -> np.ndarray:
    d = ((img[:, :, None, :].astype(np.int32) - PALETTE_RGB[None, None]) ** 2).sum(-1)
    return d.argmin(-1)  # argmin takes the first (lowest) index on ties


def erode(mask: np.ndarray) -> np.ndarray:
    p = np.pad(mask, 1, constant_values=True)
    return mask & p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:]


def components(mask: np.ndarray) -> list[list[tuple[int, int]]]:
    """4-connected components in raster order of their first pixel: lists of (y, x)."""
    h, w = mask.shape
    seen = np.zeros_like(mask, dtype=bool)
    out = []
    ys, xs = np.nonzero(mask)
    for y0, x0 in zip(ys.tolist(), xs.tolist()):
        if seen[y0, x0]:
            continue
        seen[y0, x0] = True
        q = deque([(y0, x0)])
        pix = []
        while q:
            y, x = q.popleft()
            pix.append((y, x))
            for yy, xx in ((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)):
                if 0 <= yy < h and 0 <= xx < w and mask[yy, xx] and not seen[yy, xx]:
                    seen[yy, xx] = True
                    q.append((yy, xx))
        out.append(pix)
    return out


def shape_of(fill: float) -> str:
    for t, name in SHAPE_THRESHOLDS:
        if fill >= t:
            return name
    return "star"


def analyse(img: np.ndarray) -> dict:
    """{"bg": colour, "objects": [{"colour","shape","area","fill","cx","cy"}]} of an RGB uint8 image."""
    h, w = img.shape[:2]
    cls = classify_pixels(img)
    counts = np.bincount(cls.ravel(), minlength=len(dataset.COLOURS))
    bg = int(counts.argmax())
    min_area = math.ceil(MIN_AREA_FRACTION * h * w)
    objects = []
    for c in range(len(dataset.COLOURS)):
        if c == bg or counts[c] == 0:
            continue
        for pix in components(erode(cls == c)):
            if len(pix) < min_area:
                continue
            a = np.array(pix)
            y0, x0 = a.min(0)
            y1, x1 = a.max(0)
            fill = len(pix) / float((x1 - x0 + 1) * (y1 - y0 + 1))
            objects.append({"colour": dataset.COLOURS[c], "shape": shape_of(fill), "area": len(pix),
                            "fill": round(fill, 4), "cx": float(a[:, 1].mean() + 0.5) / w,
                            "cy": float(a[:, 0].mean() + 0.5) / h})
    return {"bg": dataset.COLOURS[bg], "objects": objects}


def _place_ok(place: str, cx: float, cy: float) -> bool:
    if place == "center":
        return abs(cx - 0.5) < 0.15 and abs(cy - 0.5) < 0.15
    ok = True
    for part in place.split():
        ok &= {"left": cx < 0.4, "right": cx > 0.6, "top": cy < 0.4, "bottom": cy > 0.6}[part]
    return ok


def check(spec: dict, found: dict) -> dict:
    """{"pass": bool, "failures": [reasons]} of an analysis against a spec."""
    fails = []
    if spec.get("bg_named") and found["bg"] != spec["bg"]:
        fails.append(f"background {found['bg']} != {spec['bg']}")
    objs = found["objects"]
    total = sum(o["count"] for o in spec["objects"])
    groups = []
    for o in spec["objects"]:
        mine = [f for f in objs if f["colour"] == o["colour"]]
        groups.append(mine)
        if len(mine) != o["count"]:
            fails.append(f"{len(mine)} {o['colour']} objects != {o['count']}")
        bad = [f["shape"] for f in mine if f["shape"] != o["shape"]]
        if bad:
            fails.append(f"{o['colour']} shapes {bad} != {o['shape']}")
    if len(objs) != total:
        fails.append(f"{len(objs)} objects in all != {total}")
    if spec.get("place") and len(groups[0]) == 1:
        f = groups[0][0]
        if not _place_ok(spec["place"], f["cx"], f["cy"]):
            fails.append(f"place ({f['cx']:.2f}, {f['cy']:.2f}) is not {spec['place']}")
    rel = spec.get("relation")
    if rel in ("above", "below", "left of", "right of") and len(groups[0]) == 1 and len(groups[1]) == 1:
        a, b = groups[0][0], groups[1][0]
        ok = {"above": a["cy"] + 0.1 < b["cy"], "below": a["cy"] > b["cy"] + 0.1,
              "left of": a["cx"] + 0.1 < b["cx"], "right of": a["cx"] > b["cx"] + 0.1}[rel]
        if not ok:
            fails.append(f"relation {rel} fails: A ({a['cx']:.2f}, {a['cy']:.2f}) B ({b['cx']:.2f}, {b['cy']:.2f})")
    return {"pass": not fails, "failures": fails}


def evaluate_images(images: list[np.ndarray], prompts=EVAL_PROMPTS) -> dict:
    results = []
    for p, img in zip(prompts, images):
        found = analyse(img)
        r = check(p["spec"], found)
        results.append({"prompt": p["prompt"], "seed": p["seed"], **r, "found": found})
    acc = sum(r["pass"] for r in results) / max(1, len(results))
    return {"accuracy": acc, "passed": sum(r["pass"] for r in results), "total": len(results), "results": results}


# ---------------------------------------------------------------------------------------------- generation


def load_pipeline(model_dir, device="cpu"):
    import torch
    from diffusers import StableDiffusionPipeline
    pipe = StableDiffusionPipeline.from_pretrained(str(model_dir), safety_checker=None, feature_extractor=None,
                                                   requires_safety_checker=False, torch_dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def generate(pipe, prompts: list[str], seeds: list[int], steps=EVAL_STEPS, guidance=EVAL_GUIDANCE,
             size=EVAL_SIZE, batch=32) -> list[np.ndarray]:
    """Images as diffusers draws them one at a time: each prompt's initial noise from its own
    torch.Generator("cpu").manual_seed(seed) (what `sdrt txt2img --seed N` draws)."""
    import torch
    out = []
    for i in range(0, len(prompts), batch):
        ps, ss = prompts[i:i + batch], seeds[i:i + batch]
        gens = [torch.Generator("cpu").manual_seed(s) for s in ss]
        with torch.no_grad():
            ims = pipe(ps, num_inference_steps=steps, guidance_scale=guidance, height=size, width=size,
                       generator=gens, output_type="np").images
        out += [(im * 255).round().astype(np.uint8) for im in ims]
    return out


def guidance_sweep(pipe, scales) -> dict:
    """{str(guidance): accuracy} of the fixed prompts (their own seeds) at each guidance scale."""
    prompts, seeds = [p["prompt"] for p in EVAL_PROMPTS], [p["seed"] for p in EVAL_PROMPTS]
    return {str(g): evaluate_images(generate(pipe, prompts, seeds, guidance=g))["accuracy"] for g in scales}


def grid(images: list[np.ndarray], cols: int = 8) -> np.ndarray:
    h, w = images[0].shape[:2]
    rows = (len(images) + cols - 1) // cols
    g = np.zeros((rows * h, cols * w, 3), np.uint8)
    for i, im in enumerate(images):
        g[(i // cols) * h:(i // cols + 1) * h, (i % cols) * w:(i % cols + 1) * w] = im
    return g


def evaluate_pipeline(pipe, out_dir=None, extra_seeds=0, guidance=EVAL_GUIDANCE, steps=EVAL_STEPS) -> dict:
    """The fixed prompt list (plus `extra_seeds` more seeds per prompt, reported separately)."""
    from PIL import Image
    prompts = [p["prompt"] for p in EVAL_PROMPTS]
    seeds = [p["seed"] for p in EVAL_PROMPTS]
    images = generate(pipe, prompts, seeds, steps=steps, guidance=guidance)
    report = evaluate_images(images)
    report["settings"] = {"steps": steps, "guidance": guidance, "size": EVAL_SIZE,
                          "scheduler": type(pipe.scheduler).__name__}
    sheet = [grid(images)]
    if extra_seeds:
        ps = [p for p in EVAL_PROMPTS for _ in range(extra_seeds)]
        ss = [p["seed"] + 7919 * (k + 1) for p in EVAL_PROMPTS for k in range(extra_seeds)]
        ims = generate(pipe, [p["prompt"] for p in ps], ss, steps=steps, guidance=guidance)
        more = evaluate_images(ims, ps)
        report["extra_seeds"] = {"n": extra_seeds, "accuracy": more["accuracy"], "passed": more["passed"],
                                 "total": more["total"]}
        sheet += [np.full((8, sheet[0].shape[1], 3), 255, np.uint8), grid(ims[:64], cols=8)]
    if out_dir is not None:  # the fixed prompts (3 rows of 8, in order), then up to 64 extra-seed images
        Image.fromarray(np.concatenate(sheet, 0)).save(Path(out_dir) / "eval_grid.png")
    return report


def selftest(n_random: int = 400) -> dict:
    """The analysis on rendered ground truth: the eval specs (laid out by dataset.layout) and random scenes."""
    ok_eval = 0
    fails = []
    for i, p in enumerate(EVAL_PROMPTS):
        for k in range(5):
            rng = np.random.default_rng([77, i, k])
            spec = dict(p["spec"])
            spec["bg"] = spec["bg"] or [c for c in dataset.COLOURS
                                        if c not in [o["colour"] for o in spec["objects"]]][k]
            img = dataset.render(dataset.layout(spec, rng), spec["bg"])
            r = check(p["spec"], analyse(img))
            ok_eval += r["pass"]
            if not r["pass"]:
                fails.append((p["prompt"], r["failures"]))
    ok_rand = 0
    for i in range(n_random):
        img, spec, _ = dataset.scene(12345, i)
        r = check(spec, analyse(img))
        ok_rand += r["pass"]
        if not r["pass"]:
            fails.append((dataset.canonical_caption(spec), r["failures"]))
    shared = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "demo" / "semantic_prompts.json"
    in_sync = None
    if shared.exists():  # the C++ test's copy of the list (scripts/make_demo_reference.py writes it)
        doc = json.loads(shared.read_text())
        in_sync = doc["prompts"] == [{"prompt": p["prompt"], "seed": p["seed"], "spec": p["spec"]}
                                     for p in EVAL_PROMPTS] and doc["steps"] == EVAL_STEPS and \
            doc["guidance"] == EVAL_GUIDANCE and doc["min_area_fraction"] == MIN_AREA_FRACTION
    return {"eval_specs": f"{ok_eval}/{5 * len(EVAL_PROMPTS)}", "random": f"{ok_rand}/{n_random}",
            "shared_prompt_list_in_sync": in_sync, "failures": fails[:20]}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model")
    ap.add_argument("--images")
    ap.add_argument("--selftest", action="store_true")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out")
    ap.add_argument("--extra-seeds", type=int, default=0)
    ap.add_argument("--guidance", type=float, default=EVAL_GUIDANCE)
    ap.add_argument("--steps", type=int, default=EVAL_STEPS)
    ap.add_argument("--list", action="store_true", help="print the prompt list as JSON")
    a = ap.parse_args()
    if a.list:
        print(json.dumps([{k: p[k] for k in ("prompt", "seed", "spec")} for p in EVAL_PROMPTS], indent=1))
        return
    if a.selftest:
        print(json.dumps(selftest(), indent=1))
        return
    if a.images:
        from PIL import Image
        ims = [np.asarray(Image.open(Path(a.images) / f"{i:02d}.png").convert("RGB")) for i in
               range(len(EVAL_PROMPTS))]
        report = evaluate_images(ims)
    else:
        pipe = load_pipeline(a.model, a.device)
        if a.out:
            Path(a.out).mkdir(parents=True, exist_ok=True)
        report = evaluate_pipeline(pipe, a.out, a.extra_seeds, a.guidance, a.steps)
    for r in report["results"]:
        print(("PASS " if r["pass"] else "FAIL ") + r["prompt"] + ("" if r["pass"] else "  " + "; ".join(
            r["failures"])))
    print(f"accuracy {report['passed']}/{report['total']} = {report['accuracy']:.3f}")
    if a.out:
        (Path(a.out) / "semantic_eval.json").write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
