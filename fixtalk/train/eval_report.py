"""The table of ``make eval-default`` (:mod:`fixtalk.train.evaluate`): each figure as a line,
gated against issue #3's bar or reported beside it."""
from __future__ import annotations

import sys
from dataclasses import dataclass


@dataclass
class Check:
    name: str
    value: str
    threshold: str
    passed: bool | None  # None = reported only


def make_checks(f: dict[str, dict]) -> list[Check]:
    a, b, c, d = f["reconstruction"], f["lipsync"], f["identity"], f["pose"]
    return [
        Check("(a) PSNR render vs copy-source [dB]", f"{a['psnr']:.2f} vs {a['psnr_copy']:.2f} "
              f"({a['psnr_gain']:+.2f})", "gain >= 3 dB", a["psnr_gain"] >= 3.0),
        Check("(a) ... source warped by own flow / landmark warp [dB]",
              f"{a['psnr_own_flow']:.2f} / {a['psnr_landmark_warp']:.2f} (flow error "
              f"{a['flow_error_px']:.2f} px)", "reported", None),
        Check("(a) SSIM render vs copy-source", f"{a['ssim']:.3f} vs {a['ssim_copy']:.3f}", "reported", None),
        Check("(b) mouth-envelope corr, speech (loudness-following, not lip sync)",
              f"{b['corr_speech']:.3f} (best lag {b['best_lag_frames']:+d}: "
              f"{b['corr_speech_best']:.3f})", ">= 0.5", b["corr_speech"] >= 0.5),
        *_phone_checks(b.get("phones")),
        Check("(b) ... mouth motion, render / the clip's own frames (std)",
              f"{b['mouth_std_speech']:.4f} / {b['mouth_std_driver']:.4f} = {b['amplitude_ratio']:.2f}",
              "reported", None),
        Check("(b) ... network alone (silence gate off): corr speech; silence std ratio",
              f"{f['lipsync_raw']['corr_speech']:.3f}; {f['lipsync_raw']['std_ratio_silence']:.2f}",
              "reported", None),
        Check("(b) ... ground-truth track (ceiling)", f"{b.get('corr_ground_truth_track', float('nan')):.3f}",
              "reported", None),
        Check("(b) mouth-envelope corr, silence", f"{b['corr_silence']:.3f}", "|r| <= 0.3",
              abs(b["corr_silence"]) <= 0.3),
        Check("(b) mouth std silence / speech", f"{b['mouth_std_silence']:.4f} / {b['mouth_std_speech']:.4f} "
              f"= {b['std_ratio_silence']:.2f}", "<= 0.35", b["std_ratio_silence"] <= 0.35),
        Check("(c) identity distance, max (mean)", f"{c['max_distance']:.3f} ({c['mean_distance']:.3f}), "
              f"{c['frames']} frames", "< 0.6", c["max_distance"] < 0.6 and c["no_face"] == 0),
        Check("(c) identity cosine, mean (min)", f"{c['mean_cosine']:.4f} ({c['min_cosine']:.4f})", "reported", None),
        Check("(d) head roll corr driver/render", f"{d['corr_roll']:.3f}", ">= 0.5", d["corr_roll"] >= 0.5),
        Check("(d) head yaw corr driver/render", f"{d['corr_yaw']:.3f}", ">= 0.5", d["corr_yaw"] >= 0.5),
        *([Check("(d) ... without shift stitching (the driver's frames as they are): roll / yaw",
                 f"{f['pose_unstitched']['corr_roll']:.3f} / {f['pose_unstitched']['corr_yaw']:.3f}",
                 "reported", None)] if "pose_unstitched" in f else []),
        Check("(d) ... a sideways shift followed by the jaw ends / nose (1 = rigid)",
              f"{d['shift_follow']['jaw_ends']:.2f} / {d['shift_follow']['nose']:.2f}", "reported", None),
        Check("(d) ... a pure turn (the source turned +-16 deg): yaw corr / gain (1 = full)",
              f"{d['yaw_probe']['yaw_corr']:.2f} / {d['yaw_probe']['yaw_gain']:.2f}", "reported", None),
        *(real_motion_checks(f["real_motion"]) if "real_motion" in f else []),
    ]


def real_motion_checks(e: dict) -> list[Check]:
    """(e): the held-out portrait driven by real-amplitude, jittery pose videos of another face."""
    old = e["frames_mode"]
    return [
        Check("(e) real head motion: face presence", f"{e['face_presence']:.2f}", ">= 0.95",
              e["face_presence"] >= 0.95),
        Check("(e) ... identity cosine, render / still render", f"{e['csim_mean']:.3f} / {e['csim_still']:.3f} "
              f"({e['csim_mean'] - e['csim_still']:+.3f})", ">= still - 0.02",
              e["csim_mean"] >= e["csim_still"] - 0.02),
        Check("(e) ... head yaw corr driver/render (gain)", f"{e['yaw_corr']:.3f} ({e['yaw_gain']:.2f})", ">= 0.5",
              e["yaw_corr"] >= 0.5),
        Check("(e) ... head roll corr (gain); shape error [IOD]",
              f"{e['roll_corr']:.3f} ({e['roll_gain']:.2f}); {e['shape_error']:.3f}", "reported", None),
        Check("(e) ... EDTalk's read-out (mode=frames): presence; csim; shape; yaw corr",
              f"{old['face_presence']:.2f}; {old['csim_mean']:.3f}; {old['shape_error']:.3f}; {old['yaw_corr']:.3f}",
              "reported", None),
    ]


def _phone_checks(p: dict | None) -> list[Check]:
    """(b) as lip-sync QC measures it (fixtalk.train.eval_phones); reported, not gated."""
    if not p:
        return []
    return [
        Check("(b) ... as QC: phone-openness corr (mean over clips)", f"{p['phone_corr']:.3f}",
              "reported (QC warns < 0.1)", None),
        Check("(b) ... as QC: bilabial closure (P/B/M over open vowels)",
              f"{p['bilabial_closure']:.2f} ({p['bilabials']} / {p['open_vowels']})",
              "reported (QC warns > 0.6)", None),
        Check("(b) ... as QC: mouth motion in pauses / in speech",
              f"{p['mouth_std_pauses']:.4f}, {p['pause_motion_ratio']:.2f} x ({p['pause_seconds']:.1f} s)",
              "reported (QC warns > 0.4 x)", None),
    ]


def print_table(report: dict, out=None) -> None:
    out = sys.stdout if out is None else out
    rows = [(c["name"], c["value"], c["threshold"],
             "-" if c["passed"] is None else ("PASS" if c["passed"] else "FAIL")) for c in report["checks"]]
    w = [max(len(r[i]) for r in rows + [("metric", "value", "threshold", "")]) for i in range(3)]
    print(f"{'metric':<{w[0]}}  {'value':<{w[1]}}  {'threshold':<{w[2]}}  result", file=out)
    for r in rows:
        print(f"{r[0]:<{w[0]}}  {r[1]:<{w[1]}}  {r[2]:<{w[2]}}  {r[3]}", file=out)
    print(f"{'ALL PASS' if report['passed'] else 'SOME CHECKS FAILED'} ({report['seconds']} s, "
          f"held-out clips: {', '.join(report['clips'])})", file=out)
