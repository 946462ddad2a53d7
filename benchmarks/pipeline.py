"""Pipeline throughput and memory: ``fixtalk run`` (Ray actors) against a bare loop over the same
stage objects in one process, on the same N generated clips, in one run.

    .venv/bin/python benchmarks/pipeline.py                   # 100,000-row plan, N=50 vs bare, then N=200, 1000
    .venv/bin/python benchmarks/pipeline.py --quick           # 2,000-row plan, N=8 / 24: a smoke run
    .venv/bin/python benchmarks/pipeline.py --record docs/performance.md

Clips: the astronaut portrait (scikit-image, public domain) with espeak-ng sentences cut to
``--seconds`` (2 s), rendered by a random-weight 64x64 FixTalk (``--checkpoint`` to use another) at
crop output, every stage on (speech, ingest, align, face_crop, motion, render, mux, qc). Both sides
run as child processes; peak RSS is the largest sum of RSS over the child's whole process tree
(the driver, Ray's raylet/GCS and every actor for the pipeline), sampled every 0.2 s from /proc.
Throughput is clips per minute of end-to-end wall time (imports, model loading and Ray start
included on both sides). The last line printed is one JSON object.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SENTENCES = ["Hello and welcome to the course.", "Today we look at the results.",
             "Please read the next page carefully.", "Thank you for listening so far.",
             "Let us move on to the second part."]
SPEED = ["mux.preset=ultrafast", "render.output=crop", "qc.sample_every=10"]
PAGE = os.sysconf("SC_PAGE_SIZE")


# ------------------------------------------------------------------------------------- memory
def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                stat = fh.read().decode(errors="replace")
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        tree.setdefault(ppid, []).append(int(entry))
    return tree


def proc_rss(pid: int) -> int:
    """Bytes of resident memory of one process (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/statm") as fh:
            return int(fh.read().split()[1]) * PAGE
    except (OSError, IndexError, ValueError):
        return 0


def tree_rss(root: int) -> int:
    """Bytes of resident memory of ``root`` and all its descendants."""
    tree, total, todo = _children(), 0, [root]
    while todo:
        pid = todo.pop()
        total += proc_rss(pid)
        todo.extend(tree.get(pid, []))
    return total


def results_rows(path: Path) -> int | None:
    """Rows of a results.parquet written so far (None when it does not exist or is being replaced)."""
    import pyarrow.parquet as pq

    try:
        return pq.read_metadata(path).num_rows
    except (OSError, ValueError):
        return None


def run_measured(cmd: list[str], env: dict[str, str], log: Path, results: Path | None = None,
                 clips: Path | None = None, every: int = 50) -> dict:
    """Run a child process to its end, sampling every 0.2 s: wall seconds, peak RSS of its whole
    tree and of the child (the driver) alone, exit code, and, when ``results`` is given, when that
    file first appeared and the most rows it held before the child finished. With ``clips`` (the
    run's ``OUT/clips``), ``trajectory`` holds the peaks so far each time another ``every`` MP4s
    have been delivered: how the driver grows with the clips it has seen."""
    t0 = time.perf_counter()
    seen: dict = {"results_first_s": None, "results_rows_while_running": 0, "trajectory": []}
    next_mark, last_count = every, 0.0
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=fh, stderr=subprocess.STDOUT)
        peak = driver = 0
        while proc.poll() is None:
            peak = max(peak, tree_rss(proc.pid))
            driver = max(driver, proc_rss(proc.pid))
            now = time.perf_counter()
            if results is not None and (rows := results_rows(results)) is not None:
                if seen["results_first_s"] is None:
                    seen["results_first_s"] = round(now - t0, 1)
                seen["results_rows_while_running"] = max(seen["results_rows_while_running"], rows)
            if clips is not None and now - last_count > 5.0:
                last_count = now
                n_clips = sum(1 for _ in clips.glob("*.mp4")) if clips.is_dir() else 0
                while n_clips >= next_mark:
                    seen["trajectory"].append({"clips": next_mark, "s": round(now - t0, 1),
                                               "driver_rss_mib": round(driver / 2**20, 1),
                                               "peak_rss_mib": round(peak / 2**20, 1)})
                    next_mark += every
            time.sleep(0.2)
    return {"wall": time.perf_counter() - t0, "peak": peak, "driver": driver, "code": proc.returncode, **seen}


