"""QC thresholds -> ``qc_status`` (pass | warn | fail) and ``qc_reasons``.

Each check reads one metric column, compares it with a threshold from :class:`QCConfig` (None
disables the check) and, when it trips, adds a short reason such as
``identity: csim_mean 0.842 < 0.910 [dlib-resnet128] (fail)``. Reasons never contain ``;``
(the separator of ``qc_reasons``). A NaN metric (not measured) trips nothing, except where its
absence is itself the defect (no video / no audio stream).
"""
from __future__ import annotations

import math
from typing import Any

from stages.config import QCConfig

#: Embedder-specific CSIM defaults: (csim_warn, csim_fail, csim_min_warn). dlib's vectors sit in a
#: narrow cone (unrelated people ~0.88, same person ~0.98); ArcFace-style ~0.1 vs ~0.7.
CSIM_DEFAULTS = {"dlib": (0.95, 0.91, 0.91), "onnx": (0.50, 0.30, 0.30)}
#: A mouth below ``qc.mouth_motion_low`` in speech that moves more than this share of that in
#: its pauses is not moving with the speech: its motion is measurement noise (a still mouth).
MOVES_IN_SPEECH_RATIO = 0.5
#: A phone lag is judged only at a clear peak: a correlation of at least LAG_MIN_CORR there, at
#: least LAG_MARGIN above the correlation in sync (real footage peaked at lag 0 or -1, 0.01 above).
LAG_MIN_CORR, LAG_MARGIN = 0.2, 0.1


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


class Verdict:
    """Collects reasons; ``status`` is the worst level seen."""

    def __init__(self) -> None:
        self.reasons: list[str] = []
        self.level = 0  # 0 pass, 1 warn, 2 fail

    def add(self, level: str, text: str) -> None:
        self.reasons.append(f"{text.replace(';', ',')} ({level})")
        self.level = max(self.level, 2 if level == "fail" else 1)

    def below(self, m: dict[str, Any], key: str, limit: float | None, level: str, area: str,
              note: str = "") -> bool:
        value = m.get(key)
        if limit is not None and _finite(value) and value < limit:
            self.add(level, f"{area}: {key} {value:.3f} < {limit:.3f}{note}")
            return True
        return False

    def above(self, m: dict[str, Any], key: str, limit: float | None, level: str, area: str,
              absolute: bool = False) -> bool:
        value = m.get(key)
        if limit is None or not _finite(value):
            return False
        shown = abs(value) if absolute else value
        if shown > limit:
            name = f"|{key}|" if absolute else key
            self.add(level, f"{area}: {name} {shown:.3g} > {limit:.3g}")
            return True
        return False

    @property
    def status(self) -> str:
        return ("pass", "warn", "fail")[self.level]


def csim_limits(cfg: QCConfig, embedder_name: str) -> tuple[float | None, ...]:
    """``(warn, fail, min_warn)`` for the embedder: config values, else the embedder defaults."""
    family = "dlib" if embedder_name.startswith("dlib") else "onnx"
    defaults = CSIM_DEFAULTS[family]
    given = (cfg.csim_warn, cfg.csim_fail, cfg.csim_min_warn)
    return tuple(g if g is not None else d for g, d in zip(given, defaults))


def judge(m: dict[str, Any], cfg: QCConfig, *, fps: float, lufs_target: float | None,
          wer_trusted: bool = False) -> tuple[str, str]:
    """``(qc_status, qc_reasons)`` for the metric columns ``m`` of one clip (plus the align
    stage's ``script_*`` / ``subtitle_timing`` columns when the row has a script).
    ``wer_trusted``: the row's ``script_wer`` comes from an ASR good enough to judge by."""
    v = Verdict()
    _identity(v, m, cfg)
    _sync(v, m, cfg)
    _delivery(v, m, cfg, fps=fps, lufs_target=lufs_target)
    _script(v, m, cfg, wer_trusted=wer_trusted)
    _dub(v, m, cfg)
    return v.status, "; ".join(v.reasons)


