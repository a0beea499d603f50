"""bin/recsys, the front door: help, status and report read from hand-written lakes, exit codes, rerun's command.

Airflow is a recording stub (``AIRFLOW_BIN``) where only the command line is checked; the last test reruns one
task through the real Airflow (``airflow dags test``) and the real report job.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from recsys.core.lake import (
    METRICS_FILE,
    RECS_SUMMARY_FILE,
    REGISTRATION_FILE,
    REPORT_FILE,
    ZONES,
    Lake,
    read_json,
    write_json,
)
from recsys.ops import frontdoor
from tests.support import epoch

REPO = Path(__file__).resolve().parents[1]
FRONT_DOOR = REPO / "bin" / "recsys"
DS, EARLIER, LATER = "2026-01-31", "2026-01-30", "2026-02-01"
# every task id of dags/recsys_nightly.py, written out here
DAG_TASKS = {"clean", "catalogue", "tables", "embed", "augment", "expand", "train", "evaluate", "register",
             "publish", "report"}
AIRFLOW_STUB = f"""#!{sys.executable}
import json, os, sys
with open(os.environ["STUB_LOG"], "a") as log:
    log.write(json.dumps(sys.argv[1:]) + "\\n")
if sys.argv[1:3] == ["dags", "test"]:
    sys.exit(int(os.environ.get("STUB_TEST_RC", "0")))
if sys.argv[1:3] == ["dags", "state"]:
    print(os.environ.get("STUB_STATE", 'success, {{"overrides": {{"window_days": 9}}}}'))
"""


def front_door(*argv: str, env: dict[str, str] | None = None, timeout: int = 120) -> subprocess.CompletedProcess:
    """``bin/recsys`` itself, in a fresh process."""
    return subprocess.run([str(FRONT_DOOR), *argv], env=env, capture_output=True, text=True, timeout=timeout)


def partition(lake: Lake, zone: str, ds: str, when: str, files: dict[str, dict] | None = None) -> None:
    """A committed partition holding ``files`` (JSON), its folder's modification time set to ``when`` (UTC)."""
    path = lake.path(zone, ds)
    path.mkdir(parents=True)
    for name, payload in (files or {}).items():
        write_json(path / name, payload)
    os.utime(path, (epoch(when), epoch(when)))


@pytest.fixture
def night(lake: Lake) -> Lake:
    """A lake with two imported dates and a night of DATE whose last stages are missing, and an earlier
    night with other figures."""
    partition(lake, "raw", EARLIER, "2026-02-01 01:00:00")
    partition(lake, "raw", DS, "2026-02-01 01:00:00")
    partition(lake, "clean", DS, "2026-02-01 03:05:06")
    partition(lake, "catalogue", DS, "2026-02-01 03:04:00")
    partition(lake, "tables", DS, "2026-02-01 03:10:00")
    partition(lake, "eval", DS, "2026-02-01 04:00:00", {METRICS_FILE: {"models": {
        "model": {"all": {"ndcg@10": 0.123456, "recall@10": 0.5}}, "popularity": {"all": {"ndcg@10": 0.9}}}}})
    partition(lake, "registry", DS, "2026-02-01 04:10:00", {REGISTRATION_FILE: {
        "version": "7", "champion": "5", "gate": {"promoted": False, "reason": "ndcg@10 0.1235 < 0.2000"}}})
    partition(lake, "eval", EARLIER, "2026-01-31 04:00:00", {METRICS_FILE: {"models": {
        "model": {"all": {"ndcg@10": 0.2}}}}})
    partition(lake, "recs", EARLIER, "2026-01-31 05:00:00", {RECS_SUMMARY_FILE: {
        "users_served": 40, "users_in_window": 41}})
    partition(lake, "reports", EARLIER, "2026-01-31 05:01:00")
    (lake.path("reports", EARLIER) / REPORT_FILE).write_text("<html>earlier</html>")
    return lake


