"""whisperx glue: transcription (faster-whisper) and wav2vec2 CTC word alignment, from the local
model cache only.

Nothing here downloads. Every loader checks that its files are already on disk and raises
:class:`WhisperxUnavailable` (with what is missing and where it was looked for) otherwise, so the
align stage's ``auto`` backend can fall back to pocketsphinx.

- ASR: ``align.whisperx_model`` is a faster-whisper (CTranslate2) model name such as ``small``
  (looked up in the Hugging Face cache, or ``align.whisperx_model_dir``) or a local directory
  holding ``model.bin``.
- Alignment: ``align.whisperx_align_model`` is a torchaudio pipeline name (its checkpoint must be in
  ``align.whisperx_align_model_dir`` or ``$TORCH_HOME/hub/checkpoints``), a Hugging Face model id
  in the cache, or a local Wav2Vec2ForCTC directory; ``None`` takes whisperx's default for
  ``align.language``.

whisperx splits aligned text into sentences with NLTK's ``punkt_tab``; when that resource is
absent a minimal English one is written to a temporary directory instead of letting NLTK download.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

SAMPLE_RATE = 16000


class WhisperxUnavailable(RuntimeError):
    """whisperx or one of its models cannot be loaded from the local cache."""


def ensure_punkt_tab(language: str = "english") -> None:
    """Make ``tokenizers/punkt_tab/<language>`` findable without a download."""
    import nltk

    try:
        nltk.data.find(f"tokenizers/punkt_tab/{language}/")
        return
    except LookupError:
        pass
    root = Path(tempfile.gettempdir()) / "fixtalk_nltk_data"
    folder = root / "tokenizers" / "punkt_tab" / language
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("collocations.tab", "sent_starters.txt", "ortho_context.tab"):
        (folder / name).touch()
    (folder / "abbrev_types.txt").write_text("mr\nmrs\ndr\nst\ne.g\ni.e\n")
    if str(root) not in nltk.data.path:
        nltk.data.path.append(str(root))


def _import_whisperx():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import whisperx  # noqa: F401
        import whisperx.alignment  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - any import failure means "not available"
        raise WhisperxUnavailable(f"whisperx does not import: {exc}") from exc
    return whisperx


def _resolve_asr_model(name: str, cache_dir: str | None) -> str:
    """Local path of a faster-whisper model, from a directory or the HF cache; never downloads."""
    if Path(name).is_dir():
        if not (Path(name) / "model.bin").exists():
            raise WhisperxUnavailable(f"{name} has no model.bin (a CTranslate2 whisper model)")
        return name
    try:
        from faster_whisper.utils import download_model

        return download_model(name, local_files_only=True, cache_dir=cache_dir)
    except Exception as exc:  # noqa: BLE001
        raise WhisperxUnavailable(
            f"faster-whisper model {name!r} is not in the local cache ({cache_dir or 'HF cache'}): "
            f"{type(exc).__name__}; put it there or set align.whisperx_model to a local folder"
        ) from exc


def load_asr(name: str, *, device: str, compute_type: str, cache_dir: str | None,
             language: str | None) -> Any:
    """whisperx's batched faster-whisper pipeline, from local files only."""
    path = _resolve_asr_model(name, cache_dir)
    whisperx = _import_whisperx()
    try:
        return whisperx.load_model(path, device, compute_type=compute_type, language=language,
                                   local_files_only=True, download_root=cache_dir)
    except Exception as exc:  # noqa: BLE001
        raise WhisperxUnavailable(f"whisperx.load_model({path!r}) failed: {exc}") from exc


