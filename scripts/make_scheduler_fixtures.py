#!/usr/bin/env python3
"""Builds the reference data of sdrt's scheduler and torch-RNG tests from diffusers and torch (CPU).

Run from the repository root (torch + diffusers 0.42.1, as in the development image):

    python3 scripts/make_scheduler_fixtures.py     # writes tests/fixtures/schedulers/*.json

rng.json: torch.Generator("cpu").manual_seed(seed) then torch.randn(shape) twice, for several seeds and shapes;
values as float32 bit patterns (small shapes) or an FNV-1a hash of the bits plus the first and last values.

<kind>.json: for each scheduler kind, config variant, step count and Karras flag, diffusers'
`Source.from_config(raw_config)` then `Target.from_config(source.config)` (what sdrt's make_scheduler mirrors),
run over a full denoising loop with a fake model in float32:

    latents = randn([1, 4, 4, 5], generator=g) * init_noise_sigma     # g seeded 42, also used for step noise
    for t in timesteps:
        x = scale_model_input(latents, t)
        latents = step(0.3 * x + 0.1 * sin(t / 100), t, latents, generator=g)

Runs of up to 4 steps keep every scale_model_input and step output; 20-step runs keep per-step checksums (sum,
sum of |x|, max |x|) and the final sample.

ieee_sqrt.json: a subset of those runs made with torch's float32 square root (`** 0.5`, `.sqrt()`) replaced by
the correctly rounded IEEE one. torch's CPU sqrt goes through MKL's VML, which is not correctly rounded on every
CPU (on the machine these fixtures come from it is 1 ulp off for ~20% of inputs); sdrt uses the IEEE sqrt, so
with it swapped in diffusers' arithmetic must be reproduced exactly, which the tests check.
"""
import contextlib
import copy
import inspect
import json
import logging
import math
from pathlib import Path

import numpy as np
import torch
import diffusers
from diffusers import (DDIMScheduler, DPMSolverMultistepScheduler, EulerAncestralDiscreteScheduler,
                       EulerDiscreteScheduler, PNDMScheduler)

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "tests" / "fixtures" / "schedulers"
SHAPE = (1, 4, 4, 5)
SEED = 42
STEPS = (1, 4, 20)
FULL_TRAJECTORY_MAX_STEPS = 4

CLASSES = {
    "PNDMScheduler": PNDMScheduler,
    "DDIMScheduler": DDIMScheduler,
    "EulerDiscreteScheduler": EulerDiscreteScheduler,
    "EulerAncestralDiscreteScheduler": EulerAncestralDiscreteScheduler,
    "DPMSolverMultistepScheduler": DPMSolverMultistepScheduler,
}
KIND_CLASS = {
    "pndm": PNDMScheduler,
    "ddim": DDIMScheduler,
    "euler": EulerDiscreteScheduler,
    "euler_a": EulerAncestralDiscreteScheduler,
    "dpmpp_2m": DPMSolverMultistepScheduler,
}

# The raw scheduler_config.json of Stable Diffusion 1.5 and 2.1 (768-v), as published.
SD15 = {
    "_class_name": "PNDMScheduler", "_diffusers_version": "0.6.0", "beta_end": 0.012,
    "beta_schedule": "scaled_linear", "beta_start": 0.00085, "num_train_timesteps": 1000,
    "set_alpha_to_one": False, "skip_prk_steps": True, "steps_offset": 1, "trained_betas": None,
    "clip_sample": False,
}
SD21 = {
    "_class_name": "DDIMScheduler", "_diffusers_version": "0.8.0", "beta_end": 0.012,
    "beta_schedule": "scaled_linear", "beta_start": 0.00085, "clip_sample": False, "num_train_timesteps": 1000,
    "prediction_type": "v_prediction", "set_alpha_to_one": False, "skip_prk_steps": True, "steps_offset": 1,
    "trained_betas": None,
}


def with_(base, **kw):
    c = copy.deepcopy(base)
    c.update(kw)
    return c