def test_the_front_door_and_every_command_have_help_with_the_exit_codes() -> None:
    top = front_door("--help")
    assert top.returncode == 0, top.stderr
    for command in ("run-on", "demo", "rerun", "status", "report"):
        assert re.search(rf"^\s+{command}\s+\S", top.stdout, re.MULTILINE), command
        done = front_door(command, "--help")
        assert done.returncode == 0, done.stderr
        assert "exit codes:" in done.stdout and re.search(r"^\s+3\s+no such date", done.stdout, re.MULTILINE)
    assert "exit codes:" in top.stdout


def test_run_on_takes_every_option_the_makefile_passes() -> None:
    recipe = (REPO / "Makefile").read_text().split("\nrun-on:", 1)[1].split("\n\n", 1)[0]
    flags = set(re.findall(r"(--[a-z-]+)", recipe))
    assert flags == {"--format", "--src", "--mapping", "--sep", "--encoding", "--items", "--item-mapping",
                     "--window-days", "--name", "--replace"}
    shown = set(re.findall(r"(--[a-z-]+)", front_door("run-on", "--help").stdout))
    assert flags <= shown


def test_status_of_a_date(night: Lake, capsys: pytest.CaptureFixture) -> None:
    assert frontdoor.main(["status", "--ds", DS, "--lake", str(night.root)]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split(None, 2)[2] for line in out.splitlines()
            if line.startswith("  ") and line.split()[0] != "stage"}
    assert rows == {
        "import": "2026-02-01 01:00:00", "clean": "2026-02-01 03:05:06", "catalogue": "2026-02-01 03:04:00",
        "tables": "2026-02-01 03:10:00", "embed": "missing", "augment": "missing", "expand": "missing",
        "train": "missing", "evaluate": "2026-02-01 04:00:00", "register": "2026-02-01 04:10:00",
        "publish": "missing", "report": "missing",
    }
    assert "model ndcg@10: 0.1235\n" in out  # the model's, not the popularity baseline's
    assert "promoted: no (version 7; champion version 5; ndcg@10 0.1235 < 0.2000)\n" in out
    assert "users served: -\n" in out
    assert f"not in the lake: recs/ds={DS}/{RECS_SUMMARY_FILE}" in out


def test_status_defaults_to_the_latest_date_in_the_lake(night: Lake, capsys: pytest.CaptureFixture) -> None:
    partition(night, "raw", LATER, "2026-02-02 01:00:00")  # imported, not run yet
    assert frontdoor.main(["status", "--lake", str(night.root)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"recsys status: {LATER} in {night.root}\n")
    assert "model ndcg@10: -\n" in out and "promoted: -\n" in out


def test_status_of_the_earlier_night_reads_its_own_files(night: Lake, capsys: pytest.CaptureFixture) -> None:
    assert frontdoor.main(["status", "--ds", EARLIER, "--lake", str(night.root)]) == 0
    out = capsys.readouterr().out
    assert "model ndcg@10: 0.2000\n" in out and "users served: 40 of 41 in the window\n" in out


def test_status_of_a_dataset(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    lake = Lake(tmp_path / "datasets" / "shop" / "lake")
    partition(lake, "raw", DS, "2026-02-01 01:00:00")
    env = {"RECSYS_HOME": str(tmp_path), "PATH": os.environ["PATH"]}
    assert frontdoor.main(["status", "--dataset", "shop"], env) == 0
    assert capsys.readouterr().out.startswith(f"recsys status: {DS} in {lake.root}\n")
    assert frontdoor.main(["status", "--dataset", "shop2"], env) == frontdoor.EXIT_NO_DATE
    assert "no dataset 'shop2'" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["status", "--ds", "2026-03-01"], ["report", "--ds", DS],
                                  ["rerun", "--ds", "2026-03-01"]])
def test_a_date_the_lake_lacks_exits_with_its_own_code(night: Lake, argv: list[str],
                                                       capsys: pytest.CaptureFixture) -> None:
    assert frontdoor.main([*argv, "--lake", str(night.root)]) == frontdoor.EXIT_NO_DATE == 3
    err = capsys.readouterr().err
    assert argv[2] in err
    if argv[0] == "report":
        assert str(night.path("reports", DS) / REPORT_FILE) in err


