"""Rendering benchmark: the per-frame reference-style path vs the fast clip path, per preset.

    python benchmarks/render.py [--presets edtalk-256,tiny] [--frames 8] [--batch 8] [--repeats 1]

For each preset a model with plausible random weights (:func:`fixtalk.model.plausible_random_init_`,
as the parity fixture makes them) renders the same clip of T frames twice in one run:

* reference-style (:meth:`ClipRenderer.render_reference_float`): batch 1, the source re-encoded
  and the basis Q = QR([W_lp | W_e]) recomputed every frame, EEM's discarded conv1/norm1 branch
  computed, as the EDTalk demos do;
* fast (:meth:`ClipRenderer.render_float`): source encoded once, Q cached, frames in batches,
  EEM run once on the source maps for the constant expression, dead work skipped.

The clip drives lip (alpha_lip) and pose (alpha_pose) per frame and keeps the source's expression
(the pipeline's audio + pose-video + emotion-label case). Printed per preset: parameters of the
rendering network (generator + EMI/EDI; Audio2Lip is not in the per-frame path), GMAC per frame
(torch.utils.flop_counter, MAC = FLOP / 2; convolutions and matmuls only), frames/s of both paths
(best of ``--repeats`` wall-clock rounds, reference and fast alternating, after one warm-up
frame each) and the max abs difference of the raw float frames. The last line is one JSON object
{preset: {params, gmac_per_frame, fps_reference, fps_fast, speedup, max_abs_diff}};
``gmac_per_frame`` is the fast path's (the reference-style figure is printed on the text line).
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
from fixtalk.inference import ClipRenderer  # noqa: E402
from fixtalk.model import FixTalk, plausible_random_init_  # noqa: E402
from fixtalk.presets import PRESETS, get_preset  # noqa: E402

DEFAULT_PRESETS = ("edtalk-256", "edtalk-lip-pose-256", "fixtalk-512", "tiny")
TARGET = ("edtalk-256", 1.5, 1e-4)  # preset, min speedup, max abs diff (issue 2, deliverable 6)


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


def bench_preset(name: str, frames: int, batch: int, repeats: int, device: str, seed: int,
                 policies: bool = False) -> dict:
    torch.manual_seed(seed)
    model = plausible_random_init_(FixTalk(get_preset(name)), seed=seed)
    params = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("audio2lip."))
    model.requires_grad_(False)  # inference only; FlopCounterMode's module tracker needs it
    # policies: relative flow + source-pixel warp, as the pipeline renders by default
    r = ClipRenderer(model, device=device, batch_size=batch, relative_flow=policies,
                     pixel_warp=PixelWarp() if policies else None)
    state = r.source(smooth_image(r.size, seed))
    lip, pose = drive(r, state, frames, seed)
    ref_path = lambda a, b: torch.cat(list(r.render_reference_float(state, a, b)))  # noqa: E731
    fast_path = lambda a, b: torch.cat(list(r.render_float(state, a, b)))  # noqa: E731
    # warm-up + FLOP count: one reference frame, one fast batch
    nb = min(batch, frames)
    gmac_ref = gmac(lambda: ref_path(lip[:1], pose[:1]))
    gmac_fast = gmac(lambda: fast_path(lip[:nb], pose[:nb])) / nb
    t_ref = t_fast = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        out_ref = ref_path(lip, pose)
        t1 = time.perf_counter()
        out_fast = fast_path(lip, pose)
        t2 = time.perf_counter()
        t_ref, t_fast = min(t_ref, t1 - t0), min(t_fast, t2 - t1)
    diff = float((out_fast - out_ref).abs().max())
    fps_ref, fps_fast = frames / t_ref, frames / t_fast
    return {"params": params, "gmac_per_frame": round(gmac_fast, 3),
            "fps_reference": round(fps_ref, 4), "fps_fast": round(fps_fast, 4),
            "speedup": round(fps_fast / fps_ref, 3), "max_abs_diff": diff,
            "_gmac_reference": round(gmac_ref, 3), "_frames": frames}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--presets", default=",".join(DEFAULT_PRESETS),
                    help=f"comma-separated preset names (default: all of {sorted(PRESETS)})")
    ap.add_argument("--frames", type=int, default=8, help="frames per preset (fixtalk-512: half)")
    ap.add_argument("--batch", type=int, default=8, help="fast-path batch size")
    ap.add_argument("--repeats", type=int, default=1, help="timed rounds per path (best is kept)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--policies", action="store_true",
                    help="render as the pipeline does by default (relative flow + source-pixel warp)")
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
        res = bench_preset(name, frames, args.batch, args.repeats, args.device, args.seed, args.policies)
        print(f"{name:<20s} params {res['params'] / 1e6:7.2f}M  GMAC/frame fast "
              f"{res['gmac_per_frame']:7.2f} (reference {res.pop('_gmac_reference'):7.2f})  "
              f"fps reference {res['fps_reference']:8.3f}  fast {res['fps_fast']:8.3f}  "
              f"speedup {res['speedup']:5.2f}x  max|diff| {res['max_abs_diff']:.2e}  "
              f"({res.pop('_frames')} frames)", flush=True)
        results[name] = res
    name, min_speedup, max_diff = TARGET
    if name in results:
        ok = results[name]["speedup"] >= min_speedup and results[name]["max_abs_diff"] <= max_diff
        print(f"target {name}: speedup >= {min_speedup}x at max|diff| <= {max_diff:g}: "
              f"{'met' if ok else 'NOT met'}", flush=True)
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
