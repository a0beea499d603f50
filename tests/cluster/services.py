"""Loopback services of the scale-out topology (PostgreSQL, Redis, MLflow server, Spark standalone, Airflow with Celery).

Each ``start_*`` function starts one service on 127.0.0.1 on free ports, waits until it answers and registers
its stop on an :class:`contextlib.ExitStack`, so whoever holds the stack (a pytest fixture, a bench script)
stops everything it started, in reverse order, also on failure. Every process runs in its own session and
is stopped by process group (SIGTERM, then SIGKILL after a grace period). No pytest import: bench/ can use it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
PG_BIN = Path("/usr/lib/postgresql/15/bin")
PG_USER = "postgres"  # postgres refuses to run as root: as root, its files and processes belong to this user
STOP_GRACE_SECONDS = 30
# the pools of recsys_nightly, as the Makefile's airflow-db target imports them
POOLS = {
    "gpu": {"slots": 1, "description": "one GPU task at a time (embed, augment) on the accelerator",
            "include_deferred": False},
    "spark": {"slots": 2, "description": "concurrent Spark jobs (clean, catalogue, tables)", "include_deferred": False},
}
# TI.hostname of a Celery worker's tasks: both workers share this machine's name, so each reports its own
HOSTNAME_CALLABLE = "tests.cluster.hostname.worker_hostname"


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _tail(path: Path, chars: int = 3000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else "(no log)"


@dataclass
class Service:
    """One started process: its name, log file and ``Popen``."""

    name: str
    log: Path
    proc: subprocess.Popen

    def check_alive(self) -> None:
        """Raise with the log's tail when the process has ended."""
        if self.proc.poll() is not None:
            raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{_tail(self.log)}")


@dataclass
class Cluster:
    """What the services expose: URLs, ports, the environment of Airflow's processes and the started processes."""

    root: Path
    services: dict[str, Service] = field(default_factory=dict)
    urls: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    def logs(self) -> dict[str, Path]:
        """Every service's log file by name."""
        return {name: service.log for name, service in self.services.items()}


def _stop(service: Service, sig: int) -> None:
    proc = service.proc
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, sig)  # the group is ours: start_new_session
        except ProcessLookupError:
            pass
    try:
        proc.wait(STOP_GRACE_SECONDS)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    try:  # children that outlived their leader (a Celery pool, a Spark executor) are in the same group
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def start_process(stack: ExitStack, cluster: Cluster, name: str, cmd: Sequence[str], env: Mapping[str, str],
                  stop_signal: int = signal.SIGTERM, cwd: Path = REPO) -> Service:
    """Start ``cmd`` in its own session with its output in ``<root>/logs/<name>.log``; its group is stopped on exit."""
    log = cluster.root / "logs" / f"{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as out:
        proc = subprocess.Popen(list(cmd), cwd=cwd, env=dict(env), stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    service = Service(name, log, proc)
    cluster.services[name] = service
    stack.callback(_stop, service, stop_signal)
    return service


def wait_for(done: Callable[[], bool], seconds: float, what: str, services: Sequence[Service] = (),
             every: float = 1.0) -> None:
    """Poll ``done`` until it is true; fail early when one of ``services`` dies, with their logs when time runs out."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for service in services:
            service.check_alive()
        if done():
            return
        time.sleep(every)
    tails = "\n".join(f"--- {s.name}\n{_tail(s.log)}" for s in services)
    raise TimeoutError(f"timed out after {seconds:.0f} s waiting for {what}\n{tails}")


def port_open(port: int) -> Callable[[], bool]:
    """A probe: something accepts TCP connections on 127.0.0.1:``port``."""
    def probe() -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2):
                return True
        except OSError:
            return False
    return probe


def http_json(url: str, method: str = "GET", body: Any = None, timeout: float = 60) -> Any:
    """A JSON request; HTTP errors raise ``AssertionError`` with the answer's start."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read() or b"null")
    except urllib.error.HTTPError as err:
        raise AssertionError(f"{method} {url}: HTTP {err.code} {err.read()[:2000]!r}") from None


def answers(url: str) -> Callable[[], bool]:
    """A probe: ``url`` answers a GET with a 2xx."""
    def probe() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=5):
                return True
        except (urllib.error.URLError, OSError):
            return False
    return probe


