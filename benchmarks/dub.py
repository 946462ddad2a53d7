"""Dubbing speed: the network's dub path against its portrait path, per preset, and a whole dub
row against a portrait row through ``fixtalk run`` with the default model.

    python benchmarks/dub.py [--presets tiny,edtalk-256] [--frames 8] [--seconds 4]

* network (plausible random weights, relative flow and the pixel warp as the pipeline renders):
  portrait path = source encoded once, T frames driven in batches
  (:meth:`ClipRenderer.render_float`); dub path = every frame its own source
  (:meth:`ClipRenderer.dub`: encoder, self-flow, the driven render and the rest render per frame);
* pipeline (default model, ``adapt.enabled=false``, align and QC off, local engine): a 256x256,
  25 fps footage of the Grace Hopper portrait (fixtalk.train.talking_footage) dubbed with
  ``--seconds`` of LibriVox speech, and the same speech rendered from the portrait: seconds of the
  face_crop stage (the footage's face tracking) and of the render stage, frames/s of the render.

The last line is one JSON object with every figure.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the project, not benchmarks/pipeline.py

from benchmarks.render import machine, smooth_image  # noqa: E402
from fixtalk.config import PixelWarp  # noqa: E402
from fixtalk.inference import ClipRenderer  # noqa: E402
from fixtalk.model import FixTalk, plausible_random_init_  # noqa: E402
from fixtalk.presets import get_preset  # noqa: E402

LIBRIVOX = Path("/usr/share/pocketsphinx/test/data/librivox/sense_and_sensibility_01_austen_64kb-0870.wav")
TEXT = ("and mister john dashwood had then leisure to consider how much there might be prudently "
        "in his power to do for them")


def network(preset: str, frames: int) -> dict:
    """frames/s of the portrait path and the dub path for ``preset``."""
    torch.manual_seed(0)
    model = FixTalk(get_preset(preset)).eval()
    plausible_random_init_(model, seed=0)
    r = ClipRenderer(model, batch_size=frames, relative_flow=True, pixel_warp=PixelWarp())
    size, cfg = model.cfg.size, model.cfg
    g = torch.Generator().manual_seed(1)
    lip = torch.randn(frames, cfg.lip_dim, generator=g) * 0.5
    pose = torch.randn(frames, cfg.pose_dim, generator=g) * 0.5
    crops = np.stack([smooth_image(size, k) for k in range(frames)])
    state = r.source(crops[0])
    list(r.render_float(state, lip[:1], pose[:1]))  # warm-up
    t0 = time.perf_counter()
    list(r.render_float(state, lip, pose))
    portrait = frames / (time.perf_counter() - t0)
    r.dub(crops[:1], lip[:1])
    t0 = time.perf_counter()
    r.dub(crops, lip)
    dub = frames / (time.perf_counter() - t0)
    return {"portrait_fps": round(portrait, 2), "dub_fps": round(dub, 2), "dub_cost": round(portrait / dub, 2)}


def pipeline(seconds: float) -> dict:
    """Stage seconds of one dub row and one portrait row (see the module docstring)."""
    import matplotlib.cbook as cbook
    import pandas as pd
    import soundfile as sf
    from PIL import Image

    from fixtalk.train.speech import resample
    from fixtalk.train.talking_footage import talking_frames, write_footage
    from pipeline.cli import main as cli

    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        portrait = cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
        wave, sr = sf.read(LIBRIVOX, dtype="float32")
        wave = resample(wave, sr)
        frames, _ = talking_frames(np.asarray(Image.open(portrait).convert("RGB")), wave, TEXT, size=256)
        write_footage(frames, 25, d / "footage.mp4", wave)
        sf.write(d / "speech.wav", wave[: int(seconds * 16000)], 16000)
        pd.DataFrame([{"clip_id": "dub", "source_video": "footage.mp4", "audio": "speech.wav"},
                      {"clip_id": "still", "portrait": str(portrait), "audio": "speech.wav"}]
                     ).to_csv(d / "m.csv", index=False)
        cli(["run", str(d / "m.csv"), "--out", str(d / "out"), "--set", "adapt.enabled=false",
             "--set", "align.enabled=false", "--set", "qc.enabled=false", "--set", "run.engine=local",
             "--set", "provenance.enabled=false"])
        res = pd.read_parquet(d / "out" / "results.parquet").set_index("clip_id")
    out = {}
    for name in ("dub", "still"):
        row = res.loc[name]
        out[name] = {"frames": int(row.frames), "t_face_crop": round(float(row.t_face_crop), 2),
                     "t_render": round(float(row.t_render), 2),
                     "render_fps": round(float(row.frames) / float(row.t_render), 2)}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--presets", default="tiny,edtalk-256")
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=4.0)
    args = ap.parse_args(argv)
    print(f"machine: {machine()}, torch threads {torch.get_num_threads()}")
    figures: dict = {"network": {}}
    for preset in args.presets.split(","):
        figures["network"][preset] = network(preset, args.frames)
        print(f"{preset}: portrait path {figures['network'][preset]['portrait_fps']} frames/s, "
              f"dub path {figures['network'][preset]['dub_fps']} frames/s "
              f"({figures['network'][preset]['dub_cost']}x the cost per frame)")
    figures["pipeline"] = pipeline(args.seconds)
    for name, f in figures["pipeline"].items():
        print(f"pipeline {name}: {f['frames']} frames, face_crop {f['t_face_crop']} s, "
              f"render {f['t_render']} s ({f['render_fps']} frames/s)")
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