def test_an_empty_lake_has_no_latest_date(lake: Lake, capsys: pytest.CaptureFixture) -> None:
    assert frontdoor.main(["status", "--lake", str(lake.root)]) == 3
    assert frontdoor.main(["report", "--lake", str(lake.root)]) == 3
    assert str(lake.root) in capsys.readouterr().err


def test_a_missing_date_through_the_script(night: Lake) -> None:
    done = front_door("status", "--ds", "2026-03-01", "--lake", str(night.root))
    assert done.returncode == 3 and "2026-03-01" in done.stderr


@pytest.mark.parametrize("argv", [
    [], ["nope"], ["status", "--ds", "2026-13-01"], ["rerun"], ["rerun", "--ds", DS, "--task", "nope"],
    ["rerun", "--ds", DS, "--downstream"], ["rerun", "--ds", DS, "--conf", "{not json"],
    ["report", "--lake", "a", "--dataset", "b"], ["run-on", "--format", "csv"],
    ["run-on", "--format", "csv", "--src", "/nonexistent/ratings.csv"], ["status", "--dataset", "../up"],
])
def test_bad_arguments_exit_2(night: Lake, argv: list[str]) -> None:
    done = front_door(*argv, *(["--lake", str(night.root)] if argv[:1] == ["rerun"] else []),
                      env={**os.environ, "AIRFLOW_BIN": "/nonexistent/airflow"})
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert done.stderr.strip()


def test_report_prints_the_latest_report(night: Lake, capsys: pytest.CaptureFixture) -> None:
    # DATE has eval and registry but no report: the latest report is the earlier night's
    assert frontdoor.main(["report", "--lake", str(night.root)]) == 0
    assert capsys.readouterr().out == f"{night.root}/reports/ds={EARLIER}/{REPORT_FILE}\n"


