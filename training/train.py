#!/usr/bin/env python3
"""Trains sdrt's built-in demo model: a tiny Stable Diffusion (SD 1.x architecture) on procedural shapes.

One run does everything, each phase under a wall-clock budget:
  0. data      render --scenes scenes (dataset.py, multiprocessing), 4 captions each, tokenise them with the
               real CLIP tokenizer (77 tokens, SD 1.x padding with <|endoftext|>)
  1. vae       AutoencoderKL (4 blocks: 8x downsampling, 4 latent channels) on the images:
               L1 + MSE reconstruction + 1e-4 x KL (per element), AdamW, warmup + cosine
  2. encode    posterior mean / std of every image; scaling_factor = 1 / std(latent means)
  3. unet      UNet2DConditionModel + CLIPTextModel from scratch, jointly, through the diffusion loss:
               epsilon prediction, DDPM with SD's scaled_linear betas (0.00085..0.012, 1000 steps), min-SNR-5
               weighting, 10% empty captions (classifier-free guidance), bf16 autocast, AdamW, warmup + cosine,
               EMA of the weights (exported)
  4. export    diffusers folder, fp16 (export.py), packed as sdrt-demo.tar.gz; checkpoint for --resume
  5. eval      semantic_eval.py's fixed prompts through diffusers' StableDiffusionPipeline: accuracy and grids

--init-from DIR continues from an exported diffusers folder (models/demo): its VAE (not trained again; its
scaling_factor is kept), text encoder and UNet (fp16 -> fp32 master weights; the EMA starts from them), with a
short warmup, a low final learning rate and the hard scene kinds oversampled (--oversample-*). The folder's
training.json (written by every export) carries the earlier runs' history into the new model card.

The learning-rate schedules run on max(step / max_steps, elapsed / budget), so a phase always ends its cosine
decay when its time budget runs out, however fast the machine is.

Outputs under --out: train.log, log.json (settings, loss curves, throughput, evaluation), vae_recon.png,
eval_grid.png, sdrt-demo.tar.gz (the folder "demo/" with a model card README.md; the folder itself is written to
--export-dir, default OUT/demo), ckpt.pt (split into ckpt.pt.000, ... of <= 15 MiB by --split-ckpt; written
after the VAE phase, every --ckpt-every seconds of UNet training and at the end).
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import dataset  # noqa: E402
import export  # noqa: E402
import model_def  # noqa: E402
from model_def import (IMAGE_SIZE, TE_CONFIG, load_checkpoint, load_diffusers_folder, make_models,  # noqa: E402
                       token_embedding)

T0 = time.time()
LOG_FILE = None


def log(*a):
    s = f"[{time.time() - T0:7.1f}s] " + " ".join(str(x) for x in a)
    print(s, flush=True)
    if LOG_FILE is not None:
        with open(LOG_FILE, "a") as f:
            f.write(s + "\n")


# ---------------------------------------------------------------------------------------------- models

# The architecture and the checkpoint format live in model_def.py (export.py and record_run.py use them too).

def save_checkpoint(out: Path, vae, te, unet, te_ema, unet_ema, state: dict, split_mib: float = 0):
    """model_def.save_checkpoint, logged."""
    size = model_def.save_checkpoint(out, vae, te, unet, te_ema, unet_ema, state, split_mib)
    log(f"checkpoint: {size / 2**20:.1f} MiB -> {out}")


# ---------------------------------------------------------------------------------------------- helpers

def lr_at(step, elapsed, peak, warmup, budget, max_steps, floor=0.1):
    p = elapsed / budget if budget > 0 else 1.0
    if max_steps:
        p = max(p, step / max_steps)
    p = min(max(p, 0.0), 1.0)
    return peak * min(1.0, (step + 1) / warmup) * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * p)))


def param_groups(model, wd):
    decay, no_decay = [], []
    for n, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.dim() < 2 or "embedding" in n or "norm" in n else decay).append(p)
    return [{"params": decay, "weight_decay": wd}, {"params": no_decay, "weight_decay": 0.0}]


def to_images(u8: torch.Tensor) -> torch.Tensor:
    """uint8 [B, H, W, 3] -> float [B, 3, H, W] in [-1, 1]."""
    return u8.permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)


def save_png(arr: np.ndarray, path: Path):
    from PIL import Image
    Image.fromarray(arr).save(path)


# ---------------------------------------------------------------------------------------------- phases

def build_data(args, tok):
    t = time.time()
    images, captions, kinds, layout = dataset.make_dataset(args.scenes, args.seed, IMAGE_SIZE, args.captions,
                                                           args.workers, with_labels=True)
    t_render = time.time() - t
    flat = [c for cs in captions for c in cs]
    uniq = sorted(set(flat))
    ids = tok(uniq, padding="max_length", max_length=77, truncation=True).input_ids
    table = {c: i for i, c in enumerate(uniq)}
    ids_u = torch.tensor(ids, dtype=torch.int32)
    tokens = ids_u[torch.tensor([table[c] for c in flat])].view(len(captions), args.captions, 77)
    empty = torch.tensor(tok("", padding="max_length", max_length=77).input_ids, dtype=torch.int32)
    used = torch.unique(torch.cat([tokens.flatten(), empty]))
    log(f"data: {len(images)} scenes rendered in {t_render:.1f}s, {len(uniq)} distinct captions, "
        f"{len(used)} distinct token ids, total {time.time() - t:.1f}s; e.g. {flat[:3]}")
    return (torch.from_numpy(images), tokens, empty, used, torch.from_numpy(kinds.astype(np.int64)),
            torch.from_numpy(layout.astype(np.int64)))


def train_vae(args, vae, images, dev, curve):
    g = torch.Generator(device=dev).manual_seed(args.seed + 1)
    opt = torch.optim.AdamW(param_groups(vae, 0.01), lr=args.vae_lr, betas=(0.9, 0.99), **args.fused)
    vae.train()
    n = images.shape[0]
    t0 = time.time()
    step, acc, acc_n, t_log = 0, 0.0, 0, time.time()
    while True:
        el = time.time() - t0
        if el >= args.vae_time or (args.vae_steps and step >= args.vae_steps):
            break
        lr = lr_at(step, el, args.vae_lr, 100, args.vae_time, args.vae_steps)
        for gp in opt.param_groups:
            gp["lr"] = lr
        idx = torch.randint(n, (args.vae_batch,), device=dev, generator=g)
        x = to_images(images[idx])
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
            post = vae.encode(x).latent_dist
            z = post.mean + post.std * torch.randn(post.mean.shape, device=dev, generator=g)
            rec = vae.decode(z).sample.float()
        kl = 0.5 * (post.mean.float() ** 2 + post.var.float() - 1.0 - post.logvar.float()).mean()
        loss = (rec - x).abs().mean() + F.mse_loss(rec, x) + args.vae_kl * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        acc += loss.detach()
        acc_n += 1
        step += 1
        if step % args.log_every == 0:
            l = float(acc) / acc_n
            rate = acc_n / (time.time() - t_log)
            log(f"vae step {step} loss {l:.5f} kl {float(kl.detach()):.3f} lr {lr:.2e} {rate:.1f} it/s "
                f"({rate * args.vae_batch:.0f} img/s)")
            curve.append({"phase": "vae", "step": step, "loss": l, "lr": lr, "t": time.time() - T0})
            acc, acc_n, t_log = 0.0, 0, time.time()
    vae.eval()
    return step, time.time() - t0


@torch.no_grad()
def encode_all(vae, images, dev, batch=512):
    means, stds = [], []
    for i in range(0, images.shape[0], batch):
        x = to_images(images[i:i + batch].to(dev))
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
            post = vae.encode(x).latent_dist
        means.append(post.mean.float())
        stds.append(post.std.float())
    return torch.cat(means), torch.cat(stds)


@torch.no_grad()
def vae_report(vae, images, dev, out: Path, n=16):
    x = to_images(images[-n:].to(dev))
    rec = vae.decode(vae.encode(x).latent_dist.mean).sample.clamp(-1, 1)
    mse = F.mse_loss(rec, x).item()
    psnr = 10 * math.log10(4.0 / max(mse, 1e-12))
    to_u8 = lambda t: ((t.permute(0, 2, 3, 1).cpu().numpy() + 1) * 127.5).round().clip(0, 255).astype(np.uint8)
    a, b = to_u8(x), to_u8(rec)
    top = np.concatenate(list(a[:8]), 1)
    bot = np.concatenate(list(b[:8]), 1)
    save_png(np.concatenate([top, bot], 0), out / "vae_recon.png")
    return psnr


def ddpm_tables(dev):
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
    ab = torch.cumprod(1 - betas, 0)
    return ab.sqrt().float().to(dev), (1 - ab).sqrt().float().to(dev), (ab / (1 - ab)).float().to(dev)


class LayoutProbe(torch.nn.Module):
    """Training-only head (never exported): from the mean of the text encoder's states after <|endoftext|>
    (the padding positions, which see the whole caption through CLIP's causal attention), predicts the colour and
    shape of the object at the top / bottom / left / right of a scene whose caption fixes the layout
    ("a yellow star above a purple triangle": top = yellow star). Its loss teaches the text encoder to resolve
    which named object a relation puts where, which the diffusion loss alone did not (the UNet placed the two
    objects of a relation the right way round about half the time)."""

    def __init__(self, hidden: int):
        super().__init__()
        self.n_colours, self.n_shapes = len(dataset.COLOURS), len(dataset.SHAPES)
        self.head = torch.nn.Linear(hidden, len(dataset.LAYOUT_SLOTS) * (self.n_colours + self.n_shapes))

    def forward(self, hidden_states, ids, targets):
        """hidden_states [B, 77, hidden], ids [B, 77], targets [B, 4, 2] (-1: none) -> (loss, accuracy)."""
        eos = (ids == TE_CONFIG["eos_token_id"]).int().argmax(1)                         # [B] first <|endoftext|>
        pad = (torch.arange(ids.shape[1], device=ids.device)[None] > eos[:, None]).float()  # [B, 77]
        pooled = (hidden_states.float() * pad[..., None]).sum(1) / pad.sum(1, keepdim=True).clamp(min=1)
        logits = self.head(pooled).view(ids.shape[0], len(dataset.LAYOUT_SLOTS), -1)        # [B, 4, 8 + 4]
        loss, correct, count = 0.0, 0.0, 0.0
        for lg, tg in ((logits[..., :self.n_colours], targets[..., 0]), (logits[..., self.n_colours:], targets[..., 1])):
            lg, tg = lg.reshape(-1, lg.shape[-1]), tg.reshape(-1)
            valid = tg >= 0
            loss = loss + F.cross_entropy(lg, tg.clamp(min=0), reduction="none").mul(valid).sum()
            correct = correct + ((lg.argmax(-1) == tg) & valid).sum()
            count = count + valid.sum()
        n = count.clamp(min=1)
        return loss / n, correct / n


def train_unet(args, te, unet, te_ema, unet_ema, lat_mean, lat_std, sf, tokens, empty, dev, curve, start_step,
               checkpoint=None, weights=None, layout=None):
    """weights: optional per-scene sampling weights (float [n] on dev; None: uniform). layout: int64 [n, 4, 2]
    layout targets (dataset.layout_targets) for the --layout-probe loss."""
    g = torch.Generator(device=dev).manual_seed(args.seed + 2 + start_step)
    if args.channels_last:
        unet.to(memory_format=torch.channels_last)
        unet_ema.to(memory_format=torch.channels_last)
    probe = LayoutProbe(TE_CONFIG["hidden_size"]).to(dev) if args.layout_probe else None
    params = list(unet.parameters()) + list(te.parameters())
    groups = param_groups(unet, 0.01) + param_groups(te, 0.01)
    if probe is not None:
        groups += param_groups(probe, 0.01)
    opt = torch.optim.AdamW(groups, lr=args.unet_lr, betas=(0.9, 0.99), **args.fused)
    ema_params = list(unet_ema.parameters()) + list(te_ema.parameters())
    sqrt_ab, sqrt_1m, snr = ddpm_tables(dev)
    w_snr = torch.clamp(snr, max=args.min_snr) / snr
    unet.train()
    te.train()
    unet_fwd = unet
    if args.compile:  # compiled on a throw-away forward + backward, so that compiling costs no training budget
        t = time.time()
        unet_fwd = torch.compile(unet)
        _dummy_loss(te, unet_fwd, tokens, dev, lat_mean.shape[1:], args.unet_batch, args.channels_last).backward()
        for p in params:
            p.grad = None
        log(f"unet compiled in {time.time() - t:.1f}s")
        if args.max_wall:  # the compile time comes out of the UNet budget when everything must end by --max-wall
            args.unet_time = max(1.0, min(args.unet_time, args.max_wall - (time.time() - T0) - args.tail_reserve))
    n = lat_mean.shape[0]
    empty = empty.to(dev).long()
    B = args.unet_batch
    t0 = time.time()
    step, acc, acc_n, t_log = 0, 0.0, 0, time.time()
    probe_sum = torch.zeros(2, device=dev)
    warmup = args.unet_warmup if start_step == 0 and not args.init_from else 100
    t_ckpt = time.time()
    while True:
        el = time.time() - t0
        if el >= args.unet_time or (args.unet_steps and step >= args.unet_steps):
            break
        lr = lr_at(step, el, args.unet_lr, warmup, args.unet_time, args.unet_steps, args.unet_lr_floor)
        for gp in opt.param_groups:
            gp["lr"] = lr
        if weights is None:
            idx = torch.randint(n, (B,), device=dev, generator=g)
        else:
            idx = torch.multinomial(weights, B, replacement=True, generator=g)
        k = torch.randint(tokens.shape[1], (B,), device=dev, generator=g)
        ids = tokens[idx, k].long()
        drop = torch.rand(B, device=dev, generator=g) < args.cfg_drop
        ids = torch.where(drop[:, None], empty[None], ids)
        if probe is not None:  # no layout targets for the empty captions
            targets = layout[idx].masked_fill(drop[:, None, None], -1)
        z = (lat_mean[idx] + lat_std[idx] * torch.randn(lat_mean[idx].shape, device=dev, generator=g)) * sf
        t = torch.randint(0, 1000, (B,), device=dev, generator=g)
        noise = torch.randn(z.shape, device=dev, generator=g)
        if args.offset_noise:  # a per-image, per-channel constant: lets the model change a picture's mean colour
            noise = noise + args.offset_noise * torch.randn(B, z.shape[1], 1, 1, device=dev, generator=g)
        xt = sqrt_ab[t, None, None, None] * z + sqrt_1m[t, None, None, None] * noise
        if args.channels_last:
            xt = xt.contiguous(memory_format=torch.channels_last)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
            ctx = te(input_ids=ids).last_hidden_state
            pred = unet_fwd(xt, t, encoder_hidden_states=ctx).sample
        per = ((pred.float() - noise) ** 2).mean((1, 2, 3))
        loss = (per * w_snr[t]).mean()
        if probe is not None:
            probe_loss, probe_acc = probe(ctx, ids, targets)
            loss = loss + args.layout_probe * probe_loss
            probe_sum = probe_sum + torch.stack([probe_loss.detach(), probe_acc.detach()])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        if probe is not None:
            torch.nn.utils.clip_grad_norm_(probe.parameters(), 1.0)
        opt.step()
        gstep = start_step + step
        decay = min(args.ema, (1 + gstep) / (10 + gstep))
        with torch.no_grad():
            torch._foreach_lerp_(ema_params, params, 1.0 - decay)
        acc += per.mean().detach()
        acc_n += 1
        step += 1
        if step % args.log_every == 0:
            l = float(acc) / acc_n
            rate = acc_n / (time.time() - t_log)
            point = {"phase": "unet", "step": gstep + 1, "mse": l, "lr": lr, "t": time.time() - T0}
            probe_s = ""
            if probe is not None:
                point["probe_loss"], point["probe_acc"] = (float(v) / acc_n for v in probe_sum)
                probe_s = f" layout probe loss {point['probe_loss']:.3f} acc {point['probe_acc']:.3f}"
                probe_sum.zero_()
            log(f"unet step {gstep + 1} mse {l:.4f} (min-snr loss {float(loss.detach()):.4f}){probe_s} lr {lr:.2e} "
                f"{rate:.1f} it/s ({rate * B:.0f} samples/s)")
            curve.append(point)
            acc, acc_n, t_log = 0.0, 0, time.time()
            if checkpoint is not None and args.ckpt_every and time.time() - t_ckpt > args.ckpt_every:
                checkpoint(step, time.time() - t0)
                t_ckpt = time.time()
    unet.eval()
    te.eval()
    if args.channels_last:  # safetensors stores contiguous tensors only
        unet.to(memory_format=torch.contiguous_format)
        unet_ema.to(memory_format=torch.contiguous_format)
    return step, time.time() - t0


def _dummy_loss(te, unet_fwd, tokens, dev, latent_shape, batch: int, channels_last: bool):
    """A forward pass on random latents and the data's first captions, for compiling and timing only."""
    xt = torch.randn(batch, *latent_shape, device=dev)
    if channels_last:
        xt = xt.contiguous(memory_format=torch.channels_last)
    t = torch.randint(0, 1000, (batch,), device=dev)
    with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
        ctx = te(input_ids=tokens[:batch, 0].long()).last_hidden_state
        return unet_fwd(xt, t, encoder_hidden_states=ctx).sample.float().square().mean()


def speed_probe(args, te, unet, tokens, dev, latent_shape, budget: float, steps: int = 30) -> dict:
    """Times a few training steps of throw-away copies of the models in each execution mode (eager or
    torch.compile; NCHW or channels-last) and sets args.compile / args.channels_last to the mode that trains the
    most samples in `budget` seconds, counting its compile time. Numerics are the same bf16 autocast in every
    mode; only the speed differs, so the choice is made on the machine that trains."""
    results = {}
    # (inductor picks convolution layouts itself, so a compiled channels-last mode would only add compile time)
    for name, comp, cl in (("eager", False, False), ("eager channels-last", False, True), ("compile", True, False)):
        unet_copy, te_copy = copy.deepcopy(unet), copy.deepcopy(te)
        try:
            if cl:
                unet_copy.to(memory_format=torch.channels_last)
            fwd = torch.compile(unet_copy) if comp else unet_copy
            params = list(unet_copy.parameters()) + list(te_copy.parameters())
            opt = torch.optim.AdamW(params, lr=1e-6, **args.fused)

            def one_step():
                loss = _dummy_loss(te_copy, fwd, tokens, dev, latent_shape, args.unet_batch, cl)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()

            sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
            t_first = time.time()
            one_step()
            one_step()
            sync()
            first = time.time() - t_first
            t_run = time.time()
            for _ in range(steps):
                one_step()
            sync()
            rate = steps / (time.time() - t_run)
            results[name] = {"it_s": rate, "first_two_steps_s": first, "compile": comp, "channels_last": cl,
                             "steps_in_budget": rate * max(budget - (first if comp else 0.0), 0.0)}
        except Exception as e:  # a mode that fails here is simply not chosen
            results[name] = {"error": f"{type(e).__name__}: {str(e)[:300]}"}
        unet_copy = te_copy = fwd = opt = None
        if dev.type == "cuda":
            torch.cuda.empty_cache()
        log(f"speed probe {name}: {json.dumps(results[name])}")
    ok = {k: v for k, v in results.items() if "error" not in v}
    best = max(ok, key=lambda k: ok[k]["steps_in_budget"])
    args.compile, args.channels_last = ok[best]["compile"], ok[best]["channels_last"]
    log(f"speed probe: training in mode '{best}' ({ok[best]['it_s']:.1f} it/s)")
    return {"modes": results, "chosen": best}


# ---------------------------------------------------------------------------------------------- records

def args_dict(args) -> dict:
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "fused"}