def _dub(v: Verdict, m: dict[str, Any], cfg: QCConfig) -> None:
    """Dubs (stages/checks/dub_qc.py): frames passed through undubbed, the picture outside the
    mouth, a mouth that moves much less than the presenter's own in the footage."""
    v.below(m, "dubbed_fraction", cfg.min_dubbed_fraction, "warn", "dub",
            " (frames whose face was lost, too small or turned away are left as they were)")
    v.below(m, "outside_psnr_min", cfg.outside_psnr_warn, "warn", "dub",
            " (the picture outside the mouth changed)")
    ratio, own = m.get("mouth_motion_ratio"), m.get("footage_mouth_open_std")
    if _finite(ratio) and _finite(own):
        v.below(m, "mouth_motion_ratio", cfg.mouth_motion_ratio_warn, "warn", "dub",
                f" (in speech the dubbed mouth opens and closes {ratio:.2f} x as much as the "
                f"presenter's own mouth in the footage: inner-lip gap std {own * ratio:.3f} against "
                f"{own:.3f} of the eye distance - dub with dub.mouth=memory, the presenter's own "
                "mouths, or a larger dub.lip_gain)")


def _script(v: Verdict, m: dict[str, Any], cfg: QCConfig, *, wer_trusted: bool) -> None:
    """The audio against the row's script (issue 6): a swapped audio file, a wrong script."""
    flagged = m.get("script_mismatch")
    flagged = flagged is not None and not (isinstance(flagged, float) and math.isnan(flagged)) \
        and bool(flagged)  # True / numpy.bool_ / 1.0 after a trip through Arrow
    if flagged and cfg.script_mismatch_level:
        level = cfg.script_mismatch_level
        if level not in ("warn", "fail"):
            raise ValueError(f"qc.script_mismatch_level={level!r}; expected warn, fail or None")
        share, wer = m.get("script_aligned_share"), m.get("script_wer")
        detail = f"aligned share {share:.2f}" if _finite(share) else "not aligned"
        if _finite(wer):
            detail += f", script_wer {wer:.2f}"
        v.add(level, f"script: the audio does not say the script ({detail}) - check that "
                     "the row's audio and script belong together")
    elif wer_trusted:
        v.above(m, "script_wer", cfg.script_wer_warn, "warn", "script")
    if m.get("subtitle_timing") == "estimated":
        v.add("warn", "subtitles: word times estimated (the script could not be aligned)")


def _identity(v: Verdict, m: dict[str, Any], cfg: QCConfig) -> None:
    name = str(m.get("qc_embedder") or "dlib")
    warn, fail, min_warn = csim_limits(cfg, name)
    note = f" [{name}]"
    if not v.below(m, "csim_mean", fail, "fail", "identity", note):
        v.below(m, "csim_mean", warn, "warn", "identity", note)
    v.below(m, "csim_min", min_warn, "warn", "identity", note)
    # drift only when the slope's 95 % bound is below the limit (the bare slope for older rows)
    slope, bound, limit = m.get("csim_slope"), m.get("csim_slope_bound"), cfg.csim_slope_warn
    drift = bound if _finite(bound) else slope
    if limit is not None and _finite(drift) and drift < limit:
        v.add("warn", f"identity drift: csim_slope {slope:+.4f}/s (95% bound {drift:+.4f}) < {limit:+.4f}/s")
    if not _finite(m.get("csim_mean")) and m.get("frames_sampled", 0):
        v.add("fail", "identity: no face found in the source portrait or in any sampled frame")
    if not v.below(m, "face_presence", cfg.face_presence_fail, "fail", "face"):
        v.below(m, "face_presence", cfg.face_presence_warn, "warn", "face")


def _sync(v: Verdict, m: dict[str, Any], cfg: QCConfig) -> None:
    """Lip sync, judged only on what an offline meter can see (docs/qc.md, "Lip sync"): a mouth
    that does not move in speech (fail), a mouth that keeps moving through its pauses (warn),
    with strong phone evidence a mouth that does not follow the phones (warn), and SyncNet's
    figures when its weights are given; the loudness-envelope ``sync_corr`` is never judged."""
    if _still_mouth(v, m, cfg):
        return
    _lip_jitter(v, m, cfg)
    syncnet = _finite(m.get("lse_c"))
    v.below(m, "lse_c", cfg.lse_c_warn, "warn", "syncnet")
    v.above(m, "av_offset", cfg.av_offset_warn, "warn", "syncnet", absolute=True)
    if not syncnet:  # with SyncNet's figures the phone measures are reported, not judged
        _phones(v, m, cfg)


