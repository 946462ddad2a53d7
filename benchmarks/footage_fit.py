"""What fitting the model to a presenter's footage buys, on frames of that footage held out from
the fitting, against no fitting and against the adaptation of a still of the presenter.

    .venv/bin/python benchmarks/footage_fit.py [--steps 150] [--lip-steps 0] [--still-steps 300] [--out runs/footage_fit]

Footage: the Grace Hopper portrait speaking two LibriVox sentences (12 s, 25 fps, 256 px;
fixtalk.train.talking_footage). Its last quarter is held out. Each model renders every held-out
frame from the footage's reference frame (the most frontal, least open frame of the fitted part)
with the held-out frame's own motion, read by the encoder (self-reconstruction, as EDTalk and the
FixTalk paper evaluate), and with its lips from the footage's own speech through Audio2Lip (the
dub's case). Reported: PSNR / SSIM of the reconstruction, identity distance (dlib 128-d) to the
true frame, and the mouth: the std of the mouth opening of the audio-driven renders against the
true frames' and their correlation. Times are wall-clock minutes on this machine.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the project, not benchmarks/pipeline.py
LIBRIVOX = Path("/usr/share/pocketsphinx/test/data/librivox")
SENTENCES = (("0870", "and mister john dashwood had then leisure to consider how much there might be "
                      "prudently in his power to do for them"),
             ("0920", "had he married a more a amiable woman he might have been made still more "
                      "respectable than he was"))


def make_footage(out: Path) -> Path:
    import matplotlib.cbook as cbook
    from PIL import Image

    from fixtalk.train.speech import resample
    from fixtalk.train.talking_footage import talking_frames, write_footage

    path = out / "presenter.mp4"
    if path.is_file():
        return path
    picture = np.asarray(Image.open(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)).convert("RGB"))
    frames, waves = [], []
    for k, (name, text) in enumerate(SENTENCES):
        wave, sr = sf.read(LIBRIVOX / f"sense_and_sensibility_01_austen_64kb-{name}.wav", dtype="float32")
        wave = resample(wave, sr)
        part, _ = talking_frames(picture, wave, text, size=256, fps=25, seed=11 + k)
        frames.append(part)
        waves.append(wave[: len(part) * 640])
    return write_footage(np.concatenate(frames), 25, path, np.concatenate(waves))


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    from skimage.metrics import structural_similarity

    return float(structural_similarity(a, b, channel_axis=2, data_range=255))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 10 * np.log10(255.0 ** 2 / max(mse, 1e-9))


def evaluate(runtime, reference: np.ndarray, frames: np.ndarray, wave: np.ndarray) -> dict:
    """Reconstruction, identity and mouth figures of the loaded weights on held-out ``frames``."""
    from fixtalk.measure.faces import detect_faces, face_embedding, fit_landmarks, mouth_opening

    r = runtime.renderer
    state = r.source(reference)
    motion = r.motion_weights(frames)
    recon = np.concatenate(list(r.render(state, motion["lip"], motion["pose"], motion["exp"])))
    lips = r.lip_weights(wave)[: len(frames)]
    spoken = np.concatenate(list(r.render(state, lips, motion["pose"], motion["exp"])))
    out = {"psnr": np.mean([psnr(a, b) for a, b in zip(recon, frames)]),
           "ssim": np.mean([ssim(a, b) for a, b in zip(recon, frames)])}
    dists, m_true, m_spoken = [], [], []
    for k, (true, fake, said) in enumerate(zip(frames, recon, spoken)):
        big = [np.repeat(np.repeat(x, 2, 0), 2, 1) for x in (true, fake, said)]
        found = detect_faces(big[0], 1)
        if not found:
            continue
        box = found[0].box
        if k % 3 == 0:
            fake_faces = detect_faces(big[1], 1)
            if fake_faces:
                dists.append(np.linalg.norm(face_embedding(big[0], found[0]) - face_embedding(big[1], fake_faces[0])))
        m_true.append(mouth_opening(fit_landmarks(big[0], box, jitter=False)))
        m_spoken.append(mouth_opening(fit_landmarks(big[2], box, jitter=False)))
    m_true, m_spoken = np.array(m_true), np.array(m_spoken)
    out["identity_dist"] = float(np.mean(dists)) if dists else float("nan")
    out["mouth_std_ratio"] = float(m_spoken.std() / max(m_true.std(), 1e-6))
    out["mouth_corr"] = float(np.corrcoef(m_spoken, m_true)[0, 1])
    return {k: round(float(v), 4) for k, v in out.items()}


def main(argv: list[str] | None = None) -> int:
    from fixtalk.adapt import adapt_cached, recipe_key
    from fixtalk.footage_fit import fit_footage
    from pipeline.config import load_config
    from stages.face.alignment import transform_points, warp_to_crop
    from stages.face.track import FaceTracker
    from stages.face_crop import make_finder
    from stages.media.av import decode_audio, video_to_frames
    from stages.media.footage import cached_track
    from stages.rendering.presenter_fit import footage_segments
    from stages.rendering.runtime import load_runtime

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--lip-steps", type=int, default=0)
    ap.add_argument("--still-steps", type=int, default=300)
    ap.add_argument("--holdout", type=float, default=0.25)
    ap.add_argument("--out", default="runs/footage_fit")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="a further config override, e.g. adapt.footage.lr_schedule=cosine")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = load_config(None, [f"adapt.footage.steps={args.steps}", f"adapt.footage.lip_steps={args.lip_steps}",
                             f"adapt.footage.holdout={args.holdout}", f"adapt.recipe.steps={args.still_steps}",
                             *args.overrides])
    runtime = load_runtime(cfg)
    footage = make_footage(out)
    tracker = FaceTracker(make_finder(cfg.face_crop), cfg.dub.track, runtime.size, cfg.face_crop.crop_scale,
                          cfg.face_crop.center_shift)
    _, track, ref = cached_track(footage, "presenter_video", "25/1", out, tracker, cfg.dub.track)
    first_held = int(len(track) * (1 - args.holdout))
    ref = int(np.argmin([abs(i - ref) if i < first_held else 10 ** 9 for i in range(len(track))]))
    frames = video_to_frames(footage, None)
    crops = np.stack([warp_to_crop(f, track.matrices[i], runtime.size) if track.usable[i] else
                      np.zeros((runtime.size,) * 2 + (3,), np.uint8) for i, f in enumerate(frames)])
    held = [i for i in range(first_held, len(track)) if track.usable[i]]
    wave = decode_audio(footage, 16000)
    held_wave = wave[held[0] * 640:(held[-1] + 1) * 640]
    reference = crops[ref]
    results, times = {}, {}
    runtime.weights.use(None)
    results["checkpoint (no fitting)"] = evaluate(runtime, reference, crops[held], held_wave)

    t0 = time.monotonic()
    landmarks = transform_points(track.matrices[ref], track.landmarks[ref])
    still = adapt_cached(runtime.model, reference, landmarks, cfg.adapt.recipe,
                         out / f"still-{recipe_key(cfg.adapt.recipe)}.pt", runtime.checkpoint_id, log=print)
    times["still adaptation"] = (time.monotonic() - t0) / 60
    runtime.weights.use(str(still))
    results[f"still adaptation ({args.still_steps} steps)"] = evaluate(runtime, reference, crops[held], held_wave)

    t0 = time.monotonic()
    runtime.weights.use(None)
    fitted = out / f"footage-{recipe_key(cfg.adapt.footage)}.pt"
    if not fitted.is_file():
        segments = footage_segments(footage, "25/1", track, True, args.holdout, 1500, "presenter_video")
        fit_footage(runtime.model, segments, cfg.adapt.footage, fitted.with_suffix(".work"), fitted,
                    runtime.checkpoint_id, footage=str(footage), log=print)
    times["footage fit"] = (time.monotonic() - t0) / 60
    runtime.weights.use(str(fitted))
    results[f"footage fit ({args.steps} + {args.lip_steps} steps)"] = evaluate(runtime, reference, crops[held], held_wave)

    print(f"held-out frames: {len(held)} of {len(track)}; reference frame {ref}")
    print("| model | PSNR dB | SSIM | identity dist | mouth std ratio | mouth corr |")
    print("|---|---|---|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {r['psnr']:.2f} | {r['ssim']:.3f} | {r['identity_dist']:.3f} | "
              f"{r['mouth_std_ratio']:.2f} | {r['mouth_corr']:.2f} |")
    print("minutes:", {k: round(v, 1) for k, v in times.items()})
    (out / "results.json").write_text(json.dumps({"results": results, "minutes": times}, indent=1))
    return 0


if __name__ == "__main__":
    torch.set_num_threads(max(1, torch.get_num_threads()))
    raise SystemExit(main())
