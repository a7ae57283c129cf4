"""Procedural scenes for the sdrt demo model: flat coloured shapes on a flat background, with captions.

Everything is deterministic: scene i of a data set with seed S comes from numpy's PCG64 seeded with [S, i], and
its captions from [S, i, 1 + k]. A scene is first drawn as a *spec* (what a caption says), then laid out
(where things go) and rendered; the same spec structure is what `semantic_eval.py` checks generated images
against.

Vocabulary
    shapes   circle, square, triangle (equilateral, pointing up), star (five points, pointing up)
    colours  red, orange, yellow, green, blue, purple, white, black (the palette below; flat RGB, no jitter)
    counts   one ("a", "one", "a single"), two ("two", "a pair of", "2"), three ("three", "3")
    places   left, right, top, bottom, center and the four corners (single-object scenes)
    relations above / below / to the left of / to the right of / and / next to (two-object scenes)

Scene kinds (probabilities): a single shape 45% (with a position in 45% of those, else near the centre);
two or three equal shapes 25%; two different shapes with a relation 30%. The background colour is named in
90% of captions (else it is still drawn, in a random colour); an object's colour is never the background's, and
two objects of a relation scene have different colours.

Rendering: 2x supersampled PIL drawing, box-filtered down to the output size (antialiased edges). Sizes are
fractions of the image side, so any square size works; the demo model uses 128 x 128.
"""
from __future__ import annotations

import math
from multiprocessing import get_context

import numpy as np
from PIL import Image, ImageDraw

