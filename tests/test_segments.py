"""Input segments of a growing run (``filter --append``): bucket ranges of their own, and a record that may only
grow (no Ray: plain files)."""

from __future__ import annotations

import pytest

from congrad_ray.config import load_filter_config
from congrad_ray.errors import ConfigError
from congrad_ray.pipeline.segments import Segments, check_recorded, with_bucket_ranges
from congrad_ray.pipeline.units import Unit
from congrad_ray.storage import Location


def _segments(*groups):
    return Segments(tuple(tuple(Location.of(str(f)) for f in g) for g in groups))


def test_each_segment_has_buckets_of_its_own(tmp_path):
    f = Location.of(str(tmp_path / "x.parquet"))
    units = [Unit(0, 0, f, 0, 5000, 0), Unit(1, 1, f, 0, 2500, 1), Unit(2, 2, f, 0, 10, 2)]
    cfg = load_filter_config(None, ["sketch.buckets=8", "sketch.rows_per_bucket=1000"], check_paths=False)
    s = with_bucket_ranges(_segments([1], [2], [3]), units, cfg)
    assert s.ranges == ((0, 8), (8, 3), (11, 1)) and s.total_buckets == 12
    assert list(s.buckets(1)) == [8, 9, 10]


def test_appended_segments_may_only_grow(tmp_path):
    files = [tmp_path / f"part-{i}.parquet" for i in range(3)]
    for f in files:
        f.write_bytes(b"rows")
    run = Location.of(str(tmp_path / "run"))
    check_recorded(run, _segments([files[0]], [files[1]]))  # the first append is recorded
    check_recorded(run, _segments([files[0]], [files[1]]))  # re-submitted: the same
    check_recorded(run, _segments([files[0]], [files[1]], [files[2]]))  # grown by one more
    with pytest.raises(ConfigError, match="appended to it before changed"):
        check_recorded(run, _segments([files[0]], [files[2]], [files[1]]))  # reordered
    files[1].write_bytes(b"other rows")
    with pytest.raises(ConfigError, match="appended to it before changed"):
        check_recorded(run, _segments([files[0]], [files[1]], [files[2]]))  # an appended file changed
