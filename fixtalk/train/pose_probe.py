"""Single-axis pose probes for the held-out evaluation's (d) (:mod:`fixtalk.train.evaluate`).

The held-out drivers move every head track at once (yaw, pitch, roll, scale, shift), so a low
(d) correlation does not say *which* motion the render gets wrong. A probe drives the source,
pose only, with a synthetic clip of the source itself that moves along **one** track of
:data:`fixtalk.train.data_format.HEAD_TRACKS` (a sine of that track's amplitude, period 1 s,
rendered with the training set's own warp, :func:`fixtalk.train.synthetic.render_tracks`), and
measures with dlib on the driver and on the render:

* ``jaw_ends`` / ``nose``: slope of the render's x of the jaw ends (dlib 0, 16) / nose tip (30)
  against the driver's (1 = followed exactly; for a shift, equal values = a rigid head);
* ``yaw_corr`` / ``yaw_gain`` and ``roll_corr`` / ``roll_gain``: Pearson correlation and slope
  of the render's yaw proxy / roll (:func:`fixtalk.train.face_meter.head_angles`) against the
  driver's (gain 1 = the full motion; correlation is blind to the size, the gain is not).

What they showed (docs/model_card.md, "Portrait adaptation", round 4): the shipped model without
adaptation hardly turns the head at all (yaw gain about 0, roll gain 0.09); adapted, a pure turn
is followed in sign (yaw corr 0.83) at 0.15 of its size, while a pure sideways shift moves the
nose twice as far as the jaw ends, which the yaw proxy reads as a turn larger than the real
turns' response: that cross-talk, not the turn itself, is what keeps (d) yaw low.
"""
from __future__ import annotations

import numpy as np

from fixtalk.train.data_format import HEAD_TRACKS, Clip
from fixtalk.train.face_meter import FaceMeter, head_angles, pearson

STILL_TRACKS = ("yaw", "pitch", "roll", "tx", "ty", "blink", "mouth_open")


def slope(driver: np.ndarray, render: np.ndarray) -> float:
    """Least-squares slope of ``render`` on ``driver`` about their means (NaN rows dropped)."""
    keep = np.isfinite(driver) & np.isfinite(render)
    d, r = driver[keep] - driver[keep].mean(), render[keep] - render[keep].mean()
    return float((d * r).sum() / max(float((d * d).sum()), 1e-12))


def single_track(track: str, frames: int, period: float = 25.0) -> dict[str, np.ndarray]:
    """Synthetic tracks that hold still except ``track`` (a sine of its HEAD_TRACKS amplitude)."""
    if track not in HEAD_TRACKS:
        raise ValueError(f"unknown head track {track!r}; expected one of {', '.join(HEAD_TRACKS)}")
    tracks = {k: np.zeros(frames) for k in STILL_TRACKS}
    tracks.update(scale=np.ones(frames), mouth_width=np.ones(frames))
    rest, amplitude = HEAD_TRACKS[track]
    tracks[track] = rest + amplitude * np.sin(2 * np.pi * np.arange(frames) / period)
    return tracks


def probe(renderer, clip: Clip, track: str, frames: int = 50) -> dict[str, float]:
    """The source of ``clip`` (frame 0) driven, pose only, by itself moving along ``track``;
    returns the module docstring's figures."""
    import cv2

    from fixtalk.train.synthetic import render_tracks

    crop, lm = np.array(clip.frames[0]), np.asarray(clip.landmarks[0], np.float64)
    size = crop.shape[0]
    base = cv2.resize(crop, (2 * size, 2 * size), interpolation=cv2.INTER_CUBIC)
    driver, _ = render_tracks(base, lm, single_track(track, frames), size)
    state = renderer.source(crop)
    pose = renderer.motion_weights(driver)["pose"]
    out = np.concatenate(list(renderer.render(state, state.alpha_lip.expand(frames, -1), pose)))
    lm_drv, lm_out = FaceMeter().landmarks(driver), FaceMeter().landmarks(out)
    fig = {name: slope(lm_drv[:, idx, 0].mean(1), lm_out[:, idx, 0].mean(1))
           for name, idx in (("jaw_ends", [0, 16]), ("nose", [30]))}
    a_drv, a_out = head_angles(lm_drv), head_angles(lm_out)
    for k in ("yaw", "roll"):
        fig[f"{k}_corr"] = pearson(a_drv[k], a_out[k])
        fig[f"{k}_gain"] = slope(a_drv[k], a_out[k])
    return fig