def trained_betas_config():
    # A short 50-step training schedule given explicitly.
    betas = [round(0.001 + 0.02 * (i / 49) ** 1.5, 8) for i in range(50)]
    return {"_class_name": "DDIMScheduler", "num_train_timesteps": 50, "trained_betas": betas,
            "clip_sample": False, "set_alpha_to_one": False, "timestep_spacing": "trailing"}


# Variants shared by every kind: (name, raw config).
COMMON = [
    ("sd15", SD15),
    ("sd21", SD21),
    ("sd15_trailing", with_(SD15, timestep_spacing="trailing")),
    ("sd15_linspace", with_(SD15, timestep_spacing="linspace")),
    ("sd15_leading", with_(SD15, timestep_spacing="leading")),
    ("linear_default", {"_class_name": "EulerDiscreteScheduler", "beta_schedule": "linear"}),
    ("cosine", {"_class_name": "DDIMScheduler", "beta_schedule": "squaredcos_cap_v2", "clip_sample": False,
                "set_alpha_to_one": False}),
    ("trained_betas", trained_betas_config()),
]
ZSNR = ("zsnr_v_trailing", with_(SD21, rescale_betas_zero_snr=True, timestep_spacing="trailing"))

# Extra variants per kind.
EXTRA = {
    "pndm": [("sd15_prk", with_(SD15, skip_prk_steps=False)),
             ("sd21_prk_linspace", with_(SD21, skip_prk_steps=False, timestep_spacing="linspace"))],
    "ddim": [ZSNR,
             ("sample_clip", with_(SD15, _class_name="DDIMScheduler", prediction_type="sample", clip_sample=True,
                                   clip_sample_range=0.8, set_alpha_to_one=True))],
    "euler": [ZSNR,
              ("sample_sigma_min", with_(SD15, prediction_type="sample", final_sigmas_type="sigma_min")),
              ("sigma_range", with_(SD15, sigma_min=0.05, sigma_max=10.0))],
    "euler_a": [ZSNR],
    "dpmpp_2m": [ZSNR,
                 ("order3", with_(SD15, solver_order=3)),
                 ("heun", with_(SD15, solver_type="heun")),
                 ("sigma_min_no_lof", with_(SD15, final_sigmas_type="sigma_min", lower_order_final=False)),
                 ("sigma_min_euler_final", with_(SD15, final_sigmas_type="sigma_min", euler_at_final=True)),
                 ("lambda_clipped", with_(SD21, lambda_min_clipped=-5.1, timestep_spacing="linspace")),
                 ("sample_pred", with_(SD15, prediction_type="sample", algorithm_type="dpmsolver++"))],
}
KARRAS_KINDS = ("euler", "euler_a", "dpmpp_2m")
# Karras is run on these variants only (to keep the fixtures small).
KARRAS_VARIANTS = ("sd15", "sd21", "sd15_leading", "cosine", "zsnr_v_trailing", "sigma_range", "order3")


def build(kind, raw, karras):
    """Source.from_config(raw) then Target.from_config(source.config), as sdrt's make_scheduler mirrors."""
    source = CLASSES[raw.get("_class_name", "PNDMScheduler")].from_config(raw)
    target = KIND_CLASS[kind]
    if kind == "euler_a" or not karras:
        sched = target.from_config(source.config)
    else:
        sched = target.from_config(source.config, use_karras_sigmas=True)
    return sched, source


def f32list(a):
    """Shortest round-trip decimal of each float32; NaN (which diffusers can produce) as null."""
    return [None if np.isnan(v) else float(str(np.float32(v))) for v in np.asarray(a, dtype=np.float32).ravel()]


def exact_list(a):
    """Each float32 (or int) value as an exact JSON number."""
    return [float(v) for v in np.asarray(a, dtype=np.float64).ravel()]


def checksum(t):
    a = t.detach().to(torch.float64).numpy().ravel()
    if not np.isfinite(a).all():
        return None  # the run diverged in diffusers; "final" records where
    return [float(a.sum()), float(np.abs(a).sum()), float(np.abs(a).max())]


