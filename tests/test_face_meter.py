"""The evaluation's face meter on synthetic clips of a face it was not tuned on, whose motion is
known exactly: Grace Hopper (matplotlib's sample photograph, US Navy, public domain) at the
model's 128-px crop, where dlib's detector boxes jump between size steps."""
from __future__ import annotations

import numpy as np
import pytest

from fixtalk.config import AdaptConfig


@pytest.fixture(scope="module")
def hopper_clips(tmp_path_factory):
    import matplotlib.cbook
    from PIL import Image

    from fixtalk.adapt import portrait_clips
    from fixtalk.train.data_format import read_clip
    from fixtalk.train.synthetic import aligned_portrait

    photo = np.asarray(Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)).convert("RGB"))
    crop, lm = aligned_portrait(photo, 128, None, oversample=1)
    paths = portrait_clips(crop, lm, tmp_path_factory.mktemp("hopper"), AdaptConfig(clips=3, clip_seconds=3.0, seed=4))
    return [read_clip(p) for p in paths]


def test_face_meter_follows_the_known_mouth_and_head_tracks(hopper_clips):
    from fixtalk.train.face_meter import FaceMeter, head_angles, mouth_track, pearson

    measured: dict[str, list] = {"mouth": [], "yaw": [], "roll": []}
    known: dict[str, list] = {"mouth": [], "yaw": [], "roll": []}
    for clip in hopper_clips:
        lms = FaceMeter().landmarks(np.asarray(clip.frames), detect=True)
        assert np.isfinite(lms).all()
        angles = head_angles(lms)
        tracks = clip.meta["tracks"]
        for key, got, want in (("mouth", mouth_track(lms), tracks["mouth_open"]),
                               ("yaw", angles["yaw"], tracks["yaw"]), ("roll", angles["roll"], tracks["roll"])):
            measured[key].append(got - got.mean())
            known[key].append(np.asarray(want, float) - np.mean(want))
    for key in measured:
        r = pearson(np.concatenate(measured[key]), np.concatenate(known[key]))
        assert r > 0.9, (key, r)
