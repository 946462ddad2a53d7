"""Targets of a memory dub: for every output frame, the mouth shape (opening, width, rounding,
:mod:`stages.face.mouth_shape`) the new speech asks of this presenter.

1. **Timing from the lip motion that drives the render today.** Audio2Lip's lip weights, relative
   to its resting mouth (Delta alpha_lip = alpha^a_t - alpha^a_rest, as the model dub uses them),
   are turned into a mouth shape by the network itself: the shot's reference crop is rendered with
   ``CALIBRATION_FRAMES`` of the clip's own deltas, the rendered mouths are measured (dlib-68), and
   a ridge regression maps Delta alpha_lip to the measured shape. Its timing is the network's
   (phone correlation 0.47-0.58 on real dubs); its amplitude is not used.
2. **Amplitude from the presenter.** In speech, each shape field is mapped by rank onto the
   presenter's own distribution of that field over the memory's talking frames (quantile
   matching): the output's widest opening is the presenter's widest, its median the presenter's
   median, so a presenter who opens wide opens wide. The opening is then stretched about the
   median by ``dub.memory.amplitude`` (1.3), within the presenter's own range (0.5th-99.5th
   percentile): the recall's continuity keeps about 0.76 of the targets' spread on the kitchen
   presenter (0.90 at 1.3), and no mouth opens wider than the presenter's own do.
3. **Closed where speech asks for it.** Frames in a silence of at least ``dub.memory.pause_s``
   (:func:`fixtalk.measure.speech_pauses.speech_activity` on the new speech) and frames of a
   bilabial phone (P/B/M, when the row was aligned to a script and ``words.json`` has phones) take
   the presenter's resting shape (the median of the memory's least open tenth). ``pause`` marks the
   silences (the recall holds a still mouth there).
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from fixtalk.measure.faces import box_from_landmarks, landmarks_in_box
from fixtalk.measure.speech_pauses import speech_activity
from stages.face.mouth_shape import mouth_shape
from stages.rendering.presenter_memory import PresenterMemory

CALIBRATION_FRAMES = 24
#: the rendered crop is enlarged this much before its landmarks are fitted (dlib on 128 px faces)
MEASURE_SCALE = 2


@dataclass
class MouthTargets:
    """Per output frame: ``shapes`` (n, 3) to recall, ``pause`` (n,) silences held still and
    ``closed`` (n,) frames whose lips must meet (pauses and P/B/M)."""

    shapes: np.ndarray
    pause: np.ndarray
    closed: np.ndarray
    calibration_r2: float


def network_shapes(renderer, crop: np.ndarray, crop_landmarks: np.ndarray, deltas: np.ndarray) -> np.ndarray:
    """Mouth shapes (K, 3) the network draws on ``crop`` driven by lip ``deltas`` (K, lip_dim)."""
    import torch

    state = renderer.source(crop)
    lip = state.alpha_lip + torch.as_tensor(deltas, dtype=state.alpha_lip.dtype, device=state.alpha_lip.device)
    box = box_from_landmarks(np.asarray(crop_landmarks) * MEASURE_SCALE)
    shapes = []
    with torch.inference_mode():
        for batch in renderer.render(state, lip, None, None):
            for frame in batch:
                big = cv2.resize(frame, None, fx=MEASURE_SCALE, fy=MEASURE_SCALE, interpolation=cv2.INTER_CUBIC)
                shapes.append(mouth_shape(landmarks_in_box(big, box)))
    return np.asarray(shapes, np.float32)


def ridge(x: np.ndarray, y: np.ndarray, lam: float = 1e-2) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(weights, x mean, y mean) of a ridge regression y ~ (x - x mean) W + y mean."""
    xm, ym = x.mean(0), y.mean(0)
    xc = x - xm
    gram = xc.T @ xc
    w = np.linalg.solve(gram + lam * np.trace(gram) / max(1, len(gram)) * np.eye(len(gram)) + 1e-9 * np.eye(len(gram)),
                        xc.T @ (y - ym))
    return w, xm, ym


def calibration_picks(deltas: np.ndarray, k: int) -> np.ndarray:
    """``k`` frame indices spread over the range of the deltas (by their norm's rank)."""
    order = np.argsort(np.linalg.norm(deltas, axis=1), kind="stable")
    return np.unique(order[np.linspace(0, len(order) - 1, min(k, len(order))).round().astype(int)])


