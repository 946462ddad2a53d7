"""QC stage: identity, face presence, lip sync and delivery checks of each finished clip.

For one rendered clip ``OUT/clips/<clip_id>.mp4`` this stage

* embeds the source portrait's face and the face in every ``qc.sample_every``-th output frame and
  reports CSIM (cosine similarity) mean / min / 10th percentile / slope per second (drift), with
  the embedder's name (:mod:`fixtalk.measure.identity`);
* counts faces in the sampled frames (``face_presence`` = share with exactly one face);
* measures the face where the face crop found it: with ``render.output: full`` every frame and
  the portrait are cut to an upright ``qc.view_size`` view around the face crop
  (:func:`stages.face.alignment.face_view`), so a small face in a large picture, an off-centre face
  or a rolled / sideways / upside-down portrait reads as an upright face of a size the detector
  finds (dlib's detector wants upright faces of about 80 px or more);
* tracks the mouth opening on every frame (landmarks in the last detected box between sampled
  frames) and measures it against the clip's own audio track and, when the align stage timed
  the script's phones, against those (:mod:`fixtalk.measure.lip_sync`); runs SyncNet when
  ``qc.syncnet_weights`` is given (:mod:`stages.checks.syncnet`);
* probes the delivery format and loudness (:mod:`stages.media.delivery`);
* judges the align stage's script check (``script_mismatch``, ``script_wer``) with the rest;
* turns the thresholds into ``qc_status`` / ``qc_reasons`` (:mod:`stages.checks.rules`), writes the
  per-frame curves to ``OUT/qc/<clip_id>.json`` and, for flagged clips, an identity-curve PNG.
"""
from __future__ import annotations

import json
import math
import os
from fractions import Fraction
from pathlib import Path
from typing import Any, Iterator

import cv2
import numpy as np

from fixtalk.measure.faces import box_from_landmarks, detect_faces, fit_landmarks, mouth_opening
from fixtalk.measure.identity import Embedder, cosine, csim_stats
from fixtalk.measure.lip_sync import measure_lip_sync
from fixtalk.measure.phone_sync import Phone, read_phones
from stages.base import ClipError, Stage
from stages.checks.dub_qc import dub_metrics
from stages.checks.embedder import make_embedder
from stages.checks.rules import csim_limits, judge
from stages.config import PipelineConfig
from stages.face.alignment import face_view, warp_to_crop
from stages.face_crop import load_transform
from stages.ingest import portrait_source
from stages.media.av import decode_audio, first_stream, iter_video_frames, probe
from stages.media.delivery import audio_file_duration, delivery_metrics
from stages.media.images import read_rgb
from stages.transcript.script_text import wer_trusted

#: Columns of the align stage that QC judges (the script check of :mod:`stages.checks.rules`).
SCRIPT_COLUMNS = ("script_mismatch", "script_wer", "script_aligned_share", "subtitle_timing")


