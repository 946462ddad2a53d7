"""Shift-stitching benchmark (``motion.shift_stitching``, :mod:`fixtalk.shift_stitching`): the
cost per pose-video frame that the policy adds to the motion and render stages.

    python benchmarks/stitching.py [--frames 50] [--size 128]

A clip of the astronaut's aligned crop moved by known head motion (turn, tilt, shift) is timed
through each step: dlib landmarks on the 256-px crop (tracked from frame to frame, as the motion
stage measures them), the head-motion fit (least squares per frame), moving each driving frame's
head back (one piecewise-affine warp) and putting the shift back on a rendered crop (another).
The last line is one JSON object {step: milliseconds per frame}.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fixtalk.shift_stitching import fit_head_motion, shift_heads, stabilise  # noqa: E402
from fixtalk.train.face_meter import FaceMeter  # noqa: E402
from fixtalk.train.face_warp import Motion, render_frame  # noqa: E402
from fixtalk.train.synthetic import aligned_portrait, load_portrait  # noqa: E402

LANDMARK_CROP = 256


def clip(frames: int, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(frames at 256 px, the same at ``size`` px, the portrait's landmarks at ``size`` px)."""
    big, lm = aligned_portrait(load_portrait("astronaut"), LANDMARK_CROP, None)
    lm_big = lm.copy()
    t = np.linspace(0, 2 * np.pi, frames)
    out = np.stack([render_frame(big, lm_big, Motion(yaw=12 * np.sin(t[i]), roll=5 * np.cos(t[i]),
                                                      tx=0.03 * np.sin(2 * t[i])), LANDMARK_CROP)[0]
                    for i in range(frames)])
    small = np.stack([cv2.resize(f, (size, size), interpolation=cv2.INTER_AREA) for f in out])
    return out, small, lm * (size / LANDMARK_CROP)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--frames", type=int, default=50)
    ap.add_argument("--size", type=int, default=128, help="the model's crop size")
    args = ap.parse_args(argv)
    big, small, portrait_lm = clip(args.frames, args.size)
    ms: dict[str, float] = {}

    def timed(name: str, fn):
        t0 = time.perf_counter()
        result = fn()
        ms[name] = round(1000 * (time.perf_counter() - t0) / args.frames, 2)
        return result

    lms = timed("landmarks", lambda: FaceMeter().landmarks(big, detect=False)) * (args.size / LANDMARK_CROP)
    head = timed("fit", lambda: fit_head_motion(lms))
    timed("stabilise", lambda: stabilise(small, lms, head))
    timed("shift_back", lambda: shift_heads(small, portrait_lm, head))
    ms["total"] = round(sum(ms.values()), 2)
    for k, v in ms.items():
        print(f"{k:>11}: {v:7.2f} ms/frame")
    print(json.dumps(ms))
    return 0


if __name__ == "__main__":
    sys.exit(main())
