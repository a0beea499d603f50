"""Airflow-side helpers: exit codes of launched jobs and the MLflow run link (alerts: test_alerts.py)."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from airflow.sdk.exceptions import AirflowFailException

from recsys_airflow.launch import launch_job, spark_master
from recsys_airflow.links import mlflow_run_url

REPO = Path(__file__).resolve().parents[2]
CONTEXT = {
    "logical_date": dt.datetime(2026, 3, 1, 3, tzinfo=dt.UTC), "params": {}, "run_id": "scheduled__x",
    "dag": SimpleNamespace(dag_id="recsys_nightly"),
}


def _fake_python(tmp_path: Path, body: str) -> str:
    """A stand-in for the interpreter: a shell script that plays a job's part."""
    script = tmp_path / "python"
    script.write_text("#!/bin/sh\n" + body + "\n")
    script.chmod(0o755)
    return str(script)


def test_result_line_becomes_the_return_value(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "executable", _fake_python(tmp_path, 'echo "$@" >&2; echo \'RECSYS_RESULT {"n": 3}\''))
    assert launch_job("clean", CONTEXT) == {"n": 3}


def test_spark_jobs_go_through_spark_submit_to_the_connections_master(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "executable", _fake_python(tmp_path, "exit 3"))  # must not be run directly
    submit = tmp_path / "spark-submit"  # found beside the interpreter, as pyspark installs it
    submit.write_text('#!/bin/sh\nprintf \'RECSYS_RESULT {"argv": "%s", "master": "%s"}\\n\' "$*" "$SPARK_MASTER"\n')
    submit.chmod(0o755)
    monkeypatch.setenv("AIRFLOW_CONN_SPARK_DEFAULT", json.dumps({"conn_type": "spark", "host": "spark://h", "port": 7077}))
    result = launch_job("tables", CONTEXT, spark=True)
    assert result["master"] == "spark://h:7077"
    # the flags between (memory, --py-files, conf) are checked in tests/dags/test_spark_submit.py
    assert result["argv"].startswith("--master spark://h:7077 --name recsys-tables ")
    assert result["argv"].endswith(f"{REPO / 'bin' / 'spark_job.py'} tables --ds 2026-03-01")
    monkeypatch.delenv("AIRFLOW_CONN_SPARK_DEFAULT")
    assert spark_master() == "local[*]"  # no connection: Spark in the job's own process


def test_data_quality_exit_fails_without_retry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "executable", _fake_python(tmp_path, "exit 65"))
    with pytest.raises(AirflowFailException, match="data-quality"):
        launch_job("clean", CONTEXT)


def test_config_exit_fails_without_retry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "executable", _fake_python(tmp_path, "exit 78"))
    with pytest.raises(AirflowFailException, match="refused its configuration.*exit 78"):
        launch_job("train", CONTEXT)


def test_launcher_and_jobs_share_their_constants() -> None:
    """launch.py keeps copies (Airflow must not import recsys/); they must equal the jobs' originals."""
    from recsys.core import cli, config
    from recsys_airflow import launch

    assert (launch.RESULT_MARKER, launch.DATA_QUALITY_EXIT, launch.CONFIG_EXIT) == (
        cli.RESULT_MARKER, cli.DATA_QUALITY_EXIT, cli.CONFIG_EXIT)
    assert (cli.RESULT_MARKER, cli.DATA_QUALITY_EXIT, cli.CONFIG_EXIT) == ("RECSYS_RESULT ", 65, 78)
    assert set(launch.PERMANENT_EXITS) == {cli.DATA_QUALITY_EXIT, cli.CONFIG_EXIT}
    assert launch.REPO_ROOT == config.REPO_ROOT


def test_a_real_config_error_fails_the_task_without_retry(monkeypatch: pytest.MonkeyPatch) -> None:
    """A bad DAG param reaches the job as --set, the job refuses it (exit 78) and the task fails for good."""
    context = {**CONTEXT, "params": {"overrides": {"train.epochs": "five"}}}
    with pytest.raises(AirflowFailException, match="exit 78"):
        launch_job("summary", context)  # a job with light imports


def test_other_failures_are_left_to_retries(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "executable", _fake_python(tmp_path, "exit 1"))
    with pytest.raises(RuntimeError, match="exit code 1") as raised:
        launch_job("clean", CONTEXT)
    assert not isinstance(raised.value, AirflowFailException)


def test_a_stopped_task_stops_its_job(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pid_file = tmp_path / "pid"
    monkeypatch.setattr(sys, "executable", _fake_python(tmp_path, f"echo $$ > {pid_file}; echo started; exec sleep 60"))
    monkeypatch.setattr("recsys_airflow.launch.log.info", _interrupt_on("started"))
    with pytest.raises(KeyboardInterrupt):
        launch_job("clean", CONTEXT)
    pid = int(pid_file.read_text())
    assert subprocess.run(["kill", "-0", str(pid)], capture_output=True).returncode != 0, "the job still runs"


def _interrupt_on(text: str):  # noqa: ANN202 - a log.info stand-in
    def info(message: str, *args: object) -> None:
        if text in (message % args if args else message):
            raise KeyboardInterrupt  # what a timeout or kill signal raises inside the task
    return info


def test_mlflow_run_url() -> None:
    result = {"run_id": "abc123", "version": "2", "model_name": "m"}
    assert mlflow_run_url(result, "http://mlflow:5000/") == "http://mlflow:5000/#/runs/abc123"
    assert mlflow_run_url(json.dumps(result), "http://m") == "http://m/#/runs/abc123"
    assert mlflow_run_url(None, "http://m") == ""
