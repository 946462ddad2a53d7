"""The HTML report on a small fake OUT (real mp4s from ffmpeg), rendered in headless Chromium."""
from __future__ import annotations

import html as html_lib
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pandas as pd
import pytest

from pipeline.report import write_report
from pipeline.report_words import duration_words, reason_sentences, transcript_cell
from stages.qc import plot_identity

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(not shutil.which("ffmpeg"), reason="needs ffmpeg")
needs_chromium = pytest.mark.skipif(CHROMIUM is None,
                                    reason="Chromium not installed (apt-get install -y chromium)")

#: The lead sentence of the fixture's summary.
LEAD = "3 clips: 1 ok, 1 with warnings, 1 failed (1 could not be rendered)."
#: pocketsphinx's figure on alice's synthetic voice: must never be shown.
UNTRUSTED_WER = 1.1333


def _clip(path: Path, colour: str, seconds: float = 1.0) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y",
                    "-f", "lavfi", "-i", f"color=c={colour}:s=96x96:r=25:d={seconds}",
                    "-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds}",
                    "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", "-ar", "48000",
                    str(path)], check=True)


def _run_json(**align) -> dict:
    """A run.json shaped like the one pipeline/run.py writes (the parts the report reads)."""
    return {
        "manifest": "/data/clips.csv", "out": "/elsewhere/old out", "exit_code": 3,
        "started": "2026-12-06T22:14:02.578811+00:00", "finished": "2026-12-06T22:15:26.6+00:00",
        "wall_time_s": 84.028, "counts": {"ok": 2, "failed": 1, "skipped": 0, "pending": 0,
                                          "total": 3},
        "rendered_this_run": 3, "clips_per_min": 2.1, "errors": [],
        "stage_seconds": {"render": {"p50": 1.5, "p95": 1.5, "total": 3.0}}, "error": None,
        "checkpoint_id": "default-9797a23064", "versions": {"python": "3.11.7"},
        "config": {"model": {"checkpoint": None},
                   "align": {"pocketsphinx_wer_in_flag": False, "min_aligned_share": 0.5, **align}},
        "ledger_run_id": "35a6da27b2fc",
    }


