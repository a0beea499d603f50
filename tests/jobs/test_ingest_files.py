"""Tests of the ingest job on real-world file shapes: no header, BOM, CRLF, quoted newlines, encodings, JSON lines, gzip."""

from __future__ import annotations

import datetime as dt
import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs import ingest
from recsys.core.lake import Lake, read_json
from recsys.data.formats import sniff_sep
from recsys.data.rawzone import id_type
from tests.support import epoch, landed_rows


def _source(lake: Lake) -> dict:
    return read_json(lake.path("raw") / "_source.json")


def _csv(src: Path, mapping: str, *extra: str) -> dict:
    return ingest.main(["--format", "csv", "--src", str(src), "--mapping", mapping, *extra])


@pytest.mark.parametrize(("ids", "expected"), [
    (["1", "22", "-3", "0", None, " 7 ", ""], "int64"),
    (["7", "007"], "string"),  # 007 published as 7 would be another id
    (["7", "+7"], "string"),
    (["-0"], "string"),
    (["123456789012345678"], "int64"),
    (["1234567890123456789"], "string"),  # 19 digits: may not fit int64
    (["12345678901234567890"], "string"),
    (["1e3"], "string"),
    ([None, "  "], "string"),  # no id at all
    (["7", "\u00a08"], "string"),  # clean trims spaces only: a no-break space stays part of the id
    (["7", "8\x00", "9" * 300], "int64"),  # bad ids are quarantined by clean, never published
])
def test_id_type_only_canonical_integers_are_int64(ids: list[str | None], expected: str) -> None:
    assert id_type(pa.array(ids, pa.string())) == expected


def test_leading_zero_ids_stay_strings_as_they_came(lake: Lake, tmp_path: Path) -> None:
    src = tmp_path / "log.csv"
    src.write_text("u,i\n007,01\n7,1\n")
    _csv(src, "user=u,item=i", "--ds", "2025-01-01")
    assert [row[1:3] for row in landed_rows(lake)] == [("007", "01"), ("7", "1")]
    assert (_source(lake)["user_id_type"], _source(lake)["item_id_type"]) == ("string", "string")


def test_headerless_positions_and_trailing_separator(lake: Lake, tmp_path: Path) -> None:
    noon = epoch("2021-06-01T12:00:00")
    src = tmp_path / "plays.txt"
    src.write_text(f"i1,u1,4.5,{noon},\ni2,u2,3,{noon + 60},\n")  # lines end in the separator
    facts = _csv(src, "user=1,item=0,value=2,ts=3")
    assert facts["rows"] == 2 and facts["ts_unit"] == "seconds"
    assert landed_rows(lake) == [("2021-06-01", "u1", "i1", "rating", "4.5", "2021-06-01T12:00:00Z"),
                             ("2021-06-01", "u2", "i2", "rating", "3", "2021-06-01T12:01:00Z")]


def test_header_without_the_trailing_separator_of_its_lines(lake: Lake, tmp_path: Path) -> None:
    src = tmp_path / "log.csv"
    src.write_text("u,i,r\n1,2,5,\n3,4,1,\n")
    _csv(src, "user=u,item=i,value=r", "--ds", "2025-01-01")
    assert [row[1:5] for row in landed_rows(lake)] == [("1", "2", "rating", "5"), ("3", "4", "rating", "1")]


def test_bom_and_crlf(lake: Lake, tmp_path: Path) -> None:
    src = tmp_path / "log.csv"
    src.write_bytes(b"\xef\xbb\xbfuser,item,when\r\nA,B,2020-01-01T00:00:00Z\r\nC,D,2020-01-02T00:00:00Z\r\n")
    facts = _csv(src, "user=user,item=item,ts=when")
    assert facts["ts_unit"] == "iso8601"
    assert landed_rows(lake) == [("2020-01-01", "A", "B", "view", None, "2020-01-01T00:00:00Z"),
                             ("2020-01-02", "C", "D", "view", None, "2020-01-02T00:00:00Z")]


def test_quoted_separators_and_newlines_in_a_file_over_2_mb(lake: Lake, tmp_path: Path) -> None:
    n = 40_000
    lines = [f'u{k},i{k % 97},"a review, with a comma\nand a second ""line""",{k % 5 + 1}\n' for k in range(n)]
    src = tmp_path / "reviews.csv"
    src.write_text("user,item,text,stars\n" + "".join(lines))
    assert src.stat().st_size > 2 * 1024 * 1024
    facts = _csv(src, "user=user,item=item,value=stars", "--ds", "2025-01-01")
    landed = landed_rows(lake)
    assert facts["rows"] == len(landed) == n
    assert landed[n - 1] == ("2025-01-01", f"u{n - 1}", f"i{(n - 1) % 97}", "rating", str((n - 1) % 5 + 1), None)


