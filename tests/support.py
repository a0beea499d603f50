"""Helpers several test modules share (not fixtures): independent expected values and lake readers."""

from __future__ import annotations

import calendar
import datetime as dt

import pyarrow.parquet as pq

from recsys.core.lake import Lake


def epoch(text: str) -> int:
    """Epoch seconds of a UTC time, computed without the code under test."""
    return calendar.timegm(dt.datetime.fromisoformat(text).timetuple())


def landed_rows(lake: Lake) -> list[tuple]:
    """Every raw row of every partition, with its partition date, in partition order."""
    rows = []
    for ds in lake.dates("raw"):
        rows += [(ds, *row.values()) for row in pq.read_table(lake.path("raw", ds)).to_pylist()]
    return rows
