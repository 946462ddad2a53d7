"""Numerical parity with EDTalk on a fixture file (format: shared/fixtures/README.md).

    python -m fixtalk.parity FIXTURE.pt [-v]   # one line per case; exit 0 only if all pass
    python -m fixtalk.parity --keys NAME       # name<TAB>shape per state-dict entry of a preset
                                               # (edtalk-256, edtalk-lip-pose-256, audio2lip, ...)

The networks are built from the fixture's ``config`` (any size, channel table, seed or batch) and
the reference state dicts are loaded strictly. Tolerances (README section 6): images and decoder
``rgb`` levels 1e-4 absolute; other float outputs 1e-5 * max(1, max|ref|); integers exact.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from .config import Audio2LipConfig, AudioConfig
from .model import FixTalk
from .nets.audio2lip import Audio2Lip, smooth_time
from .nets.audio_features import crop_wave, mel_windows_from_spectrogram, melspectrogram, num_frames
from .nets.decoder import DecoderLevels
from .nets.motion_bases import orthonormal_basis
from .presets import from_fixture_config, get_preset

IMAGE_KEYS = ("image", "rgb")


@dataclass
class Models:
    edtalk: FixTalk
    lip_pose: FixTalk
    audio: AudioConfig
    smoothing: tuple[int, float]


def build_models(fx: dict) -> Models:
    cfg = fx["config"]
    sds = fx["state_dicts"]
    m = FixTalk(from_fixture_config(cfg, "edtalk"))
    m.load_generator_state_dict(sds["edtalk"])
    a2l = sds["audio2lip"]
    from .checkpoints import audio2lip_config, check_state_dict

    m.audio2lip = Audio2Lip(audio2lip_config(a2l), m.cfg.lip_dim)
    check_state_dict(a2l, m.audio2lip.state_dict(), what="fixture audio2lip")
    m.audio2lip.load_state_dict(a2l)
    lp = FixTalk(from_fixture_config(cfg, "edtalk_lip_pose"))
    lp.load_generator_state_dict(sds["edtalk_lip_pose"])
    sm = cfg.get("smoothing", {})
    return Models(m.eval(), lp.eval(), m.cfg.audio, (int(sm.get("k_size", 3)),
                                                      float(sm.get("sigma", 1.0))))


def _weights(model: FixTalk, img: torch.Tensor):
    return model.bank_weights(model.motion_code(img))


def _generate(model: FixTalk, source, lip=None, pose=None, exp=None, alpha_lip=None,
              alpha_exp=None) -> dict[str, torch.Tensor]:
    """The demos' test_* methods: source encoded, components from images or given weights."""
    code, feats = model.encode(source)
    if alpha_lip is None:
        alpha_lip = _weights(model, lip)[0]
    alpha_pose = _weights(model, pose)[1]
    if model.has_exp and alpha_exp is None:
        alpha_exp = _weights(model, exp)[2]
    image, aux = model.decode(code, feats, alpha_lip, alpha_pose, alpha_exp, return_aux=True)
    alphas = [alpha_lip, alpha_pose] + ([alpha_exp] if model.has_exp else [])
    out = {"image": image, "source_code": code, "alpha": torch.cat(alphas, -1),
           "motion": aux["motion"], "target_latent": aux["target_latent"]}
    if model.has_exp:
        out["exp_latent"] = aux["exp_latent"]
    return out


def _encoder(ms: Models, i: dict) -> dict:
    code, feats, res4 = ms.edtalk.enc.net_app(i["image"], return_res4=True)
    return {"code": code, "feats": feats, "res4": res4}


def _motion_weights(ms: Models, i: dict) -> dict:
    m = ms.edtalk
    code, _ = m.encode(i["image"])
    lip, pose, exp = m.bank_weights(code)
    return {"code": code, "shared": m.fc(code), "alpha_lip": lip, "alpha_pose": pose,
            "alpha_exp": exp}


def _qr(ms: Models, i: dict) -> dict:
    m = ms.edtalk
    return {"Q": orthonormal_basis(m.direction_lipnonlip.weight, m.direction_exp.weight),
            "Q_lipnonlip_only": orthonormal_basis(m.direction_lipnonlip.weight)}


def _decoder_levels(ms: Models, i: dict) -> dict:
    lv = DecoderLevels()
    img = ms.edtalk.dec(i["target_latent"], list(i["feats"]), i["exp_latent"], lv)
    return {"image": img, "eem_out": lv.eem_out, "flow_logits": lv.flow_logits, "rgb": lv.rgb}


def _mel(ms: Models, i: dict) -> dict:
    wave = i["waveform"].numpy()
    cropped = crop_wave(wave, ms.audio)
    t = num_frames(len(cropped), ms.audio)
    spec = melspectrogram(cropped, ms.audio)
    return {"mel_windows": torch.from_numpy(mel_windows_from_spectrogram(spec, t, ms.audio)),
            "mel_spectrogram": torch.from_numpy(spec), "cropped_length": torch.tensor(len(cropped)),
            "num_frames": torch.tensor(t)}


def _audio2lip(ms: Models, i: dict) -> dict:
    lip, emb = ms.edtalk.audio2lip(i["mel_windows"], return_embedding=True)
    return {"audio_embedding": emb, "lip_weights": lip,
            "lip_weights_smoothed": smooth_time(lip, *ms.smoothing)}


