#!/usr/bin/env python3
"""Makes a model folder out of a run that stopped before its end (the machine it ran on went away), from what
the run left behind: its last checkpoint (ckpt.pt or ckpt.pt.000, ...) and its train.log.

  python3 training/record_run.py --ckpt DIR --log train.log --out models/demo [--earlier-log log.json ...]

It exports the checkpoint's EMA weights (export.py), rebuilds the run's entry of training.json from the log (its
arguments, the loss curve up to the checkpoint's step, steps and seconds, the planned time budget) and the
checkpoint's state (the earlier runs' history), evaluates the folder with semantic_eval.py through diffusers
(the fixed prompts, --extra-seeds more seeds each, guidance 5 and 3), and writes the folder's training.json and
model card as train.py would have. --earlier-log adds the evaluation of earlier runs from their log.json (a
checkpoint is written before its run's evaluation, so its history lacks the last evaluation).
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import export  # noqa: E402
import model_def  # noqa: E402
import semantic_eval  # noqa: E402
import train  # noqa: E402

STEP_LINE = re.compile(r"unet step (\d+) mse ([\d.]+) .* lr ([\d.e+-]+) ")


def parse_log(path: Path) -> dict:
    """The run's settings and loss curve from its train.log."""
    text = Path(path).read_text()
    start = re.search(r"\] start (\{.*\})\n", text)
    if not start:
        raise SystemExit(f"{path}: no 'start' line with the run's settings")
    info = json.loads(start.group(1))
    dev = re.search(r"\] device (.+)\n", text)
    info["device"] = dev.group(1) if dev else "?"
    budget = re.search(r"unet time budget \S+ -> (\d+)s", text)
    curve = [[int(m.group(1)), float(m.group(2)), float(m.group(3))] for m in STEP_LINE.finditer(text)]
    return {"info": info, "planned_unet_time": float(budget.group(1)) if budget else info["args"]["unet_time"],
            "curve": curve}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ckpt", type=Path, required=True)
    ap.add_argument("--log", type=Path, required=True, help="the stopped run's train.log")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--earlier-log", type=Path, action="append", default=[],
                    help="log.json of an earlier run, in order, for its evaluation")
    ap.add_argument("--extra-seeds", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args()

    vae, _, _, te_ema, unet_ema, state = model_def.load_checkpoint(a.ckpt, "cpu")
    run_log = parse_log(a.log)
    args = run_log["info"]["args"]
    for i, log_json in enumerate(a.earlier_log):
        earlier = json.loads(log_json.read_text())
        if earlier.get("eval") and i < len(state["runs"]):
            state["runs"][i]["eval"] = train.eval_record(earlier["eval"], earlier.get("eval_guidance"))

    earlier_steps = sum(r["unet_steps"] for r in state["runs"])
    earlier_seconds = sum(r["unet_seconds"] for r in state["runs"])
    steps, seconds = state["unet_steps"] - earlier_steps, state["unet_seconds"] - earlier_seconds
    curve = [c for c in run_log["curve"] if c[0] <= state["unet_steps"]]
    if steps <= 0 or not curve:
        raise SystemExit(f"{a.ckpt}: the checkpoint holds no steps of the run in {a.log}")

    if a.out.exists():
        shutil.rmtree(a.out)
    sizes = export.export_pipeline(a.out, vae, te_ema, unet_ema, state["scaling_factor"])
    pipe = semantic_eval.load_pipeline(a.out, a.device)
    ev = semantic_eval.evaluate_pipeline(pipe, None, a.extra_seeds)
    sweep = semantic_eval.guidance_sweep(pipe, (5.0, 3.0))
    print(f"semantic accuracy {ev['passed']}/{ev['total']}, extra seeds "
          f"{ev['extra_seeds']['passed']}/{ev['extra_seeds']['total']}, guidance sweep {sweep}")

    run = train.run_record(dict(args, unet_time=run_log["planned_unet_time"]), steps, seconds, curve)
    run["stopped"] = (f"stopped at its last checkpoint, {seconds:.0f} s into its planned "
                      f"{run_log['planned_unet_time']:.0f} s, at lr {curve[-1][2]:.2g}")
    run["eval"] = train.eval_record(ev, sweep)
    state["runs"].append(run)
    state.pop("vae_done", None)
    (a.out / "training.json").write_text(json.dumps(state, indent=1) + "\n")
    info = {k: run_log["info"].get(k) for k in ("torch", "diffusers", "transformers", "python", "device")}
    info["args"] = args
    report = {"info": info, "eval": ev, "eval_guidance": sweep, "state": state,
              "export": {"files": sizes, "total_bytes": sum(sizes.values())}}
    export.write_model_card(a.out, report)
    print(f"{a.out}: {sum(sizes.values()) / 2**20:.2f} MiB, training.json and README.md written")


if __name__ == "__main__":
    main()
