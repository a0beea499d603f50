"""Launch a job of jobs/ in its own process, stream its log into the task log, return its result.

Spark jobs go through ``spark-submit`` to the master of the Airflow connection ``spark_default``
(``local[*]`` when there is none); the others run as ``python -m jobs.<name>``. Heavy libraries (Spark,
TensorFlow, MLflow) are only ever imported by the child process, so neither the scheduler nor a worker
loads them. Only the standard library and ``airflow.sdk`` at module level.

Exit codes: 0 with a result line is success; 65 (``recsys.core.cli.DATA_QUALITY_EXIT``, a failed data
quality gate) and 78 (``recsys.core.cli.CONFIG_EXIT``, an invalid config: a bad value in conf/recsys.yaml,
$RECSYS_CONFIG, a RECSYS__* variable or the run's params) fail the task at once, without retries; any other
code is treated as transient and the task's retries (with exponential backoff) apply.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from airflow.sdk import Connection
from airflow.sdk.exceptions import AirflowFailException, AirflowNotFoundException

from recsys_airflow.params import overrides_from_params

REPO_ROOT = Path(__file__).resolve().parents[2]
SPARK_ENTRY = REPO_ROOT / "bin" / "spark_job.py"  # spark-submit's primary resource: runs jobs.<name>
SPARK_CONN_ID = "spark_default"
EMBED_CONN_ID = "recsys_embeddings"  # the embeddings endpoint of jobs.embed's endpoint backend: URL and key
EMBED_URL_ENV, EMBED_KEY_ENV = "RECSYS_EMBED_URL", "RECSYS_EMBED_KEY"  # copies of recsys.content.encoder's
# Copies of recsys.core.cli's constants, not imported: recsys/ stays out of Airflow's processes
# (tests/dags/test_plugins.py checks that the copies agree)
RESULT_MARKER = "RECSYS_RESULT "  # the last stdout line of a job
DATA_QUALITY_EXIT = 65  # a failed data-quality gate
CONFIG_EXIT = 78  # an invalid configuration
PERMANENT_EXITS = {  # exit code -> what failed; these fail the task without retries
    DATA_QUALITY_EXIT: "failed a data-quality check; see the 'data quality check failed' line above",
    CONFIG_EXIT: "refused its configuration; see the 'configuration error' line above for the key",
}
STOP_GRACE_SECONDS = 20  # a job asked to stop (timeout, kill) gets this long before it is killed
log = logging.getLogger(__name__)


def run_date(context: Mapping[str, Any]) -> str:
    """The date a run processes.

    Rule: the run's logical date when it has one (scheduled runs and backfills); otherwise (manual or
    asset-triggered runs in Airflow 3 have none) the UTC date of the run's ``run_after`` minus one day,
    the same day the nightly run at that moment would process.
    """
    logical = context.get("logical_date")
    if logical is not None:
        return logical.date().isoformat()
    run_after = context["dag_run"].run_after
    return (run_after.date() - dt.timedelta(days=1)).isoformat()


def spark_master() -> str:
    """The Spark master of the connection ``spark_default``: its host as a master URL (``local[*]``,
    ``spark://host``, ``k8s://https://host``, ``yarn``) with its port appended when set; ``local[*]``
    when the connection does not exist."""
    try:
        conn = Connection.get(SPARK_CONN_ID)
    except AirflowNotFoundException:
        return "local[*]"
    if not conn.host:
        raise ValueError(f"connection {SPARK_CONN_ID} has no host; set it to the master URL, e.g. local[*]")
    return f"{conn.host}:{conn.port}" if conn.port else conn.host


def embedding_endpoint_env() -> dict[str, str]:
    """The connection ``recsys_embeddings`` as the environment jobs.embed reads: ``RECSYS_EMBED_URL`` from
    its host (a full URL such as ``http://gpu-box:8000/v1``, or a bare host completed by its schema, default
    ``http``, and port) and ``RECSYS_EMBED_KEY`` from its password; nothing when the connection does not
    exist (the variables of the worker's own environment, if any, then reach the job unchanged)."""
    try:
        conn = Connection.get(EMBED_CONN_ID)
    except AirflowNotFoundException:
        return {}
    if not conn.host:
        raise ValueError(f"connection {EMBED_CONN_ID} has no host; set it to the endpoint's URL, e.g. "
                         "http://gpu-box:8000/v1")
    url = conn.host
    if "://" not in url:
        url = f"{conn.schema or 'http'}://{url}" + (f":{conn.port}" if conn.port else "")
    return {EMBED_URL_ENV: url, **({EMBED_KEY_ENV: conn.password} if conn.password else {})}


def launch_job(module: str, context: Mapping[str, Any], *extra: str, spark: bool = False,
               env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Run ``python -m jobs.<module> --ds <date>`` with the run's overrides and return its result.

    With ``spark``, the job is submitted with ``spark-submit --master <spark_default's master>`` instead
    (the job's Spark session gets the same master through ``SPARK_MASTER``). ``env`` adds variables to the
    job's environment (e.g. :func:`embedding_endpoint_env` for ``embed``).

    Raises:
        AirflowFailException: the job failed a data-quality check (exit 65) or refused its config
            (exit 78); retrying will not help.
        RuntimeError: the job exited otherwise non-zero (its log is already in the task log) or gave no
            result; the task's retries apply.
    """
    ds = run_date(context)
    args = ["--ds", ds, *overrides_from_params(context["params"]), *extra]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
        "RECSYS_DAG_ID": context["dag"].dag_id,
        "RECSYS_DAG_RUN_ID": context["run_id"],
        **(env or {}),
    }
    if spark:
        master = spark_master()
        # pyspark's own spark-submit, beside this interpreter; the driver runs this interpreter too
        submit = str(Path(sys.executable).with_name("spark-submit"))
        cmd = [submit, "--master", master, "--name", f"recsys-{module}", str(SPARK_ENTRY), module, *args]
        env.update(SPARK_MASTER=master, PYSPARK_PYTHON=sys.executable, PYSPARK_DRIVER_PYTHON=sys.executable)
    else:
        cmd = [sys.executable, "-m", f"jobs.{module}", *args]
    log.info("launching %s", " ".join(cmd))
    result: dict[str, Any] | None = None
    with subprocess.Popen(
        cmd, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
    ) as proc:
        assert proc.stdout is not None
        try:
            for line in proc.stdout:
                line = line.rstrip("\n")
                if line.startswith(RESULT_MARKER):
                    result = json.loads(line[len(RESULT_MARKER):])
                else:
                    log.info("%s", line)
            code = proc.wait()
        except BaseException:
            # The task is being stopped (execution_timeout, a kill from the UI): stop the job too, or it
            # would run on unsupervised and could commit a partition after the task is marked failed.
            _stop(proc, module)
            raise
    if code in PERMANENT_EXITS:
        raise AirflowFailException(f"job {module} for {ds} {PERMANENT_EXITS[code]} (exit {code}). Not retried.")
    if code != 0:
        raise RuntimeError(f"job {module} for {ds} failed with exit code {code}; its log is above")
    if result is None:
        raise RuntimeError(f"job {module} for {ds} ended without a {RESULT_MARKER.strip()} line")
    log.info("job %s for %s done: %s", module, ds, result)
    return result


def _stop(proc: subprocess.Popen, module: str) -> None:
    """Terminate a job, and kill it if it has not ended within ``STOP_GRACE_SECONDS``."""
    if proc.poll() is not None:
        return
    log.warning("stopping job %s (pid %d)", module, proc.pid)
    proc.terminate()
    try:
        proc.wait(STOP_GRACE_SECONDS)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
