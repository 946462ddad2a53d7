"""Recall: which memory frame's mouth each output frame shows, chosen over the whole clip.

A Viterbi search over the memory (:mod:`stages.rendering.presenter_memory`) for the path
m_0 .. m_{n-1} minimising

    sum_j U(j, m_j) + sum_j C(m_{j-1}, m_j)

* unary U(j, m) = w_shape * sum_f g_f ((s_{m,f} - s*_{j,f}) / sigma_f)^2   (shape vs target s*_j;
  sigma_f the presenter's own spread of field f, g = (1, 0.15, 0) for opening, width, rounding:
  the targets' fields are calibrated one by one, and asking for a rounding the presenter never
  makes together with an opening kept the recall from the widest mouths: the recalled opening's
  spread fell to 0.57 of the presenter's on the kitchen clip, 0.92 with rounding left free)
  + w_pose * sum ((p_m - p_{i_j}) / (0.1, 0.08, 0.08))^2   (the memory frame's head pose against
  the pose of the footage frame i_j it is pasted on: a mouth seen from another angle looks wrong)
  + w_sharp * (1 - min(1, sharpness_m / median sharpness))   (prefer crisp frames)
  + w_phone * [v_m != v*_j]   (where the new speech's phone at j is known, v*_j its viseme, v_m
  the viseme the presenter was saying in memory frame m, :mod:`stages.rendering.footage_phones`;
  half the cost where m's is not known: a mouth that was saying the same sound has its lip shape,
  teeth on lip for /f/, pressed lips for /m/);
* transition C(m, m'): 0 when m' = m + 1 in the same run (the presenter's own motion, played at
  its own pace); ``HOLD`` when m' = m (0 in a pause, where a still mouth is wanted); otherwise
  w_jump plus the shape difference between m' and the frame that would have followed m (a jump to
  a similar mouth costs little, a jump across shapes costs much). In a pause, moving on to m + 1
  costs the shape change it makes (a mouth in a silence should not move).

Frames blurred below ``dub.memory.min_sharpness`` of the median are never recalled. Each step
considers the ``candidates`` best memory frames by U plus the successors and holds of the previous
step's best, so the cost is O(n K^2), not O(n N^2). :func:`crossfades` then spreads every jump
over ``dub.memory.crossfade`` frames (the old run fades out while the new one fades in), after
:func:`without_detours` has removed excursions shorter than ``MIN_RUN`` frames (a one-frame
visit to another part of the memory reads as a flicker, however well its shape fits).
"""
from __future__ import annotations

import numpy as np

from stages.rendering.presenter_memory import PresenterMemory

SHAPE_WEIGHTS = np.array([1.0, 0.15, 0.0], np.float32)
POSE_SCALE = np.array([0.1, 0.08, 0.08], np.float32)
HOLD = 0.4
#: a visit to another part of the memory shorter than this (output frames) is replaced
MIN_RUN = 4


def shape_scale(memory: PresenterMemory) -> np.ndarray:
    """sigma_f: the presenter's spread of each shape field (floored so a still mouth is no 0)."""
    return np.maximum(memory.shapes.std(0), np.array([0.02, 0.02, 0.02], np.float32))


class Unary:
    """U(j, .) of the module docstring, one output frame at a time (inf for memory frames never
    recalled), so a long clip never holds an n x N matrix."""

    def __init__(self, memory: PresenterMemory, targets: np.ndarray, poses: np.ndarray, cfg, usable: np.ndarray,
                 visemes: np.ndarray | None = None):
        self.memory, self.targets, self.poses, self.cfg = memory, targets, poses, cfg
        own = getattr(memory, "visemes", None)
        self.phone = None
        if visemes is not None and own is not None and float(getattr(cfg, "w_phone", 0.0)) > 0 and np.any(own):
            self.phone = (np.asarray(visemes), np.asarray(own))
        self.sigma = shape_scale(memory)
        med = float(np.median(memory.sharpness)) or 1.0
        self.base = float(cfg.w_sharp) * (1.0 - np.minimum(1.0, memory.sharpness / med))
        self.base[~usable] = np.inf

    def __call__(self, j: int) -> np.ndarray:
        d = (self.memory.shapes - self.targets[j]) / self.sigma
        cost = float(self.cfg.w_shape) * (d ** 2 * SHAPE_WEIGHTS).sum(-1)
        dp = (self.memory.pose - self.poses[j]) / POSE_SCALE
        cost = cost + float(self.cfg.w_pose) * (dp ** 2).sum(-1) + self.base
        if self.phone is not None and self.phone[0][j]:
            asked, own = self.phone[0][j], self.phone[1]
            cost = cost + float(self.cfg.w_phone) * np.where(own == 0, 0.5, (own != asked).astype(np.float32))
        return cost


def recallable(memory: PresenterMemory, min_sharpness: float) -> np.ndarray:
    """Memory frames sharp enough to be recalled."""
    med = float(np.median(memory.sharpness)) if len(memory) else 0.0
    return memory.sharpness >= float(min_sharpness) * med


