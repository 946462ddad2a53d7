"""Configuration loading: defaults, then a YAML file, then ``--set section.key=value`` overrides.

The types themselves live in :mod:`stages.config` (the stages read them without importing the
orchestration); they are re-exported here for the CLI and the driver.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, get_type_hints

import yaml

from stages.config import (  # noqa: F401 - re-exported
    AdaptSection,
    AlignConfig,
    DubConfig,
    FaceCropConfig,
    FaceTrackConfig,
    IngestConfig,
    ModelSection,
    MotionConfig,
    MuxConfig,
    PipelineConfig,
    ProvenanceConfig,
    QCConfig,
    RenderConfig,
    Resources,
    RunConfig,
    SpeechConfig,
)


class ConfigError(ValueError):
    """An unknown key or a value of the wrong type in a config file or ``--set``."""


def _coerce(value: Any, typ: Any, where: str) -> Any:
    text = str(typ)
    if isinstance(value, str) and value.lower() in ("none", "null") and "None" in text:
        return None
    if value is None:
        return None
    try:
        if typ is bool or text in ("bool", "bool | None"):
            if isinstance(value, str):
                if value.lower() == "auto" and "None" in text:
                    return None
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
    problems = cfg.render.problems() + cfg.dub.problems()
    if problems:
        raise ConfigError("; ".join(problems))
    return cfg