def test_report_open_runs_the_platforms_opener(night: Lake, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    name = "open" if sys.platform == "darwin" else "xdg-open"
    (bin_dir / name).write_text(f"#!/bin/sh\nprintf '%s\\n' \"$@\" > {tmp_path}/opened\nexit ${{OPENER_RC:-0}}\n")
    (bin_dir / name).chmod(0o755)
    env = {**os.environ, "PATH": str(bin_dir)}
    path = f"{night.root}/reports/ds={EARLIER}/{REPORT_FILE}"
    assert frontdoor.main(["report", "--ds", EARLIER, "--open", "--lake", str(night.root)], env) == 0
    assert (tmp_path / "opened").read_text() == f"{path}\n"
    assert frontdoor.main(["report", "--open", "--lake", str(night.root)], {**env, "OPENER_RC": "4"}) == 1
    assert frontdoor.main(["report", "--open", "--lake", str(night.root)], {**env, "PATH": str(tmp_path)}) == 1
    assert f"open {path} yourself" in capsys.readouterr().err


@pytest.fixture
def airflow_stub(tmp_path: Path) -> dict[str, str]:
    stub = tmp_path / "airflow"
    stub.write_text(AIRFLOW_STUB)
    stub.chmod(0o755)
    return {**os.environ, "AIRFLOW_BIN": str(stub), "STUB_LOG": str(tmp_path / "calls.jsonl")}


def stub_calls(env: dict[str, str]) -> list[list[str]]:
    log = Path(env["STUB_LOG"])
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def test_rerun_of_a_task_and_downstream_is_one_dag_run_with_the_others_marked_success(
    night: Lake, airflow_stub: dict[str, str],
) -> None:
    for zone in ("embed", "augment", "examples"):
        partition(night, zone, DS, "2026-02-01 03:30:00")
    argv = ["rerun", "--ds", DS, "--task", "train", "--downstream", "--lake", str(night.root)]
    assert frontdoor.main(argv, airflow_stub) == 0
    calls = stub_calls(airflow_stub)
    state = ["dags", "state", "recsys_nightly", DS]
    assert calls[0] == state and calls[2] == state and len(calls) == 3
    assert calls[1][:7] == ["dags", "test", "recsys_nightly", DS, "-c", '{"overrides": {"window_days": 9}}',
                            "--mark-success-pattern"]
    # Airflow marks success the task ids the pattern fullmatches (airflow.sdk DAG.test): all but these
    pattern = re.compile(calls[1][7])
    assert {task for task in DAG_TASKS if not pattern.fullmatch(task)} == {
        "train", "evaluate", "register", "publish", "report"}


def test_rerun_of_one_task_and_of_a_whole_date(night: Lake, airflow_stub: dict[str, str]) -> None:
    argv = ["rerun", "--ds", DS, "--lake", str(night.root)]
    assert frontdoor.main([*argv, "--task", "tables", "--conf", '{"params": {"window_days": 3}}'], airflow_stub) == 0
    assert frontdoor.main(argv, {**airflow_stub, "STUB_STATE": "success"}) == 0
    tests = [call for call in stub_calls(airflow_stub) if call[:2] == ["dags", "test"]]
    assert tests[0][4:7] == ["-c", '{"params": {"window_days": 3}}', "--mark-success-pattern"]
    assert {task for task in DAG_TASKS if not re.fullmatch(tests[0][7], task)} == {"tables"}
    assert tests[1] == ["dags", "test", "recsys_nightly", DS]  # the earlier run had no conf: none given


@pytest.mark.parametrize(("argv", "missing"), [
    (["--task", "evaluate"], f"models/ds={DS}"),  # train's output, which evaluate reads
    (["--task", "embed", "--downstream"], None),  # tables exists: runs
    (["--task", "tables"], None),
])
def test_rerun_of_a_task_needs_the_outputs_it_reads(night: Lake, airflow_stub: dict[str, str], argv: list[str],
                                                    missing: str | None, capsys: pytest.CaptureFixture) -> None:
    code = frontdoor.main(["rerun", "--ds", DS, *argv, "--lake", str(night.root)], airflow_stub)
    if missing:
        assert code == 3 and missing in capsys.readouterr().err
        assert [call for call in stub_calls(airflow_stub) if call[:2] == ["dags", "test"]] == []
    else:
        assert code == 0


@pytest.mark.parametrize(("env", "reason"), [
    ({"STUB_TEST_RC": "1"}, f"the DAG run for {DS} failed"),
    ({"STUB_STATE": "running"}, "ended 'running', not success"),
])
def test_a_failed_rerun_exits_1(night: Lake, airflow_stub: dict[str, str], env: dict[str, str], reason: str,
                                capsys: pytest.CaptureFixture) -> None:
    assert frontdoor.main(["rerun", "--ds", DS, "--lake", str(night.root)], {**airflow_stub, **env}) == 1
    assert reason in capsys.readouterr().err


def test_dataset_names_as_bin_run_on_made_them(tmp_path: Path) -> None:
    import hashlib

    src = tmp_path / "my ratings (v2).csv.gz"
    src.write_text("")
    digest = hashlib.sha256(str(src.resolve()).encode()).hexdigest()[:8]
    assert frontdoor.dataset_name("csv", str(src)) == f"csv-my-ratings--v2-.csv-{digest}"
    assert frontdoor.dataset_name("csv", str(src), "shop") == "shop"


def test_the_stages_are_the_dags_tasks_with_their_upstream_and_lake_zones() -> None:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(REPO / "dags" / "recsys_nightly.py"))
    assert bag.import_errors == {}
    dag = bag.get_dag("recsys_nightly")
    assert set(dag.task_ids) == DAG_TASKS == set(frontdoor.TASKS)
    assert {s.task: set(s.upstream) for s in frontdoor.STAGES} == {t: dag.get_task(t).upstream_task_ids
                                                                   for t in dag.task_ids}
    order = [s.task for s in frontdoor.STAGES]
    assert all(order.index(up) < order.index(s.task) for s in frontdoor.STAGES for up in s.upstream)
    assert {s.zone for s in frontdoor.STAGES} <= set(ZONES)