def _still_mouth(v: Verdict, m: dict[str, Any], cfg: QCConfig) -> bool:
    """A mouth that does not move in speech fails; True when it does (nothing else about sync
    is judged then). Below ``mouth_motion_fail`` it does not move at all. Below
    ``mouth_motion_low`` its motion is as small as the landmark noise of a moving head (a frozen
    mouth on a moving synthetic head read 0.011-0.020), so the clip's own evidence decides: it fails
    when it moves as much in the pauses as in speech, or (strong phone evidence) does not follow
    the phones; it warns (moves little) otherwise."""
    key = "mouth_motion_speech" if _finite(m.get("mouth_motion_speech")) else "mouth_motion"
    value = m.get(key)
    if not _finite(value):
        return False
    if v.below(m, key, cfg.mouth_motion_fail, "fail", "sync", " (the mouth does not move)"):
        return True
    if cfg.mouth_motion_low is None or value >= cfg.mouth_motion_low:
        return False
    seconds, ratio = m.get("pause_seconds"), m.get("pause_motion_ratio")
    speech, phone_corr = m.get("phone_speech_s"), m.get("phone_corr")
    moves_at_rest = (_finite(seconds) and seconds >= cfg.pause_min_evidence_s and _finite(ratio)
                     and ratio > MOVES_IN_SPEECH_RATIO)
    ignores_phones = (cfg.phone_corr_warn is not None and _finite(speech)
                      and speech >= cfg.phone_min_speech_s and _finite(phone_corr)
                      and phone_corr < cfg.phone_corr_warn)
    if moves_at_rest or ignores_phones:
        why = (f"it moves {ratio:.2f} x as much in the pauses" if moves_at_rest
               else f"phone_corr {phone_corr:.2f}")
        v.add("fail", f"sync: {key} {value:.3f} < {cfg.mouth_motion_low:.3f} (the mouth does not "
                      f"move while the speech plays: {why})")
        return True
    v.add("warn", f"sync: {key} {value:.3f} < {cfg.mouth_motion_low:.3f} (the mouth moves little "
                  "in speech; a real one reads 0.07-0.09)")
    return False


def _phone_lag(v: Verdict, m: dict[str, Any], cfg: QCConfig) -> None:
    """A constant offset: the phone correlation peaks at least ``phone_lag_warn`` frames away
    from lag 0, clearly (inside the search range, at least ``LAG_MIN_CORR`` there and
    ``LAG_MARGIN`` above lag 0)."""
    lag, best, at_zero = m.get("phone_lag_frames"), m.get("phone_corr_best"), m.get("phone_corr")
    if cfg.phone_lag_warn is None or not _finite(lag) or not _finite(best) or not _finite(at_zero):
        return
    lag = int(lag)  # a float after a trip through Arrow
    inside = abs(lag) < cfg.phone_max_lag_frames  # a maximum at the range's edge is no peak
    if inside and abs(lag) >= cfg.phone_lag_warn and best >= LAG_MIN_CORR and best - at_zero >= LAG_MARGIN:
        when = "late (the sound leads)" if lag > 0 else "early (the sound lags)"
        v.add("warn", f"sync: the mouth is {abs(lag)} frames {when}: phone_corr {best:.2f} at "
                      f"phone_lag_frames {lag:+d} against {at_zero:.2f} in sync (|lag| >= {cfg.phone_lag_warn})")


