"""Launch a job of jobs/ in its own process, stream its log into the task log, return its result.

Spark jobs go through ``spark-submit`` to the master of the Airflow connection ``spark_default``
(``local[*]`` when there is none), with its extras read as the Spark provider's ``SparkSubmitHook`` reads them
and the code of ``recsys/`` and ``jobs/`` shipped to the executors as a ``--py-files`` archive; the others run
as ``python -m jobs.<name>``. Heavy libraries (Spark, TensorFlow, MLflow) are only ever imported by the child
process, so neither the scheduler nor a worker loads them. Only the standard library and ``airflow.sdk`` at
module level.

Exit codes: 0 with a result line is success; 65 (``recsys.core.cli.DATA_QUALITY_EXIT``, a failed data
quality gate) and 78 (``recsys.core.cli.CONFIG_EXIT``, an invalid config: a bad value in conf/recsys.yaml,
$RECSYS_CONFIG, a RECSYS__* variable or the run's params) fail the task at once, without retries; any other
code is treated as transient and the task's retries (with exponential backoff) apply.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from airflow.sdk import Connection
from airflow.sdk.exceptions import AirflowFailException, AirflowNotFoundException

from recsys_airflow.params import overrides_from_params

REPO_ROOT = Path(__file__).resolve().parents[2]
SPARK_ENTRY = REPO_ROOT / "bin" / "spark_job.py"  # spark-submit's primary resource: runs jobs.<name>
SPARK_CONN_ID = "spark_default"
SPARK_BINARIES = ("spark-submit", "spark2-submit", "spark3-submit")  # the provider's allowed spark-binary values
SPARK_EXTRAS = ("deploy-mode", "spark-binary", "queue", "namespace", "conf")  # the extras honoured
# conf keys the launcher sets itself, and where to set them instead
SPARK_CONF_OWNED = {
    "spark.master": "the connection's host and port",
    "spark.submit.deployMode": "the deploy-mode extra",
    "spark.submit.pyFiles": "nothing: the launcher ships recsys/ and jobs/ itself",
    "spark.driver.memory": "SPARK_DRIVER_MEMORY in the worker's environment",
}
CODE_PACKAGES = ("recsys", "jobs")  # shipped to the executors with every Spark job
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


class SparkConnectionError(ValueError):
    """The connection ``spark_default`` cannot be used: no host, or an extra with an unusable value."""


@dataclass(frozen=True)
class SparkTarget:
    """Where and how spark-submit submits: the connection ``spark_default`` resolved and checked."""

    master: str = "local[*]"
    spark_binary: str = "spark-submit"
    deploy_mode: str | None = None
    queue: str | None = None
    namespace: str | None = None
    conf: dict[str, str] = field(default_factory=dict)


def spark_target() -> SparkTarget:
    """The connection ``spark_default`` as a :class:`SparkTarget` (``local[*]`` when it does not exist).

    The master is built as the provider's ``SparkSubmitHook`` builds it: the host itself when it is a URL
    (``spark://h``, ``k8s://https://h``) or has no port (``local[*]``, ``yarn``), else ``<conn_type>://<host>``
    (a URI ``spark://h:7077`` stores ``h`` as host); then the port, when set. Extras read as the hook reads
    them: ``deploy-mode`` (``client``; ``cluster`` is refused, see below), ``spark-binary`` (one of
    ``spark-submit``, ``spark2-submit``, ``spark3-submit``), ``queue`` (YARN), ``namespace`` (k8s), and
    ``conf``, a JSON object of Spark properties passed as ``--conf``.

    Raises:
        SparkConnectionError: the connection has no host, its extra is not a JSON object, an extra is
            unknown or has a bad value; the message names the connection and the key.
    """
    try:
        conn = Connection.get(SPARK_CONN_ID)
    except AirflowNotFoundException:
        return SparkTarget()
    if not conn.host:
        raise SparkConnectionError(f"connection {SPARK_CONN_ID} has no host; set it to the master URL, e.g. local[*]")
    if conn.conn_type == "spark" and ("://" in conn.host or not conn.port):
        master = conn.host
    else:
        master = f"{conn.conn_type}://{conn.host}"
    master = f"{master}:{conn.port}" if conn.port else master
    extra = _spark_extras(conn.extra)
    deploy_mode = extra.get("deploy-mode")
    if deploy_mode not in (None, "client", "cluster"):
        raise _bad_extra("deploy-mode", deploy_mode, "client or cluster")
    if deploy_mode == "cluster":
        # The driver would run on the cluster: its RECSYS_RESULT line and exit code (the task's XCom and
        # the no-retry exits) would not come back through spark-submit, and bin/spark_job.py is a local file.
        raise _bad_extra("deploy-mode", deploy_mode, "client: the launcher reads the job's result from the driver, "
                         "so the driver runs beside the task")
    binary = extra.get("spark-binary", "spark-submit")
    if binary not in SPARK_BINARIES:
        raise _bad_extra("spark-binary", binary, f"one of {', '.join(SPARK_BINARIES)}")
    for key in ("queue", "namespace"):
        if key in extra and not isinstance(extra[key], str):
            raise _bad_extra(key, extra[key], "a string")
    return SparkTarget(master=master, spark_binary=binary, deploy_mode=deploy_mode, queue=extra.get("queue"),
                       namespace=extra.get("namespace"), conf=_spark_conf(extra.get("conf", {})))


def _spark_extras(raw: str | None) -> dict[str, Any]:
    """The connection's extra as a dict, without empty values; unknown keys refused (a typo such as
    ``deploy_mode`` would otherwise be dropped without a word)."""
    try:
        extra = json.loads(raw) if raw else {}
    except json.JSONDecodeError as error:
        raise SparkConnectionError(f"connection {SPARK_CONN_ID}: its extra is not JSON ({error})") from None
    if not isinstance(extra, dict):
        raise SparkConnectionError(f"connection {SPARK_CONN_ID}: its extra must be a JSON object, got {raw!r}")
    extra = {key: value for key, value in extra.items() if value not in (None, "")}
    for key in extra:
        if key not in SPARK_EXTRAS:
            raise SparkConnectionError(
                f"connection {SPARK_CONN_ID}: extra {key!r} is not supported by the recsys launcher; "
                f"supported: {', '.join(SPARK_EXTRAS)}")
    return extra


def _spark_conf(conf: Any) -> dict[str, str]:
    """The ``conf`` extra (a JSON object, or its text as a URI's query gives it) as ``--conf`` values."""
    if isinstance(conf, str):
        try:
            conf = json.loads(conf)
        except json.JSONDecodeError:
            raise _bad_extra("conf", conf, "a JSON object of Spark properties") from None
    if not isinstance(conf, dict):
        raise _bad_extra("conf", conf, "a JSON object of Spark properties")
    values = {}
    for key, value in conf.items():
        if not key.startswith("spark."):
            raise _bad_extra(f"conf.{key}", value, "a key starting with 'spark.' (spark-submit ignores others)")
        if key in SPARK_CONF_OWNED:
            raise _bad_extra(f"conf.{key}", value, f"unset; set {SPARK_CONF_OWNED[key]}")
        if isinstance(value, bool):
            value = str(value).lower()
        if not isinstance(value, str | int | float):
            raise _bad_extra(f"conf.{key}", value, "a string, number or boolean")
        values[key] = str(value)
    return values


def _bad_extra(key: str, value: Any, expected: str) -> SparkConnectionError:
    return SparkConnectionError(f"connection {SPARK_CONN_ID}: extra {key!r} is {value!r}; expected {expected}")


def spark_master() -> str:
    """The Spark master of the connection ``spark_default``; ``local[*]`` when it does not exist."""
    return spark_target().master


def code_archive(root: Path = REPO_ROOT, packages: Sequence[str] = CODE_PACKAGES,
                 cache_dir: Path | None = None) -> Path:
    """A zip of the ``.py`` files of ``packages`` under ``root``, for spark-submit's ``--py-files``.

    Reproducible (sorted entries, fixed times and modes) and named by the hash of its contents, in
    ``cache_dir`` (a per-user folder of the temp dir by default): an unchanged tree reuses the file, a
    changed one gets a new file. It is written aside and renamed into place, so tasks building it at
    the same time never see half an archive.
    """
    entries = []
    for package in packages:
        if not (root / package / "__init__.py").is_file():
            raise FileNotFoundError(f"no package {package} under {root}")
        for path in sorted((root / package).rglob("*.py")):
            if "__pycache__" not in path.parts:
                entries.append((path.relative_to(root).as_posix(), path.read_bytes()))
    entries.sort()
    digest = hashlib.sha256()
    for name, data in entries:
        digest.update(b"%s\0%d\0%s" % (name.encode(), len(data), data))
    cache_dir = cache_dir or Path(tempfile.gettempdir()) / f"recsys-spark-code-{os.getuid()}"
    target = cache_dir / f"code-{digest.hexdigest()[:24]}.zip"
    if target.is_file():
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    handle, part = tempfile.mkstemp(dir=cache_dir, prefix=f".{target.name}.", suffix=".part")
    try:
        with os.fdopen(handle, "wb") as raw, zipfile.ZipFile(raw, "w") as archive:
            for name, data in entries:
                info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
                info.compress_type, info.external_attr = zipfile.ZIP_DEFLATED, 0o644 << 16
                archive.writestr(info, data)
        os.chmod(part, 0o644)
        os.replace(part, target)  # atomic: a concurrent builder of the same tree writes the same bytes
    except BaseException:
        Path(part).unlink(missing_ok=True)
        raise
    log.info("built %s (%d modules)", target, len(entries))
    return target


def spark_submit_command(module: str, args: Sequence[str], *, entry: Path = SPARK_ENTRY,
                         archive: Path | None = None) -> tuple[list[str], dict[str, str]]:
    """The spark-submit command line that runs ``jobs.<module>`` with ``args``, and the environment it adds.

    The master and extras come from :func:`spark_target`; ``archive`` (by default :func:`code_archive` of
    this checkout) goes to ``--py-files``; the driver's memory (``SPARK_DRIVER_MEMORY``, 4g by default) and the
    executors' (``SPARK_EXECUTOR_MEMORY``, when set) go where spark-submit reads them, the command line, since
    the driver's JVM is already running when the job's session builder runs. ``SPARK_LOCAL_IP`` is set to
    the driver's bind address (``SPARK_DRIVER_BIND_ADDRESS``, else ``SPARK_DRIVER_HOST``, else loopback):
    it is what the Spark UI binds to.
    """
    target = spark_target()
    if target.spark_binary == "spark-submit":
        submit = str(Path(sys.executable).with_name("spark-submit"))  # pyspark's own, beside this interpreter
    else:
        found = shutil.which(target.spark_binary)
        if found is None:
            raise _bad_extra("spark-binary", target.spark_binary, "a command on the worker's PATH")
        submit = found
    cmd = [submit, "--master", target.master, "--name", f"recsys-{module}"]
    if target.deploy_mode:
        cmd += ["--deploy-mode", target.deploy_mode]
    if target.queue:
        cmd += ["--queue", target.queue]
    conf = dict(target.conf)
    if target.namespace and target.master.startswith("k8s://"):
        conf.setdefault("spark.kubernetes.namespace", target.namespace)  # the conf's own wins, as in the hook
    for key, value in conf.items():
        cmd += ["--conf", f"{key}={value}"]
    cmd += ["--driver-memory", os.environ.get("SPARK_DRIVER_MEMORY") or "4g"]
    if os.environ.get("SPARK_EXECUTOR_MEMORY"):
        cmd += ["--executor-memory", os.environ["SPARK_EXECUTOR_MEMORY"]]
    cmd += ["--py-files", str(archive or code_archive()), str(entry), module, *args]
    driver_host = os.environ.get("SPARK_DRIVER_HOST") or "127.0.0.1"
    bind = os.environ.get("SPARK_DRIVER_BIND_ADDRESS") or driver_host
    env = {"SPARK_MASTER": target.master, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable,
           "SPARK_LOCAL_IP": os.environ.get("SPARK_LOCAL_IP") or bind}
    return cmd, env


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

    With ``spark``, the job is submitted with :func:`spark_submit_command` instead (the master and extras of
    ``spark_default``, the code archive, the memory settings). ``env`` adds variables to the job's environment
    (e.g. :func:`embedding_endpoint_env` for ``embed``).

    Raises:
        AirflowFailException: the job failed a data-quality check (exit 65) or refused its config
            (exit 78); retrying will not help.
        SparkConnectionError: ``spark_default`` is unusable (see :func:`spark_target`).
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
        cmd, spark_env = spark_submit_command(module, args)
        env.update(spark_env)
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
