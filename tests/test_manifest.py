"""Manifest import and validation on real files (CSV written here, XLSX made with openpyxl)."""
from __future__ import annotations

import csv
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from manifests.importer import ManifestError, import_manifest, read_table
from manifests.validate import load_manifest
from pipeline.cli import main as fixtalk

HEADER = ["clip_id", "portrait", "audio", "script", "emotion", "emotion_intensity", "presenter_id", "team"]


@pytest.fixture()
def media(tmp_path: Path) -> Path:
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "face.png").write_bytes(b"\x89PNG fake but non-empty")
    (tmp_path / "speech.wav").write_bytes(b"RIFF fake but non-empty")
    (tmp_path / "empty.wav").write_bytes(b"")
    return tmp_path


def write_csv(path: Path, rows: list[list[str]], header: list[str] = HEADER) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def row(clip_id: str, portrait: str = "img/face.png", audio: str = "speech.wav", script: str = "",
        emotion: str = "", intensity: str = "", presenter: str = "", team: str = "") -> list[str]:
    return [clip_id, portrait, audio, script, emotion, intensity, presenter, team]


def problems_by_row(result) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {}
    for p in result.problems:
        out.setdefault(p.row_index, []).append(p.field)
    return out


def test_valid_rows_are_normalised(media: Path):
    path = write_csv(media / "m.csv", [
        row("intro_01", emotion="Happy", intensity="1.5", team="sales"),
        row("007", audio="", script="Hello there."),
    ])
    result = load_manifest(path)
    assert result.problems == []
    df = result.frame
    assert list(df["status"]) == ["ok", "ok"]
    assert df.loc[0, "portrait"] == str(media / "img" / "face.png")  # relative -> the manifest's folder
    assert df.loc[0, "emotion"] == "happy" and df.loc[0, "emotion_intensity"] == 1.5
    assert df.loc[1, "clip_id"] == "007"  # text stays text: no leading-zero loss
    assert df.loc[1, "audio"] is None and df.loc[1, "emotion_intensity"] == 1.0
    assert df.loc[0, "team"] == "sales"  # extra columns are kept
    assert list(df["row_index"]) == [2, 3]


def test_hostile_rows_fail_alone_with_row_field_and_fix(media: Path):
    rows = [
        row("good"),                                    # 2
        row("../../etc/passwd"),                        # 3 path separators
        row("a\\b"),                                    # 4 backslash
        row(".."),                                      # 5 reserved
        row("=HYPERLINK(\"http://x\",\"y\")"),          # 6 formula-like cell
        row("good"),                                    # 7 duplicate
        row("GOOD"),                                    # 8 duplicate up to case
        row("x" * 129),                                 # 9 too long
        row("miss", audio="nothere.wav"),               # 10 missing file
        row("emo", emotion="furious"),                  # 11 unknown emotion
        row("int1", intensity="abc"),                   # 12 not a number
        row("int2", intensity="2.5"),                   # 13 out of range
        row("silent", audio="", script=""),            # 14 neither audio nor script
        row("empty", audio="empty.wav"),                # 15 zero-byte file
        row("good2", script="=1+1 is spoken as text"),  # 16 fine: formulas in a script are just text
        row("", audio="speech.wav"),                    # 17 empty clip_id
    ]
    result = load_manifest(write_csv(media / "m.csv", rows))
    by_row = problems_by_row(result)
    assert by_row == {3: ["clip_id"], 4: ["clip_id"], 5: ["clip_id"], 6: ["clip_id"], 7: ["clip_id"],
                      8: ["clip_id"], 9: ["clip_id"], 10: ["audio"], 11: ["emotion"],
                      12: ["emotion_intensity"], 13: ["emotion_intensity"], 14: ["audio"], 15: ["audio"],
                      17: ["clip_id"]}
    df = result.frame.set_index("row_index")
    assert df.loc[2, "status"] == "ok" and df.loc[16, "status"] == "ok"
    assert (df.drop([2, 16])["status"] == "failed").all()
    assert set(df.drop([2, 16])["error_stage"]) == {"manifest"}
    text = {p.row_index: str(p) for p in result.problems}
    assert "row 3" in text[3] and "'/'" in text[3] and "letters, digits" in text[3]
    assert "duplicate of row 2" in text[7]
    assert "only by letter case" in text[8]
    assert "file not found" in text[10] and "relative paths resolve against" in text[10]
    assert "angry" in text[11]  # lists the allowed emotions
    assert "[0, 2]" in text[13]
    assert "neither audio nor script" in text[14]
    assert "empty" in text[15]


def test_every_later_duplicate_fails_first_survives(media: Path):
    result = load_manifest(write_csv(media / "m.csv", [row("a"), row("b"), row("a"), row("a")]))
    assert list(result.frame["status"]) == ["ok", "ok", "failed", "failed"]