def ledger_stats(out: Path) -> dict:
    """Size and part count of ``out``'s ledger and the time to compact it into one part (what a
    rerun does at start once there are ``COMPACT_AFTER`` parts), and the size after."""
    from pipeline.ledger import Ledger, ledger_dir

    folder = ledger_dir(out)
    parts = sorted(folder.glob("part-*.parquet"))
    before = sum(p.stat().st_size for p in parts)
    t0 = time.perf_counter()
    Ledger(out).compact(min_parts=1)
    took = time.perf_counter() - t0
    after = sum(p.stat().st_size for p in folder.glob("part-*.parquet"))
    return {"ledger_parts": len(parts), "ledger_kib": round(before / 1024, 1),
            "compact_s": round(took, 3), "ledger_kib_compacted": round(after / 1024, 1)}


# ------------------------------------------------------------------------------------- inputs
def make_inputs(root: Path, n: int, seconds: float) -> Path:
    """``root/manifest_<n>.csv`` with n rows over one portrait and 5 speech files."""
    import numpy as np
    from PIL import Image
    from skimage import data

    media = root / "media"
    media.mkdir(parents=True, exist_ok=True)
    portrait = media / "astronaut.png"
    if not portrait.exists():
        Image.fromarray(data.astronaut()[0:330, 70:400]).resize((256, 256)).save(portrait)
    for i, text in enumerate(SENTENCES):
        wav = media / f"s{i}.wav"
        if not wav.exists():
            raw = media / f"s{i}_raw.wav"
            subprocess.run(["espeak-ng", "-s", "175", "-w", str(raw), text], check=True)
            subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(raw), "-af", f"apad=whole_dur={seconds}",
                            "-t", str(seconds), "-ar", "16000", "-ac", "1", str(wav)], check=True)
            raw.unlink()
    rows = ["clip_id,portrait,audio,script"]
    rng = np.random.default_rng(0)
    for k in range(n):
        i = int(rng.integers(len(SENTENCES)))
        rows.append(f"c{k:04d},media/astronaut.png,media/s{i}.wav,{SENTENCES[i]}")
    manifest = root / f"manifest_{n}.csv"
    manifest.write_text("\n".join(rows) + "\n")
    return manifest


def make_checkpoint(path: Path) -> Path:
    import torch

    sys.path.insert(0, str(REPO))
    from fixtalk.checkpoints import save_checkpoint
    from fixtalk.model import FixTalk
    from tests.conftest import tiny_model_config

    torch.manual_seed(0)
    return save_checkpoint(path, FixTalk(tiny_model_config()), training={"note": "random benchmark weights"})


# ---------------------------------------------------------------------------------- bare loop
def bare_loop(manifest: Path, out: Path, checkpoint: str, overrides: list[str]) -> int:
    """Every row through the stage objects in this process (no Ray, no ledger)."""
    from manifests.validate import load_manifest
    from pipeline.config import load_config
    from pipeline.dag import load_stage_classes

    cfg = load_config(None, overrides)
    cfg.model.checkpoint = checkpoint
    stages = [cls(config=cfg) for cls in load_stage_classes(cfg)]
    ok = 0
    for row in load_manifest(manifest).frame.to_dict(orient="records"):
        row.update(out_dir=str(out), work_dir=str(out / "work" / row["clip_id"]))
        for stage in stages:
            row = stage.run_row(row)
        ok += row["status"] == "ok"
    print(f"bare: {ok} ok")
    return 0