def listening_sockets(pids: Sequence[int]) -> list[tuple[int, str, str, int]]:
    """The TCP sockets that these processes and all their children listen on: (pid, name, address, port)."""
    import psutil

    tops = []
    for pid in pids:
        try:
            tops.append(psutil.Process(pid))
        except psutil.NoSuchProcess:
            continue
    sockets = []
    for proc in [p for top in tops for p in (top, *top.children(recursive=True))]:
        try:
            sockets += [(proc.pid, proc.name(), s.laddr.ip, s.laddr.port)
                        for s in proc.net_connections(kind="tcp") if s.status == psutil.CONN_LISTEN]
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return sockets


def _as_pg_user(cmd: Sequence[str]) -> list[str]:
    return ["runuser", "-u", PG_USER, "--", *cmd] if os.geteuid() == 0 else list(cmd)


def start_postgres(stack: ExitStack, cluster: Cluster, databases: Sequence[str]) -> str:
    """initdb into a fresh folder, run postgres on a free loopback port (no socket file elsewhere, no fsync),
    create ``databases``; return the server's base URL ``postgresql+psycopg2://postgres@127.0.0.1:<port>``.

    As root, the folder belongs to the ``postgres`` user and both run as it. The folder is made outside
    pytest's private temporary tree, which that user could not enter.
    """
    base = Path(tempfile.mkdtemp(prefix="recsys-pg-"))
    stack.callback(shutil.rmtree, base, True)
    if os.geteuid() == 0:
        user = pwd.getpwnam(PG_USER)
        os.chown(base, user.pw_uid, user.pw_gid)
    data = base / "data"
    env = {"PATH": os.environ["PATH"], "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}
    done = subprocess.run(_as_pg_user([str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
                                       "-E", "UTF8", "--no-sync"]),
                          env=env, capture_output=True, text=True, timeout=300, cwd=base)
    if done.returncode:
        raise RuntimeError(f"initdb failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    port = free_port()
    server = start_process(stack, cluster, "postgres", _as_pg_user([
        str(PG_BIN / "postgres"), "-D", str(data), "-p", str(port), "-c", "listen_addresses=127.0.0.1",
        "-c", f"unix_socket_directories={base}", "-c", "fsync=off", "-c", "synchronous_commit=off",
        "-c", "full_page_writes=off", "-c", "max_connections=200",
    ]), env, stop_signal=signal.SIGINT, cwd=base)  # SIGINT: fast shutdown (SIGTERM waits for clients)
    wait_for(port_open(port), 60, "postgres", [server])
    import psycopg2

    def connect() -> Any:
        return psycopg2.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres")

    wait_for(lambda: _connects(connect), 60, "postgres to accept logins", [server])
    conn = connect()
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            for name in databases:
                cur.execute(f'CREATE DATABASE "{name}"')
    finally:
        conn.close()
    url = f"postgresql+psycopg2://postgres@127.0.0.1:{port}"
    cluster.urls["postgres"] = url
    return url


def _connects(connect: Callable[[], Any]) -> bool:
    import psycopg2

    try:
        connect().close()
        return True
    except psycopg2.OperationalError:
        return False


def start_redis(stack: ExitStack, cluster: Cluster) -> str:
    """redis-server on a free loopback port without persistence; return its URL (database 0)."""
    port = free_port()
    folder = cluster.root / "redis"
    folder.mkdir()
    server = start_process(stack, cluster, "redis", [
        "redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no",
        "--dir", str(folder), "--daemonize", "no",
    ], {"PATH": os.environ["PATH"]})
    wait_for(port_open(port), 30, "redis", [server])
    cluster.urls["redis"] = f"redis://127.0.0.1:{port}/0"
    return cluster.urls["redis"]


def start_mlflow(stack: ExitStack, cluster: Cluster, backend: str) -> str:
    """``mlflow server`` on ``backend`` with a proxied artifact store under the cluster root; return its URL."""
    port = free_port()
    artifacts = cluster.root / "mlflow-artifacts"
    artifacts.mkdir()
    server = start_process(stack, cluster, "mlflow", [
        str(BIN / "mlflow"), "server", "--backend-store-uri", backend, "--serve-artifacts",
        "--artifacts-destination", str(artifacts), "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ], {**os.environ, "PYTHONPATH": str(REPO)})
    url = f"http://127.0.0.1:{port}"
    wait_for(answers(f"{url}/health"), 600, "the MLflow server", [server])
    cluster.urls["mlflow"] = url
    cluster.urls["mlflow_artifacts"] = str(artifacts)
    return url


def spark_home() -> Path:
    """The Spark distribution inside the pyspark package (its bin/spark-class and jars)."""
    import pyspark

    return Path(pyspark.__file__).parent


def start_spark(stack: ExitStack, cluster: Cluster, workers: int = 2, worker_memory: str = "1g") -> str:
    """A standalone master and ``workers`` workers of one core each, all on 127.0.0.1; return the master URL.

    Also writes ``<root>/spark-conf/spark-defaults.conf`` (``SPARK_CONF_DIR`` for spark-submit): small
    executors, one core per application so two jobs of the spark pool run side by side.
    """
    home = spark_home()
    env = {**os.environ, "SPARK_HOME": str(home), "SPARK_LOCAL_IP": "127.0.0.1", "SPARK_DAEMON_MEMORY": "256m",
           "PYTHONPATH": f"{REPO}:{os.environ.get('PYTHONPATH', '')}".rstrip(":"),
           "PYSPARK_PYTHON": sys.executable, "SPARK_NO_DAEMONIZE": "1",
           # no REST submission server: it would take the fixed port 6066
           "SPARK_MASTER_OPTS": "-Dspark.master.rest.enabled=false"}
    port, ui = free_port(), free_port()
    spark_class = str(home / "bin" / "spark-class")
    master = start_process(stack, cluster, "spark-master", [
        spark_class, "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1", "--port", str(port),
        "--webui-port", str(ui)], env)
    url = f"spark://127.0.0.1:{port}"
    cluster.urls["spark_master"] = url
    cluster.urls["spark_master_ui"] = f"http://127.0.0.1:{ui}"
    wait_for(answers(f"http://127.0.0.1:{ui}/json/"), 120, "the Spark master", [master])
    started = [master]
    for n in range(workers):
        work = cluster.root / f"spark-worker-{n}"
        work.mkdir()
        started.append(start_process(stack, cluster, f"spark-worker-{n}", [
            spark_class, "org.apache.spark.deploy.worker.Worker", "--host", "127.0.0.1", "--port", str(free_port()),
            "--webui-port", str(free_port()), "--cores", "1", "--memory", worker_memory, "--work-dir", str(work),
            url], env))
    wait_for(lambda: len(spark_status(cluster)["workers"]) == workers, 120, "the Spark workers to register", started)
    conf = cluster.root / "spark-conf"
    conf.mkdir()
    (conf / "spark-defaults.conf").write_text(
        "spark.executor.memory 512m\nspark.executor.cores 1\nspark.cores.max 1\nspark.driver.memory 1g\n"
        "spark.ui.enabled false\n")
    cluster.env["SPARK_CONF_DIR"] = str(conf)
    return url


def spark_status(cluster: Cluster) -> dict:
    """The standalone master's JSON status (workers, active and completed applications)."""
    return http_json(f"{cluster.urls['spark_master_ui']}/json/")


def airflow_env(cluster: Cluster, home: Path, db_url: str, broker: str, result_backend: str, spark_master: str,
                mlflow: str, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment every Airflow process (and every job it launches) gets: CeleryExecutor, PostgreSQL metadata,
    the Redis broker, ``spark_default`` at the standalone master and MLflow at its server."""
    port = free_port()
    host, _, master_port = spark_master.rpartition(":")
    env = {
        **os.environ, **cluster.env, **(extra or {}),
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": db_url,
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"), "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False", "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__CORE__PARALLELISM": "4",
        "AIRFLOW__CELERY__BROKER_URL": broker, "AIRFLOW__CELERY__RESULT_BACKEND": result_backend,
        "AIRFLOW__CORE__HOSTNAME_CALLABLE": HOSTNAME_CALLABLE,
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}", "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(16),
        "AIRFLOW__CORE__AUTH_MANAGER": "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
        "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",  # only the test's runs
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5", "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
        "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
        "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_HOST": "127.0.0.1",
        "AIRFLOW_CONN_SPARK_DEFAULT": json.dumps({"conn_type": "spark", "host": host, "port": int(master_port)}),
        "MLFLOW_TRACKING_URI": mlflow,
        "PYTHONPATH": f"{REPO}:{REPO / 'plugins'}",
    }
    return env


def airflow_cli(env: Mapping[str, str], *args: str, timeout: float = 600) -> str:
    """Run ``airflow <args>`` to completion; its output, or a ``RuntimeError`` with it."""
    done = subprocess.run([str(BIN / "airflow"), *args], cwd=REPO, env=dict(env), capture_output=True, text=True,
                          timeout=timeout)
    if done.returncode:
        raise RuntimeError(f"airflow {' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done.stdout


def start_airflow(stack: ExitStack, cluster: Cluster, env: dict[str, str],
                  workers: Mapping[str, str] | None = None) -> str:
    """Migrate the metadata DB, import the pools, start the API server, scheduler, DAG processor, triggerer and one
    Celery worker per ``{celery hostname: queue}``; return the API's base URL.

    No process serves logs on a port (``--skip-serve-logs``): the task logs are files of the shared
    AIRFLOW_HOME, which the API server reads directly, and Airflow's log servers bind every interface.
    """
    workers = workers or {"default@recsys-cluster": "default", "gpu@recsys-cluster": "gpu"}
    if env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql") and not importlib.util.find_spec("asyncpg"):
        # Airflow 3 also opens an async engine on its metadata DB: asyncpg for PostgreSQL (its `postgres` extra)
        raise RuntimeError("asyncpg is not installed: Airflow 3 needs it for a PostgreSQL metadata DB")
    home = Path(env["AIRFLOW_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    airflow_cli(env, "db", "migrate")
    (home / "pools.json").write_text(json.dumps(POOLS))
    airflow_cli(env, "pools", "import", str(home / "pools.json"))
    airflow = str(BIN / "airflow")
    port = env["AIRFLOW__API__PORT"]
    api = start_process(stack, cluster, "api-server", [
        airflow, "api-server", "--host", "127.0.0.1", "--port", port, "--workers", "1"], env)
    started = [api]
    for name, args in {"scheduler": ["scheduler", "--skip-serve-logs"], "dag-processor": ["dag-processor"],
                       "triggerer": ["triggerer", "--skip-serve-logs"]}.items():
        started.append(start_process(stack, cluster, name, [airflow, *args], env))
    for hostname, queue in workers.items():
        started.append(start_process(stack, cluster, f"celery-{queue}", [
            airflow, "celery", "worker", "--queues", queue, "--celery-hostname", hostname, "--concurrency",
            "2" if queue == "default" else "1", "--skip-serve-logs", "--without-gossip", "--without-mingle"],
            {**env, "RECSYS_WORKER_HOSTNAME": hostname}))
    url = f"http://127.0.0.1:{port}"
    wait_for(answers(f"{url}/api/v2/monitor/health"), 600, "the Airflow API server", started, every=3)
    cluster.urls["airflow"] = url
    return url