def recall_path(memory: PresenterMemory, targets: np.ndarray, poses: np.ndarray, pause: np.ndarray, cfg,
                visemes: np.ndarray | None = None) -> np.ndarray:
    """The memory index m_j of every output frame (the Viterbi path of the module docstring);
    ``visemes``: v*_j, the new speech's viseme code per output frame (0: unknown)."""
    n, total = len(targets), len(memory)
    usable = recallable(memory, cfg.min_sharpness)
    if not usable.any():
        usable = np.ones(total, bool)
    u = Unary(memory, targets, poses, cfg, usable, visemes)
    sigma = shape_scale(memory)
    succ = np.arange(total) + 1
    same_run = np.zeros(total, bool)
    same_run[:-1] = memory.run[1:] == memory.run[:-1]
    succ = np.where(same_run, succ, -1)
    k = max(4, int(cfg.candidates))
    cands = _best(u(0), k, usable)
    cost = u(0)[cands]
    back: list[tuple[np.ndarray, np.ndarray]] = []
    for j in range(1, n):
        keep = cands[np.argsort(cost, kind="stable")[:k]]
        extra = np.concatenate([succ[keep][succ[keep] >= 0], keep])
        row = u(j)
        new = np.unique(np.concatenate([_best(row, k, usable), extra[usable[extra]]]))
        trans = _transitions(memory, cands, new, succ, sigma, bool(pause[j]), cfg)
        total_cost = cost[:, None] + trans
        arg = np.argmin(total_cost, axis=0)
        cost = total_cost[arg, np.arange(len(new))] + row[new]
        back.append((cands, arg))
        cands = new
    path = np.empty(n, np.int64)
    path[-1] = cands[int(np.argmin(cost))]
    pos = int(np.argmin(cost))
    for j in range(n - 1, 0, -1):
        prev, arg = back[j - 1]
        pos = int(arg[pos])
        path[j - 1] = prev[pos]
    return path


def _best(row: np.ndarray, k: int, usable: np.ndarray) -> np.ndarray:
    idx = np.nonzero(usable)[0]
    if len(idx) <= k:
        return idx
    return idx[np.argpartition(row[idx], k)[:k]]


def _transitions(memory: PresenterMemory, prev: np.ndarray, new: np.ndarray, succ: np.ndarray,
                 sigma: np.ndarray, in_pause: bool, cfg) -> np.ndarray:
    """C (len(prev), len(new)) of the module docstring."""
    follow = succ[prev]  # the frame that would follow each previous one (-1: end of its run)
    nxt = np.where(follow >= 0, follow, prev)
    d = (memory.shapes[nxt][:, None, :] - memory.shapes[new][None, :, :]) / sigma
    jump = float(cfg.w_jump) + 0.5 * float(cfg.w_shape) * (d ** 2 * SHAPE_WEIGHTS).sum(-1)
    cont = follow[:, None] == new[None, :]
    hold = prev[:, None] == new[None, :]
    out = np.where(cont, 0.0, jump)
    if in_pause:
        step = (memory.shapes[nxt] - memory.shapes[prev]) / sigma
        out = np.where(cont, 2.0 * (step ** 2 * SHAPE_WEIGHTS).sum(-1)[:, None], out)
        out = np.where(hold, 0.0, out)
    else:
        out = np.where(hold, HOLD, out)
    return out


def continues(memory: PresenterMemory, a: int, b: int) -> bool:
    """Output frames showing memory frames a then b are continuous (a hold or the next frame)."""
    return b == a or (b == a + 1 and b < len(memory) and memory.run[a] == memory.run[b])


def without_detours(path: np.ndarray, memory: PresenterMemory, keep: np.ndarray | None = None,
                    min_run: int = MIN_RUN) -> np.ndarray:
    """``path`` with every stretch shorter than ``min_run`` between two jumps replaced by the
    previous stretch played on (held at the end of its run), unless it covers a frame of ``keep``
    (a P/B/M closure is short by nature)."""
    out = np.array(path, np.int64)
    keep = np.zeros(len(out), bool) if keep is None else np.asarray(keep, bool)
    j = 1
    while j < len(out):
        if continues(memory, int(out[j - 1]), int(out[j])):
            j += 1
            continue
        end = j + 1
        while end < len(out) and continues(memory, int(out[end - 1]), int(out[end])):
            end += 1
        if end - j < min_run and end < len(out) and not keep[j:end].any():
            for k in range(j, end):
                prev = int(out[k - 1])
                out[k] = prev + 1 if prev + 1 < len(memory) and continues(memory, prev, prev + 1) else prev
        j = end
    return out


def crossfades(path: np.ndarray, memory: PresenterMemory, frames: int, pause: np.ndarray | None = None
               ) -> list[list[tuple[int, float]]]:
    """Per output frame, the memory frames shown and their weights: the path, with each jump
    (not a continuation or a hold) faded over ``frames`` output frames from the old run (played
    on in speech, held in a ``pause``, where a mouth must not start a new word) into the new one."""
    out = [[(int(m), 1.0)] for m in path]
    total = len(memory)
    pause = np.zeros(len(path), bool) if pause is None else np.asarray(pause, bool)
    for j in range(1, len(path)):
        a, b = int(path[j - 1]), int(path[j])
        if continues(memory, a, b):
            continue
        old = a
        for c in range(frames):
            if j + c >= len(path):
                break
            if not pause[j + c] and old + 1 < total and memory.run[old + 1] == memory.run[old]:
                old += 1
            w = (c + 1) / (frames + 1)
            out[j + c] = [(old, 1.0 - w)] + [(m, wm * w) for m, wm in out[j + c]]
    return out
