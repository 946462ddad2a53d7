"""Run progress: a live tqdm bar (clips ok / failed / ETA) on a terminal, log lines otherwise."""
from __future__ import annotations

import sys
import time
from typing import TextIO

import pandas as pd


def _fmt_seconds(seconds: float) -> str:
    seconds = int(max(0, seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


class Progress:
    """Counts finished clips by status. ``tty=None`` decides from the stream."""

    def __init__(self, total: int, stream: TextIO | None = None, tty: bool | None = None,
                 min_interval_s: float = 5.0):
        self.total = total
        self.stream = stream or sys.stderr
        self.ok = 0
        self.failed = 0
        self.t0 = time.monotonic()
        self._last_line = 0.0
        self.min_interval_s = min_interval_s
        is_tty = self.stream.isatty() if tty is None else tty
        self._bar = None
        if is_tty and total > 0:
            from tqdm import tqdm

            self._bar = tqdm(total=total, file=self.stream, unit="clip", dynamic_ncols=True,
                             desc="rendering", smoothing=0.1)

    @property
    def done(self) -> int:
        return self.ok + self.failed

    def eta_s(self) -> float | None:
        if self.done == 0:
            return None
        rate = self.done / max(1e-9, time.monotonic() - self.t0)
        return (self.total - self.done) / rate

    def update(self, batch: pd.DataFrame) -> None:
        status = batch["status"] if "status" in batch.columns else pd.Series(["ok"] * len(batch))
        n_failed = int((status == "failed").sum())
        self.failed += n_failed
        self.ok += len(batch) - n_failed
        if self._bar is not None:
            self._bar.set_postfix(ok=self.ok, failed=self.failed, refresh=False)
            self._bar.update(len(batch))
            return
        now = time.monotonic()
        if now - self._last_line >= self.min_interval_s or self.done >= self.total:
            self._last_line = now
            self.log(self.line())

    def line(self) -> str:
        eta = self.eta_s()
        eta_text = "?" if eta is None else _fmt_seconds(eta)
        return (f"[{self.done}/{self.total}] ok={self.ok} failed={self.failed} "
                f"elapsed={_fmt_seconds(time.monotonic() - self.t0)} eta={eta_text}")

    def log(self, message: str) -> None:
        if self._bar is not None:
            self._bar.write(message, file=self.stream)
        else:
            print(message, file=self.stream, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