RUNNERS: dict[str, Callable[[Models, dict], dict]] = {
    "edtalk_encoder": _encoder,
    "edtalk_motion_weights": _motion_weights,
    "edtalk_qr_basis": _qr,
    "edtalk_V": lambda ms, i: _generate(ms.edtalk, i["source"], lip=i["lip"], pose=i["pose"],
                                        exp=i["exp"]),
    "edtalk_V_use_exp_weight": lambda ms, i: _generate(ms.edtalk, i["source"], lip=i["lip"],
                                                       pose=i["pose"], alpha_exp=i["alpha_exp"]),
    "edtalk_A": lambda ms, i: _generate(ms.edtalk, i["source"], alpha_lip=i["alpha_lip"],
                                        pose=i["pose"], exp=i["exp"]),
    "edtalk_A_use_exp_weight": lambda ms, i: _generate(ms.edtalk, i["source"],
                                                       alpha_lip=i["alpha_lip"], pose=i["pose"],
                                                       alpha_exp=i["alpha_exp"]),
    "edtalk_decoder_levels": _decoder_levels,
    "lip_pose_audio_pose_image": lambda ms, i: _generate(ms.lip_pose, i["source"],
                                                         alpha_lip=i["alpha_lip"], pose=i["pose"]),
    "lip_pose_V": lambda ms, i: _generate(ms.lip_pose, i["source"], lip=i["lip"], pose=i["pose"]),
    "lip_pose_qr_basis": lambda ms, i: {"Q": orthonormal_basis(ms.lip_pose.direction_lipnonlip.weight)},
    "mel": _mel,
    "audio2lip": _audio2lip,
}


def _flatten(name: str, v: Any) -> list[tuple[str, Any]]:
    if isinstance(v, (list, tuple)):
        return [(f"{name}[{j}]", x) for j, x in enumerate(v)]
    return [(name, v)]


def compare(name: str, ours: Any, ref: Any) -> tuple[float, float]:
    """(max abs error, tolerance) of one output tensor."""
    if ours is None:
        return float("inf"), 0.0
    ours = torch.as_tensor(ours)
    if tuple(ours.shape) != tuple(ref.shape):
        return float("inf"), 0.0
    if not ref.is_floating_point():
        return float((ours.long() - ref.long()).abs().max()) if ref.numel() else 0.0, 0.0
    err = float((ours.double() - ref.double()).abs().max()) if ref.numel() else 0.0
    if name.split("[")[0] in IMAGE_KEYS:
        return err, 1e-4
    return err, 1e-5 * max(1.0, float(ref.abs().max()))


def run_case(ms: Models, case: dict) -> list[tuple[str, float, float]]:
    runner = RUNNERS.get(case["name"])
    if runner is None:
        return [(f"unsupported case (method {case.get('method')})", float("inf"), 0.0)]
    with torch.no_grad():
        ours = runner(ms, case["inputs"])
    rows = []
    for key, ref in case["outputs"].items():
        refs = _flatten(key, ref)
        mine = ours.get(key)
        mines = _flatten(key, mine) if mine is not None else []
        if len(mines) != len(refs):
            mines = [(n, None) for n, _ in refs]
        for (n, r), (_, o) in zip(refs, mines):
            rows.append((n, *compare(n, o, r)))
    return rows


def run_fixture(path: str | Path, verbose: bool = False, out=sys.stdout) -> bool:
    fx = torch.load(path, map_location="cpu", weights_only=True)
    if fx.get("format") != "edtalk-parity/1":
        raise ValueError(f"{path}: expected format 'edtalk-parity/1', got {fx.get('format')!r}")
    ms = build_models(fx)
    ok_all = True
    for case in fx["cases"]:
        rows = run_case(ms, case)
        worst = max(rows, key=lambda r: (r[1] > r[2], r[1] / r[2] if r[2] > 0 else
                                         (0.0 if r[1] == 0 else float("inf"))))
        ok = all(err <= tol for _, err, tol in rows)
        ok_all &= ok
        print(f"{case['name']:<28s} max_abs_err={worst[1]:.3e} ({worst[0]})  tol={worst[2]:.1e}  "
              f"{'PASS' if ok else 'FAIL'}", file=out)
        if verbose or not ok:
            for n, err, tol in rows:
                print(f"    {n:<24s} {err:.3e}  tol={tol:.1e}  {'ok' if err <= tol else 'FAIL'}",
                      file=out)
    print(f"{'ALL PASS' if ok_all else 'SOME CASES FAILED'}", file=out)
    return ok_all


def preset_keys(name: str) -> list[tuple[str, tuple[int, ...]]]:
    """(key, shape) per state-dict entry: the generator only for edtalk presets."""
    with torch.device("meta"):
        if name == "audio2lip":
            sd = Audio2Lip(Audio2LipConfig(), 20).state_dict()
        else:
            model = FixTalk(get_preset(name))
            sd = model.generator_state_dict() if name.startswith("edtalk") else model.state_dict()
    return [(k, tuple(v.shape)) for k, v in sd.items()]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m fixtalk.parity", description=__doc__.split("\n")[0])
    ap.add_argument("fixture", nargs="?", help="parity fixture .pt (edtalk-parity/1)")
    ap.add_argument("--keys", metavar="NAME", help="print name<TAB>shape of a preset's state dict")
    ap.add_argument("-v", "--verbose", action="store_true", help="one line per output tensor")
    args = ap.parse_args(argv)
    if args.keys:
        try:
            for k, shape in preset_keys(args.keys):
                print(f"{k}\t{shape}")
        except KeyError as e:
            print(f"error: {e.args[0]}; or 'audio2lip'", file=sys.stderr)
            return 2
        return 0
    if not args.fixture:
        ap.error("give a FIXTURE.pt or --keys NAME")
    torch.manual_seed(0)
    return 0 if run_fixture(args.fixture, args.verbose) else 1


if __name__ == "__main__":
    sys.exit(main())