@pytest.fixture(scope="module")
def fake_out(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("fake out")  # a space in the path on purpose
    (out / "clips").mkdir()
    (out / "qc").mkdir()
    _clip(out / "clips" / "alice_ok.mp4", "green")
    _clip(out / "clips" / "bob_warn.mp4", "blue", 1.6)
    (out / "clips" / "alice_ok.vtt").write_text("WEBVTT\n\n00:00.000 --> 00:01.000\nHello there.\n")
    plot_identity(out / "qc" / "bob_warn_identity.png", np.arange(8) * 0.2,
                  np.linspace(0.97, 0.90, 8), title="bob_warn", warn=0.95, fail=0.91)
    rows = [
        # results written before OUT was moved: absolute paths into the old place
        {"clip_id": "alice_ok", "status": "ok",
         "output_path": "/elsewhere/old out/clips/alice_ok.mp4",
         "subtitles_vtt": "/elsewhere/old out/clips/alice_ok.vtt", "width": 96, "height": 96,
         "qc_status": "pass", "qc_reasons": "", "csim_mean": 0.98, "csim_min": 0.97,
         "phone_corr": 0.72, "mouth_motion_speech": 0.06, "face_presence": 1.0, "lufs": -16.2,
         "duration_diff_s": 0.01, "t_render": 20.0, "t_qc": 10.0, "t_adapt": 0.0,
         "align_backend": "pocketsphinx", "script_wer": UNTRUSTED_WER,
         "script_aligned_share": 1.0, "adapted_checkpoint": None, "render_device": "cpu",
         "error_message": None, "error_stage": None, "error_type": None},
        {"clip_id": "bob_warn", "status": "ok", "output_path": "clips/bob_warn.mp4",
         "subtitles_vtt": None, "width": 96, "height": 96,
         "qc_status": "warn", "qc_reasons": "identity: csim_mean 0.930 < 0.950 [dlib-resnet128] (warn)",
         "csim_mean": 0.93, "csim_min": 0.90, "phone_corr": 0.41, "mouth_motion_speech": 0.05,
         "face_presence": 1.0, "lufs": -17.0, "duration_diff_s": 0.02,
         "t_render": 40.0, "t_qc": 12.0, "t_adapt": 70.0,
         "align_backend": "whisperx", "script_wer": 0.0833, "script_aligned_share": 0.95,
         "script_transcript": "hello there", "adapted_checkpoint": "/x/fit.pt",
         "render_device": "cpu", "qc_plot": str(out / "qc" / "bob_warn_identity.png"),
         "error_message": None, "error_stage": None, "error_type": None},
        {"clip_id": "carol_failed", "status": "failed", "output_path": None, "qc_status": None,
         "subtitles_vtt": None, "width": None, "height": None,
         "qc_reasons": None, "csim_mean": float("nan"), "csim_min": float("nan"),
         "phone_corr": float("nan"), "mouth_motion_speech": None, "face_presence": float("nan"),
         "lufs": float("nan"), "duration_diff_s": float("nan"),
         "t_render": float("nan"), "t_qc": float("nan"), "t_adapt": float("nan"),
         "align_backend": None, "script_wer": float("nan"), "script_aligned_share": float("nan"),
         "adapted_checkpoint": None, "render_device": None,
         "error_message": "portrait: no face found <script>alert(1)</script>",
         "error_stage": "face_crop", "error_type": "ClipError"},
    ]
    pd.DataFrame(rows).to_parquet(out / "results.parquet")
    (out / "run.json").write_text(json.dumps(_run_json()))
    return out


def _visible_text(page: str) -> str:
    """The page's text as a reader sees it (no script, style, tags or attributes)."""
    page = re.sub(r"<(script|style)\b.*?</\1>", " ", page, flags=re.S | re.I)
    return html_lib.unescape(re.sub(r"<[^>]+>", " ", page))


def test_report_is_self_contained(fake_out):
    path = write_report(fake_out)
    assert path == fake_out / "report.html"
    text = path.read_text()
    assert not re.search(r"""(src|href|poster)=['"]?(https?:)?//""", text), \
        "the report references the network"
    # failed first, then warn, then pass
    order = [m.group(1) for m in re.finditer(r"<tr class='[^']*' data-clip='([^']+)'", text)]
    assert order == ["carol_failed", "bob_warn", "alice_ok"]
    assert text.count("data:image/jpeg;base64,") == 8  # 3 thumbnails + 1 poster x 2 rendered clips
    # links and players point into the moved folder, relatively
    assert "href='clips/alice_ok.mp4'" in text and "href='clips/bob_warn.mp4'" in text
    players = re.findall(r"<video [^>]*src='([^']+)'", text)
    assert players == ["clips/bob_warn.mp4", "clips/alice_ok.mp4"]
    assert "<track kind='subtitles' label='subtitles' src='clips/alice_ok.vtt'>" in text
    assert text.count("<video controls preload='none' height='144' width='144' poster='data:image/jpeg") == 2
    assert "<script>alert(1)</script>" not in text and "&lt;script&gt;alert(1)" in text
    assert "alt='identity curve bob_warn'" in text
    assert re.search(r"data-clip='alice_ok'.*<li class='quiet'>All checks passed.</li>", text)
    assert re.search(r"data-clip='bob_warn'.*<li title='identity: csim_mean 0.930 &lt; 0.950 "
                     r"\[dlib-resnet128\] \(warn\)'><span class='lvl warn'>warn</span>The face "
                     r"looks less like the portrait than it should", text)
    assert "id='hist-csim_mean'" in text and "id='hist-phone_corr'" in text


def test_a_long_run_lists_its_problems_first_and_counts_the_rest(fake_out, tmp_path):
    """A 100,000-clip run must not write a 100,000-row page: the table stops at max_rows, problems
    first, and says how many clips it leaves to results.parquet."""
    text = write_report(fake_out, max_rows=2).read_text()
    order = [m.group(1) for m in re.finditer(r"<tr class='[^']*' data-clip='([^']+)'", text)]
    assert order == ["carol_failed", "bob_warn"]
    assert "1 more clip is not listed here" in _visible_text(text)
    assert "alt='identity curve bob_warn'" in text  # flagged clips keep their plots
    assert "clips-not-listed" not in write_report(fake_out).read_text()


def test_summary_is_in_words_and_keeps_the_raw_record_in_run_json(fake_out):
    text = write_report(fake_out).read_text()
    seen = " ".join(_visible_text(text).split())
    assert LEAD in seen
    assert "2 clips rendered in this run." in seen  # run.json's 3 counts the failed one too
    assert "The run took 1 min 24 s, on 6 Dec 2026 from 22:14 to 22:15 UTC." in seen
    # per clip: alice 30 s, bob 122 s, most of it fitting the model
    assert ("A clip took 1 min 16 s of processing (median of 2 delivered clips); the longest, "
            "bob_warn, 2 min 02 s, most of it fitting the model (1 min 10 s).") in seen
    assert "the shipped default model" in seen and "id default-9797a23064" in seen
    assert "fitted to the presenter before rendering for 1 of 2 clips" in seen
    assert ("1 clip could not be rendered: it failed at the face crop (carol_failed). "
            "Why: portrait: no face found") in seen
    assert "1 clip has warnings: likeness in bob_warn." in seen
    assert ("Script check: pocketsphinx (1 clip) and whisperx (1 clip) aligned each script" in seen
            and "shows the word error rate of whisperx's transcripts" in seen
            and "pocketsphinx's word-by-word transcript is not reliable" in seen)
    assert "href='run.json'" in text and "href='results.parquet'" in text
    # the raw record is not in the page: no JSON, no config keys, no stage percentiles
    assert not re.search(r"""[{\[]\s*["']""", seen), "raw JSON in the page"
    for raw in ("stage_seconds", "p50", "ledger_run_id", "pocketsphinx_wer_in_flag\":"):
        assert raw not in seen


def test_summary_says_what_failed_qc_and_why_a_run_stopped(tmp_path):
    from pipeline.report_summary import summary_html

    rows = pd.DataFrame([
        {"clip_id": "a", "status": "ok", "qc_status": "pass", "qc_reasons": ""},
        {"clip_id": "b", "status": "skipped", "qc_status": "fail",
         "qc_reasons": "loudness: the audio is silent (-70.0 LUFS) (fail); "
                       "identity: csim_min 0.900 < 0.910 [dlib-resnet128] (warn)"},
        {"clip_id": "c", "status": "pending"}, {"clip_id": "d", "status": "pending"}])
    run = {**_run_json(), "error": "RayActorError: the render actor died (out of memory)"}
    seen = " ".join(_visible_text(summary_html(rows, run, tmp_path)).split())
    assert ("4 clips: 1 ok, 0 with warnings, 1 failed (1 rendered but failed quality control), "
            "2 not rendered yet.") in seen
    assert "What failed and why" in seen
    assert "1 clip failed quality control: sound level in b." in seen  # the warning is not why
    assert ("The run stopped early because of a fault that is not about one clip: RayActorError: "
            "the render actor died (out of memory). 2 clips were not rendered; fix the fault and "
            "run the same command again: finished clips are kept.") in seen
    warned = rows.assign(qc_status=["pass", "warn", "pass", "pass"], status="ok")
    seen = " ".join(_visible_text(summary_html(warned, _run_json(), tmp_path)).split())
    assert "What to check" in seen and "What failed" not in seen
    assert "1 clip has warnings: sound level in b; likeness in b." in seen
    many = pd.DataFrame([{"clip_id": f"c{i}", "status": "ok", "qc_status": "warn",
                          "qc_reasons": "loudness: -20.3 LUFS (target -16 +-1) (warn)"}
                         for i in range(7)])
    seen = " ".join(_visible_text(summary_html(many, _run_json(), tmp_path)).split())
    assert "7 clips have warnings: sound level in 7 clips (c0, c1, c2, c3, c4 and 2 more)." in seen


def test_qc_reasons_read_as_sentences_for_what_the_qc_rules_write():
    from pipeline.config import QCConfig
    from stages.checks.rules import judge

    metrics = {"csim_mean": 0.80, "csim_min": 0.70, "csim_slope": -0.01, "csim_slope_bound": -0.005,
               "face_presence": 0.9, "mouth_motion": 0.05, "sync_corr": 0.2, "sync_lag_frames": -5,
               "duration_diff_s": 0.1, "vcodec": "hevc", "pix_fmt": "yuv420p", "acodec": "aac",
               "sample_rate": 44100, "fps_out": 25.0, "width": 96, "height": 96, "lufs": -30.0,
               "true_peak_db": 0.5, "qc_embedder": "dlib-resnet128", "frames_sampled": 10,
               "script_wer": 0.9, "subtitle_timing": "estimated", "dubbed_fraction": 0.5,
               "outside_psnr_min": 20.0}
    status, reasons = judge(metrics, QCConfig(), fps=25.0, lufs_target=-16.0, wer_trusted=True)
    assert status == "fail"
    said = reason_sentences(reasons)
    assert len(said) == len(reasons.split("; ")) >= 12
    for r in said:
        assert "_" not in r.sentence, r  # no metric codes left
        assert r.sentence[0].isupper() and r.sentence.endswith(".")
        assert r.level in ("warn", "fail") and r.raw in reasons
    sentences = {r.sentence for r in said}
    assert "The face looks less like the portrait than it should (likeness 0.800, expected at least 0.910)." in sentences
    assert "The file's video codec is hevc, expected h264." in sentences
    assert "The sound level is -30.0 LUFS; the target is -16 ± 1 LUFS." in sentences
    assert "The likeness fades during the clip (it falls by 0.0100 per second)." in sentences
    assert not [r for r in said if "sync_lag" in r.raw or "sync_corr" in r.raw]  # reported, never judged
    lips = {"mouth_motion_speech": 0.06, "pause_seconds": 2.0, "pause_motion_ratio": 0.9,
            "mouth_motion_pause": 0.03, "phone_speech_s": 6.0, "phone_corr": 0.05, "bilabial_count": 8,
            "open_vowel_count": 8, "bilabial_closure": 0.8, "fps_out": 25.0}
    _, lip_reasons = judge({**metrics, **lips}, QCConfig(), fps=25.0, lufs_target=-16.0, wer_trusted=True)
    lip_sentences = [r.sentence for r in reason_sentences(lip_reasons)]
    assert "The lips stay apart on 8 P/B/M sounds: opening against 8 open vowels (lip gap on P/B/M " \
           "0.80, expected at most 0.70)." in lip_sentences
    assert any(x.startswith("Lip sync: the mouth moves through 2.0 s of pauses") for x in lip_sentences)
    # QC's own explanation leads, in the formats of the lip-sync checks
    assert [r.sentence for r in reason_sentences(
        "sync: mouth_motion 0.003 < 0.005 (the mouth does not move) (fail); "
        "sync: phone_corr 0.10 < 0.20 (the mouth does not follow the phones of 3.0 s of aligned "
        "speech) (warn); lip jitter: the mouth moves through 2.1 s of pauses in the speech "
        "(mouth_motion_pause 0.030 > 0.020, 1.50 x its motion in speech > 0.80) (warn)")] == [
        "The mouth does not move (mouth movement 0.003, expected at least 0.005).",
        "The mouth does not follow the phones of 3.0 s of aligned speech (agreement with the "
        "phones 0.10, expected at least 0.20).",
        "Lip sync: the mouth moves through 2.1 s of pauses in the speech (mouth movement in "
        "pauses 0.030 > 0.020, 1.50 x its motion in speech > 0.80)."]
    assert reason_sentences("sync: bilabial_closure 0.80 > 0.50 (the lips stay apart on 5 P/B/M "
                            "sounds) (warn)")[0].sentence == (
        "The lips stay apart on 5 P/B/M sounds (lip gap on P/B/M 0.80, expected at most 0.50).")
    # a reason this module does not know is kept, in words
    unknown = reason_sentences("sync: the mouth moves through 2 pauses_over_limit (warn)")
    assert unknown[0].sentence == "Lip sync: the mouth moves through 2 pauses over limit."


@pytest.mark.parametrize("backend, in_flag, shown", [
    ("whisperx", False, "0.08"), ("pocketsphinx", False, "not checked"),
    ("pocketsphinx", True, "0.08"), (None, False, "not checked")])
def test_script_wer_is_shown_only_from_a_trusted_recogniser(backend, in_flag, shown):
    row = {"align_backend": backend, "script_wer": 0.0833, "script_aligned_share": 0.9}
    cell = transcript_cell(row, {"pocketsphinx_wer_in_flag": in_flag, "min_aligned_share": 0.5})
    assert cell.text == shown
    if shown == "not checked":
        assert cell.sort_value is None and "0.08" not in cell.tooltip
        assert "Not checked" in cell.tooltip and "90%" in cell.tooltip
    else:
        assert cell.sort_value == 0.0833 and backend in cell.tooltip
    assert transcript_cell({"script_wer": None}, {}).text == ""  # no script, no check


def test_a_trusted_pocketsphinx_wer_is_shown_in_the_page(tmp_path):
    rows = [{"clip_id": "a", "status": "ok", "qc_status": "pass", "align_backend": "pocketsphinx",
             "script_wer": UNTRUSTED_WER, "script_aligned_share": 1.0}]
    pd.DataFrame(rows).to_parquet(tmp_path / "results.parquet")
    (tmp_path / "run.json").write_text(json.dumps(_run_json()))
    assert "1.13" not in write_report(tmp_path).read_text()
    (tmp_path / "run.json").write_text(json.dumps(_run_json(pocketsphinx_wer_in_flag=True)))
    assert ">1.13</td>" in write_report(tmp_path).read_text()


def test_duration_words():
    assert [duration_words(s) for s in (0.42, 45.4, 185, 7800, None)] == [
        "0.4 s", "45 s", "3 min 05 s", "2 h 10 min", "unknown"]


def _chromium(args: list[str], profile: Path, timeout: int = 120) -> subprocess.CompletedProcess:
    argv = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
            "--no-first-run", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", f"--user-data-dir={profile}", *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)


@needs_chromium
def test_report_renders_in_headless_chromium(fake_out, tmp_path):
    from PIL import Image

    path = write_report(fake_out)
    url = path.resolve().as_uri()
    dom = _chromium(["--dump-dom", url + "#sort=csim_mean"], tmp_path / "profile")
    assert dom.returncode == 0, dom.stderr[-2000:]
    rows = re.findall(r'<tr class="[^"]*" data-clip="([^"]+)"', dom.stdout)
    # the inline script ran: ascending CSIM, the failed row (no value) last
    assert rows == ["bob_warn", "alice_ok", "carol_failed"], rows
    assert 'class="asc"' in dom.stdout
    assert "portrait: no face found" in dom.stdout
    seen = " ".join(_visible_text(dom.stdout).split())
    assert LEAD in seen and "3 shown" in seen
    assert not re.search(r"""[{\[]\s*["']""", seen) and "stage_seconds" not in seen
    # one player per rendered clip, by a relative link to a file that is there
    videos = {}
    for clip, row in re.findall(r'<tr [^>]*data-clip="([^"]+)"(.*?)</tr>', dom.stdout, re.S):
        videos.update({clip: src for src in re.findall(r'<video [^>]*src="([^"]+)"', row)})
    assert sorted(videos) == ["alice_ok", "bob_warn"]
    for src in videos.values():
        assert not re.match(r"^([a-z]+:|/)", src) and (fake_out / unquote(src)).is_file()
    # the untrusted WER is "not checked" with its reason; the trusted one is a number
    alice = re.search(r'data-clip="alice_ok".*?</tr>', dom.stdout, re.S).group(0)
    assert re.search(r'<td class="unchecked" data-v="" title="Not checked: the transcript came '
                     r'from pocketsphinx[^"]*">not checked</td>', alice)
    assert "1.13" not in dom.stdout
    assert re.search(r'data-clip="bob_warn".*?>0\.08</td>', dom.stdout, re.S)

    # filtered on load: only the clips of one outcome are shown; an unknown filter shows all
    for show, visible in (("warn", {"bob_warn"}), ("failed", {"carol_failed"}),
                          ("bogus", {"alice_ok", "bob_warn", "carol_failed"})):
        shown = _chromium(["--dump-dom", f"{url}#show={show}"], tmp_path / "profile").stdout
        rows = dict(re.findall(r'<tr class="[^"]*" data-clip="([^"]+)" data-outcome="[^"]+"( hidden)?',
                               shown))
        assert {c for c, hidden in rows.items() if not hidden} == visible, (show, rows)
        assert f"{len(visible)} shown" in shown

    # the players play under the page's security policy: a copy of the page beside it loads
    # each clip's metadata and writes what it found into the DOM
    probe = fake_out / "report-probe.html"
    probe.write_text(path.read_text().replace("</body>", (
        "<pre id='probe'></pre><script>var v=document.querySelectorAll('video'),out=[];"
        "v.forEach(function(e){e.addEventListener('loadedmetadata',function(){"
        "out.push(e.getAttribute('src')+'='+e.duration.toFixed(1));"
        "document.getElementById('probe').textContent=out.sort().join(' ');});"
        "e.preload='metadata';e.load();});</script></body>")))
    try:
        loaded = _chromium(["--virtual-time-budget=10000", "--dump-dom", probe.resolve().as_uri()],
                           tmp_path / "profile")
    finally:
        probe.unlink()
    assert '<pre id="probe">clips/alice_ok.mp4=1.0 clips/bob_warn.mp4=1.6</pre>' in loaded.stdout, \
        loaded.stdout[-500:]

    shot = tmp_path / "report.png"
    res = _chromium([f"--screenshot={shot}", "--window-size=1280,2000", url], tmp_path / "profile")
    assert res.returncode == 0 and shot.is_file(), res.stderr[-2000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = np.asarray(Image.open(shot).convert("RGB"))
    assert image.shape[:2] == (2000, 1280)
    assert image.std() > 10  # text, thumbnails and plots, not a blank page
    # the green and blue posters and thumbnails were painted
    green = (image[..., 1] > 100) & (image[..., 0] < 60) & (image[..., 2] < 60)
    blue = (image[..., 2] > 150) & (image[..., 0] < 60) & (image[..., 1] < 60)
    assert green.sum() > 5000 and blue.sum() > 5000
    if os.environ.get("FIXTALK_KEEP_SCREENSHOT"):  # to look at it: a path to copy it to
        shutil.copy(shot, os.environ["FIXTALK_KEEP_SCREENSHOT"])


def test_report_without_results(tmp_path):
    text = write_report(tmp_path).read_text()
    assert "<table id='clips'>" in text and "No clips in this run" in text