def test_manifest_level_problems_refuse_the_run(media: Path):
    with pytest.raises(ManifestError, match="missing required column.*portrait"):
        load_manifest(write_csv(media / "a.csv", [["x", "speech.wav"]], header=["clip_id", "audio"]))
    with pytest.raises(ManifestError, match="audio.*script"):
        load_manifest(write_csv(media / "b.csv", [["x", "img/face.png"]], header=["clip_id", "portrait"]))
    (media / "broken.xlsx").write_bytes(b"this is not a zip file")
    with pytest.raises(ManifestError, match="cannot read"):
        load_manifest(media / "broken.xlsx")
    with pytest.raises(ManifestError, match="unknown manifest format"):
        load_manifest(write_csv(media / "m.txt", [row("a")]))
    with pytest.raises(ManifestError, match="appears twice"):
        load_manifest(write_csv(media / "c.csv", [row("a") + ["x"]], header=HEADER + ["team"]))
    with pytest.raises(ManifestError, match="set by the pipeline"):
        load_manifest(write_csv(media / "d.csv", [row("a") + ["ok"]], header=HEADER + ["status"]))
    (media / "e.csv").write_text("")
    with pytest.raises(ManifestError, match="empty"):
        load_manifest(media / "e.csv")


def test_xlsx_import_reads_text_keeps_formulas_literal_and_row_numbers(media: Path):
    import openpyxl

    book = openpyxl.Workbook()
    sheet = book.active
    sheet.append(["Clip_ID", "portrait", "audio", "emotion_intensity", "Notes"])
    sheet.append(["intro", "img/face.png", "speech.wav", 1.5, "first"])
    sheet.append([None, None, None, None, None])  # blank row: dropped, numbering kept
    sheet.append(["=CONCAT(\"a\",\"b\")", "img/face.png", "speech.wav", None, "formula id"])
    sheet.append([42, "img/face.png", "speech.wav", 2, None])
    book.save(media / "clips.xlsx")

    text = read_table(media / "clips.xlsx")
    assert list(text["clip_id"]) == ["intro", "=CONCAT(\"a\",\"b\")", "42"]  # never evaluated
    assert list(text["emotion_intensity"]) == ["1.5", None, "2"]
    assert list(text["row_index"]) == ["2", "4", "5"]

    out = media / "sub" / "manifest.parquet"
    assert fixtalk(["manifest", "import", str(media / "clips.xlsx"), "-o", str(out)]) == 0
    stored = pd.read_parquet(out)
    assert stored.loc[0, "portrait"] == "../img/face.png"  # rebased next to the Parquet
    assert "Notes" in stored.columns
    result = load_manifest(out)
    assert result.frame.loc[0, "portrait"] == str(media / "img" / "face.png")
    assert [(p.row_index, p.field) for p in result.problems] == [(4, "clip_id")]


def test_cli_validate_prints_every_problem_and_exits_2(media: Path, capsys):
    path = write_csv(media / "m.csv", [row("ok1"), row("bad id"), row("e", emotion="grumpy")])
    assert fixtalk(["manifest", "validate", str(path)]) == 2
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2
    assert out[0].startswith("row 3 (clip_id 'bad id'), column 'clip_id':")
    assert out[1].startswith("row 4 (clip_id 'e'), column 'emotion':")
    clean = write_csv(media / "clean.csv", [row("ok1")])
    assert fixtalk(["manifest", "validate", str(clean)]) == 0
    assert fixtalk(["manifest", "validate", str(media / "nope.csv")]) == 2


def test_import_round_trip_keeps_relative_paths_in_place(media: Path):
    src = write_csv(media / "m.csv", [row("a")])
    frame = import_manifest(src, media / "m.parquet")
    assert frame.loc[0, "portrait"] == "img/face.png"
    assert load_manifest(media / "m.parquet").problems == []


def test_import_to_another_folder_rebases_paths_and_keeps_blank_cells_null(media: Path):
    src = write_csv(media / "m.csv", [row("a", script="Hello."), row("b", audio="", script="Only a script.")])
    dst = media / "elsewhere" / "m.parquet"
    assert fixtalk(["manifest", "import", str(src), "-o", str(dst)]) == 0
    back = pd.read_parquet(dst)
    assert list(back["portrait"]) == ["../img/face.png", "../img/face.png"]
    assert pd.isna(back.loc[1, "audio"]) and pd.isna(back.loc[0, "emotion"])
    assert pq.read_table(dst).column("audio").null_count == 1  # a real null, not "nan" text
    result = load_manifest(dst)
    assert result.problems == [] and list(result.frame["status"]) == ["ok", "ok"]
    assert result.frame.loc[0, "audio"] == str(media / "speech.wav")


def test_a_transcript_of_footage_needs_the_footage(media: Path):
    header = ["clip_id", "portrait", "audio", "source_transcript"]
    rows = [["stray", "img/face.png", "speech.wav", "what she says"],   # 2 a transcript, no footage
            ["plain", "img/face.png", "speech.wav", ""]]                # 3 fine
    result = load_manifest(write_csv(media / "t.csv", rows, header))
    assert problems_by_row(result) == {2: ["source_transcript"]}
    assert "no source_video" in str(result.problems[0]) and "row 2" in str(result.problems[0])
