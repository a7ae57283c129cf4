#!/usr/bin/env python3
"""PyTorch / diffusers yardsticks for sdrt on the same diffusers SD 1.5 folder that sdrt's bench_cuda reads.

Measures (fp16 on cuda; timings with CUDA events after warm-up, median of --iters runs):
  load        StableDiffusionPipeline.from_pretrained + .to(device), twice: `first_s` and `warm_s` (page cache warm)
  unet        one UNet call, batch 2 (classifier-free guidance), latents 4x(size/8)^2, 77 x cross_attention_dim
              context, random non-zero inputs from a fixed seed, in modes
                eager          plain diffusers module
                eager_graph    the same captured once in a torch.cuda.CUDAGraph (static inputs), replayed
                compile        torch.compile(unet) default mode (inductor), no CUDA graph
                compile_graph  that compiled module captured in a torch.cuda.CUDAGraph (static inputs), replayed
  vae_decode  1x4x64x64 latents -> 1x3x512x512 image
  text_encoder  CLIP text encoder, batch 2 (prompt + empty negative prompt), 77 tokens
  e2e         full StableDiffusionPipeline, prompt -> PIL image, 50 steps, guidance 7.5, the folder's scheduler
Each mode records peak memory: torch.cuda.max_memory_allocated (and _reserved), reset before its warm-up; it
includes all pipeline weights resident on the GPU (UNet + VAE + text encoder).

    PYTHONPATH=.ref python3 bench/torch_bench.py --model /tmp/sd15-random --out torch.json [--no-compile]
    PYTHONPATH=.ref python3 bench/torch_bench.py --model tests/fixtures/tiny-sd1 --out /tmp/t.json --device cpu

On --device cpu (a code-path check only) it runs fp32, times with perf_counter and skips graphs and compile.
The JSON is rewritten after every section, so a crash or a time limit keeps what was measured.
"""
import argparse
import gc
import json
import statistics
import time
import traceback
from pathlib import Path

import torch

PROMPT = "a photograph of an astronaut riding a horse"


def log(*a):
    print(*a, flush=True)


class Bench:
    def __init__(self, args):
        self.args = args
        self.dev = torch.device(args.device)
        self.cuda = self.dev.type == "cuda"
        self.dtype = torch.float16 if self.cuda and args.dtype == "fp16" else torch.float32
        self.results = {}

    def save(self):
        Path(self.args.out).write_text(json.dumps(self.results, indent=1))

    def sync(self):
        if self.cuda:
            torch.cuda.synchronize()

    def timeit(self, fn, warmup=None, iters=None):
        """Median / min / max of `iters` calls of fn in ms, after `warmup` calls."""
        warmup = self.args.warmup if warmup is None else warmup
        iters = self.args.iters if iters is None else iters
        for _ in range(warmup):
            fn()
        self.sync()
        ts = []
        for _ in range(iters):
            if self.cuda:
                s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                s.record()
                fn()
                e.record()
                e.synchronize()
                ts.append(s.elapsed_time(e))
            else:
                t0 = time.perf_counter()
                fn()
                ts.append((time.perf_counter() - t0) * 1e3)
        return {"ms_median": statistics.median(ts), "ms_min": min(ts), "ms_max": max(ts), "n": iters}

    def reset_peak(self):
        gc.collect()
        if self.cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()

    def peak(self):
        if not self.cuda:
            return {}
        return {"peak_alloc_gib": torch.cuda.max_memory_allocated() / 2**30,
                "peak_reserved_gib": torch.cuda.max_memory_reserved() / 2**30}

    def section(self, name, fn):
        """Runs one measurement; a failure is recorded and the run goes on."""
        t0 = time.time()
        log(f"[{name}] start")
        try:
            self.results[name] = fn()
        except Exception as e:  # keep going: one failure must not eat the lease
            traceback.print_exc()
            self.results[name] = {"error": repr(e)}
        log(f"[{name}] {json.dumps(self.results[name])} ({time.time() - t0:.1f} s wall)")
        self.save()