PALETTE = {
    "red": (220, 40, 40),
    "orange": (245, 140, 30),
    "yellow": (245, 220, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "purple": (140, 60, 190),
    "white": (245, 245, 245),
    "black": (25, 25, 25),
}
COLOURS = list(PALETTE)
SHAPES = ["circle", "square", "triangle", "star"]
PLURAL = {s: s + "s" for s in SHAPES}
# Centres of the nine named places, as fractions of the image side (x, y).
PLACES = {
    "top left": (0.27, 0.27), "top": (0.5, 0.27), "top right": (0.73, 0.27),
    "left": (0.27, 0.5), "center": (0.5, 0.5), "right": (0.73, 0.5),
    "bottom left": (0.27, 0.73), "bottom": (0.5, 0.73), "bottom right": (0.73, 0.73),
}
RELATIONS = ["above", "below", "left of", "right of", "and", "next to"]
STAR_INNER = 0.42  # inner / outer radius of the star

# ---------------------------------------------------------------------------------------------- specs


def random_spec(rng: np.random.Generator) -> dict:
    """What a caption says: {"kind", "bg", "bg_named", "objects": [{"colour","shape","count"}], "place",
    "relation"}. "place" only for kind "single", "relation" only for kind "pair"."""
    bg = COLOURS[rng.integers(len(COLOURS))]
    others = [c for c in COLOURS if c != bg]
    u = rng.random()
    spec = {"bg": bg, "bg_named": bool(rng.random() < 0.9), "place": None, "relation": None}
    if u < 0.45:
        spec["kind"] = "single"
        spec["objects"] = [{"colour": others[rng.integers(7)], "shape": SHAPES[rng.integers(4)], "count": 1}]
        if rng.random() < 0.45:
            spec["place"] = list(PLACES)[rng.integers(len(PLACES))]
    elif u < 0.70:
        spec["kind"] = "multi"
        spec["objects"] = [{"colour": others[rng.integers(7)], "shape": SHAPES[rng.integers(4)],
                            "count": int(rng.integers(2, 4))}]
    else:
        spec["kind"] = "pair"
        ca, cb = rng.choice(7, size=2, replace=False)
        spec["objects"] = [{"colour": others[ca], "shape": SHAPES[rng.integers(4)], "count": 1},
                           {"colour": others[cb], "shape": SHAPES[rng.integers(4)], "count": 1}]
        spec["relation"] = RELATIONS[rng.integers(len(RELATIONS))]
    return spec


# ---------------------------------------------------------------------------------------------- captions


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _object_phrase(obj: dict, rng: np.random.Generator) -> str:
    c, s, n = obj["colour"], obj["shape"], obj["count"]
    if n == 1:
        det = ["", "one", "a single"][rng.choice(3, p=[0.7, 0.15, 0.15])] or _article(c)
        return f"{det} {c} {s}"
    words = {2: ["two", "a pair of", "2"], 3: ["three", "three", "3"]}[n]
    det = words[rng.choice(3, p=[0.7, 0.15, 0.15])]
    return f"{det} {c} {PLURAL[s]}"


_PLACE_PHRASES = {
    "left": ["on the left", "on the left side", "at the left"],
    "right": ["on the right", "on the right side", "at the right"],
    "top": ["at the top", "near the top", "at the top"],
    "bottom": ["at the bottom", "near the bottom", "at the bottom"],
    "center": ["in the center", "in the middle", "in the centre"],
}
for _v in ("top", "bottom"):
    for _h in ("left", "right"):
        _PLACE_PHRASES[f"{_v} {_h}"] = [f"in the {_v} {_h} corner", f"at the {_v} {_h}", f"in the {_v} {_h}"]
_REL_PHRASES = {"above": ["above", "over"], "below": ["below", "under", "beneath"],
                "left of": ["to the left of", "left of"], "right of": ["to the right of", "right of"],
                "and": ["and"], "next to": ["next to", "beside"]}
_PREFIXES = ["", "", "", "", "a picture of ", "an image of ", "a drawing of ", "a simple drawing of "]


def caption(spec: dict, rng: np.random.Generator) -> str:
    """One of many phrasings of `spec` (varied determiners, place / relation wording, background wording)."""
    objs = [_object_phrase(o, rng) for o in spec["objects"]]
    if spec["kind"] == "pair":
        rel = _REL_PHRASES[spec["relation"]]
        body = f"{objs[0]} {rel[rng.integers(len(rel))]} {objs[1]}"
    else:
        body = objs[0]
        if spec["place"]:
            ph = _PLACE_PHRASES[spec["place"]]
            body += " " + ph[rng.integers(len(ph))]
    prefix = _PREFIXES[rng.integers(len(_PREFIXES))]
    if not spec["bg_named"]:
        return prefix + body
    bg = spec["bg"]
    forms = [f"{prefix}{body} on {_article(bg)} {bg} background", f"{prefix}{body} on {bg}",
             f"{prefix}{body} against {_article(bg)} {bg} background", f"{prefix}{body}, {bg} background",
             f"{prefix}{body} with {_article(bg)} {bg} background", f"{_article(bg)} {bg} background with {body}"]
    weights = np.array([0.4, 0.1, 0.1, 0.15, 0.1, 0.15])
    return forms[rng.choice(len(forms), p=weights)]


def canonical_caption(spec: dict) -> str:
    """The plain phrasing used by the evaluation prompts: 'a red circle on the left on a blue background'."""
    def obj(o):
        if o["count"] == 1:
            return f"{_article(o['colour'])} {o['colour']} {o['shape']}"
        return f"{['', '', 'two', 'three'][o['count']]} {o['colour']} {PLURAL[o['shape']]}"
    if spec["kind"] == "pair":
        rel = {"left of": "to the left of", "right of": "to the right of"}.get(spec["relation"], spec["relation"])
        body = f"{obj(spec['objects'][0])} {rel} {obj(spec['objects'][1])}"
    else:
        body = obj(spec["objects"][0])
        if spec["place"]:
            body += " " + _PLACE_PHRASES[spec["place"]][0]
    if spec["bg_named"]:
        body += f" on {_article(spec['bg'])} {spec['bg']} background"
    return body


# ---------------------------------------------------------------------------------------------- layout


def _non_overlapping(rng, sizes, tries=200):
    """Random centres in [0, 1]^2 keeping each shape inside and apart (centre distance >= 1.15 x size)."""
    for _ in range(tries):
        pts = []
        for s in sizes:
            m = s / 2 + 0.03
            pts.append((rng.uniform(m, 1 - m), rng.uniform(m, 1 - m)))
        ok = all(math.dist(pts[i], pts[j]) >= 1.15 * max(sizes[i], sizes[j]) + 0.03
                 for i in range(len(pts)) for j in range(i))
        if ok:
            return pts
    # fall back to a fixed row
    return [((i + 0.5) / len(sizes), 0.5) for i in range(len(sizes))]


def layout(spec: dict, rng: np.random.Generator) -> list[dict]:
    """Objects with centre (x, y) and size (bounding-box side), all as fractions of the image side."""
    j = lambda a: rng.uniform(-a, a)
    items = []
    if spec["kind"] == "single":
        o = spec["objects"][0]
        if spec["place"]:
            s = rng.uniform(0.28, 0.38)
            px, py = PLACES[spec["place"]]
            x, y = px + j(0.04), py + j(0.04)
        else:
            s = rng.uniform(0.34, 0.5)
            x, y = 0.5 + j(0.1), 0.5 + j(0.1)
        items.append({"colour": o["colour"], "shape": o["shape"], "x": x, "y": y, "size": s})
    elif spec["kind"] == "multi":
        o = spec["objects"][0]
        n = o["count"]
        s = rng.uniform(0.2, 0.3) if n == 2 else rng.uniform(0.18, 0.25)
        for x, y in _non_overlapping(rng, [s] * n):
            items.append({"colour": o["colour"], "shape": o["shape"], "x": x, "y": y, "size": s})
    else:
        a, b = spec["objects"]
        sa, sb = rng.uniform(0.22, 0.32), rng.uniform(0.22, 0.32)
        rel = spec["relation"]
        if rel == "next to" or (rel == "and" and rng.random() < 0.5):
            rel = ["left of", "right of"][rng.integers(2)]
        if rel == "and":
            (xa, ya), (xb, yb) = _non_overlapping(rng, [sa, sb])
        else:
            c = rng.uniform(0.32, 0.68)
            near, far = rng.uniform(0.2, 0.3), rng.uniform(0.7, 0.8)
            first, second = (near, far) if rel in ("above", "left of") else (far, near)
            if rel in ("above", "below"):
                (xa, ya), (xb, yb) = (c + j(0.05), first), (c + j(0.05), second)
            else:
                (xa, ya), (xb, yb) = (first, c + j(0.05)), (second, c + j(0.05))
        items.append({"colour": a["colour"], "shape": a["shape"], "x": xa, "y": ya, "size": sa})
        items.append({"colour": b["colour"], "shape": b["shape"], "x": xb, "y": yb, "size": sb})
    return items


# ---------------------------------------------------------------------------------------------- render


def _star_points(cx, cy, s):
    # Outer radius R so that the star's bounding box is about s wide; the box is centred on (cx, cy).
    r_out = s / (2 * math.sin(math.radians(72))) * 1.1
    r_in = r_out * STAR_INNER
    height = r_out * (1 + math.cos(math.radians(36)))
    oy = cy - height / 2 + r_out  # star centre so that the bounding box is vertically centred
    pts = []
    for k in range(10):
        ang = math.radians(-90 + 36 * k)
        r = r_out if k % 2 == 0 else r_in
        pts.append((cx + r * math.cos(ang), oy + r * math.sin(ang)))
    return pts


def render(items: list[dict], bg: str, size: int = 128, supersample: int = 2) -> np.ndarray:
    """uint8 [size, size, 3] image of the laid-out objects."""
    big = size * supersample
    img = Image.new("RGB", (big, big), PALETTE[bg])
    d = ImageDraw.Draw(img)
    for it in items:
        cx, cy, s = it["x"] * big, it["y"] * big, it["size"] * big
        fill = PALETTE[it["colour"]]
        if it["shape"] == "circle":
            r = s / 2
            d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
        elif it["shape"] == "square":
            h = s * 0.86 / 2
            d.rectangle([cx - h, cy - h, cx + h, cy + h], fill=fill)
        elif it["shape"] == "triangle":
            w = s * 1.05
            h = w * math.sqrt(3) / 2
            d.polygon([(cx, cy - h / 2), (cx + w / 2, cy + h / 2), (cx - w / 2, cy + h / 2)], fill=fill)
        else:
            d.polygon(_star_points(cx, cy, s), fill=fill)
    if supersample > 1:
        img = img.reduce(supersample)
    return np.asarray(img, dtype=np.uint8)


def _scene_parts(seed: int, index: int, size: int, n_captions: int):
    rng = np.random.default_rng([seed, index])
    spec = random_spec(rng)
    items = layout(spec, rng)
    img = render(items, spec["bg"], size)
    caps = [caption(spec, np.random.default_rng([seed, index, 1 + k])) for k in range(n_captions)]
    return img, spec, items, caps


def scene(seed: int, index: int, size: int = 128, n_captions: int = 4):
    """(image uint8 [size,size,3], spec, [captions])."""
    img, spec, _, caps = _scene_parts(seed, index, size, n_captions)
    return img, spec, caps


# Layout slots of layout_targets(): which object a directional relation puts at the top / bottom / left / right.
LAYOUT_SLOTS = ["top", "bottom", "left", "right"]


def layout_targets(spec: dict, items: list[dict]) -> np.ndarray:
    """int8 [4 slots, 2]: (colour index, shape index) of the object at the top, bottom, left and right of a
    two-shape scene whose caption fixes the layout (above / below / left of / right of); -1 where the caption
    does not say (other scenes, the other axis, "and", "next to"). Targets of train.py's layout probe."""
    t = np.full((4, 2), -1, np.int8)
    rel = spec.get("relation")
    if spec["kind"] != "pair" or rel not in ("above", "below", "left of", "right of"):
        return t
    axis = "y" if rel in ("above", "below") else "x"
    low, high = sorted(items[:2], key=lambda it: it[axis])  # low: top (y) or left (x)
    base = 0 if axis == "y" else 2
    for slot, it in ((base, low), (base + 1, high)):
        t[slot] = (COLOURS.index(it["colour"]), SHAPES.index(it["shape"]))
    return t


# Scene categories for oversampling (train.py --oversample-*): see kind_code().
KIND_SINGLE, KIND_SINGLE_BG, KIND_MULTI, KIND_PAIR = 0, 1, 2, 3
KIND_NAMES = ["single", "single_bg", "multi", "pair"]


def kind_code(spec: dict) -> int:
    """0: one shape, background not named; 1: one shape "on a <colour> background" (the colour-binding case:
    both colours are palette words); 2: two or three equal shapes; 3: two different shapes with a relation."""
    if spec["kind"] == "single":
        return KIND_SINGLE_BG if spec["bg_named"] else KIND_SINGLE
    return KIND_MULTI if spec["kind"] == "multi" else KIND_PAIR


def _render_range(args):
    seed, start, stop, size, n_captions = args
    imgs = np.empty((stop - start, size, size, 3), np.uint8)
    kinds = np.empty(stop - start, np.int8)
    targets = np.empty((stop - start, 4, 2), np.int8)
    caps = []
    for i in range(start, stop):
        img, spec, items, c = _scene_parts(seed, i, size, n_captions)
        imgs[i - start] = img
        kinds[i - start] = kind_code(spec)
        targets[i - start] = layout_targets(spec, items)
        caps.append(c)
    return imgs, caps, kinds, targets


def make_dataset(n: int, seed: int, size: int = 128, n_captions: int = 4, workers: int = 1,
                 with_labels: bool = False):
    """Renders scenes 0..n-1: (uint8 [n, size, size, 3], list of n lists of captions) and, with with_labels,
    int8 [n] of kind_code()s and int8 [n, 4, 2] of layout_targets()."""
    chunk = 2000
    jobs = [(seed, a, min(a + chunk, n), size, n_captions) for a in range(0, n, chunk)]
    if workers > 1:
        with get_context("fork").Pool(workers) as pool:
            parts = pool.map(_render_range, jobs)
    else:
        parts = [_render_range(j) for j in jobs]
    images = np.concatenate([p[0] for p in parts]) if parts else np.empty((0, size, size, 3), np.uint8)
    captions = [c for p in parts for c in p[1]]
    if with_labels:
        kinds = np.concatenate([p[2] for p in parts]) if parts else np.empty(0, np.int8)
        targets = np.concatenate([p[3] for p in parts]) if parts else np.empty((0, 4, 2), np.int8)
        return images, captions, kinds, targets
    return images, captions


if __name__ == "__main__":  # writes a contact sheet of the first scenes with their captions
    import argparse
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n", type=int, default=24)
    ap.add_argument("--out", default="dataset_preview.png")
    a = ap.parse_args()
    imgs, caps = make_dataset(a.n, a.seed)
    cols = 6
    rows = (a.n + cols - 1) // cols
    sheet = Image.new("RGB", (cols * 128, rows * 128))
    for i, im in enumerate(imgs):
        sheet.paste(Image.fromarray(im), ((i % cols) * 128, (i // cols) * 128))
        print(i, " | ".join(caps[i]))
    sheet.save(a.out)