def run_record(a: dict, steps: int, seconds: float, curve: list) -> dict:
    """One UNet run's entry of training.json. a: the run's arguments (as in log.json); curve: [global step, MSE of
    the last 100 steps, lr] points."""
    return {"seed": a["seed"], "scenes": a["scenes"], "unet_time": a["unet_time"], "unet_steps": steps,
            "unet_seconds": seconds, "unet_lr": a["unet_lr"], "unet_batch": a["unet_batch"],
            "final_mse": curve[-1][1] if curve else None, "resumed": bool(a.get("resume")),
            "init_from": a.get("init_from"), "lr_floor": a["unet_lr_floor"],
            "offset_noise": a.get("offset_noise", 0.0), "layout_probe": a.get("layout_probe", 0.0),
            "compile": a.get("compile", False), "channels_last": a.get("channels_last", False), "curve": curve,
            "oversample": {"pair": a["oversample_pair"], "single_bg": a["oversample_single_bg"],
                           "multi": a["oversample_multi"]}}


def eval_record(ev: dict, guidance: dict | None) -> dict:
    """The evaluation summary kept in a run's entry of training.json."""
    return {"passed": ev["passed"], "total": ev["total"], "extra_seeds": ev.get("extra_seeds"), "guidance": guidance}


# ---------------------------------------------------------------------------------------------- main

