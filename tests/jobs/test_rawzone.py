"""The raw zone's claim and invalidation rules: sources never mix, no run reuses what a source no longer has."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from recsys.core.lake import Lake, read_json, write_json
from recsys.data.rawzone import DIGEST_FILE, day_number, invalidate, write_raw

A, B = "/data/shop-a/ratings.csv", "/data/shop-b/ratings.csv"
D1, D2, D3, D4 = "2026-01-01", "2026-01-02", "2026-01-03", "2026-01-04"


def land(lake: Lake, rows: dict[str, list[str]], *, src: str | None = A, replace: bool = False) -> dict:
    """Land one raw row per user id listed under each date (item i1, a view at noon)."""
    users = [user for ds in sorted(rows) for user in rows[ds]]
    day = [day_number(ds) for ds in sorted(rows) for _ in rows[ds]]
    stamps = [f"{ds}T12:00:00Z" for ds in sorted(rows) for _ in rows[ds]]
    table = pa.table({"user_id": users, "item_id": ["i1"] * len(users), "event": ["view"] * len(users),
                      "value": [None] * len(users), "ts": stamps}, schema=pa.schema(
                          [(name, pa.string()) for name in ("user_id", "item_id", "event", "value", "ts")]))
    return write_raw(lake, table, np.array(day), source="csv" if src else "synthetic", src=src,
                     has_timestamp=True, replace=replace)


def derive(lake: Lake, zones: tuple[str, ...], dates: list[str]) -> None:
    """Stand-ins for partitions the pipeline derived from the raw zone."""
    for zone in zones:
        for ds in dates:
            path = lake.path(zone, ds)
            path.mkdir(parents=True)
            (path / "part-00000.parquet").write_bytes(b"derived")
    (lake.root / "index").mkdir(exist_ok=True)
    (lake.root / "index" / "users.parquet").write_bytes(b"index")


def test_reimport_of_the_same_file_drops_gone_dates_and_recleans_changed_ones(lake: Lake) -> None:
    land(lake, {D1: ["u1"], D2: ["u2"], D3: ["u3"]})
    derive(lake, ("clean", "quarantine", "tables"), [D1, D2, D3])

    land(lake, {D1: ["u1"], D2: ["u2", "u9"], D4: ["u4"]})  # D1 same, D2 changed, D3 gone, D4 new

    assert lake.dates("raw") == [D1, D2, D4]
    assert lake.dates("clean") == [D1]
    assert lake.dates("quarantine") == [D1]
    assert lake.dates("tables") == [D1, D2, D3]  # outputs of runs made stay until their date runs again
    assert (lake.root / "index" / "users.parquet").is_file()
    source = read_json(lake.path("raw") / "_source.json")
    assert (source["first_date"], source["last_date"], source["dates"], source["rows"]) == (D1, D4, 3, 4)
    assert sorted(read_json(lake.path("raw") / DIGEST_FILE)) == [D1, D2, D4]


def test_identical_reimport_keeps_every_derived_partition(lake: Lake) -> None:
    land(lake, {D1: ["u1"], D2: ["u2"]})
    derive(lake, ("clean", "quarantine"), [D1, D2])
    land(lake, {D1: ["u1"], D2: ["u2"]})
    assert lake.dates("raw") == lake.dates("clean") == lake.dates("quarantine") == [D1, D2]


def test_synthetic_rows_add_dates_and_reclean_only_rewritten_ones(lake: Lake) -> None:
    land(lake, {D1: ["u1"], D2: ["u2"]}, src=None)
    derive(lake, ("clean", "quarantine"), [D1, D2])
    land(lake, {D2: ["u7"], D3: ["u3"]}, src=None)
    assert lake.dates("raw") == [D1, D2, D3]
    assert lake.dates("clean") == lake.dates("quarantine") == [D1]


def test_synthetic_replace_of_the_same_source_keeps_only_the_landed_dates(lake: Lake) -> None:
    land(lake, {D1: ["u1"], D2: ["u2"]}, src=None)
    derive(lake, ("clean", "quarantine"), [D1, D2])
    land(lake, {D2: ["u2"], D3: ["u3"]}, src=None, replace=True)
    assert lake.dates("raw") == [D2, D3]
    assert lake.dates("clean") == [D2]  # D2's raw rows are the same; D1 is gone with its raw partition


def test_another_file_is_refused_and_replace_removes_everything_derived(lake: Lake) -> None:
    land(lake, {D1: ["u1"], D2: ["u2"]}, src=A)
    derived = ("clean", "quarantine", "tables", "augment", "models", "registry", "recs")
    derive(lake, derived, [D1, D2])

    with pytest.raises(ValueError, match=r"shop-a.*REPLACE=1"):
        land(lake, {D2: ["x2"], D3: ["x3"]}, src=B)
    assert lake.dates("raw") == lake.dates("clean") == [D1, D2]  # refused: nothing touched
    assert read_json(lake.path("raw") / "_source.json")["src"] == A

    land(lake, {D2: ["x2"], D3: ["x3"]}, src=B, replace=True)
    assert lake.dates("raw") == [D2, D3]
    assert {zone: lake.dates(zone) for zone in derived} == {zone: [] for zone in derived}
    assert not (lake.root / "index").exists()  # the stable index would map two sources' ids
    assert read_json(lake.path("raw") / "_source.json")["src"] == B
    assert not [p.name for p in lake.root.rglob("*gone*")]


def test_an_unrecorded_raw_zone_is_refused_unless_replaced(lake: Lake) -> None:
    land(lake, {D1: ["u1"]})
    (lake.path("raw") / "_source.json").unlink()
    with pytest.raises(ValueError, match="source is unknown"):
        land(lake, {D1: ["u1"]})
    land(lake, {D2: ["u2"]}, replace=True)
    assert lake.dates("raw") == [D2]


def test_a_lake_without_digests_reclean_every_landed_date(lake: Lake) -> None:
    land(lake, {D1: ["u1"], D2: ["u2"]})
    derive(lake, ("clean", "quarantine"), [D1, D2])
    (lake.path("raw") / DIGEST_FILE).unlink()  # a lake landed before the digests were recorded
    land(lake, {D1: ["u1"], D2: ["u2"]})
    assert lake.dates("clean") == []
    assert sorted(read_json(lake.path("raw") / DIGEST_FILE)) == [D1, D2]


def test_a_landing_that_died_before_reconciling_is_caught_by_the_next(lake: Lake) -> None:
    land(lake, {D1: ["u1"], D2: ["u2"]})
    digests = read_json(lake.path("raw") / DIGEST_FILE)
    land(lake, {D1: ["u1"], D2: ["u8"]})
    write_json(lake.path("raw") / DIGEST_FILE, digests)  # as if the landing died after writing D2's partition
    derive(lake, ("clean", "quarantine"), [D1, D2])  # and a run cleaned the dates before the retry
    land(lake, {D1: ["u1"], D2: ["u8"]})
    assert lake.dates("clean") == [D1]


def test_invalidate_removes_only_the_reused_partitions_of_the_dates(lake: Lake) -> None:
    derive(lake, ("clean", "quarantine", "tables"), [D1, D2])
    assert invalidate(lake, [D2, D3]) == [f"clean/ds={D2}", f"quarantine/ds={D2}"]
    assert lake.dates("clean") == lake.dates("quarantine") == [D1]
    assert lake.dates("tables") == [D1, D2]
