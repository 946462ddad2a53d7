"""Rendering benchmark: the per-frame reference-style path vs the fast clip path, per preset.

    python benchmarks/render.py [--presets edtalk-256,tiny] [--frames 16] [--batch N] [--repeats 2]
        [--threads N] [--precision bfloat16]

For each preset a model with plausible random weights (:func:`fixtalk.model.plausible_random_init_`,
as the parity fixture makes them) renders the same clip of T frames twice in one run:

* reference-style (:meth:`ClipRenderer.render_reference_float`): batch 1, the source re-encoded
  and the basis Q = QR([W_lp | W_e]) recomputed every frame, EEM's discarded conv1/norm1 branch
  computed, as the EDTalk demos do;
* fast (:meth:`ClipRenderer.render_float`): source encoded once, Q cached, frames in batches
  (default: the device's, :func:`fixtalk.inference.default_batch_size`, 1 on CPU), EEM run once
  on the source maps for the constant expression, dead work skipped, the decoder's styled layers
  run with the style folded into their weights (:mod:`fixtalk.nets.fused`).

The clip drives lip (alpha_lip) and pose (alpha_pose) per frame and keeps the source's expression
(the pipeline's audio + pose-video + emotion-label case). Printed per preset: parameters of the
rendering network (generator + EMI/EDI; Audio2Lip is not in the per-frame path), GMAC per frame
(torch.utils.flop_counter, MAC = FLOP / 2; convolutions and matmuls only), frames/s of both paths
(best of ``--repeats`` wall-clock rounds, reference and fast alternating, after one warm-up
frame each), the arithmetic rate of each path (GMAC/s = GMAC per frame x frames/s) and the max
abs difference of the raw float frames. The fast path's GMAC per frame is its steady per-frame
cost (FLOPs of two batches minus one); what it pays once per clip (EEM on the source maps) is
printed beside it and counted in its GMAC/s (all the clip's MACs over its time).

``--precision bfloat16`` (or float16 on CUDA) also renders the fast path under that autocast and
prints its frames/s and its error against the float32 fast path (max abs difference of the raw
frames, PSNR of the uint8 frames). The last line is one JSON object {preset: {params, batch,
gmac_per_frame, gmac_per_clip, gmac_per_frame_reference, fps_reference, fps_fast,
gmacs_reference, gmacs_fast, speedup, max_abs_diff[, precision]}}.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fixtalk.config import PixelWarp  # noqa: E402
from fixtalk.inference import ClipRenderer, to_uint8  # noqa: E402
from fixtalk.model import FixTalk, plausible_random_init_  # noqa: E402
from fixtalk.presets import PRESETS, get_preset  # noqa: E402

DEFAULT_PRESETS = ("edtalk-256", "edtalk-lip-pose-256", "fixtalk-512", "tiny")
TARGET = ("edtalk-256", 2.5, 1e-4)  # preset, min speedup, max abs diff (issue 21, deliverable 6)


def smooth_image(size: int, seed: int) -> np.ndarray:
    """A synthetic smooth colour field (S, S, 3) uint8, like the parity fixture's inputs."""
    g = torch.Generator().manual_seed(seed)
    field = torch.rand(1, 3, 8, 8, generator=g) * 2 - 1
    img = torch.nn.functional.interpolate(field, size=(size, size), mode="bicubic",
                                          align_corners=False)
    img = (img * 1.2 + 0.05 * torch.randn(img.shape, generator=g)).clamp(-1, 1)
    return ((img[0].permute(1, 2, 0) + 1) * 127.5).round().to(torch.uint8).numpy()


def machine() -> str:
    model = platform.processor() or "unknown CPU"
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        model = next((ln.split(":", 1)[1].strip() for ln in out.splitlines()
                      if ln.startswith("Model name")), model)
    except (OSError, subprocess.CalledProcessError):
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"machine: {model}, {os.cpu_count()} logical CPUs, torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads, load average {load:.2f}")


