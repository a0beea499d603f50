"""`make run-on` and `bin/recsys run-on`: values arrive verbatim and are never evaluated; a failed run fails make.

Python and Airflow are stubs (the front door runs its programs with ``PYTHON`` and ``AIRFLOW_BIN``) that record their argv and
environment, so no data is imported and no DAG runs; ``-o airflow-db`` keeps make from setting up Airflow.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LAST_DATE = "2026-01-31"
PYTHON_STUB = f"""#!{sys.executable}
import json, os, sys
with open(os.environ["STUB_LOG"], "a") as log:
    log.write(json.dumps({{"argv": ["python", *sys.argv[1:]], "lake": os.environ.get("RECSYS_LAKE"),
                          "model": os.environ.get("RECSYS__REGISTER__MODEL_NAME")}}) + "\\n")
if sys.argv[1:3] == ["-m", "jobs.ingest"]:
    if os.environ.get("STUB_INGEST_FAILS"):
        sys.exit("ingest: refused")
    print("RECSYS_RESULT " + json.dumps({{"last_date": "{LAST_DATE}", "window_days": 31, "rows": 3, "ts_unit": "seconds", "value_kind": "rating", "future_rows": 0}}))
elif sys.argv[1:3] == ["-m", "recsys.data.replace"]:
    os.execv(sys.executable, [sys.executable, *sys.argv[1:]])
"""
AIRFLOW_STUB = f"""#!{sys.executable}
import json, os, sys
with open(os.environ["STUB_LOG"], "a") as log:
    log.write(json.dumps({{"argv": ["airflow", *sys.argv[1:]]}}) + "\\n")
if sys.argv[1:3] == ["dags", "test"]:
    sys.exit(int(os.environ.get("STUB_TEST_RC", "0")))
if sys.argv[1:3] == ["dags", "state"]:
    print(os.environ.get("STUB_STATE", "success") + ', {{"overrides": {{"window_days": 31}}}}')
