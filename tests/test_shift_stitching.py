"""Shift stitching (fixtalk.shift_stitching): the head model reads a known motion back off
landmarks, a driving frame's head is moved back by its shift, and the shift goes back rigidly."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from fixtalk.shift_stitching import fit_head_motion, shift_heads, shift_pixels, stabilise
from fixtalk.train.face_warp import Motion, move_landmarks


@pytest.fixture(scope="module")
def portrait():
    """The astronaut's aligned 128-px crop and its dlib landmarks (as face_crop makes them)."""
    from fixtalk.train.synthetic import aligned_portrait, load_portrait

    big, lm = aligned_portrait(load_portrait("astronaut"), 128, None)  # 256 px, landmarks in 128 px
    return cv2.resize(big, (128, 128), interpolation=cv2.INTER_AREA), lm


def known_track(n: int = 40) -> dict[str, np.ndarray]:
    t = np.linspace(0, 2 * np.pi, n)
    return {"yaw": 12 * np.sin(t), "pitch": 5 * np.sin(2 * t), "roll": 6 * np.cos(t),
            "scale": 1 + 0.04 * np.sin(3 * t), "tx": 0.03 * np.cos(2 * t), "ty": 0.02 * np.sin(t)}


def test_the_fit_reads_a_known_head_motion_back_relative_to_the_clips_median(portrait):
    _, lm = portrait
    track = known_track()
    lms = np.stack([move_landmarks(lm, Motion(**{k: float(v[i]) for k, v in track.items()},
                                              mouth_open=0.3 * (i % 5 == 0)))
                    for i in range(40)])
    lms[7] = np.nan  # a frame where the meter found no face takes its neighbours' motion
    fit = fit_head_motion(lms, smoothing_sigma=0)
    truth = np.stack([track["yaw"], track["pitch"], track["roll"], np.log(track["scale"]),
                      track["tx"], track["ty"]], 1)
    # pitch and scale both stretch the face vertically, so they are read less cleanly
    for j, name in enumerate(("yaw", "pitch", "roll", "log_scale", "tx", "ty")):
        assert np.corrcoef(fit[:, j], truth[:, j])[0, 1] > (0.85 if name in ("pitch", "log_scale") else 0.97), name
    assert np.allclose(np.median(fit, 0), 0, atol=1e-9)  # the portrait keeps its pose on average
    assert abs(fit[:, 2].std() / truth[:, 2].std() - 1) < 0.1  # degrees, not a rescaled track
    wild = lms.copy()
    wild[20] += 200.0  # a fit that lost the face cannot fling the head across the frame
    assert np.abs(fit_head_motion(wild, smoothing_sigma=0)[20, 4:6]).max() <= 0.25
    with pytest.raises(ValueError, match="no face"):
        fit_head_motion(np.full((3, 68, 2), np.nan))


def test_a_driving_frames_head_is_moved_back_by_its_shift_and_keeps_its_turn(portrait):
    from fixtalk.measure.faces import detect_faces
    from fixtalk.train.face_warp import render_frame

    crop, lm = portrait
    big = cv2.resize(crop, (256, 256), interpolation=cv2.INTER_CUBIC)
    moves = [Motion(), Motion(roll=8.0, tx=0.03, ty=-0.02), Motion(roll=-4.0, tx=-0.03)]
    frames = np.stack([render_frame(big, lm, m, 128)[0] for m in moves])
    lms = np.stack([detect_faces(f)[0].landmarks for f in frames])
    head = fit_head_motion(lms, smoothing_sigma=0)
    still = stabilise(frames, lms, head)
    found = np.stack([detect_faces(f)[0].landmarks for f in still])
    nose = found[:, 27:36].mean(1)
    # every head now sits where the clip's median puts it (frame 0 here); the shift is gone ...
    assert np.abs(nose - nose[0]).max() < 1.5
    assert np.abs(lms[1, 27:36].mean(0) - lms[0, 27:36].mean(0)).max() > 3  # ... it was there
    # ... and the tilt is kept (eye-line angle)
    eyes = found[:, 42:48].mean(1) - found[:, 36:42].mean(1)
    angle = np.degrees(np.arctan2(eyes[:, 1], eyes[:, 0]))
    assert 5 < angle[1] - angle[0] < 11 and -7 < angle[2] - angle[0] < -2


def test_the_shift_goes_back_rigidly_inside_the_head_and_the_border_stays(portrait):
    crop, lm = portrait
    params = np.zeros((2, 6))
    params[1, 4:6] = [0.02, -0.01]
    t = shift_pixels(params, lm)[1]
    assert np.allclose(shift_pixels(params[:1], lm), 0) and 1.5 < abs(t[0]) < 6
    out = shift_heads(np.stack([crop, crop]), lm, params)
    assert np.array_equal(out[0], crop)  # no shift, untouched
    centre = lm[27:36].mean(0).round().astype(int)
    y, x = centre[1], centre[0]
    win = (slice(y - 12, y + 12), slice(x - 12, x + 12))
    moved = cv2.warpAffine(crop, np.float32([[1, 0, t[0]], [0, 1, t[1]]]), (128, 128))
    assert np.abs(out[1][win].astype(int) - moved[win].astype(int)).mean() < 2.0  # the face: shifted
    assert np.abs(out[1][win].astype(int) - crop[win].astype(int)).mean() > 4.0
    edge = (slice(0, 2), slice(None))  # the frame's top rows hardly move (the border stays)
    assert np.abs(out[1][edge].astype(int) - crop[edge]).mean() < 0.5 * np.abs(moved[edge].astype(int) - crop[edge]).mean()