def main():
    global LOG_FILE
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--export-dir", type=Path, help="where the diffusers folder goes (default OUT/demo)")
    ap.add_argument("--resume", type=Path, help="folder with ckpt.pt (or its parts) from an earlier run")
    ap.add_argument("--init-from", type=Path,
                    help="exported diffusers folder (e.g. models/demo) to continue from; skips the VAE phase")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--scenes", type=int, default=200_000)
    ap.add_argument("--captions", type=int, default=4, help="captions per scene")
    ap.add_argument("--workers", type=int, default=os.cpu_count())
    ap.add_argument("--vae-time", type=float, default=75)
    ap.add_argument("--vae-steps", type=int, default=0, help="0: until the time budget is spent")
    ap.add_argument("--vae-batch", type=int, default=64)
    ap.add_argument("--vae-lr", type=float, default=1e-3)
    ap.add_argument("--vae-kl", type=float, default=1e-4)
    ap.add_argument("--unet-time", type=float, default=270)
    ap.add_argument("--unet-steps", type=int, default=0, help="0: until the time budget is spent")
    ap.add_argument("--unet-batch", type=int, default=512)
    ap.add_argument("--unet-lr", type=float, default=5e-4)
    ap.add_argument("--unet-warmup", type=int, default=250, help="warmup steps of a fresh run (resumed: 100)")
    ap.add_argument("--unet-lr-floor", type=float, default=None,
                    help="final lr as a fraction of --unet-lr (default 0.1; 0.03 with --init-from)")
    ap.add_argument("--oversample-pair", type=float, default=None,
                    help="sampling weight of two-shape relation scenes (default 2; 2.5 with --init-from)")
    ap.add_argument("--oversample-single-bg", type=float, default=None,
                    help="sampling weight of one shape on a named background (default 1; 1.5 with --init-from)")
    ap.add_argument("--oversample-multi", type=float, default=None,
                    help="sampling weight of two or three equal shapes (default 1; 1.5 with --init-from)")
    ap.add_argument("--max-wall", type=float, default=530,
                    help="seconds since start by which everything must be done: the UNet phase is shortened to "
                         "fit, keeping --tail-reserve for export and evaluation (0: no limit)")
    ap.add_argument("--tail-reserve", type=float, default=35)
    ap.add_argument("--min-snr", type=float, default=5.0)
    ap.add_argument("--cfg-drop", type=float, default=0.1)
    ap.add_argument("--ema", type=float, default=0.999)
    ap.add_argument("--compile", action="store_true", help="torch.compile the UNet (costs compile time)")
    ap.add_argument("--channels-last", action="store_true", help="UNet weights and activations in channels-last")
    ap.add_argument("--speed-probe", action="store_true",
                    help="time a few steps in each mode (eager, eager channels-last, compile) and train in the "
                         "fastest (overrides --compile and --channels-last)")
    ap.add_argument("--layout-probe", type=float, default=0.1,
                    help="weight of the layout-probe loss on the text encoder (LayoutProbe; 0: none)")
    ap.add_argument("--offset-noise", type=float, default=0.05,
                    help="std of a per-image, per-channel constant added to the training noise (0: none)")
    ap.add_argument("--log-every", type=int, default=100)
    ap.add_argument("--eval-extra-seeds", type=int, default=3)
    ap.add_argument("--no-eval", action="store_true")
    ap.add_argument("--eval-guidance-sweep", type=lambda v: [float(x) for x in v.split(",") if x], default=[5.0, 3.0],
                    help="more guidance scales to evaluate (comma-separated; empty: none)")
    ap.add_argument("--ckpt-every", type=float, default=90, help="seconds between UNet-phase checkpoints")
    ap.add_argument("--split-ckpt", type=float, default=15.0, help="split ckpt.pt into parts of this many MiB")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    if args.resume and args.init_from:
        ap.error("--resume and --init-from exclude each other")
    hard = args.init_from is not None
    for k, fresh, init in (("unet_lr_floor", 0.1, 0.03), ("oversample_pair", 2.0, 2.5),
                           ("oversample_single_bg", 1.0, 1.5), ("oversample_multi", 1.0, 1.5)):
        if getattr(args, k) is None:
            setattr(args, k, init if hard else fresh)

    args.out.mkdir(parents=True, exist_ok=True)
    LOG_FILE = args.out / "train.log"
    dev = torch.device(args.device)
    args.fused = {"fused": True} if dev.type == "cuda" else {}
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = True
    import diffusers
    import transformers
    info = {"torch": torch.__version__, "diffusers": diffusers.__version__, "transformers": transformers.__version__,
            "python": sys.version.split()[0], "args": args_dict(args)}
    log("start", json.dumps(info))
    report = {"info": info, "curve": [], "phases": {}}
    curve = report["curve"]

    with tempfile.TemporaryDirectory() as tok_dir:
        export.write_tokenizer_folder(Path(tok_dir))
        tok = export.load_tokenizer(Path(tok_dir))

    # ---- data
    t = time.time()
    images, tokens, empty, used, kinds, layout = build_data(args, tok)
    images = images.to(dev)
    tokens = tokens.to(dev)
    report["phases"]["data"] = {"seconds": time.time() - t, "scenes": args.scenes, "distinct_tokens": len(used)}
    info["device"] = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"  # after the fork()s
    log(f"device {info['device']}")

    # ---- models
    state = {"vae_done": False, "vae_steps": 0, "unet_steps": 0, "unet_seconds": 0.0, "scaling_factor": None,
             "runs": []}
    if args.resume:
        vae, te, unet, te_ema, unet_ema, state = load_checkpoint(args.resume, dev)
        log(f"resumed from {args.resume}: {json.dumps({k: v for k, v in state.items() if k != 'runs'})}")
    elif args.init_from:
        vae, te, unet, state = load_diffusers_folder(args.init_from, dev)
        if not state["runs"]:
            log(f"warning: {args.init_from}/training.json is missing: the model card will lack the earlier runs")
        te_ema, unet_ema = copy.deepcopy(te), copy.deepcopy(unet)
        nz = int((token_embedding(te).abs().sum(1) > 0).sum())
        unseen = int((token_embedding(te)[used.long().to(dev)].abs().sum(1) == 0).sum())
        log(f"initialised from {args.init_from}: scaling_factor {state['scaling_factor']:.5f}, "
            f"{state.get('unet_steps', 0)} earlier UNet steps, {nz} non-zero token rows "
            f"({unseen} of the data's {len(used)} tokens have none)")
    else:
        torch.manual_seed(args.seed)
        vae = make_models()[0].to(dev)
        te = unet = te_ema = unet_ema = None
    if te is None:  # fresh text encoder / UNet
        torch.manual_seed(args.seed + 10)
        _, te, unet = make_models()
        with torch.no_grad():  # tokens never seen in training keep a zero embedding (neutral, compresses)
            w = token_embedding(te)
            keep = torch.zeros(w.shape[0], dtype=torch.bool)
            keep[used.long()] = True
            w[~keep] = 0
        te, unet = te.to(dev), unet.to(dev)
        te_ema, unet_ema = copy.deepcopy(te), copy.deepcopy(unet)
    for m in (te_ema, unet_ema):
        m.requires_grad_(False).eval()
    n_params = lambda m: sum(p.numel() for p in m.parameters())
    log(f"params: vae {n_params(vae) / 1e6:.2f}M, text encoder {n_params(te) / 1e6:.2f}M "
        f"(token rows used {len(used)}), unet {n_params(unet) / 1e6:.2f}M")

    # ---- vae
    if not state["vae_done"]:
        steps, secs = train_vae(args, vae, images, dev, curve)
        state["vae_steps"] += steps
        state["vae_done"] = True
        report["phases"]["vae"] = {"steps": steps, "seconds": secs, "batch": args.vae_batch}
        state["vae"] = {"steps": steps, "seconds": secs, "batch": args.vae_batch, "lr": args.vae_lr,
                        "kl": args.vae_kl, "seed": args.seed, "scenes": args.scenes,
                        "final_loss": next((c["loss"] for c in reversed(curve) if c["phase"] == "vae"), None)}
        log(f"vae: {steps} steps in {secs:.1f}s")
        save_checkpoint(args.out, vae, None, None, None, None, state, args.split_ckpt)
    vae.eval().requires_grad_(False)
    psnr = vae_report(vae, images, dev, args.out)
    report["phases"].setdefault("vae", {})["psnr_last16"] = psnr
    state.setdefault("vae", {})["psnr_last16"] = psnr
    log(f"vae reconstruction PSNR (16 images) {psnr:.2f} dB")

    # ---- encode
    t = time.time()
    lat_mean, lat_std = encode_all(vae, images, dev)
    if state["scaling_factor"] is None:
        state["scaling_factor"] = float(1.0 / lat_mean.std())
    sf = state["scaling_factor"]
    log(f"encode: {time.time() - t:.1f}s, latent mean {float(lat_mean.mean()):.3f} std {float(lat_mean.std()):.3f} "
        f"posterior std {float(lat_std.mean()):.4f}, scaling_factor {sf:.5f}")
    report["phases"]["encode"] = {"seconds": time.time() - t, "scaling_factor": sf,
                                  "posterior_std": float(lat_std.mean())}
    del images

    # ---- unet + text encoder
    def periodic(steps_done, secs_done):  # a resumable checkpoint in case the call is cut short
        st = dict(state, unet_steps=state["unet_steps"] + steps_done, unet_seconds=state["unet_seconds"] + secs_done)
        save_checkpoint(args.out, vae, te, unet, te_ema, unet_ema, st, args.split_ckpt)

    w_kind = torch.tensor([1.0, args.oversample_single_bg, args.oversample_multi, args.oversample_pair])
    weights = None
    if not torch.all(w_kind == 1.0):
        weights = w_kind[kinds].to(dev)
        mix = torch.bincount(kinds, weights=w_kind[kinds], minlength=4) / weights.sum().cpu()
        log("oversampling: " + ", ".join(f"{dataset.KIND_NAMES[i]} x{float(w_kind[i]):g} -> {100 * float(mix[i]):.1f}%"
                                          for i in range(4)))
    if args.speed_probe:
        budget = args.unet_time
        if args.max_wall:
            budget = min(budget, args.max_wall - (time.time() - T0) - args.tail_reserve)
        report["speed_probe"] = speed_probe(args, te, unet, tokens, dev, lat_mean.shape[1:], budget)
    if args.max_wall:
        fit = args.max_wall - (time.time() - T0) - args.tail_reserve
        if fit < args.unet_time:
            log(f"unet time budget {args.unet_time:.0f}s -> {max(fit, 1.0):.0f}s to end by --max-wall {args.max_wall:.0f}s")
            args.unet_time = max(fit, 1.0)
    steps, secs = train_unet(args, te, unet, te_ema, unet_ema, lat_mean, lat_std, sf, tokens, empty, dev, curve,
                             state["unet_steps"], periodic, weights, layout.to(dev))
    state["unet_steps"] += steps
    state["unet_seconds"] += secs
    final_mse = next((c["mse"] for c in reversed(curve) if c["phase"] == "unet"), None)
    state["runs"].append(run_record(args_dict(args), steps, secs, [
        [c["step"], round(c["mse"], 5), float(f"{c['lr']:.3g}")] for c in curve if c["phase"] == "unet"]))
    report["phases"]["unet"] = {"steps": steps, "seconds": secs, "batch": args.unet_batch,
                                "total_steps": state["unet_steps"], "final_mse": final_mse}
    log(f"unet: {steps} steps in {secs:.1f}s (total {state['unet_steps']})")

    # ---- checkpoint + export
    save_checkpoint(args.out, vae, te, unet, te_ema, unet_ema, state, args.split_ckpt)
    exp = args.export_dir or (args.out / "demo")
    if exp.exists():
        shutil.rmtree(exp)
    sizes = export.export_pipeline(exp, vae, te_ema, unet_ema, sf)
    total = sum(sizes.values())
    log(f"export: {exp} {total / 2**20:.2f} MiB "
        f"({', '.join(f'{k} {v / 2**20:.2f}' for k, v in sizes.items() if v > 2**19)})")
    report["export"] = {"files": sizes, "total_bytes": total}
    report["state"] = state

    # ---- evaluation
    if not args.no_eval:
        import semantic_eval
        t = time.time()
        pipe = semantic_eval.load_pipeline(exp, dev)
        ev = semantic_eval.evaluate_pipeline(pipe, args.out, args.eval_extra_seeds)
        for r in ev["results"]:
            log(("PASS " if r["pass"] else "FAIL ") + r["prompt"] + ("" if r["pass"] else "  " + "; ".join(
                r["failures"])))
        log(f"semantic accuracy {ev['passed']}/{ev['total']} = {ev['accuracy']:.3f}"
            + (f"; extra seeds {ev['extra_seeds']['passed']}/{ev['extra_seeds']['total']}"
               if "extra_seeds" in ev else "") + f" ({time.time() - t:.1f}s)")
        report["eval"] = ev
        if args.eval_guidance_sweep:  # guidance sensitivity, fixed prompts only
            report["eval_guidance"] = semantic_eval.guidance_sweep(pipe, args.eval_guidance_sweep)
            log(f"semantic accuracy at other guidance scales: {report['eval_guidance']}")
        state["runs"][-1]["eval"] = eval_record(ev, report.get("eval_guidance"))
    (exp / "training.json").write_text(json.dumps({k: v for k, v in state.items() if k != "vae_done"}, indent=1) + "\n")
    export.write_model_card(exp, report)
    export.pack(exp, args.out / "sdrt-demo.tar.gz")
    tar_size = (args.out / "sdrt-demo.tar.gz").stat().st_size
    report["export"]["tar_gz_bytes"] = tar_size
    log(f"packed {args.out / 'sdrt-demo.tar.gz'}: {tar_size / 2**20:.2f} MiB")
    report["total_seconds"] = time.time() - T0
    (args.out / "log.json").write_text(json.dumps(report, indent=1))
    log(f"done in {time.time() - T0:.1f}s")


if __name__ == "__main__":
    main()