def test_latin1_with_encoding_and_a_clear_error_without(lake: Lake, tmp_path: Path) -> None:
    src = tmp_path / "log.csv"
    src.write_bytes("u,i\nana,tea\nzoé,café\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"log\.csv: line 3, column 3: byte 0xe9 .*--encoding latin-1"):
        _csv(src, "user=u,item=i", "--ds", "2025-01-01")
    assert lake.dates("raw") == []
    _csv(src, "user=u,item=i", "--ds", "2025-01-01", "--encoding", "latin-1")
    assert [row[1:3] for row in landed_rows(lake)] == [("ana", "tea"), ("zoé", "café")]


def test_amazon_classic_reviews_json(lake: Lake, tmp_path: Path) -> None:
    records = [
        {"overall": 5.0, "verified": True, "reviewTime": "09 1, 2016", "reviewerID": "A3CIUOJXQ5VDQ2",
         "asin": "B0000530HU", "style": {"Size:": " 7.0 oz"}, "reviewText": "great, really\ngreat",
         "unixReviewTime": 1472688000},
        {"overall": 1.0, "verified": False, "reviewerID": "A1", "asin": "0000031852", "unixReviewTime": 1472774400},
    ]
    src = tmp_path / "All_Beauty.json"
    src.write_text("".join(json.dumps(r) + "\n" for r in records))
    facts = _csv(src, "user=reviewerID,item=asin,value=overall,ts=unixReviewTime")
    assert (facts["ts_unit"], facts["value_kind"], facts["rows"]) == ("seconds", "rating", 2)
    assert landed_rows(lake) == [
        ("2016-09-01", "A3CIUOJXQ5VDQ2", "B0000530HU", "rating", "5", "2016-09-01T00:00:00Z"),
        ("2016-09-02", "A1", "0000031852", "rating", "1", "2016-09-02T00:00:00Z"),
    ]
    assert _source(lake)["item_id_type"] == "string"


def test_amazon_2023_reviews_gzipped_jsonl_in_milliseconds(lake: Lake, tmp_path: Path) -> None:
    records = [
        {"rating": 5.0, "title": "Such a lovely scent", "text": "a, b", "images": [], "asin": "B00YQ6X8EO",
         "parent_asin": "B00YQ6X8EO", "user_id": "AGKHLEW2SOWHNMFQIJGBECAF7INQ", "timestamp": 1588687728923,
         "helpful_vote": 0, "verified_purchase": True},
        {"rating": 4.0, "title": "x", "text": "", "images": [], "asin": "B081TJ8YS3", "parent_asin": "B081TJ8YS3",
         "user_id": "AGKHLEW2SOWHNMFQIJGBECAF7INQ", "timestamp": 1588615855070, "helpful_vote": 1,
         "verified_purchase": True},
    ]
    src = tmp_path / "All_Beauty.jsonl.gz"
    src.write_bytes(gzip.compress("".join(json.dumps(r) + "\n" for r in records).encode()))
    facts = _csv(src, "user=user_id,item=parent_asin,value=rating,ts=timestamp")
    assert (facts["ts_unit"], facts["rows"], facts["last_date"]) == ("milliseconds", 2, "2020-05-05")
    expected = [dt.datetime.fromtimestamp(r["timestamp"] // 1000, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
                for r in records]
    assert [row[5] for row in landed_rows(lake)] == sorted(expected)
    assert _source(lake)["ts_unit"] == "milliseconds"


def test_json_sniffed_by_its_first_character_with_mixed_value_types(lake: Lake, tmp_path: Path) -> None:
    src = tmp_path / "events.txt"
    src.write_text('\n{"u": 7, "i": "x", "n": 3}\n{"u": "A", "i": 1.5, "n": null}\n\n{"u": true, "i": [1], "n": 2}\n')
    facts = _csv(src, "user=u,item=i,value=n:count", "--ds", "2025-01-01")
    assert facts["rows"] == 3
    assert [row[1:5] for row in landed_rows(lake)] == [("7", "x", "view", "3"), ("A", "1.5", "view", None),
                                                   ("true", "[1]", "view", "2")]


def test_json_missing_keys_are_named_with_the_keys_it_has(lake: Lake, tmp_path: Path) -> None:
    src = tmp_path / "log.jsonl"
    src.write_text('{"reviewerID": "A", "asin": "B"}\n')
    with pytest.raises(ValueError, match=r"log\.jsonl: mapped column\(s\) 'user_id', 'rating' not found .*"
                                         r"'reviewerID', 'asin'"):
        _csv(src, "user=user_id,item=asin,value=rating")


def test_bad_json_line_is_named(lake: Lake, tmp_path: Path) -> None:
    src = tmp_path / "log.jsonl"
    src.write_text('{"u": "A", "i": "B"}\n{"u": "A", "i": \n')
    with pytest.raises(ValueError, match=r"log\.jsonl: line 2, column \d+: not JSON"):
        _csv(src, "user=u,item=i")


def test_gzip_detected_by_magic_bytes_whatever_the_name(lake: Lake, tmp_path: Path) -> None:
    src = tmp_path / "ratings.dat"
    src.write_bytes(gzip.compress(f"1::10::5::{epoch('2000-01-01T00:00:00')}\n".encode()))
    ingest.main(["--format", "movielens-1m", "--src", str(src)])
    assert landed_rows(lake) == [("2000-01-01", "1", "10", "rating", "5", "2000-01-01T00:00:00Z")]
    gz = tmp_path / "log.tsv.gz"
    gz.write_bytes(gzip.compress(b"u\ti\n1\t2\n"))
    _csv(gz, "user=u,item=i", "--ds", "2025-01-01", "--replace")
    assert [row[1:3] for row in landed_rows(lake)] == [("1", "2")]


@pytest.mark.parametrize("sep", ["tab", "\\t", "\t"])
def test_sep_tab_spellings(lake: Lake, tmp_path: Path, sep: str) -> None:
    src = tmp_path / "log.csv"
    src.write_text("u\ti\n1\t2\n")
    _csv(src, "user=u,item=i", "--ds", "2025-01-01", "--sep", sep)
    assert [row[1:3] for row in landed_rows(lake)] == [("1", "2")]


@pytest.mark.parametrize(("name", "text"), [
    ("semi.csv", "u;i;r\n1;2;3,5\n4;5;1,0\n"),  # decimal commas: still semicolon-separated
    ("pipe.dat", "u|i|r\n1|2|3.5\n4|5|1\n"),
    ("tabs.csv", "u\ti\tr\n1\t2\t3.5\n4\t5\t1\n"),
    ("quoted.txt", 'u,i,r\n1,2,"3;5|x"\n4,5,1\n'),
])
def test_sniffed_separator(lake: Lake, tmp_path: Path, name: str, text: str) -> None:
    src = tmp_path / name
    src.write_text(text)
    facts = _csv(src, "user=u,item=i", "--ds", "2025-01-01")
    assert facts["rows"] == 2
    assert [row[1:3] for row in landed_rows(lake)] == [("1", "2"), ("4", "5")]


def test_sniff_sep_falls_back_to_the_extension_rule() -> None:
    assert sniff_sep("only one column\nhere\n", "\t") == "\t"
    assert sniff_sep("a,b;c\nd,e;f\n", ",") == ","  # a tie goes to the fallback
    assert sniff_sep('a,b\n"1,2",3\n4,5\n6,"7', ",") == ","  # the cut-off last record is ignored


def test_count_values_are_views_and_recorded(lake: Lake, tmp_path: Path) -> None:
    src = tmp_path / "plays.tsv"
    src.write_text("user\tartist\tplays\nu1\ta1\t250\nu2\ta1\t0\n")
    facts = _csv(src, "user=user,item=artist,value=plays:count", "--ds", "2025-01-01")
    assert (facts["value_kind"], facts["ts_unit"]) == ("count", "none")
    assert [row[1:5] for row in landed_rows(lake)] == [("u1", "a1", "view", "250"), ("u2", "a1", "view", "0")]
    assert _source(lake)["value_kind"] == "count"


def test_parquet_with_millisecond_numbers(lake: Lake, tmp_path: Path) -> None:
    stamp = epoch("2022-03-04T05:06:07")
    src = tmp_path / "events.bin"  # Parquet is known by its magic bytes
    pq.write_table(pa.table({"u": [1, 2], "i": [3, 4], "t": pa.array([stamp * 1000, stamp * 1000 + 1500])}), src)
    facts = _csv(src, "user=u,item=i,ts=t")
    assert facts["ts_unit"] == "milliseconds"
    assert [row[5] for row in landed_rows(lake)] == ["2022-03-04T05:06:07Z", "2022-03-04T05:06:08Z"]