def gmac(fn) -> float:
    """GMAC (FLOP / 2 / 1e9) of ``fn()``."""
    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return counter.get_total_flops() / 2e9


def drive(renderer: ClipRenderer, state, frames: int, seed: int):
    """alpha_lip / alpha_pose (T, n): the source's own weights plus smooth per-frame motion."""
    g = torch.Generator().manual_seed(seed)
    cfg = renderer.model.cfg
    t = torch.linspace(0, 2 * np.pi, frames).unsqueeze(1)
    lip = state.alpha_lip.cpu() + 0.3 * torch.sin(t + torch.rand(1, cfg.lip_dim, generator=g) * 6)
    pose = state.alpha_pose.cpu() + 0.1 * torch.sin(t + torch.rand(1, cfg.pose_dim, generator=g) * 6)
    return lip, pose


def psnr_uint8(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR (dB, peak 255) between the uint8 frames of two raw float renders."""
    mse = float(((torch.from_numpy(to_uint8(a)).float() - torch.from_numpy(to_uint8(b)).float()) ** 2).mean())
    return float("inf") if mse == 0 else 10 * float(np.log10(255.0 ** 2 / mse))


def best_times(paths: dict, repeats: int) -> tuple[dict, dict]:
    """Best wall-clock seconds of each ``paths[name]()`` over ``repeats`` rounds, the paths run in
    turn within a round (so a change of machine load hits all of them), and their last outputs."""
    best, outs = {k: float("inf") for k in paths}, {}
    for _ in range(repeats):
        for name, fn in paths.items():
            t0 = time.perf_counter()
            outs[name] = fn()
            best[name] = min(best[name], time.perf_counter() - t0)
    return best, outs


def bench_preset(name: str, frames: int, batch: int | None, repeats: int, device: str, seed: int,
                 policies: bool = False, precision: str | None = None) -> dict:
    torch.manual_seed(seed)
    model = plausible_random_init_(FixTalk(get_preset(name)), seed=seed)
    params = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("audio2lip."))
    model.requires_grad_(False)  # inference only; FlopCounterMode's module tracker needs it
    # policies: relative flow + source-pixel warp, as the pipeline renders by default
    opts = {"device": device, "batch_size": batch, "relative_flow": policies,
            "pixel_warp": PixelWarp() if policies else None}
    r = ClipRenderer(model, **opts)
    state = r.source(smooth_image(r.size, seed))
    lip, pose = drive(r, state, frames, seed)
    paths = {"reference": lambda: torch.cat(list(r.render_reference_float(state, lip, pose))),
             "fast": lambda: torch.cat(list(r.render_float(state, lip, pose)))}
    if precision:
        rp = ClipRenderer(model, precision=precision, **opts)
        state_p = rp.source(smooth_image(r.size, seed))
        paths[precision] = lambda: torch.cat(list(rp.render_float(state_p, lip, pose)))
    # warm-up + FLOP count: one reference frame; the fast path over one and two batches, whose
    # difference is the per-frame cost (the rest, EEM on the source maps, is paid once per clip)
    nb = min(r.batch_size, frames // 2) or 1
    gmac_ref = gmac(lambda: list(r.render_reference_float(state, lip[:1], pose[:1])))
    one, two = (gmac(lambda n=n: list(r.render_float(state, lip[:n], pose[:n]))) for n in (nb, 2 * nb))
    gmac_fast = (two - one) / nb if frames >= 2 else one
    gmac_once = max(one - gmac_fast * nb, 0.0)
    if precision:
        list(rp.render_float(state_p, lip[:nb], pose[:nb]))
    t, out = best_times(paths, repeats)
    fps = {k: frames / v for k, v in t.items()}
    res = {"params": params, "batch": r.batch_size, "gmac_per_frame": round(gmac_fast, 3),
           "gmac_per_clip": round(gmac_once, 3), "gmac_per_frame_reference": round(gmac_ref, 3),
           "fps_reference": round(fps["reference"], 4), "fps_fast": round(fps["fast"], 4),
           "gmacs_reference": round(gmac_ref * fps["reference"], 2),
           "gmacs_fast": round((gmac_once / frames + gmac_fast) * fps["fast"], 2),
           "speedup": round(fps["fast"] / fps["reference"], 3),
           "max_abs_diff": float((out["fast"] - out["reference"]).abs().max()), "_frames": frames}
    if precision:
        res["precision"] = {"name": precision, "fps": round(fps[precision], 4),
                            "speed_vs_float32": round(fps[precision] / fps["fast"], 3),
                            "max_abs_diff": float((out[precision] - out["fast"]).abs().max()),
                            "psnr_db": round(psnr_uint8(out[precision], out["fast"]), 2)}
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--presets", default=",".join(DEFAULT_PRESETS),
                    help=f"comma-separated preset names (default: all of {sorted(PRESETS)})")
    ap.add_argument("--frames", type=int, default=16, help="frames per preset (fixtalk-512: half)")
    ap.add_argument("--batch", type=int, default=None,
                    help="fast-path batch size (default: the device's, 1 on CPU, 8 on CUDA)")
    ap.add_argument("--repeats", type=int, default=2, help="timed rounds per path (best is kept)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--policies", action="store_true",
                    help="render as the pipeline does by default (relative flow + source-pixel warp)")
    ap.add_argument("--precision", choices=("bfloat16", "float16"), default=None,
                    help="also time the fast path under this autocast and give its error vs float32")
    args = ap.parse_args(argv)
    names = [n.strip() for n in args.presets.split(",") if n.strip()]
    unknown = [n for n in names if n not in PRESETS]
    if unknown or args.frames < 1 or args.repeats < 1:
        ap.error(f"unknown presets {unknown} (choose from {sorted(PRESETS)})" if unknown
                 else "--frames and --repeats must be >= 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    print(machine(), flush=True)
    print(f"command: {' '.join([Path(sys.executable).name] + sys.argv)}", flush=True)
    results: dict[str, dict] = {}
    for name in names:
        frames = max(2, args.frames // 2) if name == "fixtalk-512" else args.frames
        res = bench_preset(name, frames, args.batch, args.repeats, args.device, args.seed,
                           args.policies, args.precision)
        print(f"{name:<20s} params {res['params'] / 1e6:7.2f}M  GMAC/frame fast "
              f"{res['gmac_per_frame']:7.2f} (+{res['gmac_per_clip']:.2f} per clip; reference "
              f"{res['gmac_per_frame_reference']:7.2f})  "
              f"fps reference {res['fps_reference']:8.3f}  fast {res['fps_fast']:8.3f} (batch "
              f"{res['batch']})  GMAC/s reference {res['gmacs_reference']:6.1f}  fast "
              f"{res['gmacs_fast']:6.1f}  speedup {res['speedup']:5.2f}x  max|diff| "
              f"{res['max_abs_diff']:.2e}  ({res.pop('_frames')} frames)", flush=True)
        if "precision" in res:
            p = res["precision"]
            print(f"{'':<20s} {p['name']}: fps {p['fps']:8.3f} ({p['speed_vs_float32']:.2f}x float32)  "
                  f"max|diff| vs float32 {p['max_abs_diff']:.2e}  PSNR {p['psnr_db']:.1f} dB", flush=True)
        results[name] = res
    print(f"load average at the end {os.getloadavg()[0]:.2f}", flush=True)
    name, min_speedup, max_diff = TARGET
    if name in results:
        ok = results[name]["speedup"] >= min_speedup and results[name]["max_abs_diff"] <= max_diff
        print(f"target {name}: speedup >= {min_speedup}x at max|diff| <= {max_diff:g}: "
              f"{'met' if ok else 'NOT met'}", flush=True)
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
