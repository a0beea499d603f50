"""The ingest side of the bad-input matrix: each input raises a ValueError naming file/line/column, or lands every row."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from jobs import ingest
from recsys.core.cli import RESULT_MARKER
from recsys.core.lake import Lake, read_json
from tests.support import epoch, landed_rows

REPO = Path(__file__).resolve().parents[2]




def _csv(src: Path, mapping: str, *extra: str) -> dict:
    return ingest.main(["--format", "csv", "--src", str(src), "--mapping", mapping, *extra])


@pytest.mark.parametrize(("name", "content", "sep", "message"), [
    ("empty.csv", b"", None, r"empty\.csv: the file is empty"),
    ("blank.csv", b"\n  \n", None, r"blank\.csv: the file is empty"),
    ("header.csv", b"u,i,r\n", None, r"header\.csv: no data rows; the file holds its header \(line 1\) only"),
    ("semi.csv", b"u;i;r\n1;2;3\n", ",",
     r"semi\.csv: mapped column\(s\) 'u', 'i', 'r' not found in the header \(line 1, separator ','\); the file has 'u;i;r'"),
    ("nots.csv", b"u,i,r\n1,2,3\n", None, r"nots\.csv: mapped column\(s\) 'when' not found .*'u', 'i', 'r'"),
    ("bytes.csv", b"u,i,r\n1,2,3\n1,\xff\xfe,3\n", None,
     r"bytes\.csv: line 3, column 3: byte 0xff is not valid utf-8 text; .*--encoding latin-1"),
    ("ragged.csv", b'u,i,r\n1,2,"two\nlines"\n3,4\n', None,
     r"ragged\.csv: line 4: 2 fields where 3 are expected"),
    ("badquote.tsv", b'u\ti\tr\n1\t2\t3\n4\t"5\t6\n', None, r"badquote\.tsv: line 3: "),
])
def test_unreadable_inputs_name_the_file_line_and_reason(
    lake: Lake, tmp_path: Path, name: str, content: bytes, sep: str | None, message: str
) -> None:
    src = tmp_path / name
    src.write_bytes(content)
    mapping = "user=u,item=i,ts=when" if name == "nots.csv" else "user=u,item=i,value=r"
    with pytest.raises(ValueError, match=message):
        _csv(src, mapping, *(["--sep", sep] if sep else []))
    assert lake.dates("raw") == []


def test_missing_file_and_directory(lake: Lake, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"nothing\.csv: no such file"):
        _csv(tmp_path / "nothing.csv", "user=u,item=i")
    with pytest.raises(ValueError, match=rf"{tmp_path.name}: is a directory; --src takes one file"):
        _csv(tmp_path, "user=u,item=i")


def test_odd_values_and_ids_land_unchanged_for_clean_to_judge(lake: Lake, tmp_path: Path) -> None:
    lines = ["u,i,r", "1,10,-1", "2,10,NaN", "12345678901234567890,10,4", ",10,4", "   ,10,4", "3, ,4", "4,10,"]
    src = tmp_path / "odd.csv"
    src.write_text("\n".join(lines) + "\n")
    facts = _csv(src, "user=u,item=i,value=r", "--ds", "2025-01-01")
    landed = landed_rows(lake)
    assert facts["rows"] == len(landed) == len(lines) - 1
    assert [row[1:5] for row in landed] == [
        ("1", "10", "rating", "-1"), ("2", "10", "rating", "NaN"), ("12345678901234567890", "10", "rating", "4"),
        (None, "10", "rating", "4"), ("   ", "10", "rating", "4"), ("3", " ", "rating", "4"), ("4", "10", "rating", None),
    ]
    source = read_json(lake.path("raw") / "_source.json")
    assert (source["user_id_type"], source["item_id_type"]) == ("string", "int64")  # a 20-digit id is a string


def test_times_before_1970_stay_and_future_times_do_not_set_the_date(lake: Lake, tmp_path: Path) -> None:
    before = epoch("1969-07-20T20:17:40")
    lines = ["u,i,t", f"1,1,{before}", "2,2,0", "3,3,2020-05-05T10:00:00Z", "4,4,2999-01-01T00:00:00Z",
             f"5,5,{epoch('2999-06-01T00:00:00')}", "6,6,soon"]
    src = tmp_path / "times.csv"
    src.write_text("\n".join(lines) + "\n")
    facts = _csv(src, "user=u,item=i,ts=t")
    assert before < 0
    assert (facts["first_date"], facts["last_date"], facts["window_days"]) == (
        "1969-07-20", "2020-05-05", (dt.date(2020, 5, 5) - dt.date(1969, 7, 20)).days + 1)
    assert (facts["future_rows"], facts["rows"]) == (2, 6)
    assert landed_rows(lake) == [
        ("1969-07-20", "1", "1", "view", None, "1969-07-20T20:17:40Z"),
        ("1970-01-01", "2", "2", "view", None, "1970-01-01T00:00:00Z"),
        ("2020-05-05", "3", "3", "view", None, "2020-05-05T10:00:00Z"),
        ("2020-05-05", "4", "4", "view", None, "2999-01-01T00:00:00Z"),  # future: clean quarantines it
        ("2020-05-05", "5", "5", "view", None, "2999-06-01T00:00:00Z"),
        ("2020-05-05", "6", "6", "view", None, "soon"),
    ]
    assert read_json(lake.path("raw") / "_source.json")["last_date"] == "2020-05-05"


def test_a_log_of_future_times_only_lands_on_ds(lake: Lake, tmp_path: Path) -> None:
    src = tmp_path / "future.csv"
    src.write_text(f"u,i,t\n1,1,{epoch('2999-01-01T00:00:00') * 1000}\n")
    facts = _csv(src, "user=u,item=i,ts=t", "--ds", "2025-01-01")
    assert (facts["last_date"], facts["future_rows"], facts["ts_unit"]) == ("2025-01-01", 1, "milliseconds")
    assert landed_rows(lake) == [("2025-01-01", "1", "1", "view", None, "2999-01-01T00:00:00Z")]


def test_duplicates_and_a_heavy_user_land_as_they_are(lake: Lake, tmp_path: Path) -> None:
    n = 100_000
    noon = epoch("2024-02-29T12:00:00")
    src = tmp_path / "heavy.csv"
    rows = [f"bot,{k % 50},{noon + k % 3600}" for k in range(n)] + ["u,1,2024-02-29T00:00:00Z"] * 3
    src.write_text("user,item,ts\n" + "\n".join(rows) + "\n")
    facts = _csv(src, "user=user,item=item,ts=ts")
    landed = landed_rows(lake)
    assert facts["rows"] == len(landed) == n + 3 and lake.dates("raw") == ["2024-02-29"]
    assert sum(row[1] == "bot" for row in landed) == n
    assert landed.count(("2024-02-29", "u", "1", "view", None, "2024-02-29T00:00:00Z")) == 3


def test_exit_codes_of_the_command(lake: Lake, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    command = [sys.executable, "-m", "jobs.ingest", "--format", "csv", "--mapping", "user=u,item=i,ts=t", "--replace"]
    failed = subprocess.run([*command, "--src", str(empty)], cwd=REPO, env=env, capture_output=True, text=True,
                            check=False)
    assert failed.returncode == 1
    assert "empty.csv: the file is empty" in failed.stderr and "Traceback" not in failed.stderr
    good = tmp_path / "good.csv"
    good.write_text("u,i,t\n1,2,2021-01-02T03:04:05Z\n")
    landed = subprocess.run([*command, "--src", str(good)], cwd=REPO, env=env, capture_output=True, text=True,
                            check=False)
    assert landed.returncode == 0, landed.stderr
    last = landed.stdout.strip().splitlines()[-1]
    assert last.startswith(RESULT_MARKER)
    result = json.loads(last.removeprefix(RESULT_MARKER))
    assert (result["last_date"], result["window_days"], result["ts_unit"]) == ("2021-01-02", 1, "iso8601")