def load_aligner(language: str, *, name: str | None, model_dir: str | None,
                 device: str) -> tuple[Any, dict]:
    """(model, metadata) for ``whisperx.align``, from local files only."""
    _import_whisperx()
    import torch
    import torchaudio
    import whisperx.alignment as wa

    name = name or wa.DEFAULT_ALIGN_MODELS_TORCH.get(language) or wa.DEFAULT_ALIGN_MODELS_HF.get(language)
    if name is None:
        raise WhisperxUnavailable(f"no default whisperx alignment model for language {language!r};"
                                  " set align.whisperx_align_model to a local wav2vec2 CTC model")
    if name in torchaudio.pipelines.__all__:
        ckpt_dir = Path(model_dir) if model_dir else Path(torch.hub.get_dir()) / "checkpoints"
        ckpt = ckpt_dir / Path(getattr(torchaudio.pipelines, name)._path).name
        if not ckpt.exists():
            raise WhisperxUnavailable(f"alignment checkpoint {ckpt} is missing (torchaudio {name})")
    try:
        return wa.load_align_model(language, device, model_name=name, model_dir=model_dir,
                                   model_cache_only=True)
    except Exception as exc:  # noqa: BLE001
        raise WhisperxUnavailable(f"alignment model {name!r} does not load offline: {exc}") from exc


@dataclass
class WordSpan:
    word: str
    start: float | None
    end: float | None
    score: float | None


class WhisperxBackend:
    """Loaded whisperx models. ``asr`` may be None (alignment only, e.g. in tests)."""

    def __init__(self, asr: Any, align_model: Any, align_metadata: dict, *, device: str = "cpu",
                 language: str = "en", batch_size: int = 8):
        self.asr = asr
        self.align_model = align_model
        self.align_metadata = align_metadata
        self.device = device
        self.language = language
        self.batch_size = batch_size

    def transcribe(self, audio: np.ndarray) -> tuple[str, list[dict]]:
        """Transcript text and whisperx segments ({text, start, end}) of float32 16 kHz audio."""
        if self.asr is None:
            raise WhisperxUnavailable("no whisperx ASR model loaded")
        result = self.asr.transcribe(audio.astype(np.float32), batch_size=self.batch_size,
                                     language=self.language)
        segments = list(result.get("segments", []))
        return " ".join(s["text"].strip() for s in segments), segments

    def align_words(self, words: list[str], audio: np.ndarray,
                    span: tuple[float, float] | None = None) -> list[WordSpan]:
        """Align spoken ``words`` (one segment over ``span``, default the whole audio) with
        ``whisperx.align``; returns one :class:`WordSpan` per input word, in order."""
        import torch
        import whisperx

        ensure_punkt_tab()
        duration = len(audio) / SAMPLE_RATE
        start, end = span if span else (0.0, duration)
        segment = {"text": " ".join(words), "start": float(start), "end": float(min(end, duration))}
        result = whisperx.align([segment], self.align_model, self.align_metadata,
                                torch.from_numpy(audio.astype(np.float32)), self.device)
        got = result.get("word_segments", [])
        out: list[WordSpan] = []
        j = 0
        for w in words:  # whisperx keeps word order; match by text to be safe
            while j < len(got) and got[j]["word"].strip().lower() != w.lower():
                j += 1
            if j < len(got):
                g = got[j]
                out.append(WordSpan(w, _num(g.get("start")), _num(g.get("end")),
                                    _num(g.get("score"))))
                j += 1
            else:
                out.append(WordSpan(w, None, None, None))
        return out


def _num(x: Any) -> float | None:
    return None if x is None or not np.isfinite(float(x)) else float(x)


def load_backend(*, language: str, model: str, model_dir: str | None, compute_type: str,
                 align_model: str | None, align_model_dir: str | None, device: str
                 ) -> WhisperxBackend:
    """Load ASR + alignment models from the local cache, or raise :class:`WhisperxUnavailable`."""
    asr = load_asr(model, device=device, compute_type=compute_type, cache_dir=model_dir,
                   language=language)
    am, meta = load_aligner(language, name=align_model, model_dir=align_model_dir, device=device)
    return WhisperxBackend(asr, am, meta, device=device, language=language)
