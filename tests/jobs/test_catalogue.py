"""Tests of the item catalogue: parsing each format, landing it with the events, bad input, the Spark clean."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs import catalogue, ingest
from recsys.core.lake import CATALOGUE_FILE, CATALOGUE_QUARANTINE_FILE, RECONCILIATION_FILE, Lake, read_json
from recsys.data.catalogue import (
    RAW_CATALOGUE_SCHEMA,
    join_text,
    parse_item_mapping,
    read_movielens,
    write_raw_catalogue,
)
from tests.support import ML_LATEST_SMALL, epoch

DS = "2026-01-02"
CHINESE = "小米手机 红色"


def rows(table: pa.Table) -> list[tuple]:
    return [tuple(r.values()) for r in table.to_pylist()]


def raw_catalogue(lake: Lake, ds: str = DS) -> list[tuple]:
    return rows(pq.read_table(lake.path("raw_catalogue", ds)))


def ratings_csv(folder: Path, *lines: str) -> Path:
    """A movielens-latest ratings.csv whose last event is on 2026-01-02."""
    folder.mkdir(parents=True, exist_ok=True)
    src = folder / "ratings.csv"
    body = lines or (f"1,1,4.0,{epoch('2026-01-01T10:00:00')}", f"2,2,3.5,{epoch('2026-01-02T10:00:00')}")
    src.write_text("userId,movieId,rating,timestamp\n" + "\n".join(body) + "\n")
    return src


def test_join_text_joins_sentences_and_skips_empty_parts() -> None:
    assert join_text(["Toy Story (1995)", "Adventure, Animation", "Tags: pixar, fun"]) == (
        "Toy Story (1995). Adventure, Animation. Tags: pixar, fun")
    assert join_text(["  Airplane!  ", None, "", "Comedy"]) == "Airplane! Comedy"
    assert join_text(["红色手机。", "很好"]) == "红色手机。很好"
    assert join_text([None, " ", ""]) is None


def test_parse_item_mapping() -> None:
    mapping = parse_item_mapping("item=sku, text=title+desc , title=title")
    assert (mapping.item, mapping.text, mapping.title) == ("sku", ("title", "desc"), "title")
    assert mapping.columns == ["sku", "title", "desc"]
    assert parse_item_mapping("item=0,text=2").title is None
    for bad, message in [("item=sku", "text missing"), ("text=a", "item missing"), ("item=a,text=b+", "empty column"),
                         ("item=a,text=b,genre=c", "unknown role 'genre'"), ("item=a,item=b,text=c", "given twice")]:
        with pytest.raises(ValueError, match=rf"--item-mapping: .*{message}"):
            parse_item_mapping(bad)


def test_u_item_latin1_with_genre_names_from_u_genre_or_the_fixed_list(tmp_path: Path) -> None:
    flags = ["0"] * 19
    cafe = flags.copy()
    cafe[5] = cafe[8] = "1"  # Comedy, Drama
    unknown = flags.copy()
    unknown[0] = "1"
    lines = [f"1|Café (1996)|01-Jan-1996||http://x|{'|'.join(cafe)}",
             f"2|\"Quoted\" Film (1995)|01-Jan-1995||http://y|{'|'.join(unknown)}"]
    path = tmp_path / "u.item"
    path.write_bytes(("\n".join(lines) + "\n").encode("latin-1"))
    expected = [("1", "Café (1996)", "Café (1996). Comedy, Drama"),
                ("2", '"Quoted" Film (1995)', '"Quoted" Film (1995)')]  # unknown is no genre; quotes stay
    assert rows(read_movielens("movielens-100k", path)) == expected

    genres = ["unknown", "Action", "Adventure", "Animation", "Kids", "Comedy", "Crime", "Documentary", "Drama",
              "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western"]
    (tmp_path / "u.genre").write_text("".join(f"{g}|{k}\n" for k, g in enumerate(genres)) + "\n")
    cafe[4] = "1"
    path.write_bytes(("\n".join([f"1|Café (1996)|01-Jan-1996||http://x|{'|'.join(cafe)}"]) + "\n").encode("latin-1"))
    assert rows(read_movielens("movielens-100k", path)) == [("1", "Café (1996)", "Café (1996). Kids, Comedy, Drama")]


def test_u_item_of_another_width_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "u.item"
    path.write_bytes(b"1|Film (1995)|01-Jan-1995||http://x|0|1\n")
    with pytest.raises(ValueError, match=r"u\.item: line 1: 7 fields where 24 are expected"):
        read_movielens("movielens-100k", path)


def test_movies_dat_latin1_double_colons_and_quotes(tmp_path: Path) -> None:
    path = tmp_path / "movies.dat"
    path.write_bytes("1::Misérables, Les (1995)::Drama|Musical\n2::\"Great Performances\" Cats (1998)::Musical\n"
                     .encode("latin-1"))
    assert rows(read_movielens("movielens-1m", path)) == [
        ("1", "Misérables, Les (1995)", "Misérables, Les (1995). Drama, Musical"),
        ("2", '"Great Performances" Cats (1998)', '"Great Performances" Cats (1998). Musical'),
    ]


def test_movies_csv_with_distinct_tags_most_used_first(tmp_path: Path) -> None:
    path = tmp_path / "movies.csv"
    path.write_text('movieId,title,genres\n1,Toy Story (1995),Adventure|Animation|Children\n'
                    '2,"American President, The (1995)",(no genres listed)\n3,Heat (1995),Action\n')
    (tmp_path / "tags.csv").write_text("userId,movieId,tag,timestamp\n"
                                       "5,1,fun,1\n6,1,Pixar,2\n7,1, pixar ,3\n8,1,fun,4\n9,1,pixar,5\n"
                                       "9,1,,6\n5,2,politics,7\n5,99,orphan,8\n")
    assert rows(read_movielens("movielens-latest", path)) == [
        # pixar thrice (spelled Pixar: the first in Unicode order), fun twice; the blank tag and movie 99 ignored
        ("1", "Toy Story (1995)", "Toy Story (1995). Adventure, Animation, Children. Tags: Pixar, fun"),
        ("2", "American President, The (1995)", "American President, The (1995). Tags: politics"),
        ("3", "Heat (1995)", "Heat (1995). Action"),
    ]


@pytest.mark.parametrize("kind", ["csv", "tsv", "parquet", "jsonl"])
def test_generic_catalogue_lands_with_the_events_chinese_intact(lake: Lake, tmp_path: Path, kind: str) -> None:
    records = [{"sku": "A1", "name": CHINESE, "desc": "大屏幕, 长续航", "brand": "Mi"},
               {"sku": " B2 ", "name": "Kettle", "desc": None, "brand": "Acme"},
               {"sku": "C3", "name": None, "desc": None, "brand": None}]
    items = tmp_path / f"items.{kind}"
    if kind == "parquet":
        pq.write_table(pa.Table.from_pylist(records), items)
    elif kind == "jsonl":
        items.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in records) + "\n", encoding="utf-8")
    else:
        sep = "\t" if kind == "tsv" else ","
        lines = [sep.join(records[0])] + [sep.join(f'"{v}"' if v and sep in v else v or "" for v in r.values())
                                          for r in records]
        items.write_text("\n".join(lines) + "\n", encoding="utf-8")
    events = tmp_path / "events.csv"
    events.write_text(f"u,i,t\nx,A1,{epoch('2026-01-01T10:00:00')}\ny,B2,{epoch('2026-01-02T10:00:00')}\n")
    result = ingest.main(["--format", "csv", "--src", str(events), "--mapping", "user=u,item=i,ts=t",
                          "--items", str(items), "--item-mapping", "item=sku,text=name+desc+brand,title=name"])
    assert (result["last_date"], result["catalogue_rows"], result["catalogue_src"]) == (DS, 3, str(items))
    assert raw_catalogue(lake) == [("A1", CHINESE, f"{CHINESE}. 大屏幕, 长续航. Mi"),
                                   (" B2 ", "Kettle", "Kettle. Acme"), ("C3", None, None)]
    assert pq.read_schema(lake.path("raw_catalogue", DS) / "part-00000.parquet").equals(RAW_CATALOGUE_SCHEMA)


def test_movielens_catalogue_beside_the_ratings_lands_automatically(lake: Lake, tmp_path: Path) -> None:
    src = ratings_csv(tmp_path / "ml")
    (src.parent / "movies.csv").write_text("movieId,title,genres\n1,Heat (1995),Action\n2,Up (2009),Animation\n")
    result = ingest.main(["--format", "movielens-latest", "--src", str(src)])
    assert result["catalogue_rows"] == 2
    assert raw_catalogue(lake) == [("1", "Heat (1995)", "Heat (1995). Action"),
                                   ("2", "Up (2009)", "Up (2009). Animation")]


def test_without_a_catalogue_the_log_says_so_and_an_old_one_goes(
    lake: Lake, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write_raw_catalogue(lake, pa.table({"item_id": ["9"], "title": ["Old"], "text": ["Old"]}), "2025-06-01")
    src = ratings_csv(tmp_path / "ml")
    with caplog.at_level(logging.INFO):
        result = ingest.main(["--format", "movielens-latest", "--src", str(src)])
    assert (result["catalogue_rows"], result["catalogue_src"]) == (0, None)
    assert "no movies.csv beside" in caplog.text
    # the import is the source's whole content: a catalogue it no longer ships does not stay behind
    assert lake.dates("raw_catalogue") == []


@pytest.mark.parametrize(("content", "flags", "message"), [
    ("sku,name\nA,x\n", ["--item-mapping", "item=sku,text=name+desc"],
     r"items\.csv: mapped column\(s\) 'desc' not found in the header .*'sku', 'name'"),
    (b"sku,name\nA,ok\nB,caf\xe9\n", ["--item-mapping", "item=sku,text=name"],
     r"items\.csv: line 3, column 6: byte 0xe9 is not valid utf-8 text; an item catalogue \(--items\) must be UTF-8"),
    ("sku,name\nA,x\n", [], r"--items of --format csv needs --item-mapping"),
    (None, ["--item-mapping", "item=sku,text=name"], r"items\.csv: no such file"),
    ("sku\n", ["--item-mapping", "item=sku,text=sku"], r"items\.csv: no data rows"),
    ("sku,name\nA,x\nB,y,z\n", ["--item-mapping", "item=sku,text=name"],
     r"items\.csv: line 3: 3 fields where 2 are expected"),
])
def test_bad_catalogues_name_the_file_and_land_nothing(
    lake: Lake, tmp_path: Path, content: str | bytes | None, flags: list[str], message: str
) -> None:
    items = tmp_path / "items.csv"
    if isinstance(content, bytes):
        items.write_bytes(content)
    elif content is not None:
        items.write_text(content)
    events = tmp_path / "events.csv"
    events.write_text("u,i\nx,A\n")
    with pytest.raises(ValueError, match=message):
        ingest.main(["--format", "csv", "--src", str(events), "--mapping", "user=u,item=i", "--ds", DS,
                     "--items", str(items), *flags])
    assert lake.dates("raw") == [] and lake.dates("raw_catalogue") == []


def test_item_mapping_needs_items(lake: Lake, tmp_path: Path) -> None:
    events = tmp_path / "events.csv"
    events.write_text("u,i\nx,A\n")
    with pytest.raises(ValueError, match=r"--item-mapping needs --items"):
        ingest.main(["--format", "csv", "--src", str(events), "--mapping", "user=u,item=i",
                     "--item-mapping", "item=a,text=b"])


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@pytest.mark.spark
def test_clean_quarantines_with_each_reason_and_reconciles(lake: Lake, spark) -> None:
    long_text = "x" * 41
    raw = [
        (" 7 ", " Heat ", " Heat (1995). Action "),  # trimmed
        ("8", None, "Up (2009)"),
        ("8", "Up", "Up (2009)"),  # the same text: a duplicate, whatever the title
        ("9", "A", "short"),
        ("9", "B", "a longer text"),  # the longest text is kept
        ("9", "C", "other"),  # another text: conflicting_text
        (None, "t", "no id"),
        ("  ", "t", "blank id"),
        ("bad\tid", "t", "control character"),
        ("10", "Empty", "  \n "),
        ("11", "Nothing", None),
        ("12", "Long", long_text),
        (CHINESE, CHINESE, f"{CHINESE}。好"),
    ]
    write_raw_catalogue(lake, pa.table(list(zip(*raw, strict=True)), schema=RAW_CATALOGUE_SCHEMA), "2026-01-01")
    result = catalogue.main(["--ds", DS, "--set", "catalogue.max_text_chars=40"])

    out = lake.path("catalogue", DS)
    assert rows(pq.read_table(out / CATALOGUE_FILE)) == [
        ("7", "Heat", "Heat (1995). Action", sha256("Heat (1995). Action")),
        ("8", "Up", "Up (2009)", sha256("Up (2009)")),  # the one with a title: a missing title sorts last
        ("9", "B", "a longer text", sha256("a longer text")),
        (CHINESE, CHINESE, f"{CHINESE}。好", sha256(f"{CHINESE}。好")),
    ]
    assert rows(pq.read_table(out / CATALOGUE_QUARANTINE_FILE)) == [
        ("bad\tid", "t", "control character", "bad_id"),
        ("9", "A", "short", "conflicting_text"),
        ("9", "C", "other", "conflicting_text"),
        ("10", "Empty", "  \n ", "empty_text"),
        ("11", "Nothing", None, "empty_text"),
        ("  ", "t", "blank id", "null_id"),
        (None, "t", "no id", "null_id"),
        ("12", "Long", long_text, "text_too_long"),
    ]
    report = read_json(out / RECONCILIATION_FILE)
    assert report == {"input": 13, "clean": 4, "duplicates": 1, "quarantined": 8, "source_ds": "2026-01-01",
                      "by_reason": {"null_id": 2, "bad_id": 1, "empty_text": 2, "text_too_long": 1,
                                    "conflicting_text": 2}}
    assert result["clean"] == 4 and result["source_ds"] == "2026-01-01"


def test_no_raw_catalogue_commits_an_empty_one_without_spark(
    lake: Lake, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import recsys.core.spark

    def no_spark(name: str) -> None:
        raise AssertionError("Spark started")

    monkeypatch.setattr(recsys.core.spark, "spark_session", no_spark)
    write_raw_catalogue(lake, pa.table({"item_id": ["1"], "title": ["Later"], "text": ["Later"]}), "2026-02-01")
    with caplog.at_level(logging.INFO):
        result = catalogue.main(["--ds", DS])  # the only raw catalogue is of a later date
    assert "no raw_catalogue partition on or before 2026-01-02" in caplog.text
    out = lake.path("catalogue", DS)
    assert pq.read_table(out / CATALOGUE_FILE).num_rows == 0
    assert pq.read_table(out / CATALOGUE_QUARANTINE_FILE).num_rows == 0
    assert (result["input"], result["clean"], result["source_ds"]) == (0, 0, None)


@pytest.mark.spark
@pytest.mark.skipif(not (ML_LATEST_SMALL / "movies.csv").is_file(), reason="ml-latest-small is not there")
def test_the_real_ml_latest_small_catalogue(lake: Lake, spark) -> None:
    table = read_movielens("movielens-latest", ML_LATEST_SMALL / "movies.csv")
    assert table.num_rows == 9742
    toy = [r for r in table.to_pylist() if r["item_id"] == "1"]
    assert toy == [{"item_id": "1", "title": "Toy Story (1995)",
                    "text": "Toy Story (1995). Adventure, Animation, Children, Comedy, Fantasy. Tags: pixar, fun"}]
    write_raw_catalogue(lake, table, DS)
    report = catalogue.main(["--ds", DS])
    assert report["clean"] + report["duplicates"] + report["quarantined"] == report["input"] == 9742
    assert report["clean"] == 9742
