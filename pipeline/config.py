"""Typed pipeline configuration: one dataclass per section, loaded from YAML, overridable from the
CLI with ``--set section.key=value``.

Each stage owns one section; the DAG reads only ``resources`` from it.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

import yaml


@dataclass
class Resources:
    """Ray resources of one stage's actor pool."""

    num_cpus: float = 1.0
    num_gpus: float = 0.0
    batch_size: int = 1
    pool_size: int = 1


@dataclass
class IngestConfig:
    resources: Resources = field(default_factory=Resources)
    sample_rate: int = 16000
    fps: int = 25
    max_audio_seconds: float = 600.0


@dataclass
class FaceCropConfig:
    resources: Resources = field(default_factory=Resources)
    backend: str = "dlib"  # dlib | face_alignment
    crop_scale: float = 1.6  # crop side relative to the face's eye-mouth span
    max_image_side: int = 4096


@dataclass
class MotionConfig:
    resources: Resources = field(default_factory=Resources)
    lip_smoothing_sigma: float = 1.0
    emotion_intensity: float = 1.0


@dataclass
class ModelSection:
    """Which network renders, shared by the motion and render stages."""

    checkpoint: str | None = None  # None: the shipped default model (fixtalk/weights/default.pt)
    audio2lip: str | None = None  # EDTalk's Audio2Lip.pt when the checkpoint is an EDTalk one
    emotions_dir: str | None = None  # EDTalk's predefined_exp_weights/*.npy
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    autocast: str | None = None  # None | bf16 | fp16 (CUDA only)


@dataclass
class RenderConfig:
    resources: Resources = field(default_factory=lambda: Resources(num_cpus=1.0, num_gpus=0.0))
    batch_size: int = 8  # frames per network call
    output: str = "full"  # crop | full (paste back into the portrait)
    feather: float = 0.12


@dataclass
class MuxConfig:
    resources: Resources = field(default_factory=Resources)
    crf: int = 20
    preset: str = "medium"
    audio_bitrate: str = "160k"
    loudness_lufs: float | None = None  # e.g. -16.0 to normalise; None keeps the level


@dataclass
class QCConfig:
    resources: Resources = field(default_factory=Resources)
    enabled: bool = True
    sample_every: int = 5


@dataclass
class SpeechConfig:
    """Text-to-speech for rows with a script and no audio."""

    resources: Resources = field(default_factory=Resources)
    backend: str = "espeak"  # espeak | piper
    voice: str = "en-us"
    rate_wpm: int = 160
    piper_model: str | None = None


@dataclass
class AlignConfig:
    """Script-to-audio alignment, subtitles and transcript checks."""

    resources: Resources = field(default_factory=Resources)
    enabled: bool = True
    backend: str = "auto"  # auto | whisperx | pocketsphinx
    subtitles: str = "sidecar"  # sidecar | embedded | burned


@dataclass
class RunConfig:
    seed: int = 0
    ray_address: str | None = None
    num_cpus: int | None = None


@dataclass
class PipelineConfig:
    run: RunConfig = field(default_factory=RunConfig)
    model: ModelSection = field(default_factory=ModelSection)
    speech: SpeechConfig = field(default_factory=SpeechConfig)
    ingest: IngestConfig = field(default_factory=IngestConfig)
    align: AlignConfig = field(default_factory=AlignConfig)
    face_crop: FaceCropConfig = field(default_factory=FaceCropConfig)
    motion: MotionConfig = field(default_factory=MotionConfig)
    render: RenderConfig = field(default_factory=RenderConfig)
    mux: MuxConfig = field(default_factory=MuxConfig)
    qc: QCConfig = field(default_factory=QCConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class ConfigError(ValueError):
    """An unknown key or a value of the wrong type in a config file or ``--set``."""


def _coerce(value: Any, typ: Any, where: str) -> Any:
    text = str(typ)
    if isinstance(value, str) and value.lower() in ("none", "null") and "None" in text:
        return None
    if value is None:
        return None
    try:
        if typ is bool or text == "bool":
            if isinstance(value, str):
                if value.lower() in ("1", "true", "yes", "on"):
                    return True
                if value.lower() in ("0", "false", "no", "off"):
                    return False
                raise ValueError(value)
            return bool(value)
        if typ is int or text == "int":
            return int(value)
        if typ is float or text.startswith("float"):
            return float(value)
        if "float" in text and "None" in text:
            return float(value)
        if "int" in text and "None" in text:
            return int(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: expected {text}, got {value!r}") from exc
    return value


def _apply(obj: Any, data: dict[str, Any], prefix: str) -> None:
    hints = get_type_hints(type(obj))
    names = {f.name for f in dataclasses.fields(obj)}
    for key, value in data.items():
        where = f"{prefix}{key}"
        if key not in names:
            raise ConfigError(f"unknown config key {where!r}; known: {', '.join(sorted(names))}")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise ConfigError(f"{where}: expected a mapping")
            _apply(current, value, where + ".")
        else:
            setattr(obj, key, _coerce(value, hints[key], where))


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> PipelineConfig:
    """Defaults, then the YAML file (if any), then ``key.sub=value`` overrides."""
    cfg = PipelineConfig()
    if path is not None:
        data = yaml.safe_load(Path(path).read_text()) or {}
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of sections")
        _apply(cfg, data, "")
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key=value, e.g. render.batch_size=4")
        key, value = item.split("=", 1)
        parts = key.strip().split(".")
        nested: dict[str, Any] = {parts[-1]: yaml.safe_load(value) if value else value}
        for part in reversed(parts[:-1]):
            nested = {part: nested}
        _apply(cfg, nested, "")
    return cfg