def load_pipeline(model: Path, dtype, dev):
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline
    # Folders written with fp16 variants (model.fp16.safetensors) need variant="fp16" to be found.
    variant = "fp16" if any(model.glob("*/*.fp16.safetensors")) else None
    if "XL" in json.loads((model / "model_index.json").read_text())["_class_name"]:
        pipe = StableDiffusionXLPipeline.from_pretrained(str(model), dtype=dtype, variant=variant)
    else:
        pipe = StableDiffusionPipeline.from_pretrained(str(model), dtype=dtype, variant=variant,
                                                       safety_checker=None, requires_safety_checker=False)
    pipe = pipe.to(dev)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def capture_graph(fn):
    """Warms fn up on a side stream, captures one call in a CUDA graph; returns (graph, static output)."""
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        out = fn()
    return g, out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path, required=True, help="diffusers SD 1.x folder")
    ap.add_argument("--out", required=True, help="JSON file to write")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dtype", default="fp16", choices=["fp16", "fp32"], help="on cuda (cpu always runs fp32)")
    ap.add_argument("--no-compile", action="store_true", help="skip torch.compile (saves ~70 s on an H100)")
    ap.add_argument("--channels-last", action="store_true", help="compile the UNet in channels_last layout")
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--size", type=int, default=512, help="image size; latents are size/8")
    ap.add_argument("--steps", type=int, default=50, help="e2e denoising steps")
    ap.add_argument("--e2e-runs", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    b = Bench(args)
    dev, dtype = b.dev, b.dtype

    import diffusers
    import transformers
    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()
    r = b.results
    r["env"] = {"torch": torch.__version__, "cuda": torch.version.cuda, "diffusers": diffusers.__version__,
                "transformers": transformers.__version__,
                "device": torch.cuda.get_device_name(dev) if b.cuda else "cpu",
                "dtype": str(dtype).replace("torch.", ""), "model": str(args.model)}
    log(r["env"])
    if b.cuda:
        torch.zeros(1, device=dev)  # CUDA context outside the load timing

    def load():
        times = []
        for _ in range(2):  # the second load reads the folder from a warm page cache
            b.pipe = None
            gc.collect()
            b.sync()
            t0 = time.perf_counter()
            b.pipe = load_pipeline(args.model, dtype, dev)
            b.sync()
            times.append(time.perf_counter() - t0)
        return {"first_s": times[0], "warm_s": times[1], "scheduler": type(b.pipe.scheduler).__name__,
                "what": "StableDiffusionPipeline.from_pretrained(dtype) + .to(device), CUDA context excluded"}
    b.section("load", load)
    if getattr(b, "pipe", None) is None:
        return 1
    pipe = b.pipe
    unet, vae, te = pipe.unet.eval(), pipe.vae.eval(), pipe.text_encoder.eval()

    g = torch.Generator("cpu").manual_seed(args.seed)
    lat = args.size // 8
    x = torch.randn(2, unet.config.in_channels, lat, lat, generator=g).to(dev, dtype)
    ctx = torch.randn(2, 77, unet.config.cross_attention_dim, generator=g).to(dev, dtype)
    t = torch.tensor([981, 981], device=dev)
    r["unet_inputs"] = {"sample": list(x.shape), "context": list(ctx.shape), "timestep": 981, "seed": args.seed}
    r["unet"] = {}
    torch.set_grad_enabled(False)

    def unet_mode(name, fn):
        def run():
            b.reset_peak()
            res = fn()
            res["it_s"] = 1000 / res["ms_median"]
            res.update(b.peak())
            return res
        b.section("unet." + name, run)
        r["unet"][name] = r.pop("unet." + name)
        b.save()

    # SDXL's UNet also takes the pooled text embeddings and the six size / crop time ids.
    added = {}
    if unet.config.addition_embed_type == "text_time":
        pooled = unet.config.projection_class_embeddings_input_dim - 6 * unet.config.addition_time_embed_dim
        added = {"added_cond_kwargs": {
            "text_embeds": torch.randn(2, pooled, generator=g).to(dev, dtype),
            "time_ids": torch.tensor([[args.size, args.size, 0, 0, args.size, args.size]] * 2).to(dev, dtype)}}
    call = lambda m: (lambda: m(x, t, encoder_hidden_states=ctx, **added).sample)
    unet_mode("eager", lambda: b.timeit(call(unet)))
    if b.cuda:
        def graphed():
            graph, _ = capture_graph(call(unet))
            return b.timeit(graph.replay)
        unet_mode("eager_graph", graphed)

    if b.cuda and not args.no_compile:
        state = {}

        def compiled():
            m = unet.to(memory_format=torch.channels_last) if args.channels_last else unet
            xin = x.to(memory_format=torch.channels_last) if args.channels_last else x
            cu = torch.compile(m, mode="default", fullgraph=False)
            state["fn"] = lambda: cu(xin, t, encoder_hidden_states=ctx, **added).sample
            t0 = time.perf_counter()
            state["fn"]()
            b.sync()
            compile_s = time.perf_counter() - t0
            b.reset_peak()
            res = b.timeit(state["fn"])
            res.update(compile_s=compile_s, mode="default (inductor)", channels_last=args.channels_last)
            return res
        unet_mode("compile", compiled)

        def compiled_graph():
            try:
                graph, _ = capture_graph(state["fn"])
                res = b.timeit(graph.replay)
                res["mode"] = "default (inductor) captured in torch.cuda.CUDAGraph"
            except Exception:  # fall back to inductor's own CUDA graphs
                traceback.print_exc()
                log("capturing the compiled UNet failed; compiling again with mode='reduce-overhead'")
                torch._dynamo.reset()
                b.reset_peak()
                cu = torch.compile(unet, mode="reduce-overhead")
                xin = x.to(memory_format=torch.channels_last) if args.channels_last else x

                def fn():
                    torch.compiler.cudagraph_mark_step_begin()
                    return cu(xin, t, encoder_hidden_states=ctx, **added).sample
                t0 = time.perf_counter()
                fn()
                b.sync()
                compile_s = time.perf_counter() - t0
                res = b.timeit(fn)
                res.update(mode="reduce-overhead (inductor + cudagraph trees)", compile_s=compile_s)
            res["channels_last"] = args.channels_last
            return res
        if "fn" in state:
            unet_mode("compile_graph", compiled_graph)
        if args.channels_last:
            unet.to(memory_format=torch.contiguous_format)
        state.clear()
        gc.collect()

    def vae_decode():
        z = torch.randn(1, vae.config.latent_channels, lat, lat, generator=g).to(dev, dtype)
        b.reset_peak()
        res = b.timeit(lambda: vae.decode(z / vae.config.scaling_factor).sample, iters=max(10, args.iters // 2))
        res.update(b.peak())
        res["shape"] = [1, vae.config.latent_channels, lat, lat]
        return res
    b.section("vae_decode", vae_decode)

    def text_encoder():
        ids = pipe.tokenizer([PROMPT, ""], padding="max_length", max_length=77, truncation=True,
                             return_tensors="pt").input_ids.to(dev)
        b.reset_peak()
        res = b.timeit(lambda: te(ids)[0])
        res.update(b.peak())
        res["batch"] = 2
        return res
    b.section("text_encoder", text_encoder)

    def e2e():
        kw = dict(prompt=PROMPT, height=args.size, width=args.size, guidance_scale=7.5, output_type="pil")
        pipe(num_inference_steps=5, generator=torch.Generator("cpu").manual_seed(args.seed), **kw)  # warm-up
        b.sync()
        b.reset_peak()
        runs = []
        for _ in range(args.e2e_runs):
            b.sync()
            t0 = time.perf_counter()
            pipe(num_inference_steps=args.steps, generator=torch.Generator("cpu").manual_seed(args.seed), **kw)
            b.sync()
            runs.append(time.perf_counter() - t0)
        res = {"s_median": statistics.median(runs), "runs": runs, "steps": args.steps, "output_type": "pil",
               "guidance_scale": 7.5, "scheduler": type(pipe.scheduler).__name__, "mode": "eager"}
        res.update(b.peak())
        if b.cuda:  # what cudaMemGetInfo sees (CUDA context and torch's cached blocks included)
            free, total = torch.cuda.mem_get_info(dev)
            res["device_in_use_gib"] = (total - free) / 2**30
        return res
    b.section("e2e", e2e)
    log(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