def test_environment_fills_what_the_makefile_would_and_keeps_the_rest(tmp_path: Path) -> None:
    env = frontdoor.environment({"RECSYS_HOME": str(tmp_path), "AIRFLOW_HOME": "/elsewhere", "PYTHONPATH": "/x"})
    assert env["RECSYS_LAKE"] == f"{tmp_path}/lake" and env["AIRFLOW_HOME"] == "/elsewhere"
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == "sqlite:////elsewhere/airflow.db"
    assert env["MLFLOW_TRACKING_URI"] == f"sqlite:///{tmp_path}/mlflow/mlflow.db"
    assert env["AIRFLOW__CORE__DAGS_FOLDER"] == str(REPO / "dags")
    assert env["PYTHONPATH"].split(os.pathsep) == [str(REPO), str(REPO / "plugins"), "/x"]


@pytest.mark.e2e
@pytest.mark.slow  # a DAG run through Airflow: make test-slow
def test_rerun_of_the_report_task_through_airflow(tmp_path: Path) -> None:
    """One real rerun: `bin/recsys rerun --task report` of a hand-written night, through `airflow dags test`
    and the real report job; every other task is marked success and writes nothing."""
    from mlflow import MlflowClient

    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "AIRFLOW", "RECSYS_"))}
    env.update(RECSYS_HOME=str(home), AIRFLOW_HOME=str(home / "airflow"),
               MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path}/mlflow.db", RECSYS_MLFLOW_ARTIFACTS=str(tmp_path / "art"))
    client = MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])
    run_id = client.create_run(client.create_experiment("frontdoor", str(tmp_path / "art"))).info.run_id
    lake = Lake(home / "lake")
    partition(lake, "raw", DS, "2026-02-01 01:00:00")
    partition(lake, "eval", DS, "2026-02-01 04:00:00", {METRICS_FILE: {"models": {
        "model": {"all": {"ndcg@10": 0.123456}}}}})
    partition(lake, "registry", DS, "2026-02-01 04:10:00", {REGISTRATION_FILE: {
        "version": "1", "champion": "1", "run_id": run_id, "gate": {"promoted": True, "reason": "first model"}}})
    partition(lake, "recs", DS, "2026-02-01 05:00:00", {RECS_SUMMARY_FILE: {
        "users_served": 3, "users_in_window": 3, "served_share": 1.0, "k": 20, "rows": 60,
        "users_from_popularity": 0, "model_version": "1"}})
    airflow = str(Path(sys.executable).with_name("airflow"))
    (home / "airflow").mkdir()
    migrate = subprocess.run([airflow, "db", "migrate"], env=frontdoor.environment(env), capture_output=True,
                             text=True, timeout=600)
    assert migrate.returncode == 0, migrate.stderr[-3000:]

    done = front_door("rerun", "--ds", DS, "--task", "report", env=env, timeout=1200)
    assert done.returncode == 0, f"{done.stdout[-4000:]}\n{done.stderr[-6000:]}"
    page = (lake.path("reports", DS) / REPORT_FILE).read_text()
    assert re.search(r'id="headline-ndcg10"[^>]*>0\.1235<', page)
    assert [f.path for f in client.list_artifacts(run_id, "reports")] == [f"reports/{REPORT_FILE}"]
    assert sorted(p.name for p in lake.root.iterdir() if not p.name.startswith("_")) == [
        "eval", "raw", "recs", "registry", "reports"]  # the tasks marked success wrote nothing
    assert read_json(lake.path("eval", DS) / METRICS_FILE)["models"]["model"]["all"]["ndcg@10"] == 0.123456
    state = subprocess.run([airflow, "dags", "state", "recsys_nightly", DS], env=frontdoor.environment(env),
                           capture_output=True, text=True, timeout=300)
    assert state.stdout.strip().splitlines()[-1] == "success"
