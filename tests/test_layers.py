"""Imports point one way (docs/architecture.md): ``pipeline`` -> ``stages`` -> ``fixtalk``, and
``manifests`` is used by ``stages`` and ``pipeline``; inside ``stages``, the helper packages
(media, face, transcript, checks, provenance, rendering) sit below the nine stage modules.

Each layer is imported in a fresh interpreter with the layers above it blocked: an import of a
blocked package raises there, so a test fails the day a lower layer reaches up.
"""
from __future__ import annotations

import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STAGE_MODULES = ("adapt", "align", "face_crop", "ingest", "motion", "mux", "qc", "render", "speech")
HELPER_PACKAGES = ("media", "face", "transcript", "checks", "provenance", "rendering")

BLOCKER = """
import importlib.abc, sys
BLOCKED = {blocked!r}
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name in BLOCKED or any(name.startswith(b + ".") for b in BLOCKED):
            raise ImportError(f"layer violation: {{name}} imported from a lower layer")
        return None
sys.meta_path.insert(0, Block())
import importlib
for module in {modules!r}:
    importlib.import_module(module)
print("ok", len({modules!r}))
"""


def _modules(package: str) -> list[str]:
    found = [package]
    for info in pkgutil.walk_packages([str(ROOT / package.replace(".", "/"))], prefix=package + "."):
        found.append(info.name)
    return found


def _import_with_blocked(modules: list[str], blocked: list[str]) -> None:
    code = BLOCKER.format(blocked=blocked, modules=modules)
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.startswith("ok"), res.stdout


def test_model_package_imports_nothing_of_the_pipeline():
    modules = [m for m in _modules("fixtalk") if not m.endswith("__main__")]
    _import_with_blocked(modules, ["stages", "pipeline", "manifests", "ray"])


def test_manifests_import_no_stage_or_orchestration():
    _import_with_blocked(_modules("manifests"), ["stages", "pipeline"])


def test_stages_import_no_orchestration():
    _import_with_blocked(_modules("stages"), ["pipeline"])


@pytest.mark.parametrize("package", HELPER_PACKAGES)
def test_stage_helpers_sit_below_the_stages(package):
    blocked = [f"stages.{name}" for name in STAGE_MODULES]
    _import_with_blocked(_modules(f"stages.{package}"), blocked)


def test_the_stages_are_the_nine_modules_at_the_top_of_the_package():
    top = sorted(p.stem for p in (ROOT / "stages").glob("*.py") if p.stem != "__init__")
    assert top == sorted([*STAGE_MODULES, "base", "config"])
    import importlib

    import stages
    assert sorted(stages.STAGE_ORDER) == sorted(STAGE_MODULES)
    for name in stages.STAGE_ORDER:
        module, attr = stages.STAGE_CLASSES[name]
        assert getattr(importlib.import_module(module), attr).name == name
