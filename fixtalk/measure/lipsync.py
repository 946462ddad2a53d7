"""Lip-sync measures for QC.

Two measures live here:

1. An offline, model-free measure: the per-frame mouth opening (inner-lip gap over mouth width,
   from 68-point landmarks) against the audio's RMS envelope at the video frame rate. We report
   the Pearson correlation at the best lag within ``±max_lag`` frames and that lag.

   **Sign convention** (the same as SyncNet's AV offset): ``lag = L`` means ``mouth[t + L]`` best
   matches ``audio[t]``, i.e. the picture is ``L`` frames *late* (the audio leads). A positive lag
   is fixed by delaying the audio by ``L`` frames; a negative lag by advancing it.

2. SyncNet evaluation (LSE-C / LSE-D / AV offset) when the user supplies weights of the standard
   SyncNet (Chung & Zisserman 2016, as published in ``joonson/syncnet_python``): see
   :mod:`stages.checks.syncnet`.
"""
from __future__ import annotations

import numpy as np


def audio_envelope(samples: np.ndarray, sample_rate: int, fps: float, n_frames: int | None = None
                   ) -> np.ndarray:
    """RMS of the audio over each video frame's span ``[i/fps, (i+1)/fps)``.

    Returns ``n_frames`` values (zero-padded past the end of the audio); ``n_frames=None`` covers
    the whole audio.
    """
    x = np.asarray(samples, dtype=np.float64).reshape(-1)
    hop = sample_rate / float(fps)
    if n_frames is None:
        n_frames = int(np.ceil(len(x) / hop))
    env = np.zeros(int(n_frames), dtype=np.float64)
    for i in range(int(n_frames)):
        a, b = int(round(i * hop)), int(round((i + 1) * hop))
        seg = x[a:b]
        if seg.size:
            env[i] = float(np.sqrt(np.mean(seg * seg)))
    return env


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation; 0.0 when either side is constant (no evidence of sync)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.size < 3 or a.size != b.size:
        return 0.0
    a = a - a.mean()
    b = b - b.mean()
    den = np.sqrt((a * a).sum() * (b * b).sum())
    if den < 1e-12:
        return 0.0
    return float((a * b).sum() / den)


def lagged_correlations(mouth: np.ndarray, envelope: np.ndarray, max_lag: int = 10
                        ) -> dict[int, float]:
    """``{lag: corr(mouth[t + lag], envelope[t])}`` for ``lag`` in ``[-max_lag, max_lag]``.

    Frames where the mouth track is missing (NaN) are left out of each pair.
    """
    m = np.asarray(mouth, dtype=np.float64)
    e = np.asarray(envelope, dtype=np.float64)
    n = min(len(m), len(e))
    m, e = m[:n], e[:n]
    out: dict[int, float] = {}
    for lag in range(-int(max_lag), int(max_lag) + 1):
        if lag >= 0:
            mm, ee = m[lag:], e[: n - lag]
        else:
            mm, ee = m[: n + lag], e[-lag:]
        keep = np.isfinite(mm) & np.isfinite(ee)
        out[lag] = pearson(mm[keep], ee[keep]) if keep.sum() >= 3 else 0.0
    return out


def best_lag(mouth: np.ndarray, envelope: np.ndarray, max_lag: int = 10) -> tuple[float, int]:
    """``(correlation, lag)`` at the lag with the highest correlation (ties: smallest ``|lag|``).

    See the module docstring for the sign of ``lag``.
    """
    corrs = lagged_correlations(mouth, envelope, max_lag)
    lag = max(corrs, key=lambda k: (round(corrs[k], 9), -abs(k)))
    return corrs[lag], lag
