"""Known-motion driving frames from one still portrait: a landmark motion model plus a
piecewise-affine image warp.

Motion of a frame (``Motion``): head yaw / pitch / roll in degrees, scale, shift (fraction of the
crop), mouth opening (inner-lip gap / mouth width), mouth width factor and blink (0 open .. 1 shut).
Head rotation moves each landmark with a pseudo-depth (nose forward, jaw sides back) under an
orthographic projection, which gives an approximate yaw/pitch; roll/scale/shift are a 2-D similarity
about the head centre. A ring of control points around the head follows the head; the image border
stays fixed, so the background stretches a little as in a real clip with a static camera. The mouth
is opened by moving the lower lip and chin down (and the upper lip slightly up); the open interior is
painted dark with an upper-teeth band. Blinks pull the upper lids onto the lower lids.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# pseudo-depth of each dlib-68 landmark in units of the inter-ocular distance (towards the camera)
_DEPTH = np.concatenate([
    [0.0, 0.05, 0.15, 0.3, 0.45, 0.6, 0.7, 0.78, 0.8, 0.78, 0.7, 0.6, 0.45, 0.3, 0.15, 0.05, 0.0],  # jaw
    [0.55, 0.65, 0.72, 0.76, 0.78, 0.78, 0.76, 0.72, 0.65, 0.55],  # brows
    [0.85, 0.95, 1.05, 1.15],  # nose bridge
    [0.9, 0.95, 1.0, 0.95, 0.9],  # nostrils
    [0.55, 0.62, 0.64, 0.62, 0.62, 0.6], [0.62, 0.64, 0.62, 0.55, 0.6, 0.62],  # eyes
    [0.75, 0.85, 0.92, 0.95, 0.92, 0.85, 0.75, 0.85, 0.9, 0.92, 0.9, 0.85],  # outer lip
    [0.78, 0.88, 0.9, 0.88, 0.78, 0.86, 0.88, 0.86],  # inner lip
])

# (upper, lower, weight) pairs of the inner lip; outer lower lip / chin follow the lower lip.
_INNER_PAIRS = [(61, 67, 0.8), (62, 66, 1.0), (63, 65, 0.8)]
_LOWER_FOLLOW = {55: 0.55, 56: 0.85, 57: 1.0, 58: 0.85, 59: 0.55,
                 5: 0.2, 6: 0.45, 7: 0.7, 8: 0.8, 9: 0.7, 10: 0.45, 11: 0.2}
_UPPER_FOLLOW = {49: 0.5, 50: 0.8, 51: 0.9, 52: 0.8, 53: 0.5}
_LIDS = [(37, 41), (38, 40), (43, 47), (44, 46)]
UP_SHARE = 0.2  # share of the opening taken by the upper lip
OPEN_GAP_PX = 0.35  # largest inner-lip gap (pixels) above which the mouth counts as open


@dataclass
class Motion:
    yaw: float = 0.0
    pitch: float = 0.0
    roll: float = 0.0
    scale: float = 1.0
    tx: float = 0.0
    ty: float = 0.0
    mouth_open: float = 0.0
    mouth_width: float = 1.0
    blink: float = 0.0


def inner_gaps(lm: np.ndarray) -> np.ndarray:
    """Vertical inner-lip gaps (pixels) of the three (upper, lower) pairs 61/67, 62/66, 63/65."""
    return np.array([lm[lo, 1] - lm[up, 1] for up, lo, _ in _INNER_PAIRS])


def mouth_width(lm: np.ndarray) -> float:
    return float(np.linalg.norm(lm[54] - lm[48]))


def move_landmarks(base: np.ndarray, m: Motion) -> np.ndarray:
    """Target landmarks (68,2) for motion ``m`` from the neutral landmarks ``base`` (pixels)."""
    lm = np.array(base, dtype=np.float64)
    # mouth width about the mouth centre
    centre = lm[48:68].mean(0)
    lm[48:68, 0] = centre[0] + (lm[48:68, 0] - centre[0]) * m.mouth_width
    # opening: inner gap of each pair becomes mouth_open * width * pair weight
    width = mouth_width(lm)
    for up, lo, w in _INNER_PAIRS:
        delta = m.mouth_open * width * w - (lm[lo, 1] - lm[up, 1])
        lm[up, 1] -= UP_SHARE * delta
        lm[lo, 1] += (1 - UP_SHARE) * delta
    g = m.mouth_open * width - (base[66, 1] - base[62, 1])
    for idx, w in _LOWER_FOLLOW.items():
        lm[idx, 1] += (1 - UP_SHARE) * g * w
    for idx, w in _UPPER_FOLLOW.items():
        lm[idx, 1] -= UP_SHARE * g * w
    # blink
    for up, lo in _LIDS:
        lm[up] += m.blink * 0.92 * (lm[lo] - lm[up])
    return head_transform(lm, base, m)


def _head_frame(base: np.ndarray) -> tuple[np.ndarray, float]:
    """Head centre (between eyes and mouth) and inter-ocular distance of neutral landmarks."""
    eyes = (base[36:42].mean(0) + base[42:48].mean(0)) / 2
    iod = float(np.linalg.norm(base[42:48].mean(0) - base[36:42].mean(0)))
    return eyes * 0.6 + base[48:68].mean(0) * 0.4, iod


def head_transform(points: np.ndarray, base: np.ndarray, m: Motion, depth: np.ndarray | None = None,
                   size: float | None = None) -> np.ndarray:
    """Rotate (yaw, pitch with pseudo-depth), roll, scale and shift points about the head centre."""
    centre, iod = _head_frame(base)
    depth = _DEPTH if depth is None else depth
    z = (np.asarray(depth, dtype=np.float64) - 0.4) * iod  # depth relative to the rotation centre
    p = np.asarray(points, dtype=np.float64) - centre
    yaw, pitch, roll = np.radians([m.yaw, m.pitch, m.roll])
    x = p[:, 0] * np.cos(yaw) + z * np.sin(yaw)
    z2 = -p[:, 0] * np.sin(yaw) + z * np.cos(yaw)
    y = p[:, 1] * np.cos(pitch) - z2 * np.sin(pitch)
    c, s = np.cos(roll), np.sin(roll)
    out = np.stack([c * x - s * y, s * x + c * y], 1) * m.scale
    size = size if size is not None else 4.5 * iod
    return out + centre + np.array([m.tx, m.ty]) * size


def control_points(base: np.ndarray, size: int, n_ring: int = 20, n_border: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """Ring points around the head (move with it) and border points (fixed), in pixels."""
    centre, iod = _head_frame(base)
    ang = np.linspace(0, 2 * np.pi, n_ring, endpoint=False)
    rx, ry = 2.4 * iod, 2.9 * iod
    ring = np.stack([centre[0] + rx * np.cos(ang), centre[1] - 0.5 * iod + ry * np.sin(ang)], 1)
    t = np.linspace(-0.02, 1.02, n_border) * size
    lo, hi = -0.02 * size, 1.02 * size
    border = np.concatenate([np.stack([t, np.full_like(t, lo)], 1), np.stack([t, np.full_like(t, hi)], 1),
                             np.stack([np.full_like(t[1:-1], lo), t[1:-1]], 1),
                             np.stack([np.full_like(t[1:-1], hi), t[1:-1]], 1)])
    return ring, border


def warp_maps(src_pts: np.ndarray, dst_pts: np.ndarray, size: int, src_scale: float) -> tuple[np.ndarray, np.ndarray]:
    """cv2.remap maps of a piecewise-affine warp: the output plane is Delaunay-triangulated on
    ``dst_pts``; each output pixel takes its barycentric coordinates in its triangle to the same
    triangle of ``src_pts`` (times ``src_scale``, the source image's pixel scale)."""
    import cv2
    from scipy.spatial import Delaunay

    tri = Delaunay(dst_pts)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    coords = np.stack([xx.ravel(), yy.ravel()], 1)
    # rasterise triangle ids (much faster than point location per pixel); pixel centres on edges
    # may land in either neighbour, which is harmless because the map is continuous there
    label = np.full((size, size), -1, np.int32)
    shift = 4
    for k, simp in enumerate(tri.simplices):
        poly = np.round(dst_pts[simp] * (1 << shift)).astype(np.int32)
        cv2.fillConvexPoly(label, poly, int(k), lineType=cv2.LINE_8, shift=shift)
    simplex = label.ravel()
    inside = simplex >= 0
    simplex = np.where(inside, simplex, 0)
    # barycentric coordinates: per triangle the inverse of [v0 - v2, v1 - v2] (degenerate -> 0)
    v = dst_pts[tri.simplices]  # (K, 3, 2)
    edges = np.stack([v[:, 0] - v[:, 2], v[:, 1] - v[:, 2]], 2)  # (K, 2, 2) columns = edges
    det = edges[:, 0, 0] * edges[:, 1, 1] - edges[:, 0, 1] * edges[:, 1, 0]
    ok = np.abs(det) > 1e-9
    safe = np.where(ok, det, 1.0)
    inv = np.stack([np.stack([edges[:, 1, 1], -edges[:, 0, 1]], 1),
                    np.stack([-edges[:, 1, 0], edges[:, 0, 0]], 1)], 1) / safe[:, None, None]
    inv[~ok] = 0.0
    bary2 = np.einsum("pij,pj->pi", inv[simplex], coords - v[simplex, 2])
    bary = np.concatenate([bary2, 1.0 - bary2.sum(1, keepdims=True)], 1)
    verts = tri.simplices[simplex]  # (P, 3)
    mapped = np.einsum("pk,pkd->pd", bary, src_pts[verts]) * src_scale
    mapped[~inside] = coords[~inside] * src_scale
    return (mapped[:, 0].reshape(size, size).astype(np.float32),
            mapped[:, 1].reshape(size, size).astype(np.float32))


def separate_inner_lips(points: np.ndarray) -> np.ndarray:
    """``points`` (68+ control points) with the inner-lip points 60-67 nudged apart by < 1e-3 px,
    so that closed lips never coincide (Delaunay in warp_maps needs distinct points)."""
    out = np.array(points, dtype=np.float64)
    out[60:68] += np.linspace(0, 1e-3, 8)[:, None]
    return out


def mouth_interior(lm: np.ndarray, h: int, w: int) -> np.ndarray:
    """(h, w) float32 anti-aliased coverage of the inner-lip polygon (landmarks 60-67) when the
    mouth is open (largest inner gap > ``OPEN_GAP_PX``), else zeros: where paint_mouth paints."""
    import cv2

    out = np.zeros((h, w), np.float32)
    if inner_gaps(lm).max() <= OPEN_GAP_PX:
        return out
    shift = 4  # sub-pixel precision for cv2 drawing
    poly = np.round(np.asarray(lm)[60:68] * (1 << shift)).astype(np.int32)
    cv2.fillPoly(out, [poly], 1.0, lineType=cv2.LINE_AA, shift=shift)
    return out


def paint_mouth(image: np.ndarray, lm: np.ndarray, colour_scale: float = 1.0) -> np.ndarray:
    """Paint the open-mouth interior (inner-lip polygon) dark with an upper-teeth band."""
    gaps = inner_gaps(lm)
    if gaps.max() <= OPEN_GAP_PX:
        return image
    h, w = image.shape[:2]
    mask = mouth_interior(lm, h, w)
    top = lm[[60, 61, 62, 63, 64], 1].min()
    gap = float(gaps.max())
    yy = np.arange(h, dtype=np.float32)[:, None]
    teeth = np.clip(1.0 - (yy - top - 0.28 * gap - 0.5) / 1.0, 0, 1) * (gap > 2.5)
    dark = np.array([52, 18, 22], np.float32) * colour_scale
    white = np.array([205, 196, 182], np.float32) * colour_scale
    fill = dark[None, None] * (1 - teeth[..., None]) + white[None, None] * teeth[..., None]
    out = image.astype(np.float32) * (1 - mask[..., None]) + fill * mask[..., None]
    return np.clip(out, 0, 255).astype(np.uint8)


def render_frame(base_image: np.ndarray, base_lm: np.ndarray, m: Motion, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Render one driving frame (size x size uint8) and its landmarks from a neutral portrait.

    ``base_image`` is the aligned portrait at k * size resolution; ``base_lm`` its landmarks in
    ``size`` pixel units.
    """
    target = move_landmarks(base_lm, m)
    frame = _warp_to(base_image, base_lm, target, m, size)
    frame = paint_mouth(frame, target, colour_scale=float(np.clip(base_image.mean() / 110.0, 0.6, 1.3)))
    return frame, target


def render_head(base_image: np.ndarray, base_lm: np.ndarray, m: Motion, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Like :func:`render_frame` but only the head moves (yaw, pitch, roll, scale, shift of ``m``):
    the face keeps its own mouth and eyes exactly (``m``'s mouth and blink are ignored)."""
    target = head_transform(base_lm, base_lm, m)
    return _warp_to(base_image, base_lm, target, m, size), target


def _warp_to(base_image: np.ndarray, base_lm: np.ndarray, target: np.ndarray, m: Motion, size: int) -> np.ndarray:
    """The portrait warped piecewise-affinely so that ``base_lm`` lands on ``target``, a ring
    around the head following the head motion ``m`` and the frame border fixed."""
    import cv2

    scale = base_image.shape[0] / size
    ring, border = control_points(base_lm, size)
    ring_t = head_transform(ring, base_lm, m, depth=np.full(len(ring), 0.3))
    # keep closed lips from coinciding exactly (Delaunay needs distinct points)
    tgt = target.copy()
    for up, lo, _ in _INNER_PAIRS:
        if tgt[lo, 1] - tgt[up, 1] < 0.05:
            tgt[lo, 1] = tgt[up, 1] + 0.05
    src_all = np.concatenate([base_lm, ring, border])
    dst_all = np.concatenate([tgt, ring_t, border])
    mx, my = warp_maps(src_all, dst_all, size, scale)
    img = base_image
    if scale > 1.5:
        img = cv2.GaussianBlur(base_image, (0, 0), sigmaX=0.35 * scale)
    return cv2.remap(img, mx, my, interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101)
