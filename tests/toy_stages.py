"""Small real stages for testing the DAG, ledger and resume without the model.

They follow the stage contract (constructor takes the whole config, ``name`` = config section) and
do real file work: ``ToyIngest`` reads the audio file's size, ``ToyMux`` writes
``OUT/clips/<clip_id>.mp4`` via a temp name and an atomic rename. Behaviour is steered by extra
manifest columns (carried through the pipeline): ``toy_sleep`` (seconds to spend in mux),
``toy_fail`` (a per-clip error), ``toy_crash`` (the mux worker process is killed on that clip)
and ``toy_systemic`` (a systemic error).
"""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

from stages.base import ClipError, Stage, SystemicError


class ToyIngest(Stage):
    name = "ingest"

    def __init__(self, config: Any):
        self.config = config

    def process_row(self, row: dict[str, Any]) -> dict[str, Any]:
        if row.get("toy_systemic"):
            raise SystemicError("toy systemic fault: the pretend model file is gone")
        audio = row.get("audio")
        if not audio or os.path.getsize(audio) < 100:
            raise ClipError("audio is too short to be speech; record at least a second", field="audio")
        Path(row["work_dir"]).mkdir(parents=True, exist_ok=True)
        return {"audio_duration_s": float(os.path.getsize(audio)) / 32000.0, "pid_ingest": os.getpid()}


class ToyMux(Stage):
    name = "mux"

    def __init__(self, config: Any):
        self.config = config

    def process_row(self, row: dict[str, Any]) -> dict[str, Any]:
        if row.get("toy_fail"):
            raise ClipError(f"toy failure requested: {row['toy_fail']}")
        if row.get("toy_crash"):  # the worker process dies on this clip, every time
            os.kill(os.getpid(), signal.SIGKILL)
        delay = float(row.get("toy_sleep") or 0.0)
        clips = Path(row["out_dir"]) / "clips"
        clips.mkdir(parents=True, exist_ok=True)
        final = clips / f"{row['clip_id']}.mp4"
        tmp = clips / f".{row['clip_id']}.mp4.tmp-{os.getpid()}"
        with open(tmp, "wb") as fh:
            fh.write(b"\0" * 1000)
            fh.flush()
            time.sleep(delay)
            fh.write(row["fingerprint"].encode())
        os.replace(tmp, final)
        return {"output_path": str(final), "duration_s": 1.0, "frames": 25, "fps": 25.0,
                "mtime_ns": os.stat(final).st_mtime_ns}


class _KillSwitch(Stage):
    """Kills its whole process group (``kill -9``, as a user or the OOM killer would) when a row's
    ``toy_kill_after`` names the stage it follows, once per clip (a marker in the clip's work
    folder disarms it, so the rerun passes). Placed between the real stages by ``run.stages``."""

    after = ""

    def __init__(self, config: Any):
        self.config = config

    def process_row(self, row: dict[str, Any]) -> dict[str, Any]:
        if row.get("toy_kill_after") == self.after:
            marker = Path(row["work_dir"]) / f"killed-after-{self.after}"
            if not marker.exists():
                marker.parent.mkdir(parents=True, exist_ok=True)
                with open(marker, "w") as fh:
                    fh.flush()
                    os.fsync(fh.fileno())
                os.killpg(os.getpgid(0), signal.SIGKILL)
        return {}


#: ``KILL_AFTER["render"]`` is the class of the kill switch that follows the render stage.
KILL_AFTER: dict[str, type] = {
    stage: type(f"KillAfter_{stage}", (_KillSwitch,), {"name": f"kill_after_{stage}", "after": stage})
    for stage in ("speech", "ingest", "align", "face_crop", "adapt", "motion", "render", "mux", "qc")
}
globals().update({cls.__name__: cls for cls in KILL_AFTER.values()})
