"""``fixtalk audit``: filters, ids-only, formats, CSV formula escaping."""
from __future__ import annotations

import csv
import io
import json

import pandas as pd
import pytest

from pipeline.audit import csv_cell, main


@pytest.fixture()
def out(tmp_path):
    rows = [
        {"clip_id": "a", "status": "ok", "qc_status": "pass", "csim_mean": 0.98, "sync_corr": 0.7,
         "qc_reasons": "", "error_message": None},
        {"clip_id": "b", "status": "ok", "qc_status": "warn", "csim_mean": 0.93, "sync_corr": 0.25,
         "qc_reasons": "sync: sync_corr 0.250 < 0.300 (warn)", "error_message": None},
        {"clip_id": "=HYPERLINK(\"http://x\")", "status": "ok", "qc_status": "fail",
         "csim_mean": 0.55, "sync_corr": 0.6, "qc_reasons": "-identity lost", "error_message": None},
        {"clip_id": "d", "status": "failed", "qc_status": None, "csim_mean": float("nan"),
         "sync_corr": float("nan"), "qc_reasons": None, "error_message": "@SUM(A1) no face"},
    ]
    pd.DataFrame(rows).to_parquet(tmp_path / "results.parquet")
    return tmp_path


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_metric_below_ids_only(out, capsys):
    code, text, _ = run(capsys, out, "--metric", "csim_mean", "--below", "0.95", "--ids-only")
    assert code == 0
    assert text.splitlines() == ["b", "=HYPERLINK(\"http://x\")"]  # NaN never matches


def test_metric_above_and_qc_filters_combine(out, capsys):
    _, text, _ = run(capsys, out, "--metric", "sync_corr", "--above", "0.5", "--qc", "fail,warn",
                     "--ids-only")
    assert text.splitlines() == ["=HYPERLINK(\"http://x\")"]
    _, text, _ = run(capsys, out, "--qc", "warn", "--ids-only")
    assert text.splitlines() == ["b"]


def test_status_failed_json(out, capsys):
    code, text, _ = run(capsys, out, "--status", "failed", "--format", "json")
    data = json.loads(text)
    assert code == 0 and [r["clip_id"] for r in data] == ["d"]
    assert data[0]["error_message"] == "@SUM(A1) no face" and data[0]["csim_mean"] is None


def test_table_lists_matches(out, capsys):
    _, text, _ = run(capsys, out, "--qc", "warn")
    lines = text.splitlines()
    assert lines[0].split()[:3] == ["clip_id", "status", "qc_status"]
    assert len(lines) == 3 and lines[2].startswith("b ")
    _, text, _ = run(capsys, out, "--qc", "nothing")
    assert "no matching clips" in text


def test_csv_escapes_formula_cells(out, capsys):
    _, text, _ = run(capsys, out, "--format", "csv", "--columns",
                     "clip_id,csim_mean,qc_reasons,error_message")
    rows = list(csv.DictReader(io.StringIO(text)))
    by_reason = {r["qc_reasons"]: r for r in rows}
    assert rows[2]["clip_id"] == "'=HYPERLINK(\"http://x\")"
    assert "'-identity lost" in by_reason
    assert rows[3]["error_message"] == "'@SUM(A1) no face"
    assert rows[0]["csim_mean"] == "0.98" and rows[3]["csim_mean"] == ""
    assert csv_cell("+1") == "'+1" and csv_cell(-16.5) == -16.5 and csv_cell("ok") == "ok"


def test_usage_errors(out, tmp_path, capsys):
    code, _, err = run(capsys, out, "--metric", "nope", "--below", "1")
    assert code == 2 and "csim_mean" in err
    code, _, err = run(capsys, out, "--below", "1")
    assert code == 2 and "--metric" in err
    code, _, err = run(capsys, tmp_path / "missing")
    assert code == 2 and "results.parquet" in err
