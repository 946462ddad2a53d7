"""Pose videos that move like real heads, made offline from a still portrait.

The synthetic training and adaptation clips move the head gently (yaw within about +-16 degrees,
smooth sinusoids, :data:`fixtalk.train.data_format.HEAD_TRACKS`). A real head-motion video turns
further, nods fast, talks, blinks, shifts while it turns, and its landmark track jitters. This
module makes such a driver from *another* person's portrait (the identity mismatch between
driver and source that real use has), with the training set's own warp
(:func:`fixtalk.train.synthetic.render_tracks`), so that the pose-video path can be measured and
tested against known head tracks:

* ``yaw``: slow turns between held poses, to +-``yaw`` degrees;
* ``pitch``: a slow drift plus bursts of fast nods (``nod_hz``, about 0.6 s each);
* ``roll``: a slow tilt to +-``roll`` degrees;
* ``tx``/``ty``: the head shifts as it turns and nods (a real head turns about the neck);
* a talking mouth (random syllables, :func:`fixtalk.adapt.random_phones`) and blinks;
* ``jitter``: per-frame noise on every head track (hand-held camera, tracker noise), in degrees
  (shift and scale jitter scale with it).

:class:`RealHeadMotion` holds the settings; :func:`real_head_tracks` makes the tracks and
:func:`real_head_driver` the frames.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class RealHeadMotion:
    """Amplitudes of a real-looking head-motion driver (degrees unless said)."""

    yaw: float = 30.0
    pitch: float = 12.0
    roll: float = 10.0
    nod_hz: float = 2.5  # fast nods: pitch oscillation inside a burst
    nod_deg: float = 8.0
    shift: float = 0.04  # sideways shift at full yaw, fraction of the crop
    jitter: float = 0.6  # per-frame noise of the angles (deg); shifts 0.002, scale 0.003 per deg
    talking: bool = True  # the driver's mouth moves (speech) and its eyes blink
    turn_seconds: float = 1.0  # a turn from one held yaw to the next


def _held_turns(rng: np.random.Generator, n: int, amplitude: float, turn: int, fps: int) -> np.ndarray:
    """Yaw that starts turned to one side, holds a pose for 0.3-0.9 s, then turns (cosine ease
    over ``turn`` frames) to the next target; targets alternate sides and reach +-``amplitude``
    (now and then only back towards the front)."""
    out = np.zeros(n)
    side = float(rng.choice([-1.0, 1.0]))
    t, current = 0, -side * amplitude * float(rng.uniform(0.6, 1.0))  # the clip starts turned
    while t < n:
        hold = int(rng.uniform(0.3, 0.9) * fps)
        out[t:t + hold] = current
        t += hold
        target = side * amplitude * float(rng.uniform(0.6, 1.0))
        if rng.random() < 0.35:  # sometimes come back towards the front
            target *= 0.2
        ease = 0.5 - 0.5 * np.cos(np.pi * np.arange(1, turn + 1) / turn)
        seg = current + (target - current) * ease
        out[t:t + turn] = seg[: max(0, min(turn, n - t))]
        t += turn
        current, side = target, -side
    return out


def real_head_tracks(rng: np.random.Generator, n: int, motion: RealHeadMotion = RealHeadMotion(),
                     fps: int = 25) -> dict[str, np.ndarray]:
    """Tracks of :class:`fixtalk.train.face_warp.Motion` fields for ``n`` frames (see the module
    docstring); ``yaw``/``pitch``/``roll`` also come back as the known truth of the driver."""
    from fixtalk.adapt import random_phones
    from fixtalk.train.speech import viseme_track
    from fixtalk.train.synthetic import blink_track, smooth_noise

    t = np.arange(n) / fps
    yaw = _held_turns(rng, n, motion.yaw, max(2, int(motion.turn_seconds * fps)), fps)
    pitch = smooth_noise(rng, n, motion.pitch * 0.6, 60)
    start = int(rng.integers(0, max(1, fps)))
    while start < n:  # bursts of fast nods, every 1.5-3 s
        length = int(0.6 * fps)
        span = np.arange(start, min(n, start + length))
        env = np.sin(np.pi * (span - start) / length)
        pitch[span] += motion.nod_deg * env * np.sin(2 * np.pi * motion.nod_hz * (t[span] - t[start]))
        start += int(rng.uniform(1.5, 3.0) * fps)
    pitch = np.clip(pitch, -motion.pitch, motion.pitch)
    roll = np.clip(smooth_noise(rng, n, motion.roll, 80) + 0.15 * yaw * motion.roll / max(motion.yaw, 1e-6),
                   -motion.roll, motion.roll)
    tracks = {"yaw": yaw, "pitch": pitch, "roll": roll,
              "scale": 1.0 + smooth_noise(rng, n, 0.04, 120),
              "tx": motion.shift * yaw / max(motion.yaw, 1e-6) + smooth_noise(rng, n, 0.01, 100),
              "ty": 0.3 * motion.shift * pitch / max(motion.pitch, 1e-6) + smooth_noise(rng, n, 0.008, 100)}
    if motion.jitter > 0:
        for key, unit in (("yaw", 1.0), ("pitch", 1.0), ("roll", 1.0), ("tx", 0.002), ("ty", 0.002),
                          ("scale", 0.003)):
            tracks[key] = tracks[key] + rng.normal(0.0, motion.jitter * unit, n)
    if motion.talking:
        _, mouth_open, width = viseme_track(random_phones(rng, n / fps), n)
        tracks.update(mouth_open=mouth_open.astype(np.float64), mouth_width=width.astype(np.float64),
                      blink=blink_track(rng, n))
    else:
        tracks.update(mouth_open=np.zeros(n), mouth_width=np.ones(n), blink=np.zeros(n))
    return tracks


def real_head_driver(picture: np.ndarray, n: int, size: int = 128, seed: int = 0,
                     motion: RealHeadMotion = RealHeadMotion(),
                     tracks: dict[str, np.ndarray] | None = None) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(frames (n, size, size, 3) uint8, tracks) of the face in ``picture`` (RGB, one face)
    aligned to the model's crop and moved by :func:`real_head_tracks` (or the given ``tracks``)."""
    from fixtalk.train.synthetic import aligned_portrait, render_tracks

    base, base_lm = aligned_portrait(picture, size, None)
    if tracks is None:
        tracks = real_head_tracks(np.random.default_rng(seed), n, motion)
    frames, _ = render_tracks(base, base_lm, tracks, size)
    return frames, tracks