class QCStage(Stage):
    """Per-clip QC metrics, ``qc_status`` and ``qc_reasons`` (see the module docstring)."""

    name = "qc"

    def __init__(self, config: PipelineConfig):
        self.config = config
        self.cfg = config.qc
        if self.cfg.sample_every < 1:
            raise ValueError(f"qc.sample_every must be >= 1, got {self.cfg.sample_every}")
        self.embedder: Embedder = make_embedder(self.cfg.embedder, self.cfg.onnx_model)
        self._references: dict[tuple, np.ndarray | None] = {}  # presenters recur across rows
        self.syncnet = None
        if self.cfg.syncnet_weights:
            from stages.checks.syncnet import load_syncnet

            self.syncnet = load_syncnet(self.cfg.syncnet_weights, self.cfg.syncnet_device)

    # ------------------------------------------------------------------ stage entry point
    def process_row(self, row: dict[str, Any]) -> dict[str, Any]:
        if not self.cfg.enabled:
            return {"qc_status": "skipped", "qc_reasons": ""}
        clip = row.get("output_path")
        if not clip or not Path(str(clip)).is_file():
            raise ClipError(f"the rendered clip {clip!r} does not exist; re-run the render and "
                            "mux stages for this row", field="output_path")
        clip = Path(str(clip))
        clip_id = str(row.get("clip_id"))
        out_dir = Path(str(row.get("out_dir") or clip.parent.parent))
        qc_dir = out_dir / "qc"
        qc_dir.mkdir(parents=True, exist_ok=True)

        metrics = delivery_metrics(clip)
        expected = self._expected_duration(row, metrics)
        metrics["duration_expected_s"] = expected
        metrics["duration_diff_s"] = (metrics["duration_video_s"] - expected
                                      if math.isfinite(expected) else math.nan)
        fps = metrics["fps_out"] if math.isfinite(metrics["fps_out"]) and metrics["fps_out"] > 0 \
            else float(row.get("fps") or self.config.ingest.fps)

        view = self._face_view(row)
        reference = self._reference_embedding(row, view)
        track = self._analyse_frames(clip, reference, fps, view) if metrics["vcodec"] else _empty_track()
        metrics.update(self._identity_metrics(track, fps))
        samples = self._speech(clip, row, metrics)
        curves = self._sync_metrics(track, samples, fps, metrics, row)

        expected_fps = float(self.config.ingest.fps)
        if row.get("dub_frames") and Path(str(row["dub_frames"])).is_file():
            metrics.update(dub_metrics(row, clip, qc_dir, float(self.config.dub.feather), samples))
            expected_fps = float(Fraction(str(row["source_rate"])))
        lufs_target = self.cfg.lufs_target if self.cfg.lufs_target is not None \
            else self.config.mux.loudness_lufs
        script = {k: row.get(k) for k in SCRIPT_COLUMNS}
        trusted = wer_trusted(row.get("align_backend"), self.config.align.pocketsphinx_wer_in_flag)
        status, reasons = judge({**metrics, **script}, self.cfg,
                                fps=expected_fps, lufs_target=lufs_target, wer_trusted=trusted)
        metrics["qc_status"], metrics["qc_reasons"] = status, reasons
        curves_path = qc_dir / f"{clip_id}.json"
        _write_json(curves_path, {"clip_id": clip_id, "fps": fps,
                                  "embedder": self.embedder.name,
                                  "sample_every": self.cfg.sample_every, **curves,
                                  "metrics": _jsonable(metrics)})
        metrics["qc_json"] = str(curves_path)
        metrics["qc_plot"] = None
        if status != "pass" and self.cfg.identity_plot and track["frame"]:
            plot = qc_dir / f"{clip_id}_identity.png"
            warn, fail, _ = csim_limits(self.cfg, self.embedder.name)
            plot_identity(plot, np.array(track["frame"]) / fps, np.array(track["csim"]),
                          title=f"{clip_id} ({self.embedder.name}, qc {status})",
                          warn=warn, fail=fail)
            metrics["qc_plot"] = str(plot)
        return metrics

    # ------------------------------------------------------------------ pieces
    def _expected_duration(self, row: dict[str, Any], metrics: dict[str, Any]) -> float:
        wav = row.get("audio_wav")
        if wav and Path(str(wav)).is_file():
            return audio_file_duration(wav)
        return metrics["duration_audio_s"]

    def _face_view(self, row: dict[str, Any]) -> np.ndarray | None:
        """Full-picture frames -> the upright view of the face (None for crop output, or when the
        row has no face transform)."""
        path = row.get("face_transform")
        if self.config.render.output == "crop" or not path or not Path(str(path)).is_file():
            return None
        if row.get("footage_track"):  # a dub's face moves through the frame: measure the whole frame
            return None
        matrix, crop_size, _ = load_transform(path)
        return face_view(matrix, crop_size, int(self.cfg.view_size), float(self.cfg.view_context))

    def _reference_embedding(self, row: dict[str, Any], view: np.ndarray | None = None
                             ) -> np.ndarray | None:
        """The source face's embedding (portrait, else the aligned crop), cached per file."""
        key = tuple((str(p), os.stat(p).st_mtime_ns, os.stat(p).st_size) if p and os.path.isfile(p)
                    else None for p in (row.get("portrait"), row.get("face_crop")))
        key += (None if view is None else tuple(np.round(view, 6).ravel()),)
        if key not in self._references:
            if len(self._references) > 256:
                self._references.clear()
            self._references[key] = self._embed_source(row, view)
        return self._references[key]

    def _embed_source(self, row: dict[str, Any], view: np.ndarray | None = None) -> np.ndarray | None:
        """The first face found in: with a ``view``, the portrait as the render reads it
        (:func:`stages.ingest.portrait_source`) cut to that view; the whole portrait; the
        aligned crop."""
        for image in self._source_images(row, view):
            faces = detect_faces(image, upsample=1 if max(image.shape[:2]) < 800 else 0)
            if faces:
                return self.embedder.embed(image, faces[0])
        return None

    def _source_images(self, row: dict[str, Any], view: np.ndarray | None) -> Iterator[np.ndarray]:
        if view is not None and Path(portrait_source(row)).is_file():
            image = read_rgb(portrait_source(row), max_side=int(self.config.ingest.max_image_side), even=True)
            yield warp_to_crop(image, view, int(self.cfg.view_size), cv2.BORDER_CONSTANT)
        for key in ("portrait", "face_crop"):
            path = row.get(key)
            if path and Path(str(path)).is_file():
                yield read_rgb(path, max_side=1600)

    def _analyse_frames(self, clip: Path, reference: np.ndarray | None, fps: float,
                        view: np.ndarray | None = None) -> dict[str, list]:
        """One pass over the frames (each cut to ``view`` when given, else scaled down to
        ``qc.analysis_max_side``): sampled frames get
        detection (+ CSIM); every frame within ``sync_max_seconds`` gets a mouth opening (and a
        SyncNet crop when enabled)."""
        k, max_side = self.cfg.sample_every, self.cfg.analysis_max_side
        sync_frames = int(self.cfg.sync_max_seconds * fps)
        track: dict[str, list] = _empty_track()
        box: tuple[int, int, int, int] | None = None
        n = 0
        for chunk in iter_video_frames(clip):
            for frame in chunk:
                if view is not None:
                    frame = warp_to_crop(frame, view, int(self.cfg.view_size), cv2.BORDER_CONSTANT)
                elif max(frame.shape[:2]) > max_side:
                    scale = max_side / max(frame.shape[:2])
                    frame = cv2.resize(frame, (round(frame.shape[1] * scale),
                                               round(frame.shape[0] * scale)),
                                       interpolation=cv2.INTER_AREA)
                landmarks = None
                if n % k == 0:
                    faces = detect_faces(frame, upsample=1 if max(frame.shape[:2]) < 400 else 0)
                    track["frame"].append(n)
                    track["faces"].append(len(faces))
                    score = math.nan
                    if faces:
                        box, landmarks = faces[0].box, faces[0].landmarks
                        if reference is not None:
                            score = cosine(reference, self.embedder.embed(frame, faces[0]))
                    track["csim"].append(score)
                if box is not None and n < sync_frames:
                    # refitted in the box of its own landmarks: the detector's box comes in ~20 %
                    # size steps that would move the lips between frames (fixtalk.measure.faces.fit_landmarks)
                    landmarks = fit_landmarks(frame, box, jitter=False)
                    box = box_from_landmarks(landmarks)
                if n < sync_frames:
                    track["mouth"].append(mouth_opening(landmarks) if landmarks is not None
                                          else math.nan)
                    if self.syncnet is not None:
                        track["crops"].append(self._syncnet_crop(frame, box))
                n += 1
        track["n_frames"] = [n]
        return track

    @staticmethod
    def _syncnet_crop(frame: np.ndarray, box: tuple[int, int, int, int] | None) -> np.ndarray:
        from stages.checks.syncnet import face_crop_224

        if box is None:
            return np.full((224, 224, 3), 110, np.uint8)
        return face_crop_224(frame, box)

    def _identity_metrics(self, track: dict[str, list], fps: float) -> dict[str, Any]:
        frames = np.array(track["frame"], dtype=np.float64)
        out: dict[str, Any] = csim_stats(np.array(track["csim"]), frames / fps)
        out["qc_embedder"] = self.embedder.name
        out["frames_sampled"] = len(track["frame"])
        faces = np.array(track["faces"])
        out["face_presence"] = float(np.mean(faces == 1)) if faces.size else math.nan
        return out

    def _speech(self, clip: Path, row: dict[str, Any], metrics: dict[str, Any]) -> np.ndarray:
        """The audio the viewer hears (the clip's track), else the row's speech wav."""
        if metrics["acodec"]:
            return decode_audio(clip, 16000)
        wav = row.get("audio_wav")
        if wav and Path(str(wav)).is_file() and first_stream(probe(wav), "audio"):
            return decode_audio(wav, 16000)
        return np.zeros(0, np.float32)

    def _sync_metrics(self, track: dict[str, list], samples: np.ndarray, fps: float,
                      metrics: dict[str, Any], row: dict[str, Any]) -> dict[str, Any]:
        """Lip-sync figures (:mod:`fixtalk.measure.lip_sync`) into ``metrics``; returns the curves."""
        mouth = np.array(track["mouth"], dtype=np.float64)
        lip, lip_curves = measure_lip_sync(
            mouth, samples, fps, row_phones(row), pause_min_s=self.cfg.pause_min_s,
            pause_margin_s=self.cfg.pause_margin_s, max_lag_frames=self.cfg.max_lag_frames,
            phone_max_lag_frames=self.cfg.phone_max_lag_frames)
        metrics.update(lip)
        curves: dict[str, Any] = {"frames": track["frame"], "csim": _jsonable(track["csim"]),
                                  "faces": track["faces"], **_jsonable(lip_curves)}
        if self.syncnet is not None:
            metrics.update({"lse_c": math.nan, "lse_d": math.nan, "av_offset": None})
            if len(track["crops"]) >= 6 and samples.size >= 6 * 640:
                from stages.checks.syncnet import evaluate_sync

                res = evaluate_sync(self.syncnet, np.stack(track["crops"]), samples)
                curves["syncnet_mdist"] = res.pop("mdist")
                metrics.update(res)
        return curves


def row_phones(row: dict[str, Any]) -> list[Phone] | None:
    """The phone timings the align stage saved for the row (``words_json``), None without."""
    path = row.get("words_json")
    if not isinstance(path, str) or not Path(path).is_file():
        return None
    return read_phones(path) or None


def _empty_track() -> dict[str, list]:
    return {"frame": [], "faces": [], "csim": [], "mouth": [], "crops": [], "n_frames": [0]}


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


def plot_identity(path: str | Path, times_s: np.ndarray, csim: np.ndarray, *, title: str,
                  warn: float | None = None, fail: float | None = None) -> Path:
    """Save the CSIM-over-time curve (with the warn / fail lines) as a small PNG."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5, 2.2), dpi=90)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(times_s, csim, marker=".", lw=1.2, color="#2a6fdb", label="CSIM")
    for value, colour, label in ((warn, "#e0a100", "warn"), (fail, "#d23", "fail")):
        if value is not None:
            ax.axhline(value, color=colour, ls="--", lw=0.9, label=label)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("CSIM")
    ax.set_title(title, fontsize=8)
    ax.legend(fontsize=6, loc="lower left")
    fig.tight_layout()
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.png")
    fig.savefig(tmp, format="png")
    os.replace(tmp, path)
    return path
