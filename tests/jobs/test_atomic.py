"""A clean job killed mid-write leaves no partition a reader could take for finished; reruns are byte-identical."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs import clean, tables
from recsys.core.columns import RAW_COLUMNS
from recsys.core.config import REPO_ROOT
from recsys.core.lake import RECONCILIATION_FILE, Lake, read_json, write_json

OLD, DAY = "2026-01-01", "2026-01-02"
ARGS = ["--set", "window_days=2", "--set", "tables.min_user_core=1"]


def write_raw(lake: Lake, ds: str, n: int) -> None:
    """``n`` events of 50 users over 40 items, with a few bad rows, in the raw partition of ``ds``."""
    rows = [(f"u{k % 50}", f"i{(k * 7) % 40}", "view" if k % 3 else "click", None, f"{ds}T{k % 24:02d}:{k % 60:02d}:00Z")
            for k in range(n)]
    rows += [(None, "i1", "view", None, f"{ds}T01:00:00Z"), ("u1", "i1", "poke", None, f"{ds}T01:00:00Z")]
    path = lake.path("raw", ds)
    path.mkdir(parents=True)
    pq.write_table(pa.table({c: pa.array([r[k] for r in rows], pa.string()) for k, c in enumerate(RAW_COLUMNS)}),
                   path / "part-0.parquet")


def partition_bytes(path: Path) -> dict[str, bytes]:
    """Every file of a partition by name; Spark names its parts with a fresh id, so content counts, in order."""
    files = sorted(p for p in path.rglob("*") if p.is_file())
    parts = [p for p in files if p.name.startswith("part-")]
    named = {str(p.relative_to(path)): p.read_bytes() for p in files if p not in parts}
    return {**named, **{f"part #{k}": p.read_bytes() for k, p in enumerate(parts)}}


def kill_mid_write(lake: Lake, ds: str) -> None:
    """Start ``python -m jobs.clean`` and SIGKILL it (and its JVM) once it has written into its staging folder."""
    env = {**os.environ, "RECSYS_LAKE": str(lake.root), "SPARK_MASTER": "local[1]", "SPARK_DRIVER_MEMORY": "1g",
           "PYTHONPATH": str(REPO_ROOT)}
    job = subprocess.Popen([sys.executable, "-m", "jobs.clean", "--ds", ds, *ARGS], cwd=REPO_ROOT, env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    staging = lake.root / "_staging"
    deadline = time.monotonic() + 180
    try:
        while time.monotonic() < deadline and job.poll() is None:
            if any(p.is_file() for p in staging.glob(f"clean-{ds}-*/**/*")):
                os.killpg(job.pid, signal.SIGKILL)
                break
            time.sleep(0.02)
        else:
            pytest.fail(f"the clean job ended (rc {job.returncode}) or stalled before writing into {staging}")
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
        job.wait()
    assert job.returncode == -signal.SIGKILL


@pytest.mark.spark
def test_a_killed_clean_job_leaves_the_old_partition_and_a_rerun_completes(lake: Lake, spark) -> None:
    write_json(lake.path("raw") / "_source.json", {"has_timestamp": True})
    write_raw(lake, OLD, 300)
    write_raw(lake, DAY, 400)
    clean.main(["--ds", DAY, "--set", "window_days=1"])  # DAY only: OLD stays uncleaned
    old = {zone: partition_bytes(lake.path(zone, DAY)) for zone in ("clean", "quarantine")}

    kill_mid_write(lake, DAY)  # this run cleans OLD and DAY again
    assert lake.dates("clean") == lake.dates("quarantine") == [DAY]  # OLD never appeared
    assert {zone: partition_bytes(lake.path(zone, DAY)) for zone in ("clean", "quarantine")} == old
    assert not list(lake.root.glob("*/.ds=*"))  # no old version renamed aside and left behind
    left_behind = list((lake.root / "_staging").glob(f"clean-{DAY}-*"))
    assert left_behind  # the killed run could not clean up: the next run of the date does

    facts = clean.main(["--ds", DAY, *ARGS])
    assert not any(p.exists() for p in left_behind)
    assert lake.dates("clean") == lake.dates("quarantine") == [OLD, DAY]
    for ds, n in ((OLD, 300), (DAY, 400)):
        report = read_json(lake.path("clean", ds) / RECONCILIATION_FILE)
        clean_rows = pq.read_table(lake.path("clean", ds)).num_rows
        quarantined = pq.read_table(lake.path("quarantine", ds)).num_rows
        assert report["input"] == n + 2 and (report["clean"], report["quarantined"]) == (clean_rows, quarantined) == (
            n - report["duplicates"], 2)
    assert facts["input"] == 704

    # the same date twice gives the same tables, byte for byte
    tables.main(["--ds", DAY, *ARGS])
    first = partition_bytes(lake.path("tables", DAY))
    tables.main(["--ds", DAY, *ARGS])
    assert partition_bytes(lake.path("tables", DAY)) == first
    assert {"matrices.npz", "_stats.json", "users.parquet", "items.parquet"} <= set(first)


def test_staging_removes_the_stale_folders_of_its_label_only(lake: Lake) -> None:
    base = lake.root / "_staging"
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(ended.stdout)
    names = {
        "dead": f"tables-{DAY}-{dead_pid}-0123456789ab",  # its process has ended
        "legacy": f"tables-{DAY}-0123456789ab",  # named before pids were recorded
        "alive": f"tables-{DAY}-{os.getpid()}-0123456789ab",  # a run still going (this one)
        "other_date": f"tables-{OLD}-{dead_pid}-0123456789ab",
        "other_zone": f"clean-{DAY}-{dead_pid}-0123456789ab",
    }
    for name in names.values():
        (base / name).mkdir(parents=True)
        (base / name / "part-0.parquet").write_bytes(b"half")

    with lake.writing("tables", DAY) as out:
        (out / "done").write_text("yes")
    assert sorted(p.name for p in base.iterdir()) == sorted(names[k] for k in ("alive", "other_date", "other_zone"))
    assert (lake.path("tables", DAY) / "done").read_text() == "yes"
