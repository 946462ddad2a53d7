"""The HTML report on a small fake OUT (real mp4s from ffmpeg), rendered in headless Chromium."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.report import write_report
from stages.qc import plot_identity

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(not shutil.which("ffmpeg"), reason="needs ffmpeg")


def _clip(path: Path, colour: str, seconds: float = 1.0) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y",
                    "-f", "lavfi", "-i", f"color=c={colour}:s=96x96:r=25:d={seconds}",
                    "-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds}",
                    "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", "-ar", "48000",
                    str(path)], check=True)


@pytest.fixture(scope="module")
def fake_out(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("fake out")  # a space in the path on purpose
    (out / "clips").mkdir()
    (out / "qc").mkdir()
    _clip(out / "clips" / "alice_ok.mp4", "green")
    _clip(out / "clips" / "bob_warn.mp4", "blue", 1.6)
    plot_identity(out / "qc" / "bob_warn_identity.png", np.arange(8) * 0.2,
                  np.linspace(0.97, 0.90, 8), title="bob_warn", warn=0.95, fail=0.91)
    rows = [
        {"clip_id": "alice_ok", "status": "ok", "output_path": str(out / "clips" / "alice_ok.mp4"),
         "qc_status": "pass", "qc_reasons": "", "csim_mean": 0.98, "csim_min": 0.97,
         "sync_corr": 0.72, "sync_lag_frames": 0, "face_presence": 1.0, "lufs": -16.2,
         "duration_diff_s": 0.01, "error_message": None, "error_stage": None, "error_type": None},
        {"clip_id": "bob_warn", "status": "ok", "output_path": "clips/bob_warn.mp4",
         "qc_status": "warn", "qc_reasons": "identity: csim_mean 0.930 < 0.950 (warn)",
         "csim_mean": 0.93, "csim_min": 0.90, "sync_corr": 0.41, "sync_lag_frames": 2,
         "face_presence": 1.0, "lufs": -17.0, "duration_diff_s": 0.02,
         "qc_plot": str(out / "qc" / "bob_warn_identity.png"),
         "error_message": None, "error_stage": None, "error_type": None},
        {"clip_id": "carol_failed", "status": "failed", "output_path": None, "qc_status": None,
         "qc_reasons": None, "csim_mean": float("nan"), "csim_min": float("nan"),
         "sync_corr": float("nan"), "sync_lag_frames": None, "face_presence": float("nan"),
         "lufs": float("nan"), "duration_diff_s": float("nan"),
         "error_message": "portrait: no face found <script>alert(1)</script>",
         "error_stage": "face_crop", "error_type": "ClipError"},
    ]
    pd.DataFrame(rows).to_parquet(out / "results.parquet")
    (out / "run.json").write_text(json.dumps({"run_id": "r-test", "clips_ok": 2, "clips_failed": 1,
                                              "stage_p50_s": {"render": 1.5}}))
    return out


def test_report_is_self_contained(fake_out):
    path = write_report(fake_out)
    assert path == fake_out / "report.html"
    text = path.read_text()
    assert not re.search(r"""(src|href)=['"]?(https?:)?//""", text), "the report references the network"
    # failed first, then warn, then pass
    order = [m.group(1) for m in re.finditer(r"<tr class='[^']*' data-clip='([^']+)'", text)]
    assert order == ["carol_failed", "bob_warn", "alice_ok"]
    assert text.count("data:image/jpeg;base64,") == 6  # 3 thumbnails x 2 rendered clips
    assert "href='clips/alice_ok.mp4'" in text and "href='clips/bob_warn.mp4'" in text
    assert "<script>alert(1)</script>" not in text and "&lt;script&gt;alert(1)" in text
    assert "alt='identity curve bob_warn'" in text
    assert "id='hist-csim_mean'" in text and "id='hist-sync_corr'" in text
    assert "r-test" in text


def _chromium(args: list[str], profile: Path, timeout: int = 120) -> subprocess.CompletedProcess:
    argv = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
            "--no-first-run", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", f"--user-data-dir={profile}", *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium not installed (apt-get install -y chromium)")
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

    shot = tmp_path / "report.png"
    res = _chromium([f"--screenshot={shot}", "--window-size=1280,2000", url], tmp_path / "profile")
    assert res.returncode == 0 and shot.is_file(), res.stderr[-2000:]
    image = np.asarray(Image.open(shot).convert("RGB"))
    assert image.shape[:2] == (2000, 1280)
    assert image.std() > 10  # text, thumbnails and plots, not a blank page
    # the green and blue thumbnails were painted
    green = (image[..., 1] > 100) & (image[..., 0] < 60) & (image[..., 2] < 60)
    blue = (image[..., 2] > 150) & (image[..., 0] < 60) & (image[..., 1] < 60)
    assert green.sum() > 500 and blue.sum() > 500


def test_report_without_results(tmp_path):
    text = write_report(tmp_path).read_text()
    assert "<table id='clips'>" in text and "clips</td><td>0" in text