def _lip_jitter(v: Verdict, m: dict[str, Any], cfg: QCConfig) -> None:
    pause, ratio, seconds = (m.get(k) for k in ("mouth_motion_pause", "pause_motion_ratio", "pause_seconds"))
    if (cfg.pause_motion_warn is None or cfg.pause_motion_ratio_warn is None or not _finite(pause)
            or not _finite(ratio) or not _finite(seconds) or seconds < cfg.pause_min_evidence_s):
        return
    if pause > cfg.pause_motion_warn and ratio > cfg.pause_motion_ratio_warn:
        v.add("warn", f"lip jitter: the mouth moves through {seconds:.1f} s of pauses in the speech "
                      f"(mouth_motion_pause {pause:.3f} > {cfg.pause_motion_warn:.3f}, "
                      f"{ratio:.2f} x its motion in speech > {cfg.pause_motion_ratio_warn:.2f})")


def _phones(v: Verdict, m: dict[str, Any], cfg: QCConfig) -> None:
    speech = m.get("phone_speech_s")
    if _finite(speech) and speech >= cfg.phone_min_speech_s:
        if not v.below(m, "phone_corr", cfg.phone_corr_warn, "warn", "sync",
                       f" (the mouth does not follow the phones of {speech:.1f} s of aligned speech)"):
            _phone_lag(v, m, cfg)
    counts = (m.get("bilabial_count") or 0, m.get("open_vowel_count") or 0)
    if min(counts) >= cfg.bilabial_min_count:
        value, limit = m.get("bilabial_closure"), cfg.bilabial_closure_warn
        if limit is not None and _finite(value) and value > limit:
            v.add("warn", f"sync: bilabial_closure {value:.2f} > {limit:.2f} (the lips stay apart on "
                          f"{counts[0]} P/B/M sounds: opening against {counts[1]} open vowels)")


def _delivery(v: Verdict, m: dict[str, Any], cfg: QCConfig, *, fps: float,
              lufs_target: float | None) -> None:
    if not m.get("vcodec"):
        v.add("fail", "delivery: the clip has no video stream")
    if not m.get("acodec"):
        v.add("fail", "delivery: the clip has no audio stream")
    if not v.above(m, "duration_diff_s", cfg.duration_fail_s, "fail", "duration", absolute=True):
        v.above(m, "duration_diff_s", cfg.duration_warn_s, "warn", "duration", absolute=True)
    if _finite(m.get("duration_video_s")) and _finite(m.get("duration_audio_s")):
        gap = m["duration_video_s"] - m["duration_audio_s"]
        if cfg.duration_fail_s is not None and abs(gap) > cfg.duration_fail_s:
            v.add("fail", f"duration: video {m['duration_video_s']:.2f} s vs its audio track "
                          f"{m['duration_audio_s']:.2f} s")
    for key, want in (("vcodec", cfg.expect_vcodec), ("pix_fmt", cfg.expect_pix_fmt),
                      ("acodec", cfg.expect_acodec)):
        if want and m.get(key) and m[key] != want:
            v.add("warn", f"format: {key} {m[key]} (expected {want})")
    if cfg.expect_sample_rate and m.get("sample_rate") and m["sample_rate"] != cfg.expect_sample_rate:
        v.add("warn", f"format: sample_rate {m['sample_rate']} (expected {cfg.expect_sample_rate})")
    if _finite(m.get("fps_out")) and fps and abs(m["fps_out"] - fps) > 0.01:
        v.add("warn", f"format: fps {m['fps_out']:g} (expected {fps:g})")
    if m.get("width", 0) % 2 or m.get("height", 0) % 2:
        v.add("warn", f"format: odd frame size {m.get('width')}x{m.get('height')}")
    lufs = m.get("lufs")
    if m.get("acodec") and (lufs is None or not _finite(lufs) or lufs < cfg.silence_lufs):
        shown = f"{lufs:.1f} LUFS" if _finite(lufs) else "no measurable level"
        v.add("fail", f"loudness: the audio is silent ({shown})")
    elif lufs_target is not None and _finite(lufs) and abs(lufs - lufs_target) > cfg.lufs_tolerance:
        v.add("warn", f"loudness: {lufs:.1f} LUFS (target {lufs_target:g} +-{cfg.lufs_tolerance:g})")
    v.above(m, "true_peak_db", cfg.true_peak_max_db, "warn", "loudness")
