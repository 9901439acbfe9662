"""Reading a unit (a row range of one Parquet file) against the obvious twin: the whole file read, then sliced."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import given, settings
from hypothesis import strategies as st

from congrad_ray.pipeline import units as units_mod
from congrad_ray.pipeline.units import Unit, read_unit, row_key
from congrad_ray.storage import Location


@settings(max_examples=40, deadline=None)
@given(
    rows=st.integers(1, 60),
    row_group=st.integers(1, 70),
    batch=st.integers(1, 9),
    cut=st.tuples(st.floats(0, 1), st.floats(0, 1)),
)
def test_a_unit_is_its_rows_of_the_file_whatever_the_row_groups(tmp_path_factory, rows, row_group, batch, cut):
    path = tmp_path_factory.mktemp("units") / "f.parquet"
    table = pa.table({"x": list(range(rows)), "text": [f"row {i}" * (i % 4) for i in range(rows)]})
    pq.write_table(table, path, row_group_size=row_group)
    start, stop = sorted(int(c * rows) for c in cut)
    stop = max(stop, start + 1) if start < rows else rows
    old, units_mod.READ_BATCH_ROWS = units_mod.READ_BATCH_ROWS, batch  # batches smaller than a unit, and larger
    try:
        got = read_unit(Unit(index=0, file_index=2, file=Location.of(str(path)), start=start, stop=stop))
    finally:
        units_mod.READ_BATCH_ROWS = old
    assert got.drop_columns(["_row"]).equals(pq.read_table(path).slice(start, stop - start))
    assert got.column("_row").to_pylist() == [row_key(2, r) for r in range(start, stop)]
