"""The driver keeps finished rows compact (pipeline.results.FinishedRows).

Ray Data hands the driver each finished block as a frame of Arrow-backed columns; holding those
frames for every clip of a long run grew the driver by about 0.5 MiB a clip. The fold must release
the batches' Arrow buffers and keep every value."""

import numpy as np
import pandas as pd
import pyarrow as pa

from pipeline.results import FinishedRows, assemble


def _arrow_batch(i: int, n_cols: int = 120) -> pd.DataFrame:
    """A one-row frame as Ray Data's pandas batches are: Arrow-backed columns of mixed types."""
    cols = {"clip_id": [f"clip_{i:04d}"], "status": ["ok" if i % 7 else "failed"]}
    for j in range(n_cols):
        kind = j % 3
        cols[f"c{j}"] = [f"value {i} {j}"] if kind == 0 else ([i + j / 10] if kind == 1 else [i * j])
    cols["c0"] = [None] if i % 5 == 0 else cols["c0"]
    return pa.table(cols).to_pandas(types_mapper=pd.ArrowDtype)


def test_fold_releases_arrow_buffers_and_keeps_every_value():
    n = 200
    base = pa.total_allocated_bytes()
    held = [_arrow_batch(i) for i in range(n)]
    per_batch = (pa.total_allocated_bytes() - base) / n
    expected = assemble(held, [])

    rows = FinishedRows(fold_every=32)
    while held:
        rows.add(held.pop(0))  # the run keeps no other reference, as pipeline.run does
    kept = pa.total_allocated_bytes() - base

    assert per_batch > 0
    # only the batches since the last fold (200 = 6 * 32 + 8) still hold Arrow buffers
    assert kept <= 9 * per_batch, (kept, per_batch)
    assert len(rows) == n and rows.clip_ids == {f"clip_{i:04d}" for i in range(n)}
    got = assemble(rows.frames(), [])
    pd.testing.assert_frame_equal(got, expected)
    assert got["c0"].isna().sum() == n // 5
    assert np.allclose(got["c1"].astype(float), [i + 0.1 for i in range(n)])


def test_unfolded_rows_are_still_returned():
    rows = FinishedRows(fold_every=32)
    for i in range(5):
        rows.add(_arrow_batch(i, n_cols=4))
    assert [len(f) for f in rows.frames()] == [1] * 5
    assert len(assemble(rows.frames(), [])) == 5
