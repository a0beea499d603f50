"""The launcher's spark-submit: the connection spark_default's extras, the shipped code archive, a real submit."""

from __future__ import annotations

import concurrent.futures
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from recsys_airflow.launch import (
    SPARK_ENTRY,
    SparkConnectionError,
    code_archive,
    spark_master,
    spark_submit_command,
)

REPO = Path(__file__).resolve().parents[2]
ARGS = ["--ds", "2026-03-01"]


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No connection and no Spark settings from the environment this test runs in."""
    for name in ("AIRFLOW_CONN_SPARK_DEFAULT", "SPARK_DRIVER_MEMORY", "SPARK_EXECUTOR_MEMORY", "SPARK_DRIVER_HOST",
                 "SPARK_DRIVER_BIND_ADDRESS", "SPARK_LOCAL_IP"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def connect(monkeypatch: pytest.MonkeyPatch, host: str, port: int | None = None, **extra: object) -> None:
    conn = {"conn_type": "spark", "host": host, **({"port": port} if port else {}), **({"extra": extra} if extra else {})}
    monkeypatch.setenv("AIRFLOW_CONN_SPARK_DEFAULT", json.dumps(conn))


def submit_argv(archive: Path, module: str = "clean") -> list[str]:
    cmd, _ = spark_submit_command(module, ARGS, archive=archive)
    return cmd


def test_without_a_connection_local_with_the_default_memory(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    archive = tmp_path / "code.zip"
    cmd, env = spark_submit_command("clean", ARGS, archive=archive)
    assert cmd == [str(Path(sys.executable).with_name("spark-submit")), "--master", "local[*]", "--name", "recsys-clean",
                   "--driver-memory", "4g", "--py-files", str(archive), str(REPO / "bin" / "spark_job.py"), "clean",
                   "--ds", "2026-03-01"]
    assert env == {"SPARK_MASTER": "local[*]", "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable,
                   "SPARK_LOCAL_IP": "127.0.0.1"}  # the UI binds to loopback, as the driver does


def test_each_extra_reaches_the_command_line(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    archive = tmp_path / "code.zip"
    clean_env.setenv("SPARK_DRIVER_MEMORY", "2g")
    clean_env.setenv("SPARK_EXECUTOR_MEMORY", "3g")
    connect(clean_env, "spark://10.1.2.3", 7077, **{
        "deploy-mode": "client", "queue": "nightly",
        "conf": {"spark.executor.cores": 2, "spark.dynamicAllocation.enabled": False, "spark.a.b": "x y"}})
    cmd = submit_argv(archive)
    assert cmd[1:] == ["--master", "spark://10.1.2.3:7077", "--name", "recsys-clean", "--deploy-mode", "client",
                       "--queue", "nightly", "--conf", "spark.executor.cores=2",
                       "--conf", "spark.dynamicAllocation.enabled=false", "--conf", "spark.a.b=x y",
                       "--driver-memory", "2g", "--executor-memory", "3g", "--py-files", str(archive),
                       str(SPARK_ENTRY), "clean", *ARGS]


def test_the_master_is_built_as_the_provider_builds_it(clean_env: pytest.MonkeyPatch) -> None:
    cases = {  # connection as the environment gives it -> master
        json.dumps({"conn_type": "spark", "host": "local[2]"}): "local[2]",
        json.dumps({"conn_type": "spark", "host": "yarn"}): "yarn",
        json.dumps({"conn_type": "spark", "host": "spark://h", "port": 7077}): "spark://h:7077",
        json.dumps({"conn_type": "spark", "host": "127.0.0.1", "port": 7077}): "spark://127.0.0.1:7077",
        "spark://127.0.0.1:7077": "spark://127.0.0.1:7077",  # the URI form: host 127.0.0.1, type spark
        json.dumps({"conn_type": "spark", "host": "k8s://https://k8s-api", "port": 6443}): "k8s://https://k8s-api:6443",
    }
    for conn, master in cases.items():
        clean_env.setenv("AIRFLOW_CONN_SPARK_DEFAULT", conn)
        assert spark_master() == master, conn
    clean_env.delenv("AIRFLOW_CONN_SPARK_DEFAULT")
    assert spark_master() == "local[*]"


def test_namespace_only_on_kubernetes_and_the_confs_own_wins(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    archive = tmp_path / "code.zip"
    connect(clean_env, "k8s://https://api", 6443, namespace="recsys")
    assert "spark.kubernetes.namespace=recsys" in submit_argv(archive)
    connect(clean_env, "k8s://https://api", 6443, namespace="recsys", conf={"spark.kubernetes.namespace": "other"})
    cmd = submit_argv(archive)
    assert [a for a in cmd if a.startswith("spark.kubernetes.namespace=")] == ["spark.kubernetes.namespace=other"]
    connect(clean_env, "spark://h", 7077, namespace="recsys")  # the hook ignores it off Kubernetes
    assert not [a for a in submit_argv(archive) if "spark.kubernetes.namespace" in a]


def test_the_conf_extra_as_a_uri_gives_it(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    archive = tmp_path / "code.zip"
    clean_env.setenv("AIRFLOW_CONN_SPARK_DEFAULT",
                     "spark://127.0.0.1:7077?deploy-mode=client&conf=%7B%22spark.cores.max%22%3A+4%7D")
    cmd = submit_argv(archive)
    assert cmd[1:9] == ["--master", "spark://127.0.0.1:7077", "--name", "recsys-clean", "--deploy-mode", "client",
                        "--conf", "spark.cores.max=4"]


def test_spark_binary_is_found_on_path(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    binary = tmp_path / "spark3-submit"
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    connect(clean_env, "local[2]", **{"spark-binary": "spark3-submit"})
    clean_env.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    assert submit_argv(tmp_path / "code.zip")[0] == str(binary)
    clean_env.setenv("PATH", "/nonexistent")
    with pytest.raises(SparkConnectionError, match="spark_default: extra 'spark-binary' is 'spark3-submit'.*PATH"):
        submit_argv(tmp_path / "code.zip")


def test_the_driver_host_is_where_the_ui_binds(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    clean_env.setenv("SPARK_DRIVER_HOST", "10.0.0.5")
    assert spark_submit_command("tables", ARGS, archive=tmp_path / "c.zip")[1]["SPARK_LOCAL_IP"] == "10.0.0.5"
    clean_env.setenv("SPARK_DRIVER_BIND_ADDRESS", "0.0.0.0")
    assert spark_submit_command("tables", ARGS, archive=tmp_path / "c.zip")[1]["SPARK_LOCAL_IP"] == "0.0.0.0"


@pytest.mark.parametrize(("conn", "message"), [
    ({"host": "local[2]", "extra": {"deploy_mode": "client"}}, "extra 'deploy_mode' is not supported"),
    ({"host": "local[2]", "extra": {"principal": "me@REALM"}}, "extra 'principal' is not supported"),
    ({"host": "local[2]", "extra": {"deploy-mode": "batch"}}, "extra 'deploy-mode' is 'batch'; expected client or"),
    ({"host": "yarn", "extra": {"deploy-mode": "cluster"}}, "extra 'deploy-mode' is 'cluster'; expected client"),
    ({"host": "local[2]", "extra": {"spark-binary": "/bin/sh"}}, "extra 'spark-binary' is '/bin/sh'; expected one"),
    ({"host": "local[2]", "extra": {"queue": 5}}, "extra 'queue' is 5; expected a string"),
    ({"host": "local[2]", "extra": {"conf": "spark.a=1"}}, "extra 'conf' is 'spark.a=1'; expected a JSON object"),
    ({"host": "local[2]", "extra": {"conf": ["spark.a"]}}, "extra 'conf' is \\['spark.a'\\]"),
    ({"host": "local[2]", "extra": {"conf": {"executor.cores": 2}}}, "extra 'conf.executor.cores' is 2"),
    ({"host": "local[2]", "extra": {"conf": {"spark.driver.memory": "8g"}}}, "'conf.spark.driver.memory'.*SPARK_DRIVER"),
    ({"host": "local[2]", "extra": {"conf": {"spark.a": [1]}}}, "'conf.spark.a' is \\[1\\]; expected a string, number"),
    ({"host": "local[2]", "extra": "deploy-mode=client"}, "spark_default: its extra is not JSON"),
    ({"host": "local[2]", "extra": "[1]"}, "spark_default: its extra must be a JSON object"),
    ({}, "connection spark_default has no host"),
])
def test_a_bad_connection_is_refused_naming_the_key(clean_env: pytest.MonkeyPatch, tmp_path: Path, conn: dict,
                                                     message: str) -> None:
    if isinstance(conn.get("extra"), dict):
        conn = {**conn, "extra": json.dumps(conn["extra"])}
    clean_env.setenv("AIRFLOW_CONN_SPARK_DEFAULT", json.dumps({"conn_type": "spark", **conn}))
    with pytest.raises(SparkConnectionError, match=message) as raised:
        submit_argv(tmp_path / "code.zip")
    assert "spark_default" in str(raised.value)


def _tree(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)


def test_the_archive_holds_the_modules_and_is_rebuilt_only_when_they_change(tmp_path: Path) -> None:
    src, cache = tmp_path / "src", tmp_path / "cache"
    modules = {"recsys/__init__.py": "", "recsys/a.py": "A = 1\n", "recsys/sub/__init__.py": "",
               "recsys/sub/b.py": "B = 2\n", "jobs/__init__.py": "", "jobs/j.py": "J = 3\n"}
    _tree(src, {**modules, "recsys/table.yaml": "x: 1\n", "recsys/__pycache__/a.cpython-311.pyc": "junk",
                "other/x.py": "X = 4\n", "jobs/notes.md": "no"})
    archive = code_archive(src, cache_dir=cache)
    with zipfile.ZipFile(archive) as zipped:
        assert {name: zipped.read(name).decode() for name in zipped.namelist()} == modules

    stat = archive.stat()
    assert code_archive(src, cache_dir=cache) == archive  # unchanged: the same file, not rewritten
    assert (archive.stat().st_mtime_ns, archive.stat().st_ino) == (stat.st_mtime_ns, stat.st_ino)
    rebuilt = code_archive(src, cache_dir=tmp_path / "elsewhere")  # reproducible: same bytes from scratch
    assert rebuilt.name == archive.name and rebuilt.read_bytes() == archive.read_bytes()

    (src / "recsys/sub/b.py").write_text("B = 20\n")
    changed = code_archive(src, cache_dir=cache)
    assert changed != archive and archive.is_file()
    with zipfile.ZipFile(changed) as zipped:
        assert zipped.read("recsys/sub/b.py") == b"B = 20\n"
    (src / "jobs/new.py").write_text("")  # a new module is a change too
    assert code_archive(src, cache_dir=cache) not in (archive, changed)
    assert sorted(p.suffix for p in cache.iterdir()) == [".zip"] * 3  # nothing half-written left behind


def test_concurrent_builders_agree(tmp_path: Path) -> None:
    _tree(tmp_path / "src", {"recsys/__init__.py": "", "jobs/__init__.py": "", "jobs/j.py": "J = 1\n" * 1000})
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        built = set(pool.map(lambda _: code_archive(tmp_path / "src", cache_dir=tmp_path / "cache"), range(12)))
    assert len(built) == 1
    with zipfile.ZipFile(built.pop()) as zipped:
        assert zipped.testzip() is None and zipped.read("jobs/j.py") == b"J = 1\n" * 1000
    assert len(list((tmp_path / "cache").iterdir())) == 1


def test_the_checkouts_archive_holds_every_tracked_module(tmp_path: Path) -> None:
    tracked = subprocess.run(["git", "ls-files", "recsys/*.py", "jobs/*.py"], cwd=REPO, capture_output=True,
                             text=True, check=True).stdout.split()
    assert len(tracked) > 50  # the listing itself worked
    with zipfile.ZipFile(code_archive(cache_dir=tmp_path)) as zipped:
        names = set(zipped.namelist())
    assert set(tracked) <= names
    assert all(name.endswith(".py") and name.split("/")[0] in ("recsys", "jobs") for name in names)


PROBE_LIB = '''"""Imported by the probe's executors: only the shipped archive has it."""
import jobs.shipping_probe_lib