def run_case(kind, variant, raw, steps, karras):
    sched, _ = build(kind, raw, karras)
    try:
        sched.set_timesteps(steps)
    except ValueError as e:  # e.g. PNDM's Runge-Kutta warm-up with fewer than 4 steps
        return {"variant": variant, "config": raw, "karras": karras, "steps": steps, "error": str(e)}
    if kind == "euler_a" and karras:
        # sdrt extension: Euler a on EulerDiscreteScheduler's Karras schedule.
        euler, _ = build("euler", raw, True)
        euler.set_timesteps(steps)
        sched.sigmas = euler.sigmas.clone()
        sched.timesteps = euler.timesteps.clone()
    g = torch.Generator("cpu").manual_seed(SEED)
    latents = torch.randn(SHAPE, generator=g, dtype=torch.float32)
    init_sigma = sched.init_noise_sigma
    latents = latents * init_sigma
    case = {
        "variant": variant, "config": raw, "karras": karras, "steps": steps,
        "timesteps": exact_list(sched.timesteps.numpy()),
        "init_noise_sigma": float(np.float32(float(init_sigma))),
    }
    if hasattr(sched, "sigmas") and kind in ("euler", "euler_a", "dpmpp_2m"):
        case["sigmas"] = exact_list(np.asarray(sched.sigmas, dtype=np.float32))
    full = steps <= FULL_TRAJECTORY_MAX_STEPS
    scaled_all, prev_all, sums = [], [], []
    for t in sched.timesteps:
        x = sched.scale_model_input(latents, t)
        model_output = 0.3 * x + 0.1 * math.sin(float(t) / 100)
        kwargs = {"generator": g} if "generator" in inspect.signature(sched.step).parameters else {}
        latents = sched.step(model_output, t, latents, **kwargs).prev_sample
        if full:
            scaled_all.append(f32list(x))
            prev_all.append(f32list(latents))
        else:
            sums.append(checksum(latents))
    if full:
        if kind in ("euler", "euler_a"):
            case["scaled"] = scaled_all
        case["prev"] = prev_all
    else:
        case["checksums"] = sums
        case["final"] = f32list(latents)
    return case


@contextlib.contextmanager
def ieee_sqrt():
    """Swaps torch's float32 sqrt (MKL VML) for the correctly rounded one while diffusers runs."""
    tensor_sqrt, tensor_pow, torch_sqrt = torch.Tensor.sqrt, torch.Tensor.__pow__, torch.sqrt

    def exact_sqrt(t):
        # float64 sqrt, even if off by an ulp, rounds to the correctly rounded float32 (double rounding is exact
        # for sqrt since 53 >= 2 * 24 + 2).
        return tensor_sqrt(t.double()).float() if t.dtype == torch.float32 else tensor_sqrt(t)

    def power(t, e):
        return exact_sqrt(t) if isinstance(e, (int, float)) and e == 0.5 else tensor_pow(t, e)

    torch.Tensor.sqrt, torch.Tensor.__pow__ = exact_sqrt, power
    torch.sqrt = lambda t, *a, **k: exact_sqrt(t) if not a and not k else torch_sqrt(t, *a, **k)
    try:
        yield
    finally:
        torch.Tensor.sqrt, torch.Tensor.__pow__, torch.sqrt = tensor_sqrt, tensor_pow, torch_sqrt


# (kind, variant, steps, karras) of ieee_sqrt.json.
IEEE_CASES = [(k, "zsnr_v_trailing", n, False) for k in ("ddim", "euler", "euler_a", "dpmpp_2m") for n in (4, 20)] + \
    [(k, "sd15", n, True) for k in ("euler", "euler_a", "dpmpp_2m") for n in (4, 20)] + \
    [(k, v, 20, False) for k, v in (("pndm", "sd15"), ("pndm", "sd15_prk"), ("ddim", "sd21"), ("euler", "sd15"),
                                    ("euler_a", "sd21"), ("dpmpp_2m", "sd15"), ("euler", "sample_sigma_min"))]


