"""2-D geometry shared by training crops and the pipeline's face alignment."""
from __future__ import annotations

import numpy as np


def umeyama(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation; no reflection) mapping the
    (N, 2) points ``src`` onto ``dst`` (Umeyama 1991); returns the 2x3 matrix for cv2.warpAffine."""
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s0, d0 = src - mu_s, dst - mu_d
    cov = d0.T @ s0 / len(src)
    u, sig, vt = np.linalg.svd(cov)
    fix = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        fix[1, 1] = -1.0
    rot = u @ fix @ vt
    var_s = (s0 ** 2).sum() / len(src)
    scale = float(np.trace(np.diag(sig) @ fix) / max(var_s, 1e-12))
    trans = mu_d - scale * rot @ mu_s
    return np.hstack([scale * rot, trans[:, None]])
