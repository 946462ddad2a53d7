"""Scene cuts: where footage changes shot (shared by face tracking and data preparation).

A frame starts a new shot when its 32x32 grey thumbnail differs from the previous frame's by more
than a threshold (mean absolute difference, 0-1; 0.30 by default in both users). A hard cut
between two different shots changes most of the thumbnail; camera motion, zooms and a talking
head change it by a few hundredths.
"""
from __future__ import annotations

import numpy as np


def thumbnail(frame: np.ndarray) -> np.ndarray:
    """32x32 grey thumbnail in [0, 1] of an RGB uint8 frame (scene-cut detection)."""
    import cv2

    grey = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
    return cv2.resize(grey, (32, 32), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0


def is_cut(thumb: np.ndarray, previous: np.ndarray | None, threshold: float) -> bool:
    """True when ``thumb`` starts a new shot after ``previous`` (always for the first frame)."""
    return previous is None or float(np.abs(thumb - previous).mean()) > float(threshold)