# -------------------------------------------------------------------------------------- main
def measure(kind: str, manifest: Path, out: Path, ckpt: Path, overrides: list[str], env: dict[str, str],
            n: int) -> dict:
    sets = [a for s in overrides for a in ("--set", s)]
    if kind == "pipeline":
        cmd = [sys.executable, "-m", "pipeline.cli", "run", str(manifest), "--out", str(out),
               "--checkpoint", str(ckpt), *sets]
    else:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--bare-worker", str(manifest), str(out),
               str(ckpt), *overrides]
    log = out.parent / f"{out.name}.log"
    pipeline = kind == "pipeline"
    m = run_measured(cmd, env, log, out / "results.parquet" if pipeline else None, out / "clips" if pipeline else None,
                     every=max(50, n // 10))
    if m["code"] not in (0, 3):
        tail = log.read_text()[-2000:]
        raise SystemExit(f"{kind} run failed (exit {m['code']}):\n{tail}")
    ok = len(list((out / "clips").glob("*.mp4")))
    wall = m["wall"]
    row = {"kind": kind, "n": n, "ok": ok, "wall_s": round(wall, 2), "clips_per_min": round(60 * ok / wall, 3),
           "peak_rss_mib": round(m["peak"] / 2**20, 1), "driver_rss_mib": round(m["driver"] / 2**20, 1)}
    if kind == "pipeline":
        row.update(results_first_s=m["results_first_s"], results_rows_while_running=m["results_rows_while_running"],
                   trajectory=m["trajectory"], **ledger_stats(out))
    print(f"{kind:8s} N={n:4d}: {ok} clips in {wall:7.1f} s = {row['clips_per_min']:6.2f} clips/min, "
          f"peak RSS {row['peak_rss_mib']:7.1f} MiB (driver {row['driver_rss_mib']:.1f})"
          + (f", ledger {row['ledger_parts']} parts {row['ledger_kib']} KiB, compacted in {row['compact_s']} s, "
             f"results.parquet first after {row['results_first_s']} s" if kind == "pipeline" else ""), flush=True)
    return row


def manifest_scale(root: Path, rows: int, ckpt: Path, env: dict[str, str]) -> dict:
    """Time and peak RSS of ``fixtalk manifest validate`` and of ``fixtalk run --limit 0`` (validate,
    fingerprint, ledger anti-join and plan, no rendering) on a manifest of ``rows`` rows."""
    manifest = make_inputs(root, rows, 2.0)
    out: dict = {"rows": rows}
    for name, cmd in (("validate", ["manifest", "validate", str(manifest)]),
                      ("plan", ["run", str(manifest), "--out", str(root / f"plan_{rows}"), "--limit", "0",
                                "--checkpoint", str(ckpt)])):
        m = run_measured([sys.executable, "-m", "pipeline.cli", *cmd], env, root / f"{name}_{rows}.log")
        if m["code"] not in (0, 3):
            raise SystemExit(f"{name} of {rows} rows failed (exit {m['code']}):\n"
                             + (root / f"{name}_{rows}.log").read_text()[-2000:])
        out[name] = {"wall_s": round(m["wall"], 2), "peak_rss_mib": round(m["peak"] / 2**20, 1)}
        print(f"{name:8s} {rows} rows: {m['wall']:.1f} s, peak RSS {m['peak'] / 2**20:.1f} MiB", flush=True)
    return out


def record(path: Path, result: dict) -> None:
    """Replace (or append) the ``## Pipeline`` section of ``path``; other sections are kept."""
    p, b = result["pipeline"], result["bare"]
    runs = [p, *result.get("pipeline_large", [])]
    lines = [
        "## Pipeline", "",
        f"`benchmarks/pipeline.py` ({result['when']}, {result['host']}; "
        f"{result['n']} clips of {result['seconds']} s, {result['model']}, overrides "
        f"`{' '.join(result['overrides'])}`):", "",
        "| run | clips | wall (s) | clips/min | peak RSS, all processes (MiB) | peak RSS, driver (MiB) |",
        "|---|---|---|---|---|---|",
        *[f"| `fixtalk run`, N={r['n']} | {r['ok']}/{r['n']} | {r['wall_s']} | {r['clips_per_min']} | "
          f"{r['peak_rss_mib']} | {r['driver_rss_mib']} |" for r in runs],
        f"| bare loop, same stage objects, one process, N={b['n']} | {b['ok']}/{b['n']} | {b['wall_s']} | "
        f"{b['clips_per_min']} | {b['peak_rss_mib']} | {b['driver_rss_mib']} |",
        "", f"pipeline/bare throughput ratio at N={result['n']}: **{result['ratio']}** (target >= 0.8).",
    ]
    for r in runs[1:]:
        lines.append(f"Driver peak RSS at N={r['n']} vs N={p['n']}: **{r['driver_rss_mib'] / p['driver_rss_mib']:.2f}x** "
                     f"(target within 1.2x); all processes {r['peak_rss_mib'] / p['peak_rss_mib'] - 1:+.1%}.")
    for r in runs:
        if len(r.get("trajectory", [])) > 1:
            lines += ["", f"N={r['n']}, peak RSS so far (MiB) as clips were delivered, driver / all processes: "
                      + "; ".join(f"{t['clips']}: {t['driver_rss_mib']} / {t['peak_rss_mib']}" for t in r["trajectory"]) + "."]
    lines += ["", "| run | ledger parts | ledger (KiB) | compaction (s) | compacted (KiB) | results.parquet first written "
              "| rows in it before the end |", "|---|---|---|---|---|---|---|"]
    lines += [f"| N={r['n']} | {r['ledger_parts']} | {r['ledger_kib']} | {r['compact_s']} | {r['ledger_kib_compacted']} "
              f"| after {r['results_first_s']} s | {r['results_rows_while_running']} |" for r in runs]
    if result.get("manifest_scale"):
        m = result["manifest_scale"]
        lines += ["", f"A manifest of {m['rows']:,} rows (no rendering): `fixtalk manifest validate` "
                  f"{m['validate']['wall_s']} s, peak RSS {m['validate']['peak_rss_mib']} MiB; "
                  f"`fixtalk run --limit 0` (validate, fingerprint, ledger anti-join, plan) "
                  f"{m['plan']['wall_s']} s, peak RSS {m['plan']['peak_rss_mib']} MiB."]
    lines += ["", result.get("note", "").strip(), ""]
    section = "\n".join(lines).rstrip() + "\n"
    text = path.read_text() if path.exists() else "# Performance\n\n"
    pattern = re.compile(r"^## Pipeline\n.*?(?=^## |\Z)", re.S | re.M)
    text = pattern.sub(section + "\n", text) if pattern.search(text) else text.rstrip() + "\n\n" + section
    path.write_text(text)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "--bare-worker":
        sys.path.insert(0, str(REPO))
        manifest, out, ckpt, *overrides = argv[1:]
        return bare_loop(Path(manifest), Path(out), ckpt, overrides)
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=50, help="clips for the throughput comparison")
    ap.add_argument("--n-large", default="200,1000",
                    help="comma-separated larger runs for memory, ledger and results figures ('' skips them)")
    ap.add_argument("--manifest-rows", type=int, default=100_000,
                    help="rows of the manifest that is validated and planned without rendering (0 skips it)")
    ap.add_argument("--quick", action="store_true", help="N=8, N-large=24, a 2,000-row manifest")
    ap.add_argument("--seconds", type=float, default=2.0, help="speech per clip")
    ap.add_argument("--checkpoint", help="model to render with (default: random tiny 64x64)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="extra config override")
    ap.add_argument("--workdir", help="keep inputs and outputs here (default: a temp folder, removed)")
    ap.add_argument("--record", help="write the results into the '## Pipeline' section of this file")
    ap.add_argument("--note", default="", help="text added under the recorded table")
    args = ap.parse_args(argv)
    if args.quick:
        args.n, args.n_large, args.manifest_rows = 8, "24", 2000
    sizes = [int(x) for x in str(args.n_large).split(",") if x.strip()]
    tmp = tempfile.TemporaryDirectory(prefix="fixtalk-bench-") if not args.workdir else None
    root = Path(args.workdir or tmp.name)  # type: ignore[union-attr]
    root.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    sys.path.insert(0, str(REPO))
    ckpt = Path(args.checkpoint) if args.checkpoint else make_checkpoint(root / "tiny64.pt")
    overrides = SPEED + list(args.overrides)
    result = {"n": args.n, "seconds": args.seconds, "overrides": overrides,
              "model": "random tiny 64x64" if not args.checkpoint else str(args.checkpoint),
              "note": args.note, "pipeline_large": []}
    if args.manifest_rows > 0:
        result["manifest_scale"] = manifest_scale(root, args.manifest_rows, ckpt, env)
    manifest = make_inputs(root, args.n, args.seconds)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    pipe = measure("pipeline", manifest, root / f"pipe_{args.n}_{stamp}", ckpt, overrides, env, args.n)
    bare = measure("bare", manifest, root / f"bare_{args.n}_{stamp}", ckpt, overrides, env, args.n)
    result.update(pipeline=pipe, bare=bare,
                  ratio=round(pipe["clips_per_min"] / bare["clips_per_min"], 3) if bare["clips_per_min"] else None)
    print(f"ratio pipeline/bare: {result['ratio']}", flush=True)
    for n in sizes:
        big = measure("pipeline", make_inputs(root, n, args.seconds), root / f"pipe_{n}_{stamp}", ckpt, overrides,
                      env, n)
        result["pipeline_large"].append(big)
        print(f"driver peak RSS N={n} vs N={args.n}: {big['driver_rss_mib'] / pipe['driver_rss_mib']:.2f}x", flush=True)
    result.update(when=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                  host=f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end")
    if args.record:
        record(Path(args.record), result)
    if tmp is not None:
        tmp.cleanup()
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
