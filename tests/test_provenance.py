"""Content credentials, disclosure and consent (issue #20) on tiny media made with ffmpeg's lavfi.

The mux stage is called directly on rows whose rendered video and speech were made here; no
model renders. Signing uses real c2pa-python; verifying uses ``fixtalk verify``.
"""
from __future__ import annotations

import dataclasses
import json
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from pipeline.cli import main as cli_main
from pipeline.config import PipelineConfig
from stages.base import SystemicError
from stages.media.av import probe, video_to_frames
from stages.mux import MuxStage
from stages.provenance.c2pa import check_signer, read_credentials, sha256_of
from stages.provenance.signing_identity import (
    LOCAL_KEY,
    LOCAL_SUBDIR,
    SigningIdentity,
    make_ca_and_leaf,
)
from stages.transcript.subtitles import parse_cue_times

W, H, SECONDS = 192, 128, 2.0


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-y", *args], check=True)


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("prov_media")
    paths = {"video": d / "video.mp4", "speech": d / "speech.wav", "portrait": d / "portrait.png",
             "footage": d / "footage.mp4", "consent": d / "consent-anna.pdf"}
    ffmpeg("-f", "lavfi", "-i", f"testsrc=s={W}x{H}:r=25:d={SECONDS}", "-c:v", "libx264",
           "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(paths["video"]))
    ffmpeg("-f", "lavfi", "-i", f"sine=frequency=300:d={SECONDS}", "-ar", "16000", str(paths["speech"]))
    ffmpeg("-f", "lavfi", "-i", f"testsrc=s={W}x{H}", "-frames:v", "1", str(paths["portrait"]))
    ffmpeg("-f", "lavfi", "-i", f"testsrc2=s={W}x{H}:r=25:d=1", "-c:v", "libx264", "-preset",
           "ultrafast", str(paths["footage"]))
    paths["consent"].write_bytes(b"%PDF-1.4 signed release of Anna Example, 2026-11-02\n")
    return paths


def make_config(tmp_path: Path, **provenance) -> PipelineConfig:
    cfg = PipelineConfig()
    cfg.mux.preset = "ultrafast"
    cfg.provenance.identity_dir = str(tmp_path / "config")
    for key, value in provenance.items():
        setattr(cfg.provenance, key, value)
    return cfg


def make_row(media: dict[str, Path], out: Path, clip_id: str, subs: bool = True, **extra) -> dict:
    work = out / "work" / clip_id
    work.mkdir(parents=True, exist_ok=True)
    if subs:
        (work / "subs.srt").write_text("1\n00:00:00,200 --> 00:00:01,500\nHello there.\n")
        (work / "subs.vtt").write_text("WEBVTT\n\n00:00.200 --> 00:01.500\nHello there.\n")
    row = {"clip_id": clip_id, "portrait": str(media["portrait"]), "audio": str(media["speech"]),
           "video_path": str(media["video"]), "out_dir": str(out), "work_dir": str(work),
           "checkpoint_id": "ckpt-test-1234", "code_version": "0.9.0+gtest", "consent": None,
           "status": None}
    row.update(extra)
    return row


def identity_of(chain: bytes, key: bytes) -> SigningIdentity:
    return SigningIdentity(chain, key, "es384", "test", local=False)


def verify(capsys, *args: str) -> tuple[int, str]:
    code = cli_main(["verify", *args])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_clip_is_signed_and_verifies(media, tmp_path, capsys):
    cfg = make_config(tmp_path)
    res = MuxStage(cfg).run_row(make_row(media, tmp_path, "c1", consent=str(media["consent"])))
    assert res["status"] == "ok", res["error_message"]
    clip = Path(res["output_path"])
    assert res["c2pa_manifest_id"].startswith("urn:c2pa:")
    assert "untrusted" in res["c2pa_signer"]
    assert not [p for p in clip.parent.iterdir() if p.name.startswith(".tmp-")]
    assert (tmp_path / "config" / LOCAL_SUBDIR / LOCAL_KEY).is_file()

    found = read_credentials(clip)
    assert found.ok and not found.trusted and found.warnings
    assert found.manifest_id == res["c2pa_manifest_id"]
    assert (found.actions, found.digital_source_type) == (["c2pa.created"], "trainedAlgorithmicMedia")
    assert {i["title"]: i["sha256"] for i in found.inputs} == {
        "portrait.png": sha256_of(media["portrait"]), "speech.wav": sha256_of(media["speech"])}
    assert (found.checkpoint_id, found.version) == ("ckpt-test-1234", "0.9.0+gtest")
    assert found.consent == {"file": "consent-anna.pdf", "sha256": sha256_of(media["consent"])}

    code, text = verify(capsys, str(clip))
    assert code == 0, text
    assert "untrusted signer" in text and "FixTalk Studio local signer" in text
    assert "ckpt-test-1234" in text and "portrait.png" in text

    tags = probe(clip)["format"].get("tags", {})
    assert "AI-generated" in tags.get("comment", ""), tags
    vtt = (clip.parent / "c1.vtt").read_text()
    assert vtt.startswith("WEBVTT\n\nNOTE AI-generated") and "Hello there." in vtt
    assert (clip.parent / "c1.srt").read_text().startswith("1\n00:00:00,200")  # no label: SRT as made

    again = MuxStage(cfg).run_row(make_row(media, tmp_path, "c2"))  # the identity is made once
    assert read_credentials(again["output_path"]).issuer == found.issuer
    assert len(list((tmp_path / "config").iterdir())) == 1


def test_reencoded_or_edited_clip_fails_verify(media, tmp_path, capsys):
    res = MuxStage(make_config(tmp_path)).run_row(make_row(media, tmp_path, "t1", subs=False))
    clip = Path(res["output_path"])
    reencoded = tmp_path / "reencoded.mp4"
    ffmpeg("-i", str(clip), "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "copy", str(reencoded))
    edited = tmp_path / "edited.mp4"
    data = bytearray(clip.read_bytes())
    data[-200] ^= 0xFF  # one byte of the media data changed
    edited.write_bytes(bytes(data))

    code, text = verify(capsys, str(reencoded))
    assert code == 1 and "no content credentials" in text, text
    code, text = verify(capsys, str(edited))
    assert code == 1 and "tampered" in text, text
    code, text = verify(capsys, str(clip), str(reencoded))
    assert code == 1 and "1 of 2 clip(s)" in text, text
    code, _ = verify(capsys, str(clip))
    assert code == 0


def test_user_certificate_signs_with_its_name(media, tmp_path, capsys):
    chain, key, ca = make_ca_and_leaf("Newsroom Signing 2026", "Example Newsroom", curve=ec.SECP384R1())
    for name, data in (("chain.pem", chain), ("signer.key", key), ("ca.pem", ca)):
        (tmp_path / name).write_bytes(data)
    cfg = make_config(tmp_path, cert=str(tmp_path / "chain.pem"), key=str(tmp_path / "signer.key"))
    res = MuxStage(cfg).run_row(make_row(media, tmp_path, "u1", subs=False))
    assert res["status"] == "ok", res["error_message"]
    assert res["c2pa_signer"] == "Newsroom Signing 2026"
    assert not (tmp_path / "config").exists()  # no local identity made

    code, text = verify(capsys, "--format", "json", "--trust", str(tmp_path / "ca.pem"), res["output_path"])
    report = json.loads(text)[0]
    assert code == 0 and report["trusted"] and report["state"] == "Trusted"
    assert (report["signer"], report["issuer"]) == ("Newsroom Signing 2026", "Example Newsroom")
    assert report["warnings"] == []
    code, text = verify(capsys, res["output_path"])  # without the CA: valid, untrusted (a warning)
    assert code == 0 and "Newsroom Signing 2026" in text and "untrusted signer" in text

    _, other_key, _ = make_ca_and_leaf("Someone else")
    (tmp_path / "other.key").write_bytes(other_key)
    cfg.provenance.key = str(tmp_path / "other.key")
    with pytest.raises(SystemicError, match="provenance.key: .* does not belong"):
        MuxStage(cfg)
    cfg.provenance.key = str(tmp_path / "missing.key")
    with pytest.raises(SystemicError, match="provenance.key: cannot read"):
        MuxStage(cfg)
    check_signer(identity_of(chain, key))  # the driver's check before any clip
    ca_only = dataclasses.replace(identity_of(chain, key), chain_pem=ca)  # the CA alone, not the signer
    with pytest.raises(SystemicError, match="provenance.cert: the C2PA library refused"):
        check_signer(ca_only)


def test_label_appears_in_a_decoded_frame(media, tmp_path):
    cfg = make_config(tmp_path, label="AI-generated", label_seconds=1.0, label_position="top-right",
                      label_size=0.15)
    res = MuxStage(cfg).run_row(make_row(media, tmp_path, "l1"))
    assert res["status"] == "ok", res["error_message"]
    shown = video_to_frames(res["output_path"], fps=None).astype(int)
    source = video_to_frames(media["video"], fps=None).astype(int)
    corner = (slice(0, H // 4), slice(W // 2, W))
    early = (np.abs(shown[5] - source[5])[corner].max(-1) > 60).mean()
    late = (np.abs(shown[40] - source[40])[corner].max(-1) > 60).mean()
    elsewhere = (np.abs(shown[5] - source[5])[H // 2:, : W // 2].max(-1) > 60).mean()
    assert early > 0.1 and late < 0.01 and elsewhere < 0.01, (early, late, elsewhere)
    assert read_credentials(res["output_path"]).disclosure["visible_label"] == "AI-generated"

    srt = (Path(res["output_path"]).with_suffix(".srt")).read_text()
    assert srt.startswith("1\n00:00:00,000 --> 00:00:01,000\n[AI-generated]\n\n2\n00:00:00,200")
    assert parse_cue_times(srt) == [(0.0, 1.0), (0.2, 1.5)]


def test_require_consent_fails_that_row_only(media, tmp_path):
    cfg = make_config(tmp_path, require_consent=True)
    rows = [make_row(media, tmp_path, "with", subs=False, consent="release-2026-017"),
            make_row(media, tmp_path, "without", subs=False)]
    out = MuxStage(cfg)(pd.DataFrame(rows)).set_index("clip_id")
    assert out.loc["with", "status"] == "ok"
    assert out.loc["without", "status"] == "failed"
    assert out.loc["without", "error_type"] == "MissingConsent"
    assert out.loc["without", "error_message"].startswith("consent: ")
    assert "provenance.require_consent" in out.loc["without", "error_message"]
    assert not (tmp_path / "clips" / "without.mp4").exists()
    assert read_credentials(out.loc["with", "output_path"]).consent == {"id": "release-2026-017"}


def test_dubbed_footage_is_an_edit_of_its_parent(media, tmp_path):
    row = make_row(media, tmp_path, "d1", subs=False, source_video=str(media["footage"]))
    res = MuxStage(make_config(tmp_path)).run_row(row)
    assert res["status"] == "ok", res["error_message"]
    found = read_credentials(res["output_path"])
    assert found.ok and found.actions == ["c2pa.opened", "c2pa.edited"]
    assert found.digital_source_type == "compositeWithTrainedAlgorithmicMedia"
    assert {(i["title"], i["relationship"]) for i in found.inputs} == {
        ("footage.mp4", "parentOf"), ("speech.wav", "inputTo")}
    assert found.disclosure["statement"].startswith("AI-edited video")  # not "from a portrait"


def test_run_fails_rows_without_consent_and_audit_lists_bad_credentials(media, tmp_path, capsys):
    """A whole ``fixtalk run`` (local engine, mux alone on pre-made renders): the row without
    consent fails before rendering, the other is signed; audit then finds a replaced clip."""
    from pipeline.audit import main as audit_main
    from pipeline.run import RunRequest, run

    (tmp_path / "consent.txt").write_text("Anna agrees, 2026-11-02")
    manifest = tmp_path / "clips.csv"
    manifest.write_text("clip_id,portrait,audio,consent\n"
                        f"ok1,{media['portrait']},{media['speech']},consent.txt\n"
                        f"nocons,{media['portrait']},{media['speech']},\n")
    out = tmp_path / "out"
    (out / "work" / "ok1").mkdir(parents=True)
    (out / "work" / "ok1" / "video.mp4").write_bytes(media["video"].read_bytes())
    overrides = ["run.engine=local", "provenance.require_consent=true", "mux.preset=ultrafast",
                 f"provenance.identity_dir={tmp_path / 'config'}"]
    outcome = run(RunRequest(manifest=manifest, out=out, overrides=overrides, stage_classes=[MuxStage], tty=False))
    res = outcome.results.set_index("clip_id")
    assert outcome.exit_code == 3
    assert res.loc["nocons", ["status", "error_stage", "error_type"]].tolist() == [
        "failed", "manifest", "MissingConsent"]
    assert "column 'consent'" in res.loc["nocons", "error_message"]
    assert res.loc["ok1", "status"] == "ok" and res.loc["ok1", "c2pa_manifest_id"].startswith("urn:c2pa:")
    assert res.loc["ok1", "consent"] == str(tmp_path / "consent.txt")
    saved = pd.read_parquet(out / "results.parquet").set_index("clip_id")
    assert saved.loc["ok1", "c2pa_manifest_id"] == res.loc["ok1", "c2pa_manifest_id"]

    assert audit_main([str(out), "--credentials", "invalid", "--ids-only"]) == 0
    assert capsys.readouterr().out == ""
    clip = out / "clips" / "ok1.mp4"
    ffmpeg("-i", str(clip), "-c", "copy", str(tmp_path / "copy.mp4"))  # a remux drops the manifest
    (tmp_path / "copy.mp4").replace(clip)
    assert audit_main([str(out), "--credentials", "invalid"]) == 0
    text = capsys.readouterr().out
    assert "ok1" in text and "no content credentials" in text and "nocons" not in text