def quantile_match(values: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """``values`` mapped by rank onto the distribution of ``reference``."""
    if len(values) == 0:
        return values.astype(np.float32)
    ranks = np.argsort(np.argsort(values, kind="stable"), kind="stable")
    q = (ranks + 0.5) / len(values)
    return np.quantile(reference, q).astype(np.float32)


def speech_shapes(renderer, crop: np.ndarray, crop_landmarks: np.ndarray, deltas: np.ndarray
                  ) -> tuple[np.ndarray, float, np.ndarray]:
    """(shape (n, 3) in the network's units per output frame, R^2 of the regression, its weights
    W (lip_dim, 3): shape ~ Delta alpha_lip W + const)."""
    picks = calibration_picks(deltas, CALIBRATION_FRAMES)
    measured = network_shapes(renderer, crop, crop_landmarks, deltas[picks])
    w, xm, ym = ridge(deltas[picks].astype(np.float64), measured.astype(np.float64))
    fitted = (deltas[picks] - xm) @ w + ym
    resid = float(((measured[:, 0] - fitted[:, 0]) ** 2).sum())
    total = float(((measured[:, 0] - measured[:, 0].mean()) ** 2).sum())
    r2 = 1.0 - resid / total if total > 1e-9 else 0.0
    predicted = ((deltas - xm) @ w + ym).astype(np.float32)
    if total <= 1e-9:  # the network does not move this mouth: the delta's size is the timing
        predicted[:, 0] = np.linalg.norm(deltas, axis=1)
    return predicted, r2, w.astype(np.float32)


def lip_direction(weights: np.ndarray, predicted: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """The Delta alpha_lip (lip_dim,) that opens the network's mouth by one unit of the targets'
    opening: W's opening column, normalised (least-norm solution) and rescaled from the
    network's units to the presenter's (the ratio of their interquartile ranges)."""
    w = np.asarray(weights, np.float64)[:, 0]
    iqr = lambda v: float(np.subtract(*np.percentile(v, [75, 25])))  # noqa: E731
    scale = iqr(targets[:, 0]) / max(iqr(predicted[:, 0]), 1e-6)
    return (w / max(float(w @ w), 1e-12) / max(scale, 1e-6)).astype(np.float32)


def bilabial_frames(phones, n_out: int, fps: float) -> np.ndarray:
    """Output frames overlapped by a P/B/M phone (``phones``: :class:`fixtalk.measure.phone_sync.Phone`)."""
    out = np.zeros(n_out, bool)
    for p in phones:
        if p.viseme == "PBM":
            a, b = int(np.floor(p.start * fps)), int(np.ceil(p.end * fps))
            out[max(0, a):max(0, min(n_out, b))] = True
    return out


def mouth_targets(memory: PresenterMemory, predicted: np.ndarray, r2: float, samples: np.ndarray,
                  fps: float, pause_s: float, phones=(), amplitude: float = 1.0) -> MouthTargets:
    """Targets per output frame (see the module docstring) from the network's ``predicted`` shapes."""
    n = len(predicted)
    activity = speech_activity(samples, 16000, fps, n, min_pause_s=float(pause_s), margin_s=0.0)
    pause = activity.in_pause if len(activity.in_pause) == n else np.zeros(n, bool)
    talking = memory.speaking if memory.speaking.any() else np.ones(len(memory), bool)
    reference = memory.shapes[talking]
    shapes = np.empty((n, 3), np.float32)
    speech = ~pause
    for f in range(3):
        shapes[speech, f] = quantile_match(predicted[speech, f], reference[:, f])
    # the recall keeps about three quarters of the targets' spread (its continuity): the opening
    # is stretched about the presenter's median by ``amplitude``, within the presenter's own range
    median = float(np.median(reference[:, 0]))
    low, high = np.percentile(memory.shapes[:, 0], [0.5, 99.5])
    shapes[speech, 0] = np.clip(median + (shapes[speech, 0] - median) * float(amplitude), low, high)
    rest = rest_shape(memory)
    closed = pause | bilabial_frames(phones, n, fps)
    shapes[closed] = rest
    return MouthTargets(shapes, pause, closed, float(r2))


def rest_shape(memory: PresenterMemory) -> np.ndarray:
    """The presenter's resting mouth: the median shape of the memory's least open tenth."""
    low = memory.shapes[:, 0] <= np.percentile(memory.shapes[:, 0], 10)
    return np.median(memory.shapes[low], axis=0).astype(np.float32)
