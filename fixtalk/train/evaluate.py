"""Held-out evaluation of a trained model (``make eval-default``).

    python -m fixtalk.train.evaluate --checkpoint PATH --data DATA [--json OUT] [--device cpu]
        [--plain-flow] [--no-pixel-warp] [--no-shift-stitching] [--adapt [--recipe KEY=VALUE ...]]

Frames are rendered as the pipeline renders them by default: relative flow
(``render.relative_flow``), the source-pixel warp (``render.pixel_warp``) and, where frames
drive the pose ((a), (d)), shift stitching (``motion.shift_stitching``); ``--plain-flow``,
``--no-pixel-warp`` and ``--no-shift-stitching`` measure without each. ``--adapt`` first adapts the model to the
held-out portrait as ``adapt.enabled=true`` does (fixtalk.adapt on the first held-out clip's
source frame, cached in DATA/adapted/); ``--recipe`` changes one of its settings
(:class:`fixtalk.config.AdaptConfig`), to compare adaptation recipes.
Uses only the clips of split ``eval`` under DATA (the synthetic set holds out the Grace Hopper
portrait, two sentences, one espeak-ng voice and one LibriVox recording; see synthetic.py). The
source image of a clip is its first frame. Four groups of figures, each line pass/fail:

(a) reconstruction: the source driven by each (sub-sampled) target frame of its clip through the
    model (self-reconstruction), PSNR / SSIM (skimage.metrics) against the target, beside the
    baseline of copying the source; pass when the PSNR gain is >= 3 dB. Reported beside it, to say
    where the loss is: the source *image* warped by the decoder's own finest-level flow, the
    source warped by the landmark warp of the two frames (train.warp_targets: the ceiling a
    warping generator can reach) and the mean distance between the two flows in pixels;
(b) lips follow speech: frames rendered from the clip's audio (Audio2Lip lip weights, the source's
    own pose/expression, as the renderer does), per-frame mouth opening from dlib-68 landmarks (fixtalk.measure.faces.fit_landmarks) of
    the rendered pixels, Pearson correlation with the speech RMS envelope per 40 ms frame (pooled
    over the clips, lag 0; the best lag within +-2 frames is reported too); pass >= 0.5. Silence:
    the same from a near-silent waveform (white noise at -60 dBFS); pass when the mouth hardly
    moves (std <= 0.35 x the std on speech) and does not follow the input (|r| <= 0.3). Lip
    weights go through the renderer's silence gate as the pipeline renders them
    (:class:`fixtalk.config.SilenceGate`); the network's raw output is reported beside it, and
    so is the size of the mouth motion against the clip's own frames (std of the opening about
    each clip's mean, both measured with dlib). The envelope correlation measures loudness-
    following, not lip sync; reported beside it, as lip-sync QC measures a clip
    (:mod:`fixtalk.train.eval_phones`): the mouth against the clip's phones (openness-target
    correlation, bilabial closure) and its motion in the speech's pauses;
(c) identity: dlib's 128-d face embedding of the source vs every measured rendered frame of (a)
    and (b): pass when the largest Euclidean distance is < 0.6 (dlib's same-person threshold);
    the mean cosine similarity is reported;
(d) pose: the source driven by the head pose of each other held-out clip (pose weights only,
    read as the pipeline reads a pose video, with shift stitching; without it reported beside;
    lips and expression the source's; tracks centred per driver and pooled), roll (eye-line angle) and yaw proxy (nose tip vs jaw centre,
    over jaw width) tracks measured with dlib on the drivers and on the renders; pass when both
    correlations are >= 0.5. The driver's measured tracks are also correlated with the known
    synthetic tracks (``meta.tracks``) to show the measurement itself is sound. Reported beside
    it, from single-axis probes (:mod:`fixtalk.train.pose_probe`): how far the jaw ends and the
    nose follow a pure sideways shift (1 = a rigid head), and how a pure turn is followed.
(e) real head motion (:mod:`fixtalk.train.real_motion_eval`): the first clip's source driven,
    pose only, by pose videos of another face that move like real heads (yaw to +-30 degrees,
    fast nods, roll, shift, a talking mouth, jitter), read as the pipeline reads a pose video
    (``motion.pose_track``); pass when the face is found in >= 95 % of the frames, its identity
    (dlib cosine to the source) is within 0.02 of the still render's and its yaw follows the
    driver's (r >= 0.5). The non-rigid shape error, roll and EDTalk's read-out of the same
    drivers (``mode=frames``) are reported beside it.

Exit status 0 when every line passes, 1 otherwise, 2 on bad arguments/data.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, fields, replace
from pathlib import Path

import numpy as np

from fixtalk.config import AdaptConfig, ShiftStitching, SilenceGate
from fixtalk.shift_stitching import shift_heads, stitched_weights
from fixtalk.train.data_format import FPS, SAMPLE_RATE, Clip, list_clips, read_clip
from fixtalk.train.eval_phones import phone_figures
from fixtalk.train.eval_report import make_checks, print_table
from fixtalk.train.face_meter import FaceMeter, head_angles, mouth_track, pearson
from fixtalk.train.pose_probe import probe
from fixtalk.train.real_motion_eval import eval_real_motion
from fixtalk.train.warp_targets import flow_diagnosis

SILENCE_RMS = 1e-3  # -60 dBFS white noise: "silence" with a real (tiny) signal


# ---------------------------------------------------------------------------------- parts
def _render(renderer, state, lip, pose=None, exp=None) -> np.ndarray:
    return np.concatenate(list(renderer.render(state, lip, pose, exp)))


def _drive(renderer, state, source: np.ndarray, driver: np.ndarray, driver_lm: np.ndarray | None,
           stitching: ShiftStitching | None, lip=None, exp: bool = True, same_video: bool = False) -> np.ndarray:
    """The source driven by ``driver`` frames as the pipeline drives it: the pose (and the lips
    and expression, unless ``lip`` is given) read off the driver, with shift stitching when
    ``stitching`` is enabled (``driver_lm``: the driver's landmarks, measured when None;
    ``same_video``: the driver frames come from the source's own clip, motion relative to it)."""
    if stitching is not None and stitching.enabled:
        driver_lm = FaceMeter().landmarks(driver) if driver_lm is None else driver_lm
        source_lm = FaceMeter().landmarks(source[None])[0]
        w, head = stitched_weights(renderer, driver, driver_lm, stitching.smoothing_sigma,
                                   source_lm if same_video else None)
    else:
        w, head = renderer.motion_weights(driver), None
    out = _render(renderer, state, w["lip"] if lip is None else lip, w["pose"], w["exp"] if exp else None)
    return out if head is None else shift_heads(out, source_lm, head)


def eval_reconstruction(renderer, clips: list[Clip], max_frames: int,
                        stitching: ShiftStitching | None = None) -> tuple[dict, list[np.ndarray]]:
    """(a); ``stitching``: drive as the pipeline drives a video (its frames are far apart here, so
    their head motion is not smoothed)."""
    from skimage.metrics import peak_signal_noise_ratio as psnr
    from skimage.metrics import structural_similarity as ssim

    stitching = None if stitching is None else replace(stitching, smoothing_sigma=0.0)

    rows = {"psnr": [], "ssim": [], "psnr_copy": [], "ssim_copy": []}
    renders = []
    for clip in clips:
        n = clip.num_frames
        idx = np.unique(np.linspace(1, n - 1, min(max_frames, n - 1)).round().astype(int))
        source = np.array(clip.frames[0])
        targets = np.array(clip.frames[idx])
        out = _drive(renderer, renderer.source(source), source, targets, None, stitching, same_video=True)
        renders.append(out)
        for t, r in zip(targets, out):
            rows["psnr"].append(psnr(t, r, data_range=255))
            rows["ssim"].append(ssim(t, r, data_range=255, channel_axis=2))
            rows["psnr_copy"].append(psnr(t, source, data_range=255))
            rows["ssim_copy"].append(ssim(t, source, data_range=255, channel_axis=2))
    fig = {k: float(np.mean(v)) for k, v in rows.items()}
    fig["psnr_gain"] = fig["psnr"] - fig["psnr_copy"]
    fig["frames"] = len(rows["psnr"])
    return fig, renders


def _motion_std(tracks: list[np.ndarray]) -> float:
    """Std of the mouth opening around each clip's own mean, pooled: how much the mouth *moves*
    (the sources' different resting mouths are not motion)."""
    return float(np.nanstd(np.concatenate([t - np.nanmean(t) for t in tracks])))


def eval_lipsync(renderer, clips: list[Clip], stride: int, seed: int = 0,
                 gate: SilenceGate | None = SilenceGate()) -> tuple[dict, list[np.ndarray]]:
    """(b); ``gate``: the renderer's silence gate (default: as the pipeline renders; None: off)."""
    from fixtalk.measure.lipsync import audio_envelope, best_lag

    rng = np.random.default_rng(seed)
    speech_m, speech_e, sil_m, sil_e, truth_m, driver_m, labels = [], [], [], [], [], [], []
    measured = []
    meter = FaceMeter()
    for clip in clips:
        state = renderer.source(np.array(clip.frames[0]))
        n = clip.num_frames
        env = audio_envelope(clip.audio, SAMPLE_RATE, FPS, n)
        silence = (rng.standard_normal(len(clip.audio)) * SILENCE_RMS).astype(np.float32)
        env_sil = audio_envelope(silence, SAMPLE_RATE, FPS, n)
        idx = np.arange(0, n, stride)
        for wave, ms, es, e in ((clip.audio, speech_m, speech_e, env), (silence, sil_m, sil_e, env_sil)):
            lip = renderer.lip_weights(wave, silence=gate)[:n][idx]  # smoothed over all frames, rendered where measured
            frames = _render(renderer, state, lip)
            meter.box = None  # the head stays still (source pose): detect on the first frame only
            ms.append(mouth_track(meter.landmarks(frames, detect=False)))
            es.append(e[idx])
            if wave is clip.audio:
                measured.append(frames)
        driver_m.append(mouth_track(FaceMeter().landmarks(np.asarray(clip.frames)[idx], detect=True)))
        tracks = clip.meta.get("tracks", {})
        if "mouth_open" in tracks:
            truth_m.append(np.asarray(tracks["mouth_open"], float)[idx])
        labels.append([clip.meta.get("visemes", ["sil"] * n)[i] for i in idx])
    sm, se, qm, qe = (np.concatenate(x) for x in (speech_m, speech_e, sil_m, sil_e))
    r_best, lag = best_lag(np.concatenate(speech_m), se, max_lag=2)
    fig = {
        "corr_speech": pearson(sm, se),
        "corr_speech_best": r_best, "best_lag_frames": lag,
        "corr_speech_per_clip": [pearson(m, e) for m, e in zip(speech_m, speech_e)],
        "corr_silence": pearson(qm, qe),
        "mouth_std_speech": _motion_std(speech_m), "mouth_std_silence": _motion_std(sil_m),
        "mouth_mean_speech": float(np.nanmean(sm)), "mouth_mean_silence": float(np.nanmean(qm)),
        "face_found": meter.detected / max(1, len(clips) * 2),
        "frames": int(len(sm)),
    }
    fig["std_ratio_silence"] = fig["mouth_std_silence"] / max(fig["mouth_std_speech"], 1e-9)
    fig["mouth_std_driver"] = _motion_std(driver_m)  # the clip's own frames: how much a mouth moves
    fig["amplitude_ratio"] = fig["mouth_std_speech"] / max(fig["mouth_std_driver"], 1e-9)
    if truth_m:  # the ceiling: the training targets' own mouth track against the envelope
        fig["corr_ground_truth_track"] = pearson(np.concatenate(truth_m), se)
    # as lip-sync QC measures a clip: against the phones, and in the speech's pauses
    fig["phones"] = phone_figures(speech_m, labels, [c.audio for c in clips], FPS / stride)
    return fig, measured


def eval_identity(sources: list[np.ndarray], renders: list[np.ndarray], per_clip: int) -> dict:
    from fixtalk.measure.identity import cosine

    meter = FaceMeter()
    dists, cos = [], []
    missing = 0
    for src, frames in zip(sources, renders):
        ref = meter.embedding(src)
        if ref is None:
            raise ValueError("no face found in a held-out source frame; is the data set an aligned-crop set?")
        pick = frames[np.unique(np.linspace(0, len(frames) - 1, min(per_clip, len(frames))).round().astype(int))]
        for f in pick:
            e = meter.embedding(f)
            if e is None:
                missing += 1
                continue
            dists.append(float(np.linalg.norm(e - ref)))
            cos.append(cosine(e, ref))
    return {"max_distance": float(np.max(dists)), "mean_distance": float(np.mean(dists)),
            "mean_cosine": float(np.mean(cos)), "min_cosine": float(np.min(cos)),
            "frames": len(dists), "no_face": missing}


def eval_pose(renderer, clips: list[Clip], stride: int, stitching: ShiftStitching | None = None) -> dict:
    """(d): the first clip's source driven by the head pose of every other held-out clip in turn;
    angle tracks are centred per driver and pooled (so no driver's mean pose counts as motion).
    ``stitching``: read the driver as the pipeline reads a pose video (smoothing per measured frame)."""
    source = np.array(clips[0].frames[0])
    state = renderer.source(source)
    if stitching is not None:
        stitching = replace(stitching, smoothing_sigma=stitching.smoothing_sigma / stride)
    drivers = clips[1:] or clips[:1]
    a_drv, a_out, a_true = {}, {}, {}
    for drv_clip in drivers:
        idx = np.arange(0, drv_clip.num_frames, stride)
        driver = np.array(drv_clip.frames[idx])
        driver_lm = FaceMeter().landmarks(driver)
        out = _drive(renderer, state, source, driver, driver_lm, stitching,
                     lip=state.alpha_lip.expand(len(driver), -1), exp=False)
        tracks = drv_clip.meta.get("tracks", {})
        for acc, angles in ((a_drv, head_angles(driver_lm)),
                            (a_out, head_angles(FaceMeter().landmarks(out))),
                            (a_true, {k: np.asarray(tracks[k], float)[idx] for k in ("roll", "yaw") if k in tracks})):
            for k, v in angles.items():
                acc.setdefault(k, []).append(v - np.nanmean(v))
    fig: dict = {}
    for k in ("roll", "yaw"):
        drv, out = np.concatenate(a_drv[k]), np.concatenate(a_out[k])
        fig[f"corr_{k}"] = pearson(drv, out)
        fig[f"corr_{k}_per_driver"] = [pearson(d, o) for d, o in zip(a_drv[k], a_out[k])]
        fig[f"std_{k}_driver"], fig[f"std_{k}_render"] = float(np.nanstd(drv)), float(np.nanstd(out))
        if len(a_true.get(k, [])) == len(drivers):  # soundness of the measurement on the drivers
            fig[f"measure_check_{k}"] = pearson(drv, np.concatenate(a_true[k]))
    fig["frames"] = int(sum(len(v) for v in a_drv["roll"]))
    fig["driver_clips"] = [c.path.name for c in drivers]
    return fig


# ---------------------------------------------------------------------------------- driver
def evaluate(checkpoint: str | None, data: str | Path, device: str = "cpu", max_clips: int = 5,
             recon_frames: int = 16, stride: int = 2, log=print, relative_flow: bool = True,
             adapt: bool = False, pixel_warp: bool = True, recipe: AdaptConfig | None = None,
             shift_stitching: bool = True, real_motion_frames: int = 100) -> dict:
    """Run (a)-(d) on the held-out clips; returns {"figures", "checks", "passed", ...}.
    ``relative_flow``: render as the pipeline does by default (``render.relative_flow``).
    ``adapt``: first adapt the model to the held-out portrait (:func:`adapted_for_eval`), as the
    pipeline does with ``adapt.enabled=true``; ``pixel_warp``: the source-pixel warp
    (``render.pixel_warp``); ``recipe``: the adaptation's settings (default ``AdaptConfig()``);
    ``shift_stitching``: (a) and (d) driven as the pipeline drives a pose video
    (``motion.shift_stitching``); (d) without it is reported beside it; ``real_motion_frames``:
    frames of each real-motion driver of (e) (0: skip (e))."""
    import torch

    from fixtalk.checkpoints import load_model
    from fixtalk.config import PixelWarp
    from fixtalk.inference import ClipRenderer

    paths = list_clips(data, split="eval")[:max_clips]
    if not paths:
        raise ValueError(f"no held-out clips (meta.json split 'eval') under {data}; build them with "
                         "`fixtalk data synthetic OUT --eval-clips 5`")
    clips = [read_clip(p) for p in paths]
    model = load_model(checkpoint, device=device)
    adapted = adapted_for_eval(model, checkpoint, clips[0], Path(data), log, recipe) if adapt else None
    if adapted is not None:
        model = load_model(adapted, device=device)
    if clips[0].frames.shape[1] != model.cfg.size:
        raise ValueError(f"held-out frames are {clips[0].frames.shape[1]} px but the model renders "
                         f"{model.cfg.size} px; build the data at --size {model.cfg.size}")
    torch.manual_seed(0)
    renderer = ClipRenderer(model, device=device, batch_size=16, relative_flow=relative_flow,
                            pixel_warp=PixelWarp(enabled=pixel_warp))
    t0 = time.monotonic()
    figs: dict[str, dict] = {}
    log(f"[eval] {len(clips)} held-out clips ({', '.join(sorted({c.meta.get('identity', '?') for c in clips}))})")
    stitching = ShiftStitching(enabled=shift_stitching)
    figs["reconstruction"], recon = eval_reconstruction(renderer, clips, recon_frames, stitching)
    figs["reconstruction"].update(flow_diagnosis(renderer, clips, recon_frames))
    log(f"[eval] (a) done in {time.monotonic() - t0:.0f} s")
    figs["lipsync"], speech = eval_lipsync(renderer, clips, stride)
    figs["lipsync_raw"], _ = eval_lipsync(renderer, clips, stride, gate=None)
    log(f"[eval] (b) done in {time.monotonic() - t0:.0f} s")
    sources = [np.array(c.frames[0]) for c in clips]
    figs["identity"] = eval_identity(sources + sources, recon + speech, per_clip=8)
    log(f"[eval] (c) done in {time.monotonic() - t0:.0f} s")
    figs["pose"] = eval_pose(renderer, clips, stride, stitching)
    if shift_stitching:
        figs["pose_unstitched"] = eval_pose(renderer, clips, stride, None)
    figs["pose"]["shift_follow"] = probe(renderer, clips[0], "tx")
    figs["pose"]["yaw_probe"] = probe(renderer, clips[0], "yaw")
    log(f"[eval] (d) done in {time.monotonic() - t0:.0f} s")
    if real_motion_frames > 0:
        figs["real_motion"] = eval_real_motion(renderer, clips[0], real_motion_frames, stride=stride,
                                               stitching=stitching)
        log(f"[eval] (e) done in {time.monotonic() - t0:.0f} s")
    checks = make_checks(figs)
    return {"checkpoint": str(checkpoint or "default"), "data": str(data), "relative_flow": relative_flow,
            "shift_stitching": shift_stitching,
            "adapted": str(adapted) if adapted else None, "pixel_warp": pixel_warp,
            "clips": [p.name for p in paths], "seconds": round(time.monotonic() - t0, 1),
            "figures": figs, "checks": [asdict(c) for c in checks],
            "passed": all(c.passed is not False for c in checks)}


def adapted_for_eval(model, checkpoint: str | None, clip: Clip, data: Path, log=print,
                     recipe: AdaptConfig | None = None) -> Path:
    """The model adapted (``recipe``, default ``AdaptConfig()``) to the first held-out clip's
    source frame, the portrait the renderer gets, cached under ``DATA/adapted/``; every held-out
    clip is one photograph of the same person, so one adaptation serves all of them."""
    from fixtalk.adapt import adapt_cached, recipe_key
    from fixtalk.checkpoints import checkpoint_id

    cfg, base_id = recipe or AdaptConfig(), checkpoint_id(checkpoint)
    out = data / "adapted" / f"{clip.path.name}-{base_id}-{recipe_key(cfg)}.pt"
    return adapt_cached(model, np.array(clip.frames[0]), np.array(clip.landmarks[0]), cfg, out, base_id,
                        portrait=f"{clip.path.name} frame 0", log=log)


def parse_recipe(items: list[str]) -> AdaptConfig:
    """``AdaptConfig`` with ``KEY=VALUE`` overrides (each value read as its field's type)."""
    cfg, known = AdaptConfig(), {f.name for f in fields(AdaptConfig)}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or key not in known:
            raise ValueError(f"--recipe {item!r}: expected KEY=VALUE with KEY one of {', '.join(sorted(known))}")
        kind = type(getattr(cfg, key))
        parsed = value.lower() in ("1", "true", "yes", "on") if kind is bool else kind(value)
        cfg = replace(cfg, **{key: parsed})
    return cfg


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="fixtalk eval", description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoint", help="model checkpoint (default: fixtalk/weights/default.pt)")
    ap.add_argument("--data", required=True, help="data folder with held-out clips (split 'eval')")
    ap.add_argument("--json", help="also write the report as JSON here")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--max-clips", type=int, default=5)
    ap.add_argument("--recon-frames", type=int, default=16, help="target frames per clip for (a)")
    ap.add_argument("--stride", type=int, default=2, help="measure every N-th frame in (b) and (d)")
    ap.add_argument("--plain-flow", action="store_true",
                    help="render without relative flow (render.relative_flow=false; EDTalk's decoder)")
    ap.add_argument("--no-pixel-warp", action="store_true",
                    help="the generator's frames alone (render.pixel_warp.enabled=false)")
    ap.add_argument("--no-shift-stitching", action="store_true",
                    help="drive (a) and (d) with the frames as they are (motion.shift_stitching.enabled=false)")
    ap.add_argument("--real-motion-frames", type=int, default=100,
                    help="frames of each real-head-motion driver in (e) (0: skip (e))")
    ap.add_argument("--adapt", action="store_true",
                    help="adapt the model to the held-out portrait first (adapt.enabled=true)")
    ap.add_argument("--recipe", action="append", default=[], metavar="KEY=VALUE",
                    help="an adaptation setting (fixtalk.config.AdaptConfig), e.g. --recipe steps=1200")
    args = ap.parse_args(argv)
    try:
        recipe = parse_recipe(args.recipe)
        report = evaluate(args.checkpoint, args.data, args.device, args.max_clips, args.recon_frames,
                          args.stride, log=lambda s: print(s, file=sys.stderr),
                          relative_flow=not args.plain_flow, adapt=args.adapt,
                          pixel_warp=not args.no_pixel_warp, recipe=recipe,
                          shift_stitching=not args.no_shift_stitching,
                          real_motion_frames=args.real_motion_frames)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print_table(report)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1, default=float))
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
