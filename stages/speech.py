"""Speech for script-only rows: synthesise ``OUT/work/<clip_id>/tts.wav`` from the row's script.

Backends:

* ``espeak`` (default): the ``espeak-ng`` command (Debian package), voice ``-v`` and rate ``-s``
  (words per minute); robotic but always available offline.
* ``piper``: used when ``speech.piper_model`` (a ``.onnx`` voice) is configured or
  ``speech.backend=piper``; needs the ``piper-tts`` Python package. Rate maps to piper's
  ``length_scale = 160 / rate_wpm``.

Per-row overrides (optional manifest columns): ``tts_voice`` (espeak voice such as ``en-gb`` or
``en-us+f3``; for piper a path to a ``.onnx`` voice), ``tts_rate`` (words per minute, 80-450),
``tts_language`` (espeak voice used when no ``tts_voice`` is given). Rows that already have audio
pass unchanged. The row gets ``audio`` (the synthesised file), ``tts_backend`` and ``tts_voice``.
"""
from __future__ import annotations

import math
import shutil
import subprocess
import wave
from pathlib import Path
from typing import Any

from stages.base import ClipError, Stage, SystemicError
from stages.config import PipelineConfig
from stages.ingest import work_dir_of
from stages.transcript.script_text import speakable_text

MIN_RATE, MAX_RATE = 80, 450


def filled(value: Any) -> bool:
    """True for a real value (not None, NaN or blank text)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return False
    return str(value).strip() != ""


def wav_seconds(path: Path) -> float:
    with wave.open(str(path), "rb") as wf:
        return wf.getnframes() / float(wf.getframerate())


class SpeechStage(Stage):
    """Text-to-speech for rows with ``script`` and no ``audio`` (see the module docstring)."""

    name = "speech"

    def __init__(self, config: PipelineConfig):
        self.cfg = config.speech
        backend = "piper" if self.cfg.piper_model else self.cfg.backend
        if backend not in ("espeak", "piper"):
            raise SystemicError(f"speech.backend={backend!r}; expected espeak or piper")
        self.backend = backend
        self._voices: dict[str, Any] = {}
        if backend == "espeak":
            self.espeak = shutil.which("espeak-ng")
            if self.espeak is None:
                raise SystemicError("espeak-ng is not installed (apt-get install espeak-ng); it is "
                                    "the default speech backend for script-only rows")
        else:
            try:
                import piper  # noqa: F401
            except ImportError as exc:
                raise SystemicError("speech.piper_model is set but the piper-tts package is not "
                                    "installed: pip install piper-tts (or unset speech.piper_model "
                                    "to use espeak-ng)") from exc

    def process_row(self, row: dict[str, Any]) -> dict[str, Any]:
        if filled(row.get("audio")):
            return {}
        script = str(row.get("script")).strip() if filled(row.get("script")) else ""
        if not script:
            raise ClipError("the row has neither audio nor a script; give an audio file in "
                            "'audio' or the text to speak in 'script'", field="audio/script",
                            error_type="NoSpeech")
        if len(script) > self.cfg.max_script_chars:
            raise ClipError(f"the script has {len(script)} characters, more than "
                            f"speech.max_script_chars={self.cfg.max_script_chars}; split the clip",
                            field="script", error_type="ScriptTooLong")
        rate = self._rate(row)
        text = speakable_text(script)  # numbers read the way the aligner expects them
        dst = work_dir_of(row) / "tts.wav"
        if self.backend == "espeak":
            voice = self._espeak_voice(row)
            self._espeak(text, voice, rate, dst)
        else:
            voice = str(row["tts_voice"]) if filled(row.get("tts_voice")) else str(self.cfg.piper_model)
            self._piper(text, voice, rate, dst)
        if not dst.exists() or dst.stat().st_size <= 44 or wav_seconds(dst) <= 0.0:
            raise ClipError(f"{self.backend} produced no audio for the script; check that the "
                            "script contains speakable words", field="script", error_type="TTSFailed")
        return {"audio": str(dst), "tts_backend": self.backend, "tts_voice": voice,
                "tts_rate": rate, "tts_seconds": round(wav_seconds(dst), 3)}

    # -- options ---------------------------------------------------------------------------
    def _rate(self, row: dict[str, Any]) -> int:
        raw = row.get("tts_rate")
        if not filled(raw):
            return int(self.cfg.rate_wpm)
        try:
            rate = int(float(raw))
        except (TypeError, ValueError):
            rate = -1
        if not MIN_RATE <= rate <= MAX_RATE:
            raise ClipError(f"tts_rate={raw!r}; expected words per minute between {MIN_RATE} and "
                            f"{MAX_RATE} (e.g. 160)", field="tts_rate", error_type="BadTTSOption")
        return rate

    def _espeak_voice(self, row: dict[str, Any]) -> str:
        for col in ("tts_voice", "tts_language"):
            if filled(row.get(col)):
                return str(row[col]).strip()
        return str(self.cfg.language or self.cfg.voice)

    # -- backends --------------------------------------------------------------------------
    def _espeak(self, script: str, voice: str, rate: int, dst: Path) -> None:
        argv = [self.espeak, "-v", voice, "-s", str(rate), "-w", str(dst), "--stdin"]
        proc = subprocess.run(argv, input=script, capture_output=True, text=True, timeout=600,
                              check=False)
        if proc.returncode != 0:
            detail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no message"]
            field = "tts_voice" if "voice" in detail[0].lower() else "script"
            raise ClipError(f"espeak-ng failed with voice {voice!r}: {detail[0]}; list voices with "
                            "'espeak-ng --voices' and set tts_voice/tts_language or speech.voice",
                            field=field, error_type="TTSFailed")

    def _piper(self, script: str, model: str, rate: int, dst: Path) -> None:
        from piper import PiperVoice, SynthesisConfig

        if not Path(model).is_file():
            raise ClipError(f"piper voice model {model} does not exist; give a .onnx voice file "
                            "in tts_voice or speech.piper_model", field="tts_voice",
                            error_type="BadTTSOption")
        voice = self._voices.get(model)
        if voice is None:
            config = self.cfg.piper_config if model == self.cfg.piper_model else None
            voice = PiperVoice.load(model, config_path=config)
            self._voices[model] = voice
        with wave.open(str(dst), "wb") as wf:
            voice.synthesize_wav(script, wf, syn_config=SynthesisConfig(length_scale=160.0 / rate))
