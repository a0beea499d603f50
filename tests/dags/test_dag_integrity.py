"""DAG integrity: it imports cleanly, parses without heavy libraries or connections, and wires the stages."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DAG_FILE = REPO / "dags" / "recsys_nightly.py"
STAGES = ["clean", "tables", "augment", "expand", "train", "evaluate", "register", "publish"]
HEAVY = ("pyspark", "tensorflow", "keras", "mlflow", "pandas", "numpy", "scipy", "jobs")

# Runs in a fresh interpreter: loads the DAG file with an audit hook that refuses any network or
# database connection, then reports which heavy modules got imported.
PARSE_PROBE = """
import importlib.util, json, sys
def refuse(event, args):
    if event in ("socket.connect", "sqlite3.connect"):
        raise RuntimeError(f"connection at parse time: {event} {args!r}")
sys.addaudithook(refuse)
spec = importlib.util.spec_from_file_location("recsys_nightly", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
print(json.dumps(sorted({m.split(".")[0] for m in sys.modules})))
"""


def _env() -> dict[str, str]:
    import os

    return {**os.environ, "PYTHONPATH": f"{REPO}:{REPO / 'plugins'}"}


def test_parse_imports_no_heavy_library_and_opens_no_connection() -> None:
    out = subprocess.run([sys.executable, "-c", PARSE_PROBE, str(DAG_FILE)], capture_output=True, text=True,
                         env=_env(), timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    loaded = set(json.loads(out.stdout.strip().splitlines()[-1]))
    assert not loaded & set(HEAVY), f"DAG parsing imported {sorted(loaded & set(HEAVY))}"


@pytest.fixture(scope="module")
def dag():  # noqa: ANN201 - an Airflow DAG
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAG_FILE))
    assert bag.import_errors == {}, bag.import_errors
    return bag.get_dag("recsys_nightly")


def test_stages_are_a_chain_in_order(dag) -> None:  # noqa: ANN001
    assert sorted(dag.task_ids) == sorted(STAGES)
    for upstream, downstream in zip(STAGES, STAGES[1:], strict=False):
        assert dag.get_task(downstream).upstream_task_ids == {upstream}
    assert dag.get_task("clean").upstream_task_ids == set()


def test_schedule_and_concurrency(dag) -> None:  # noqa: ANN001
    assert dag.max_active_runs == 1
    assert dag.catchup is False
    assert dag.doc_md and "clean → tables" in dag.doc_md


def test_run_date_rule() -> None:
    import datetime as dt

    from recsys_airflow.launch import overrides_from_params, run_date

    class Run:
        run_after = dt.datetime(2026, 3, 5, 3, 0, tzinfo=dt.UTC)

    assert run_date({"logical_date": dt.datetime(2026, 3, 1, tzinfo=dt.UTC)}) == "2026-03-01"
    assert run_date({"logical_date": None, "dag_run": Run()}) == "2026-03-04"
    assert overrides_from_params({"overrides": {"train.epochs": 3, "augment.enabled": False}}) == [
        "--set=augment.enabled=false", "--set=train.epochs=3"]
