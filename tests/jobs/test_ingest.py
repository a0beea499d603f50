"""Tests of the ingest job: mapping, timestamp parsing, every file layout, the source guard, real MovieLens."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs import ingest
from recsys.core.lake import Lake, read_json
from recsys.data.ingest import parse_mapping, parse_timestamps, to_raw
from tests.support import epoch

ML_SMALL = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "ml-latest-small" / "ratings.csv"



def _rows(lake: Lake, ds: str) -> list[tuple]:
    table = pq.read_table(lake.path("raw", ds))
    assert table.schema == pa.schema([(c, pa.string()) for c in ("user_id", "item_id", "event", "value", "ts")])
    return [tuple(row.values()) for row in table.to_pylist()]


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_parse_mapping() -> None:
    assert parse_mapping("user=uid, item=sku,ts=when") == ({"user": "uid", "item": "sku", "ts": "when"}, "none")
    assert parse_mapping("user=u,item=i,value=stars") == ({"user": "u", "item": "i", "value": "stars"}, "rating")
    assert parse_mapping("user=u,item=i,value=r:rating")[1] == "rating"
    assert parse_mapping("user=u,item=i,value=plays:count") == ({"user": "u", "item": "i", "value": "plays"},
                                                                        "count")
    # a colon not followed by a kind belongs to the column's name
    assert parse_mapping("user=u,item=i,value=a:b")[0]["value"] == "a:b"
    for bad, message in (("user=a", "item missing"), ("user=a,item=b,price=c", "unknown role 'price'"),
                         ("user=a,item=b,user=c", "given twice"), ("user,item=b", "expected role=column")):
        with pytest.raises(ValueError, match=message):
            parse_mapping(bad)


def test_parse_timestamps_text() -> None:
    values = pa.array([
        "964982703", " 2018-09-24T12:00:00Z ", "2018-09-24 12:00:00", "2018-09-24T12:00:00+02:00",
        "2018-09-24", "2018-09-24T12:00:00.750Z", "1.5", "not-a-time", "2026-13-45T00:00:00Z", "2026-02-30",
        None, "", "99999999999999", "-99999999999",
    ])
    seconds, ok, unit = parse_timestamps(values)
    assert unit == "iso8601"  # 5 ISO times parsed against 2 numbers
    noon = epoch("2018-09-24T12:00:00")
    expected = [964982703, noon, noon, noon - 7200, epoch("2018-09-24T00:00:00"), noon, 1]
    assert ok.tolist() == [True] * 7 + [False] * 7
    assert seconds[:7].tolist() == expected


def test_parse_timestamps_typed_columns() -> None:
    stamp = epoch("2020-02-29T23:59:59")
    typed = pa.array([stamp * 1000, None], pa.timestamp("ms", tz="Europe/Paris"))
    seconds, ok, unit = parse_timestamps(typed)
    assert (seconds.tolist(), ok.tolist(), unit) == ([stamp, 0], [True, False], "typed")
    dates = pa.array([dt.date(2020, 2, 29)], pa.date32())
    assert parse_timestamps(dates)[0].tolist() == [epoch("2020-02-29T00:00:00")]
    numbers = pa.chunked_array([pa.array([stamp, None], pa.int64())])
    seconds, ok, unit = parse_timestamps(numbers)
    assert (seconds.tolist(), ok.tolist(), unit) == ([stamp, 0], [True, False], "seconds")
    millis = pa.array([stamp * 1000 + 999, None], pa.int64())
    seconds, ok, unit = parse_timestamps(millis)
    assert (seconds.tolist(), ok.tolist(), unit) == ([stamp, 0], [True, False], "milliseconds")


def test_to_raw_days_and_unparseable_rows() -> None:
    fields = {
        "user": pa.array([1, 2, 3, None], pa.int64()),
        "item": pa.array(["a", "b", "c", "d"]),
        "value": pa.array([4.5, 3.0, None, 1.0]),
        "ts": pa.array(["2020-01-02T10:00:00Z", "1577836800", "garbage", None]),
    }
    rows = to_raw(fields, default_ds="2030-01-01", now=epoch("2026-01-01T00:00:00"))
    table, day = rows.table, rows.day
    assert (rows.ts_unit, rows.future_rows) == ("seconds", 0)  # one number, one ISO time: a tie goes to numbers
    assert table.to_pylist() == [
        {"user_id": "1", "item_id": "a", "event": "rating", "value": "4.5", "ts": "2020-01-02T10:00:00Z"},
        {"user_id": "2", "item_id": "b", "event": "rating", "value": "3", "ts": "2020-01-01T00:00:00Z"},
        {"user_id": "3", "item_id": "c", "event": "rating", "value": None, "ts": "garbage"},
        {"user_id": None, "item_id": "d", "event": "rating", "value": "1", "ts": None},
    ]
    jan1 = (dt.date(2020, 1, 1) - dt.date(1970, 1, 1)).days
    assert day.tolist() == [jan1 + 1, jan1, jan1 + 1, jan1 + 1]  # unparseable ones: the last day


def test_to_raw_without_timestamps_or_values() -> None:
    rows = to_raw({"user": pa.array(["x"]), "item": pa.array(["y"])}, default_ds="1970-01-03")
    assert rows.table.to_pylist() == [{"user_id": "x", "item_id": "y", "event": "view", "value": None, "ts": None}]
    assert (rows.day.tolist(), rows.ts_unit) == ([2], "none")
    with pytest.raises(ValueError, match="item"):
        to_raw({"user": pa.array(["x"])}, default_ds="1970-01-03")


def test_movielens_100k(lake: Lake, tmp_path: Path) -> None:
    src = _write(tmp_path / "u.data", f"196\t242\t3\t{epoch('1997-12-04T15:55:49')}\n"
                                      f"186\t302\t3\t{epoch('1998-04-04T19:22:22')}\n"
                                      f"22\t377\t1\t{epoch('1997-12-04T01:00:00')}\n")
    facts = ingest.main(["--format", "movielens-100k", "--src", str(src)])
    assert facts == {"first_date": "1997-12-04", "last_date": "1998-04-04", "days": 2, "rows": 3,
                     "window_days": 122, "source": "movielens-100k", "ts_unit": "seconds", "value_kind": "rating",
                     "future_rows": 0, "catalogue_rows": 0, "catalogue_src": None}  # no u.item beside u.data
    assert _rows(lake, "1997-12-04") == [("196", "242", "rating", "3", "1997-12-04T15:55:49Z"),
                                         ("22", "377", "rating", "1", "1997-12-04T01:00:00Z")]
    assert _rows(lake, "1998-04-04") == [("186", "302", "rating", "3", "1998-04-04T19:22:22Z")]
    assert read_json(lake.path("raw") / "_source.json") == {
        "source": "movielens-100k", "src": str(src.resolve()), "user_id_type": "int64", "item_id_type": "int64",
        "has_timestamp": True, "ts_unit": "seconds", "value_kind": "rating", "first_date": "1997-12-04",
        "last_date": "1998-04-04", "dates": 2, "rows": 3,
    }


def test_movielens_1m(lake: Lake, tmp_path: Path) -> None:
    src = _write(tmp_path / "ratings.dat", f"1::1193::5::{epoch('2000-12-31T22:12:40')}\n"
                                           f"1::661::3::{epoch('2001-01-01T00:00:00')}\n"
                                           f"2::1357::5::{epoch('2000-12-31T21:38:29')}\n")
    facts = ingest.main(["--format", "movielens-1m", "--src", str(src)])
    assert facts["rows"] == 3 and lake.dates("raw") == ["2000-12-31", "2001-01-01"]
    assert _rows(lake, "2000-12-31") == [("1", "1193", "rating", "5", "2000-12-31T22:12:40Z"),
                                         ("2", "1357", "rating", "5", "2000-12-31T21:38:29Z")]
    assert _rows(lake, "2001-01-01") == [("1", "661", "rating", "3", "2001-01-01T00:00:00Z")]


def test_movielens_latest_with_unparseable_time(lake: Lake, tmp_path: Path) -> None:
    src = _write(tmp_path / "ratings.csv", "userId,movieId,rating,timestamp\n1,1,4.0,964982703\n"
                                           "1,3,4.5,oops\n2,50,0.5,964982224\n")
    ingest.main(["--format", "movielens-latest", "--src", str(src)])
    assert lake.dates("raw") == ["2000-07-30"]
    assert _rows(lake, "2000-07-30") == [("1", "1", "rating", "4.0", "2000-07-30T18:45:03Z"),
                                         ("1", "3", "rating", "4.5", "oops"),
                                         ("2", "50", "rating", "0.5", "2000-07-30T18:37:04Z")]


def test_generic_csv_with_event_column_and_string_ids(lake: Lake, tmp_path: Path) -> None:
    src = _write(tmp_path / "log.tsv", "when\tshopper\tsku\tkind\n2024-05-01 23:59:59\t007\tA-1\tclick\n"
                                       "2024-05-01T22:00:00-02:00\tx9\t\tpurchase\n")
    facts = ingest.main(["--format", "csv", "--src", str(src), "--mapping", "user=shopper,item=sku,ts=when,event=kind"])
    assert facts["source"] == "csv" and lake.dates("raw") == ["2024-05-01", "2024-05-02"]
    assert _rows(lake, "2024-05-01") == [("007", "A-1", "click", None, "2024-05-01T23:59:59Z")]
    assert _rows(lake, "2024-05-02") == [("x9", None, "purchase", None, "2024-05-02T00:00:00Z")]
    source = read_json(lake.path("raw") / "_source.json")
    assert (source["user_id_type"], source["item_id_type"]) == ("string", "string")


def test_csv_without_timestamps_lands_on_ds(lake: Lake, tmp_path: Path) -> None:
    src = _write(tmp_path / "clicks.csv", "u;i\n5;7\n6;8\n")
    facts = ingest.main(["--format", "csv", "--src", str(src), "--sep", ";", "--mapping", "user=u,item=i",
                         "--ds", "2025-06-30"])
    assert facts == {"first_date": "2025-06-30", "last_date": "2025-06-30", "days": 1, "rows": 2,
                     "window_days": 1, "source": "csv", "ts_unit": "none", "value_kind": "none", "future_rows": 0,
                     "catalogue_rows": 0, "catalogue_src": None}
    assert _rows(lake, "2025-06-30") == [("5", "7", "view", None, None), ("6", "8", "view", None, None)]
    assert read_json(lake.path("raw") / "_source.json")["has_timestamp"] is False


def test_parquet_log(lake: Lake, tmp_path: Path) -> None:
    src = tmp_path / "events.parquet"
    stamp = epoch("2022-03-04T05:06:07")
    pq.write_table(pa.table({
        "uid": pa.array([10, 11], pa.int64()), "iid": pa.array([20, 21], pa.int32()),
        "stars": pa.array([4.5, 2.0]), "at": pa.array([stamp * 10**6, None], pa.timestamp("us", tz="UTC")),
        "other": pa.array(["x", "y"]),
    }), src)
    ingest.main(["--format", "csv", "--src", str(src), "--mapping", "user=uid,item=iid,value=stars,ts=at"])
    assert _rows(lake, "2022-03-04") == [("10", "20", "rating", "4.5", "2022-03-04T05:06:07Z"),
                                         ("11", "21", "rating", "2", None)]
    assert read_json(lake.path("raw") / "_source.json")["user_id_type"] == "int64"


def test_bad_input_names_file_and_column(lake: Lake, tmp_path: Path) -> None:
    src = _write(tmp_path / "log.csv", "user,item\n1,2\n")
    with pytest.raises(ValueError, match=r"log\.csv.*'when'"):
        ingest.main(["--format", "csv", "--src", str(src), "--mapping", "user=user,item=item,ts=when"])
    with pytest.raises(ValueError, match="needs --mapping"):
        ingest.main(["--format", "csv", "--src", str(src)])
    with pytest.raises(ValueError, match="fixed layout"):
        ingest.main(["--format", "movielens-latest", "--src", str(src), "--mapping", "user=user,item=item"])
    with pytest.raises(ValueError, match=r"missing\.csv: no such file"):
        ingest.main(["--format", "movielens-latest", "--src", str(tmp_path / "missing.csv")])
    ragged = _write(tmp_path / "u.data", "1\t2\t3\t4\n1\t2\n")
    with pytest.raises(ValueError, match=r"u\.data: line 2: 2 fields where 4 are expected"):
        ingest.main(["--format", "movielens-100k", "--src", str(ragged)])
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"PAR1 not really parquet")
    with pytest.raises(ValueError, match=r"broken\.parquet: cannot read it as Parquet"):
        ingest.main(["--format", "csv", "--src", str(broken), "--mapping", "user=a,item=b"])
    assert lake.dates("raw") == []


def test_another_source_needs_replace(lake: Lake, tmp_path: Path) -> None:
    first = _write(tmp_path / "a.csv", "u,i\n1,2\n")
    second = _write(tmp_path / "b.csv", "u,i\n3,4\n")
    args = ["--format", "csv", "--mapping", "user=u,item=i", "--ds", "2025-01-01"]
    ingest.main([*args, "--src", str(first)])
    # the same file may land again: its current content replaces the raw zone, the first date goes
    ingest.main([*args, "--src", str(first), "--ds", "2025-01-02"])
    assert lake.dates("raw") == ["2025-01-02"]
    assert read_json(lake.path("raw") / "_source.json")["rows"] == 1
    with pytest.raises(ValueError, match=r"a\.csv.*--replace"):
        ingest.main([*args, "--src", str(second)])
    ingest.main([*args, "--src", str(second), "--replace"])
    assert lake.dates("raw") == ["2025-01-01"]
    assert _rows(lake, "2025-01-01") == [("3", "4", "view", None, None)]
    assert read_json(lake.path("raw") / "_source.json")["src"] == str(second.resolve())


@pytest.mark.skipif(not ML_SMALL.is_file(), reason="the MovieLens sample is not in this checkout")
def test_real_movielens_latest_small(lake: Lake) -> None:
    facts = ingest.main(["--format", "movielens-latest", "--src", str(ML_SMALL)])
    assert facts == {"first_date": "1996-03-29", "last_date": "2018-09-24", "days": 4110, "rows": 100836,
                     "window_days": 8215, "source": "movielens-latest", "ts_unit": "seconds",
                     "value_kind": "rating", "future_rows": 0, "catalogue_rows": 9742,
                     "catalogue_src": str((ML_SMALL.parent / "movies.csv").resolve())}
    assert lake.dates("raw_catalogue") == ["2018-09-24"]  # movies.csv and tags.csv beside ratings.csv
    expected = pd.read_csv(ML_SMALL)
    expected_days = pd.to_datetime(expected.timestamp, unit="s", utc=True).dt.strftime("%Y-%m-%d")
    dates = lake.dates("raw")
    assert dates == sorted(expected_days.unique())
    landed = pq.read_table(lake.path("raw"), partitioning="hive").to_pandas()
    assert len(landed) == len(expected) == 100_836
    assert landed.groupby(landed.ds.astype(str)).size().to_dict() == expected_days.value_counts().to_dict()
    # every rating is there once, with its time in ISO text
    expected_keys = set(zip(expected.userId.astype(str), expected.movieId.astype(str), expected.rating.astype(str),
                            pd.to_datetime(expected.timestamp, unit="s").dt.strftime("%Y-%m-%dT%H:%M:%SZ"),
                            strict=True))
    landed_keys = set(zip(landed.user_id, landed.item_id, landed.value, landed.ts, strict=True))
    assert landed_keys == expected_keys and (landed.event == "rating").all()
    assert np.all(landed.ts.str[:10] == landed.ds.astype(str))
    source = read_json(lake.path("raw") / "_source.json")
    assert (source["user_id_type"], source["item_id_type"], source["dates"], source["rows"]) == (
        "int64", "int64", 4110, 100_836)