def ieee_fixture():
    cases = []
    with ieee_sqrt():
        for kind, variant, steps, karras in IEEE_CASES:
            raw = dict(COMMON + EXTRA.get(kind, []))[variant]
            case = run_case(kind, variant, raw, steps, karras)
            case["kind"] = kind
            cases.append(case)
    return {"diffusers": diffusers.__version__, "torch": torch.__version__, "shape": list(SHAPE), "seed": SEED,
            "initial_noise": f32list(torch.randn(SHAPE, generator=torch.Generator().manual_seed(SEED))),
            "cases": cases}


def scheduler_fixture(kind):
    variants = COMMON + EXTRA.get(kind, [])
    cases = []
    for name, raw in variants:
        for karras in ((False, True) if kind in KARRAS_KINDS and name in KARRAS_VARIANTS else (False,)):
            if karras and kind == "dpmpp_2m" and name == "cosine":
                # Karras timesteps of the cosine schedule truncate to duplicates (999, 999, ...), which makes
                # diffusers start at step index 1 and run past its sigmas.
                continue
            for steps in STEPS:
                cases.append(run_case(kind, name, raw, steps, karras))
    return {"kind": kind, "diffusers": diffusers.__version__, "torch": torch.__version__, "shape": list(SHAPE),
            "seed": SEED, "initial_noise": f32list(torch.randn(SHAPE, generator=torch.Generator().manual_seed(SEED))),
            "cases": cases}


def fnv1a64(bits):
    h = 0xcbf29ce484222325
    for b in bits.astype("<u4").tobytes():
        h ^= b
        h = (h * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


def rng_fixture():
    seeds = [0, 1, 42, 2**32 + 5, 2**63 - 1, 123456789]
    shapes = [[1, 4, 64, 64], [1, 4, 8, 8], [2, 4, 5, 7], [1, 4, 4, 5], [1], [3], [5], [15], [16], [17], [31],
              [33], [2, 3, 5], [1, 4, 9, 11]]
    cases = []
    for seed in seeds:
        for shape in shapes:
            g = torch.Generator("cpu").manual_seed(seed)
            calls = []
            for _ in range(2):
                bits = torch.randn(shape, generator=g, dtype=torch.float32).numpy().ravel().view(np.uint32)
                if bits.size <= 300:
                    calls.append({"bits": [int(b) for b in bits]})
                else:
                    calls.append({"fnv1a64": fnv1a64(bits), "head": [int(b) for b in bits[:8]],
                                  "tail": [int(b) for b in bits[-8:]]})
            cases.append({"seed": seed, "shape": shape, "calls": calls})
    # Mixed sizes on one generator: the scalar path's cached second sample carries over the block path.
    g = torch.Generator("cpu").manual_seed(7)
    mixed = []
    for shape in ([3], [20], [1], [5], [16], [2]):
        bits = torch.randn(shape, generator=g).numpy().ravel().view(np.uint32)
        mixed.append({"shape": shape, "bits": [int(b) for b in bits]})
    return {"torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability(), "cases": cases,
            "mixed_sequence": {"seed": 7, "calls": mixed}}


def main():
    logging.getLogger("diffusers").setLevel(logging.ERROR)
    diffusers.utils.logging.set_verbosity_error()
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "rng.json").write_text(json.dumps(rng_fixture(), separators=(",", ":"), allow_nan=False) + "\n")
    for kind in KIND_CLASS:
        data = scheduler_fixture(kind)
        (OUT / f"{kind}.json").write_text(json.dumps(data, separators=(",", ":"), allow_nan=False) + "\n")
    (OUT / "ieee_sqrt.json").write_text(json.dumps(ieee_fixture(), separators=(",", ":"), allow_nan=False) + "\n")
    total = sum(p.stat().st_size for p in OUT.glob("*.json"))
    print(f"wrote {OUT} ({total / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