"""


@pytest.fixture
def stubs(tmp_path: Path) -> dict:
    """Stub interpreters, a call log, a markers folder and an empty RECSYS_HOME."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("python", PYTHON_STUB), ("airflow", AIRFLOW_STUB)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    (tmp_path / "markers").mkdir()
    # MLflow's set_tracking_uri/set_registry_uri of earlier in-process tests leave MLFLOW_* in os.environ
    env = {k: v for k, v in os.environ.items()
           if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL") and not k.startswith("MLFLOW_")}
    env.update(PYTHON=str(bin_dir / "python"), AIRFLOW_BIN=str(bin_dir / "airflow"),
               STUB_LOG=str(tmp_path / "calls.jsonl"), RECSYS_HOME=str(tmp_path / "home"))
    return {"env": env, "log": tmp_path / "calls.jsonl", "markers": tmp_path / "markers", "tmp": tmp_path}


def make_run_on(stubs: dict, *assignments: str, **env: str) -> subprocess.CompletedProcess:
    """``make run-on`` with the assignments as make arguments (no shell in between), Airflow's setup skipped."""
    return subprocess.run(["make", "-s", "-o", "airflow-db", "run-on", *assignments], cwd=REPO,
                          env={**stubs["env"], **env}, capture_output=True, text=True, timeout=120)


def calls(stubs: dict) -> list[dict]:
    path: Path = stubs["log"]
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def argv_of(stubs: dict, *prefix: str) -> list[list[str]]:
    return [c["argv"] for c in calls(stubs) if c["argv"][: len(prefix)] == list(prefix)]


def test_hostile_values_arrive_verbatim_and_never_run(stubs: dict) -> None:
    m = stubs["markers"]
    tag = f"run-on-pwned-{uuid.uuid4().hex[:8]}"  # a file name cannot hold a path: markers in the cwds
    src = stubs["tmp"] / f"log `touch {tag}-bt` $(touch {tag}-cs); touch {tag}-semi 'sq' \"dq\" $$HOME.csv"
    src.write_text("u,i\n1,2\n")
    mapping = f"user=u`touch {m}/bt`,item=i$(touch {m}/cs);touch {m}/semi,value=$(shell touch {m}/make)"
    sep = f"'; touch {m}/quote; echo '"
    encoding = f'latin-1" $(touch {m}/enc) "'
    done = make_run_on(stubs, "FORMAT=csv", f"SRC={src}", f"MAPPING={mapping}", f"SEP={sep}", f"ENCODING={encoding}")

    assert done.returncode == 0, done.stderr
    assert argv_of(stubs, "python", "-m", "jobs.ingest") == [[
        "python", "-m", "jobs.ingest", "--format=csv", f"--src={src}", f"--mapping={mapping}", f"--sep={sep}",
        f"--encoding={encoding}",
    ]]
    assert sorted(p.name for p in m.iterdir()) == []
    assert not [p for p in (REPO, stubs["tmp"]) for p in p.glob(f"{tag}*")]


def test_items_and_item_mapping_arrive_verbatim_and_never_run(stubs: dict) -> None:
    m = stubs["markers"]
    src = stubs["tmp"] / "ratings.csv"
    src.write_text("u,i\n1,2\n")
    items = stubs["tmp"] / f"items '$(touch {m}/items)' `touch {m}/bt`.jsonl"
    mapping = f"item=sku,text=title+desc;touch {m}/semi,title=$(shell touch {m}/make)"
    done = make_run_on(stubs, "FORMAT=csv", f"SRC={src}", "MAPPING=user=u,item=i", f"ITEMS={items}",
                       f"ITEM_MAPPING={mapping}")

    assert done.returncode == 0, done.stderr
    assert argv_of(stubs, "python", "-m", "jobs.ingest") == [[
        "python", "-m", "jobs.ingest", "--format=csv", f"--src={src}", "--mapping=user=u,item=i", f"--items={items}",
        f"--item-mapping={mapping}",
    ]]
    assert sorted(p.name for p in m.iterdir()) == []


def test_dataset_name_lake_model_and_window_reach_the_run(stubs: dict) -> None:
    src = stubs["tmp"] / "shop" / "ratings.csv"
    src.parent.mkdir()
    src.write_text("u,i\n1,2\n")
    done = make_run_on(stubs, "FORMAT=csv", f"SRC={src}", "MAPPING=user=u,item=i", "NAME=shop.v1-2",
                       "WINDOW_DAYS=7", "REPLACE=1")

    assert done.returncode == 0, done.stderr
    lake = str(stubs["tmp"] / "home" / "datasets" / "shop.v1-2" / "lake")
    ingest = [c for c in calls(stubs) if c["argv"][1:3] == ["-m", "jobs.ingest"]]
    assert [(c["argv"][3:], c["lake"], c["model"]) for c in ingest] == [(
        ["--format=csv", f"--src={src}", "--replace", "--mapping=user=u,item=i"],
        lake, "recsys-augment-shop.v1-2",
    )]
    assert argv_of(stubs, "airflow") == [
        ["airflow", "dags", "test", "recsys_nightly", LAST_DATE, "-c", '{"overrides": {"window_days": 7}}'],
        ["airflow", "dags", "state", "recsys_nightly", LAST_DATE],
    ]
    assert argv_of(stubs, "python", "-m", "jobs.summary") == [
        ["python", "-m", "jobs.summary", "--ds", LAST_DATE, "--set", "window_days=7"]]
    # the import's summary states what was detected in the file
    assert "imported 3 rows; timestamps in seconds; values: rating; 0 rows later than the import" in done.stdout


def test_same_file_name_in_two_folders_gets_two_datasets(stubs: dict) -> None:
    lakes = []
    for folder in ("a", "b"):
        src = stubs["tmp"] / folder / "ratings.csv"
        src.parent.mkdir()
        src.write_text("u,i\n1,2\n")
        assert make_run_on(stubs, "FORMAT=movielens-latest", f"SRC={src}").returncode == 0
        name = f"movielens-latest-ratings-{hashlib.sha256(str(src.resolve()).encode()).hexdigest()[:8]}"
        lakes.append(str(stubs["tmp"] / "home" / "datasets" / name / "lake"))
    ingest = [c for c in calls(stubs) if c["argv"][1:3] == ["-m", "jobs.ingest"]]
    assert [c["lake"] for c in ingest] == lakes and lakes[0] != lakes[1]
    assert "--replace" not in ingest[0]["argv"]  # never replaced unless REPLACE=1
    assert ingest[0]["model"].startswith("recsys-augment-movielens-latest-ratings-")


@pytest.mark.parametrize("assignment", [
    "NAME=../elsewhere", "NAME=..", "NAME=a b", "WINDOW_DAYS=7; touch x", "WINDOW_DAYS=0", "REPLACE=yes",
])
def test_bad_values_are_refused_before_anything_runs(stubs: dict, assignment: str) -> None:
    src = stubs["tmp"] / "ratings.csv"
    src.write_text("u,i\n1,2\n")
    done = make_run_on(stubs, "FORMAT=csv", f"SRC={src}", assignment)
    assert done.returncode != 0
    assert calls(stubs) == []


def test_missing_format_prints_the_usage(stubs: dict) -> None:
    done = make_run_on(stubs, "SRC=ratings.csv")
    assert done.returncode != 0 and "usage: make run-on" in done.stderr
    assert calls(stubs) == []


@pytest.mark.parametrize(("env", "reason"), [
    ({"STUB_TEST_RC": "1"}, "failed"),  # `airflow dags test` exits 1 when the run ends failed
    ({"STUB_STATE": "running"}, "ended 'running', not success"),  # exit 0, yet the run did not succeed
    ({"STUB_INGEST_FAILS": "1"}, "ingest: refused"),
])
def test_a_failing_import_or_run_fails_make(stubs: dict, env: dict[str, str], reason: str) -> None:
    src = stubs["tmp"] / "ratings.csv"
    src.write_text("u,i\n1,2\n")
    done = make_run_on(stubs, "FORMAT=movielens-latest", f"SRC={src}", **env)
    assert done.returncode != 0
    assert reason in done.stderr
    assert argv_of(stubs, "python", "-m", "jobs.summary") == []


@pytest.mark.parametrize(("other_file", "replace", "kept"), [
    (True, True, []),  # another source replaced: its champion must not judge or serve the new source's ids
    (True, False, ["challenger", "champion"]),  # refused by the import (the stub lets it pass): nothing touched
    (False, True, ["challenger", "champion"]),  # the same file again: its models stay
])
def test_replacing_another_source_drops_the_models_aliases(
    stubs: dict, other_file: bool, replace: bool, kept: list[str],
) -> None:
    from mlflow import MlflowClient

    src = stubs["tmp"] / "ratings.csv"
    src.write_text("u,i\n1,2\n")
    lake = stubs["tmp"] / "home" / "datasets" / "shop" / "lake"
    (lake / "raw").mkdir(parents=True)
    claimed = stubs["tmp"] / "old.csv" if other_file else src
    (lake / "raw" / "_source.json").write_text(json.dumps({"source": "csv", "src": str(claimed.resolve())}))
    uri = f"sqlite:///{stubs['tmp']}/mlflow.db"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    client.create_registered_model("recsys-augment-shop")
    for alias in ("champion", "challenger"):
        version = client.create_model_version("recsys-augment-shop", source=str(stubs["tmp"]))
        client.set_registered_model_alias("recsys-augment-shop", alias, version.version)

    done = make_run_on(stubs, "FORMAT=csv", f"SRC={src}", "NAME=shop", f"REPLACE={int(replace)}",
                       MLFLOW_TRACKING_URI=uri)
    assert done.returncode == 0, done.stderr
    assert sorted(client.get_registered_model("recsys-augment-shop").aliases) == kept


def test_replacing_another_source_without_a_registered_model(stubs: dict) -> None:
    src = stubs["tmp"] / "ratings.csv"
    src.write_text("u,i\n1,2\n")
    raw = stubs["tmp"] / "home" / "datasets" / "shop" / "lake" / "raw"
    raw.mkdir(parents=True)
    (raw / "_source.json").write_text(json.dumps({"source": "csv", "src": "/elsewhere/old.csv"}))
    done = make_run_on(stubs, "FORMAT=csv", f"SRC={src}", "NAME=shop", "REPLACE=1",
                       MLFLOW_TRACKING_URI=f"sqlite:///{stubs['tmp']}/mlflow.db")
    assert done.returncode == 0, done.stderr
    assert len(argv_of(stubs, "python", "-m", "jobs.ingest")) == 1
