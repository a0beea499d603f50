"""Launch a job of jobs/ in its own Python process, stream its log into the task log, return its result.

Heavy libraries (Spark, TensorFlow, MLflow) are only ever imported by the child process, so neither the
scheduler nor a worker loads them. Standard library only at module level.
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

REPO_ROOT = Path(__file__).resolve().parents[2]
RESULT_MARKER = "RECSYS_RESULT "  # the last stdout line of a job; see jobs/common/cli.py
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


def overrides_from_params(params: Mapping[str, Any]) -> list[str]:
    """Turn the DAG's ``overrides`` param (a ``{"section.key": value}`` mapping) into ``--set`` flags."""
    overrides = params.get("overrides") or {}
    return [f"--set={key}={json.dumps(value)}" for key, value in sorted(overrides.items())]


def launch_job(module: str, context: Mapping[str, Any], *extra: str) -> dict[str, Any]:
    """Run ``python -m jobs.<module> --ds <date>`` with the run's overrides and return its result.

    Raises:
        RuntimeError: the job exited non-zero (its log is already in the task log) or gave no result.
    """
    ds = run_date(context)
    cmd = [sys.executable, "-m", f"jobs.{module}", "--ds", ds, *overrides_from_params(context["params"]), *extra]
    log.info("launching %s", " ".join(cmd))
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
        "RECSYS_DAG_ID": context["dag"].dag_id,
        "RECSYS_DAG_RUN_ID": context["run_id"],
    }
    result: dict[str, Any] | None = None
    with subprocess.Popen(
        cmd, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
    ) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip("\n")
            if line.startswith(RESULT_MARKER):
                result = json.loads(line[len(RESULT_MARKER):])
            else:
                log.info("%s", line)
        code = proc.wait()
    if code != 0:
        raise RuntimeError(f"job {module} for {ds} failed with exit code {code}; its log is above")
    if result is None:
        raise RuntimeError(f"job {module} for {ds} ended without a {RESULT_MARKER.strip()} line")
    log.info("job %s for %s done: %s", module, ds, result)
    return result