def square(x):
    return x * x, jobs.shipping_probe_lib.__file__
'''
PROBE = '''"""A tiny Spark job whose code lives only in the archive."""
import json

from jobs.shipping_probe_lib import square
from recsys.core.spark import spark_session

spark = spark_session("recsys-shipping-probe")
context = spark.sparkContext
rows = context.parallelize(range(6), 2).map(square).collect()
print("RECSYS_RESULT " + json.dumps({
    "squares": [r[0] for r in rows], "executor_files": sorted({r[1] for r in rows}), "driver_file": __file__,
    "ui": context.uiWebUrl, "probe_conf": spark.conf.get("spark.recsys.probe"),
    "driver_memory": context.getConf().get("spark.driver.memory"),
    "heap": spark._jvm.java.lang.Runtime.getRuntime().maxMemory(), "master": context.master}), flush=True)
spark.stop()
'''


@pytest.mark.spark
def test_a_real_submit_runs_code_found_only_in_the_archive(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    src = tmp_path / "src"
    _tree(src, {"jobs/__init__.py": "", "jobs/shipping_probe.py": PROBE, "jobs/shipping_probe_lib.py": PROBE_LIB})
    assert importlib.util.find_spec("jobs.shipping_probe_lib") is None  # not importable here: only shipped
    archive = code_archive(src, packages=("jobs",), cache_dir=tmp_path / "cache")
    entry = tmp_path / "entry" / "bin" / "spark_job.py"  # the entry point outside this checkout
    entry.parent.mkdir(parents=True)
    shutil.copy(SPARK_ENTRY, entry)
    connect(clean_env, "local[2]", conf={"spark.recsys.probe": "from-the-connection"})
    clean_env.setenv("SPARK_DRIVER_MEMORY", "768m")
    cmd, spark_env = spark_submit_command("shipping_probe", [], entry=entry, archive=archive)

    events = tmp_path / "events"
    env = {**os.environ, **spark_env, "PYTHONPATH": str(REPO), "SPARK_UI_PORT": "0", "SPARK_EVENT_LOG_DIR": str(events),
           "SPARK_DRIVER_MEMORY": "3g"}  # what the builder would set: it must not, spark-submit's 768m rules
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1].removeprefix("RECSYS_RESULT "))

    assert result["squares"] == [0, 1, 4, 9, 16, 25]
    assert result["executor_files"] and all(f"{archive.name}/jobs/shipping_probe_lib.py" in f
                                            for f in result["executor_files"])
    assert result["driver_file"] == f"{archive}/jobs/shipping_probe.py"
    assert result["master"] == "local[2]"
    assert result["probe_conf"] == "from-the-connection"
    assert result["driver_memory"] == "768m"
    assert 512 * 2**20 < result["heap"] <= 768 * 2**20  # the JVM was started with it, not the default quarter of RAM
    assert result["ui"].startswith("http://127.0.0.1:") and not result["ui"].endswith(":0")
    logs = [p.name for p in events.iterdir()]  # Spark 4 rolls event logs: one eventlog_v2_<app id> folder
    assert len(logs) == 1 and logs[0].startswith("eventlog_v2_local-"), logs
