"""The deployment in docker/, checked without a Docker engine: docker-compose resolves the compose file with an env
file made from .env.example, and the resolved topology is compared with the code, the DAG, the Makefile and
requirements.txt; the PostgreSQL init script runs against a throwaway local server."""

from __future__ import annotations

import ast
import base64
import importlib.util
import json
import os
import pwd
import re
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
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
COMPOSE = REPO / "docker" / "compose.yaml"
DOCKERFILE = REPO / "docker" / "Dockerfile"
ENV_EXAMPLE = REPO / ".env.example"
INIT_SCRIPT = REPO / "docker" / "postgres" / "10-mlflow-db.sh"
CODE_DIRS = ("recsys", "jobs", "plugins", "dags", "bin")
# the folders an Airflow process other than a worker loads code from (the DAG file and the plugins)
AIRFLOW_DIRS = ("dags", "plugins")
# Variables the code reads without a default that a deployment may leave unset: the feature is off without them
OPTIONAL = {
    "RECSYS_CONFIG": "a site YAML over conf/recsys.yaml; none by default",
    "RECSYS_EMBED_KEY": "the embeddings endpoint's key, set by the launcher from the connection recsys_embeddings",
    "SPARK_EVENT_LOG_DIR": "the Spark event log for a history server; none without it",
}
# Variables that are no settings: the process's own (PATH), or set for a job by its launcher (recsys_airflow.launch)
NOT_SETTINGS = {"PATH", "PYTHONPATH", "RECSYS_DAG_ID", "RECSYS_DAG_RUN_ID", "PYSPARK_PYTHON", "PYSPARK_DRIVER_PYTHON",
                "PYSPARK_GATEWAY_PORT"}
# the variables other engineers' code reads (gauges, notifiers, the Spark session): documented in .env.example
ANNOUNCED = ("RECSYS_STATSD_HOST", "RECSYS_STATSD_PORT", "RECSYS_STATSD_PREFIX", "RECSYS_NOTIFIERS", "SPARK_UI_ENABLED",
             "SPARK_UI_PORT", "SPARK_EVENT_LOG_DIR", "SPARK_EXECUTOR_MEMORY", "SPARK_DRIVER_MEMORY")
# secrets: never a literal in the compose file
SECRET_KEY = re.compile(r"PASSWORD|SECRET|FERNET|SQL_ALCHEMY_CONN|BROKER_URL|RESULT_BACKEND|STORE_URI")
PG_BIN = Path("/usr/lib/postgresql/15/bin")


# ---- resolving the compose file -------------------------------------------------------------------------------

def example_settings() -> dict[str, str]:
    """The active ``NAME=value`` lines of .env.example (the required secrets are the empty ones)."""
    pairs = re.findall(r"^([A-Z][A-Z0-9_]*)=(.*)$", ENV_EXAMPLE.read_text(), re.M)
    return dict(pairs)


def filled_secrets() -> dict[str, str]:
    """A value for each secret .env.example leaves empty: a Fernet key where Airflow wants one, random hex else."""
    return {name: (base64.urlsafe_b64encode(os.urandom(32)).decode() if "FERNET" in name else secrets.token_hex(16))
            for name, value in example_settings().items() if not value}


def write_env(path: Path, values: dict[str, str]) -> Path:
    path.write_text("".join(f"{name}={value}\n" for name, value in values.items()))
    return path


def compose_config(env_file: Path) -> subprocess.CompletedProcess:
    """``docker-compose --env-file <env_file> -f docker/compose.yaml config`` in a clean environment (a variable of
    the caller's shell would take precedence over the env file)."""
    binary = shutil.which("docker-compose")
    assert binary, "docker-compose is required (Debian's docker-compose package; CI installs it)"
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"), "LANG": "C.UTF-8"}
    return subprocess.run([binary, "--env-file", str(env_file), "-f", str(COMPOSE), "config"], env=env,
                          capture_output=True, text=True, timeout=120, cwd=REPO)


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The compose file resolved with .env.example's settings and its secrets filled in; ``env`` holds them."""
    values = {**example_settings(), **filled_secrets()}
    done = compose_config(write_env(tmp_path_factory.mktemp("compose") / ".env", values))
    assert done.returncode == 0, done.stderr
    config = yaml.safe_load(done.stdout)
    config["env"] = values
    return config


def services(deployment: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return deployment["services"]


def environment(service: dict[str, Any]) -> dict[str, str]:
    """A service's resolved environment, without the pass-through variables the env file left unset."""
    return {name: value for name, value in (service.get("environment") or {}).items() if value is not None}


def command(service: dict[str, Any]) -> list[str]:
    cmd = service.get("command") or []
    return cmd.split() if isinstance(cmd, str) else list(cmd)


def script(service: dict[str, Any]) -> str:
    """The command as one text (a ``bash -c`` script included)."""
    return " ".join(command(service))


def option(service: dict[str, Any], flag: str) -> str:
    """The value after ``flag`` in a service's command (its script when it runs one)."""
    found = re.search(rf"{re.escape(flag)}[ =]\"?([^\s\"]+)", script(service))
    assert found, f"no {flag} in {script(service)!r}"
    return found.group(1)


def long_running(deployment: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: svc for name, svc in services(deployment).items() if svc.get("restart") != "no"}


def airflow_processes(deployment: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The long-running Airflow processes: API server, scheduler, DAG processor, triggerer, Celery workers."""
    return {name: svc for name, svc in long_running(deployment).items() if command(svc)[:1] == ["airflow"]}


def celery_workers(deployment: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: svc for name, svc in airflow_processes(deployment).items() if command(svc)[1:3] == ["celery", "worker"]}


def spark_workers(deployment: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: svc for name, svc in services(deployment).items() if "deploy.worker.Worker" in script(svc)}


def by_image(deployment: dict[str, Any], prefix: str) -> str:
    names = [name for name, svc in services(deployment).items() if str(svc.get("image", "")).startswith(prefix)]
    assert len(names) == 1, f"one service of image {prefix}*, got {names}"
    return names[0]


def image_env() -> dict[str, str]:
    """The ENV of the Dockerfile (``NAME=value`` pairs, continued lines joined)."""
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    pairs: dict[str, str] = {}
    for line in re.findall(r"^ENV (.*)$", text, re.M):
        pairs.update(re.findall(r"([A-Z_][A-Z0-9_]*)=(\S+)", line))
    return pairs


def effective_env(service: dict[str, Any]) -> dict[str, str]:
    """What a process of the service sees: the image's ENV (the pipeline image only) under the compose environment."""
    base = image_env() if str(service.get("image", "")).startswith("recsys-augment") else {}
    return {**base, **environment(service)}


def mounts(service: dict[str, Any]) -> dict[str, str]:
    """Container path -> volume or host path of a service's mounts (short or long syntax)."""
    found = {}
    for volume in service.get("volumes") or []:
        if isinstance(volume, dict):
            found[volume["target"]] = volume.get("source", "")
        else:
            source, target = volume.split(":")[:2]
            found[target] = source
    return found


def published(service: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(host address, host port, container port) of each published port, in v1's short or v2's long syntax."""
    found = []
    for port in service.get("ports") or []:
        if isinstance(port, dict):
            found.append((port.get("host_ip", ""), str(port.get("published", "")), str(port["target"])))
        else:
            parts = str(port).split("/")[0].split(":")
            found.append(("" if len(parts) < 3 else parts[0], parts[-2] if len(parts) > 1 else "", parts[-1]))
    return found


# ---- the environment the code reads -------------------------------------------------------------------------

def _module_strings(tree: ast.Module) -> dict[str, str]:
    """Module-level names bound to string literals (``A = "X"`` and ``A, B = "X", "Y"``)."""
    found = {}
    for node in tree.body:
        if not isinstance(node, ast.Assign):
            continue
        for target in node.targets:
            pairs = (zip(target.elts, node.value.elts, strict=False)
                     if isinstance(target, ast.Tuple) and isinstance(node.value, ast.Tuple) else [(target, node.value)])
            for name, value in pairs:
                if isinstance(name, ast.Name) and isinstance(value, ast.Constant) and isinstance(value.value, str):
                    found[name.id] = value.value
    return found


def _is_environment(node: ast.expr) -> bool:
    """``os.environ``, or a mapping named ``environ``/``env`` (the injectable stand-ins for it)."""
    return (isinstance(node, ast.Attribute) and node.attr == "environ") or (
        isinstance(node, ast.Name) and node.id in {"environ", "env"})


def env_reads(path: Path) -> list[tuple[str, bool]]:
    """(variable, read with a default) for each read of the environment in a Python file.

    A read has a default when ``.get``/``getenv`` is given one, when it is the left side of an ``or``, when it is
    a condition (``if os.environ.get(X):`` tests for the variable), when a subscript sits under a condition
    that tests the same variable, or when the file sets the variable itself (``env[X] = ...``, ``setdefault``).
    """
    tree = ast.parse(path.read_text())
    strings = _module_strings(tree)
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    conditions = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If | ast.IfExp | ast.While)
                  for n in ast.walk(node.test)}

    def name_of(arg: ast.expr) -> str | None:
        if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
            return arg.value
        return strings.get(arg.id) if isinstance(arg, ast.Name) else None

    def read(node: ast.AST) -> tuple[str | None, bool] | None:
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.args:
            is_get = node.func.attr == "get" and _is_environment(node.func.value)
            is_getenv = node.func.attr == "getenv" and isinstance(node.func.value, ast.Name) and node.func.value.id == "os"
            if is_get or is_getenv:
                parent = parents.get(node)
                in_or = isinstance(parent, ast.BoolOp) and isinstance(parent.op, ast.Or) and parent.values[-1] is not node
                return name_of(node.args[0]), (len(node.args) > 1 or bool(node.keywords) or in_or
                                               or id(node) in conditions)
        if isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load) and _is_environment(node.value):
            name = name_of(node.slice)
            ancestor = parents.get(node)
            while ancestor is not None:
                if isinstance(ancestor, ast.IfExp | ast.If) and any(
                        (r := read(n)) is not None and r[0] == name for n in ast.walk(ancestor.test)):
                    return name, True
                ancestor = parents.get(ancestor)
            return name, False
        return None

    set_here = {name_of(node.slice) for node in ast.walk(tree) if isinstance(node, ast.Subscript)
                and isinstance(node.ctx, ast.Store) and _is_environment(node.value)}
    set_here |= {name_of(node.args[0]) for node in ast.walk(tree) if isinstance(node, ast.Call) and node.args
                 and isinstance(node.func, ast.Attribute) and node.func.attr == "setdefault"
                 and _is_environment(node.func.value)}
    return [(found[0], found[1] or found[0] in set_here) for node in ast.walk(tree)
            if (found := read(node)) is not None and found[0]]


def code_reads() -> dict[str, dict[str, bool]]:
    """Variable -> {top-level folder -> read there without a default} over the code folders."""
    found: dict[str, dict[str, bool]] = {}
    for folder in CODE_DIRS:
        for path in sorted((REPO / folder).rglob("*.py")):
            for name, has_default in env_reads(path):
                where = found.setdefault(name, {})
                where[folder] = where.get(folder, False) or not has_default
    return found


def test_env_reads_finds_reads_with_and_without_defaults(tmp_path: Path) -> None:
    source = tmp_path / "sample.py"
    source.write_text(
        "import os\nHOST_VAR, PORT_VAR = 'H', 'P'\n"
        "a = os.environ['A']\nb = os.environ.get('B')\nc = os.environ.get('C', 'x')\nd = os.getenv('D')\n"
        "e = os.environ.get('E') or 'fallback'\nf = os.environ['F'] if os.environ.get('F') else None\n"
        "if os.getenv('G'):\n    pass\n"
        "def h(env):\n    env['I'] = 'set'\n    env.setdefault('J', 'set')\n    return env['I'], env['J'], env['K']\n"
        "def g(env):\n    return env.get(HOST_VAR), env.get(PORT_VAR, '1')\n")
    assert sorted(env_reads(source)) == sorted([
        ("A", False), ("B", False), ("C", True), ("D", False), ("E", True), ("F", True), ("F", True), ("G", True),
        ("H", False), ("P", True), ("I", True), ("J", True), ("K", False)])


# ---- the compose file as a whole ----------------------------------------------------------------------------

def test_compose_config_resolves_with_the_env_example_filled_in(deployment: dict[str, Any]) -> None:
    assert {"postgres", "redis", "statsd-exporter", "airflow-init", "api-server", "scheduler", "dag-processor",
            "triggerer", "worker", "worker-gpu", "spark-master", "mlflow"} <= set(services(deployment))
    assert len(spark_workers(deployment)) >= 2


def test_compose_config_resolves_bare_as_in_ci() -> None:
    """A fresh clone, no env file: `docker-compose -f docker/compose.yaml config` validates the file."""
    binary = shutil.which("docker-compose")
    assert binary, "docker-compose is required (Debian's docker-compose package; CI installs it)"
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"), "LANG": "C.UTF-8"}
    done = subprocess.run([binary, "-f", str(COMPOSE), "config", "--quiet"], env=env, capture_output=True, text=True,
                          timeout=120, cwd=REPO)
    assert done.returncode == 0, done.stderr


def _check_secrets(deployment: dict[str, Any], values: dict[str, str]) -> subprocess.CompletedProcess:
    """secrets-check's own command, as its container runs it (compose turns ``$$`` into ``$``), with ``values``."""
    service = services(deployment)["secrets-check"]
    command = [part.replace("$$", "$") for part in service["command"]]
    env = {"PATH": os.environ["PATH"], "MUST_BE_SET": service["environment"]["MUST_BE_SET"], **values}
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=30)


def test_nothing_starts_without_each_secret(deployment: dict[str, Any]) -> None:
    required = filled_secrets()
    assert {"POSTGRES_PASSWORD", "MLFLOW_DB_PASSWORD", "REDIS_PASSWORD", "AIRFLOW_FERNET_KEY", "AIRFLOW_JWT_SECRET",
            "AIRFLOW_API_SECRET_KEY"} <= set(required)
    assert set(services(deployment)["secrets-check"]["environment"]["MUST_BE_SET"].split()) == set(required)
    assert _check_secrets(deployment, required).returncode == 0
    for name in required:
        done = _check_secrets(deployment, {**required, name: ""})
        assert done.returncode != 0 and name in done.stderr, (name, done.returncode, done.stderr)
    # everything that holds a secret waits on the check: the stores directly, the rest through them (the Spark
    # master and the StatsD exporter hold none)
    for name in ("postgres", "redis"):
        assert services(deployment)[name]["depends_on"]["secrets-check"]["condition"] == "service_completed_successfully"
    for name, service in services(deployment).items():
        if name not in ("secrets-check", "postgres", "redis", "statsd-exporter", "spark-master"):
            assert set(service.get("depends_on", {})) & {"postgres", "redis", "spark-master", "airflow-init"}, name


def test_secrets_come_from_the_env_file_never_from_the_compose_file(deployment: dict[str, Any]) -> None:
    raw = yaml.safe_load(COMPOSE.read_text())["services"]
    checked = 0
    for name, service in raw.items():
        for key, value in (service.get("environment") or {}).items():
            if SECRET_KEY.search(key) and value is not None:
                checked += 1
                assert "${" in str(value), f"{name}: {key} is written in the compose file"
    assert checked >= 8
    resolved = json.dumps(services(deployment))
    for name in filled_secrets():
        given = deployment["env"][name]
        assert given in resolved, f"{name} from the env file reaches no service"


def test_ports_are_published_on_loopback_only(deployment: dict[str, Any]) -> None:
    ports = {name: published(svc) for name, svc in services(deployment).items() if published(svc)}
    assert {"api-server", "mlflow", "spark-master"} <= set(ports)
    for name, entries in ports.items():
        for host, _, _ in entries:
            assert host == "127.0.0.1", f"{name} publishes {entries} beyond loopback"


def test_every_long_running_service_has_a_health_check_and_waits_on_conditions(deployment: dict[str, Any]) -> None:
    every = services(deployment)
    running = long_running(deployment)
    for name, service in running.items():
        check = service.get("healthcheck") or {}
        assert check.get("test") and not check.get("disable"), f"{name} has no health check"
    for name, service in every.items():
        for dependency, spec in (service.get("depends_on") or {}).items():
            expected = "service_healthy" if dependency in running else "service_completed_successfully"
            assert spec.get("condition") == expected, f"{name} -> {dependency}: {spec}"
    for name in airflow_processes(deployment):
        assert "airflow-init" in every[name]["depends_on"], f"{name} starts before the database is migrated"


# ---- Airflow -------------------------------------------------------------------------------------------------

def test_airflow_processes_share_database_broker_and_keys(deployment: dict[str, Any]) -> None:
    airflow = {**airflow_processes(deployment), "airflow-init": services(deployment)["airflow-init"]}
    shared = {}
    for key in ("AIRFLOW__CORE__EXECUTOR", "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "AIRFLOW__CELERY__BROKER_URL",
                "AIRFLOW__CELERY__RESULT_BACKEND", "AIRFLOW__CORE__FERNET_KEY", "AIRFLOW__API_AUTH__JWT_SECRET",
                "AIRFLOW__API__SECRET_KEY", "AIRFLOW__CORE__EXECUTION_API_SERVER_URL"):
        values = {name: environment(svc).get(key) for name, svc in airflow.items()}
        assert len(set(values.values())) == 1 and None not in values.values(), (key, values)
        shared[key] = next(iter(values.values()))
    env = deployment["env"]
    assert shared["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert shared["AIRFLOW__CORE__FERNET_KEY"] == env["AIRFLOW_FERNET_KEY"]
    assert shared["AIRFLOW__API_AUTH__JWT_SECRET"] == env["AIRFLOW_JWT_SECRET"]
    postgres = environment(services(deployment)["postgres"])
    database = urlsplit(shared["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"])
    assert (database.scheme, database.hostname, database.path.strip("/")) == ("postgresql+psycopg2", "postgres",
                                                                             postgres["POSTGRES_DB"])
    assert (database.username, database.password) == (postgres["POSTGRES_USER"], env["POSTGRES_PASSWORD"])
    assert shared["AIRFLOW__CELERY__RESULT_BACKEND"] == "db+" + shared["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    broker = urlsplit(shared["AIRFLOW__CELERY__BROKER_URL"])
    assert broker.scheme == "redis" and broker.hostname == by_image(deployment, "redis")
    assert broker.password == env["REDIS_PASSWORD"]


def airflow_package() -> Path:
    """The installed airflow package's folder, found without importing it (an import costs seconds)."""
    return Path(importlib.util.find_spec("airflow").submodule_search_locations[0])


def airflow_config_template() -> dict[str, Any]:
    """Airflow's shipped config template: section -> its options, each with its default and description."""
    return yaml.safe_load((airflow_package() / "config_templates" / "config.yml").read_text())


def airflow_options() -> set[tuple[str, str]]:
    """(section, option) of every setting Airflow 3 and its Celery provider know, from their shipped config
    templates (read as data, without importing Airflow)."""
    package = airflow_package()
    sections = airflow_config_template()
    spec = importlib.util.spec_from_file_location("celery_provider_info",
                                                  package / "providers" / "celery" / "get_provider_info.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sections = {**sections, **module.get_provider_info()["config"]}
    return {(section, option) for section, body in sections.items() for option in body["options"]}


def test_every_airflow_setting_of_the_deployment_is_one_airflow_knows(deployment: dict[str, Any]) -> None:
    known = airflow_options()
    assert ("api_auth", "jwt_secret") in known and ("celery", "broker_url") in known
    for name, service in services(deployment).items():
        for key in environment(service):
            if key.startswith("AIRFLOW__"):
                section, option = key.removeprefix("AIRFLOW__").lower().split("__", 1)
                assert (section, option) in known, f"{name}: {key} is no Airflow setting"


def test_execution_api_url_reaches_the_api_server(deployment: dict[str, Any]) -> None:
    api = services(deployment)["api-server"]
    url = urlsplit(environment(api)["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"])
    assert url.hostname == "api-server" and str(url.port) == option(api, "--port") and url.path == "/execution/"
    assert ("127.0.0.1", "8080", option(api, "--port")) in published(api)
    assert "triggerer" in airflow_processes(deployment)


def makefile_pools(spark_slots: str | None = None) -> dict[str, Any]:
    """The pools the Makefile's airflow-db target imports (POOLS_JSON), with its SPARK_POOL_SLOTS or ``spark_slots``."""
    text = (REPO / "Makefile").read_text()
    body = re.search(r"^define POOLS_JSON\n(.*?)\nendef", text, re.M | re.S).group(1)
    default = re.search(r"^SPARK_POOL_SLOTS \?= (\d+)$", text, re.M).group(1)
    return json.loads(body.replace("$(SPARK_POOL_SLOTS)", spark_slots or default))


def test_init_service_migrates_and_creates_the_makefiles_pools(deployment: dict[str, Any], tmp_path: Path) -> None:
    init = services(deployment)["airflow-init"]
    assert init.get("restart") == "no"
    steps = script(init)
    assert 0 <= steps.index("airflow db migrate") < steps.index("airflow pools import")
    assert re.search(r"\$\$?POOLS_JSON", steps)
    pools = json.loads(environment(init)["POOLS_JSON"])
    assert pools == makefile_pools() and pools["gpu"]["slots"] == 1 and pools["spark"]["slots"] == 2
    # SPARK_POOL_SLOTS resizes the spark pool as it does for the Makefile
    done = compose_config(write_env(tmp_path / ".env", {**deployment["env"], "SPARK_POOL_SLOTS": "5"}))
    assert done.returncode == 0, done.stderr
    resized = json.loads(yaml.safe_load(done.stdout)["services"]["airflow-init"]["environment"]["POOLS_JSON"])
    assert resized == makefile_pools("5") and resized["spark"]["slots"] == 5


def dag_gpu_queue() -> str:
    """The queue of recsys_nightly's GPU tasks (the DAG module's ``GPU`` task arguments)."""
    tree = ast.parse((REPO / "dags" / "recsys_nightly.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "GPU" for t in node.targets):
            return ast.literal_eval(node.value)["queue"]
    raise AssertionError("dags/recsys_nightly.py has no GPU task arguments")


def airflow_default_queue() -> str:
    """[operators] default_queue as Airflow ships it (its config template, read without importing Airflow)."""
    return airflow_config_template()["operators"]["options"]["default_queue"]["default"]


def test_celery_workers_take_the_default_queue_and_the_gpu_queue_on_a_gpu(deployment: dict[str, Any]) -> None:
    workers = celery_workers(deployment)
    queues = {name: option(svc, "--queues") for name, svc in workers.items()}
    assert sorted(queues.values()) == sorted([airflow_default_queue(), dag_gpu_queue()])
    gpu = workers[next(name for name, queue in queues.items() if queue == dag_gpu_queue())]
    assert int(option(gpu, "--concurrency")) == makefile_pools()["gpu"]["slots"]
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert any("gpu" in device.get("capabilities", []) and device.get("driver") == "nvidia" for device in devices)
    assert gpu["build"]["args"]["TF_VARIANT"] == "gpu"
    cpu_images = {svc["image"] for name, svc in services(deployment).items()
                  if svc.get("build") and svc["build"]["args"]["TF_VARIANT"] == "cpu"}
    assert gpu["image"] not in cpu_images, "the GPU build would overwrite the CPU image's tag"


def test_statsd_metrics_of_airflow_and_the_pipeline_reach_the_exporter(deployment: dict[str, Any]) -> None:
    from recsys.core.gauges import statsd_target

    exporter = by_image(deployment, "prom/statsd-exporter")
    udp_port = option(services(deployment)[exporter], "--statsd.listen-udp").split(":")[-1]
    for name, service in airflow_processes(deployment).items():
        env = environment(service)
        assert env["AIRFLOW__METRICS__STATSD_ON"].lower() == "true", name
        assert (env["AIRFLOW__METRICS__STATSD_HOST"], env["AIRFLOW__METRICS__STATSD_PORT"]) == (exporter, udp_port)
        assert env["AIRFLOW__METRICS__STATSD_PREFIX"]
    for name, service in celery_workers(deployment).items():
        target = statsd_target(environment(service))
        assert target is not None and (target.host, str(target.port), target.prefix) == (exporter, udp_port, "recsys"), name


# ---- the jobs' endpoints ------------------------------------------------------------------------------------

def test_the_code_finds_every_variable_it_reads_without_a_default(deployment: dict[str, Any]) -> None:
    reads = code_reads()
    required = {name: {folder for folder, bare in where.items() if bare} for name, where in reads.items()}
    required = {name: folders for name, folders in required.items()
                 if folders and name not in OPTIONAL and name not in NOT_SETTINGS}
    assert "MLFLOW_TRACKING_URI" in required  # recsys.core.tracking falls back to a local SQLite file without it
    workers = celery_workers(deployment)
    for name, service in airflow_processes(deployment).items():
        dirs = CODE_DIRS if name in workers else AIRFLOW_DIRS
        env = effective_env(service)
        missing = sorted(var for var, folders in required.items() if folders & set(dirs) and not env.get(var))
        assert not missing, f"{name} runs code that reads {missing} without a default"


def test_env_example_documents_every_variable_the_code_reads() -> None:
    text = ENV_EXAMPLE.read_text()
    names = (set(code_reads()) - NOT_SETTINGS) | set(ANNOUNCED)
    undocumented = sorted(name for name in names if not re.search(rf"^#?\s*{name}=", text, re.M))
    assert not undocumented, f".env.example does not mention {undocumented}"


def test_mlflow_server_runs_on_postgres_with_artifacts_on_a_volume(deployment: dict[str, Any],
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from recsys.core.tracking import artifact_root

    mlflow = services(deployment)["mlflow"]
    steps = script(mlflow)
    assert "--serve-artifacts" in steps and "--no-serve-artifacts" not in steps
    destination = option(mlflow, "--artifacts-destination")
    assert mounts(mlflow).get(destination) in deployment["volumes"], f"{destination} is on no named volume"
    store = urlsplit(environment(mlflow)["MLFLOW_BACKEND_STORE_URI"])
    assert (store.scheme.split("+")[0], store.hostname, store.path.strip("/")) == ("postgresql", "postgres", "mlflow")
    assert (store.username, store.password) == ("mlflow", environment(services(deployment)["postgres"])["MLFLOW_DB_PASSWORD"])
    server = f"mlflow:{option(mlflow, '--port')}"
    for name, service in celery_workers(deployment).items():
        env = environment(service)
        assert env["MLFLOW_TRACKING_URI"] == f"http://{server}", name
        # no host: the client resolves it against its tracking server (a host-addressed one MLflow 3 refuses)
        artifacts = urlsplit(env["RECSYS_MLFLOW_ARTIFACTS"])
        assert (artifacts.scheme, artifacts.netloc) == ("mlflow-artifacts", ""), name
        monkeypatch.setenv("RECSYS_MLFLOW_ARTIFACTS", env["RECSYS_MLFLOW_ARTIFACTS"])
        assert artifact_root() == env["RECSYS_MLFLOW_ARTIFACTS"]  # kept as a URI, never made a worker's path


def test_the_lake_volume_is_mounted_where_every_code_service_reads_it(deployment: dict[str, Any]) -> None:
    code_services = {**airflow_processes(deployment), **spark_workers(deployment)}
    paths = {name: effective_env(svc).get("RECSYS_LAKE") for name, svc in code_services.items()}
    assert len(set(paths.values())) == 1 and None not in paths.values(), paths
    lake = next(iter(paths.values()))
    for name, service in code_services.items():
        assert mounts(service).get(lake) == "lake", f"{name} does not mount the lake volume at {lake}"
    assert "lake" in deployment["volumes"]


def test_spark_jobs_reach_the_standalone_master_and_its_executors_reach_the_driver(deployment: dict[str, Any]) -> None:
    master = services(deployment)["spark-master"]
    url = f"spark://{option(master, '--host')}:{option(master, '--port')}"
    for name, service in spark_workers(deployment).items():
        assert script(service).endswith(url), name
    for name, service in celery_workers(deployment).items():
        env = environment(service)
        conn = json.loads(env["AIRFLOW_CONN_SPARK_DEFAULT"])
        assert f"{conn['host']}:{conn['port']}" == url == env["SPARK_MASTER"], name
        assert env["SPARK_DRIVER_HOST"] == service["hostname"] and env["SPARK_DRIVER_BIND_ADDRESS"] == "0.0.0.0", name


# ---- the image ----------------------------------------------------------------------------------------------

def requirement_pins() -> dict[str, str]:
    return dict(re.findall(r"^([A-Za-z0-9_.\[\]-]+)==(\S+)", (REPO / "requirements.txt").read_text(), re.M))


def test_dockerfile_copies_only_existing_paths_and_pins_python() -> None:
    text = DOCKERFILE.read_text()
    assert re.search(r"^FROM python:3\.11", text, re.M)
    copied = re.findall(r"^COPY (\S+) ", text, re.M)
    assert copied and all((REPO / src).exists() for src in copied), copied
    assert set(CODE_DIRS) | {"conf"} <= set(copied), f"the image lacks {set(CODE_DIRS) | {'conf'} - set(copied)}"


def test_the_image_installs_the_runtime_requirements_only() -> None:
    text = DOCKERFILE.read_text()
    assert re.search(r"^COPY requirements\.txt ", text, re.M)
    assert not [line for line in text.splitlines() if "requirements-dev" in line and not line.startswith("#")]
    assert re.search(r"pip install .*-r requirements\.image\.txt", text.replace("\\\n", " "))
    pins = requirement_pins()
    for package in ("apache-airflow", "apache-airflow-providers-celery", "psycopg2-binary", "redis", "statsd",
                    "pyspark", "mlflow", "tensorflow-cpu"):
        assert package in pins, f"requirements.txt does not pin {package}"
    for tool in ("pytest", "ruff", "polars", "selenium"):
        assert tool not in pins, f"requirements.txt (the image's set) holds the development tool {tool}"


def test_the_gpu_build_swaps_tensorflow_cpu_for_its_cuda_build(tmp_path: Path) -> None:
    text = DOCKERFILE.read_text()
    assert re.search(r'if \[ "\$TF_VARIANT" = "gpu" \]', text)
    expression = re.search(r"sed '([^']+)' requirements\.txt", text).group(1)
    done = subprocess.run(["sed", expression, str(REPO / "requirements.txt")], capture_output=True, text=True, check=True)
    version = requirement_pins()["tensorflow-cpu"]
    expected = [f"tensorflow[and-cuda]=={version}" if line == f"tensorflow-cpu=={version}" else line
                for line in (REPO / "requirements.txt").read_text().splitlines()]
    assert done.stdout.splitlines() == expected
    assert f"tensorflow[and-cuda]=={version}" in expected


# ---- the PostgreSQL init script -----------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _as_postgres(cmd: list[str]) -> list[str]:
    """initdb and postgres refuse to run as root: as root, run them as the postgres user."""
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


def _stop_group(proc: subprocess.Popen, sig: int) -> None:
    """Stop a process started in its own session, and its children: ``sig`` to the group, SIGKILL after 30 s."""
    os.killpg(proc.pid, sig)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)


@pytest.fixture
def postgres_server() -> Iterator[tuple[Path, int]]:
    """A throwaway PostgreSQL 15 on a free loopback port: local socket logins trusted (as the image's init
    scripts run), TCP logins by password; yields (socket folder, port) and removes it all afterwards."""
    base = Path(tempfile.mkdtemp(prefix="recsys-docker-pg-"))
    if os.geteuid() == 0:
        user = pwd.getpwnam("postgres")
        os.chown(base, user.pw_uid, user.pw_gid)
    env = {"PATH": os.environ["PATH"], "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}
    server = None
    try:
        subprocess.run(_as_postgres([str(PG_BIN / "initdb"), "-D", str(base / "data"), "-U", "postgres", "-E", "UTF8",
                                     "--auth-local=trust", "--auth-host=scram-sha-256", "--no-sync"]),
                       env=env, capture_output=True, text=True, timeout=300, check=True, cwd=base)
        port = _free_port()
        server = subprocess.Popen(_as_postgres([
            str(PG_BIN / "postgres"), "-D", str(base / "data"), "-p", str(port), "-c", "listen_addresses=127.0.0.1",
            "-c", f"unix_socket_directories={base}", "-c", "fsync=off"]), env=env, cwd=base,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 60
        while subprocess.run([str(PG_BIN / "pg_isready"), "-h", str(base), "-p", str(port)],
                             capture_output=True).returncode != 0:
            assert server.poll() is None and time.monotonic() < deadline, "postgres did not start"
            time.sleep(0.2)
        yield base, port
    finally:
        if server is not None:
            # the whole group: runuser does not pass a signal on to postgres; SIGINT is its fast shutdown
            _stop_group(server, signal.SIGINT)
        shutil.rmtree(base, ignore_errors=True)


def test_the_init_script_creates_mlflows_role_and_database(postgres_server: tuple[Path, int]) -> None:
    import psycopg2

    socket_dir, port = postgres_server
    password = "it's-" + secrets.token_hex(8)  # a quote: the script must not paste it into SQL
    env = {"PATH": os.environ["PATH"], "PGHOST": str(socket_dir), "PGPORT": str(port), "POSTGRES_USER": "postgres",
           "POSTGRES_DB": "postgres", "MLFLOW_DB_PASSWORD": password}
    done = subprocess.run(["bash", str(INIT_SCRIPT)], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    conn = psycopg2.connect(host="127.0.0.1", port=port, user="mlflow", password=password, dbname="mlflow")
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT current_user, pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'mlflow'")
            assert cur.fetchone() == ("mlflow", "mlflow")
    finally:
        conn.close()
    with pytest.raises(psycopg2.OperationalError):
        psycopg2.connect(host="127.0.0.1", port=port, user="mlflow", password="wrong", dbname="mlflow").close()
    unset = subprocess.run(["bash", str(INIT_SCRIPT)], env={**env, "MLFLOW_DB_PASSWORD": ""}, capture_output=True,
                           text=True, timeout=60)
    assert unset.returncode != 0 and "MLFLOW_DB_PASSWORD" in unset.stderr


@pytest.mark.cluster
def test_the_init_service_migrates_airflow_and_imports_the_pools(deployment: dict[str, Any],
                                                                  postgres_server: tuple[Path, int],
                                                                  tmp_path: Path) -> None:
    """The init service's own command, run here against PostgreSQL 15 instead of the postgres service: Airflow's
    schema is created and the pools Airflow then lists are the Makefile's."""
    socket_dir, port = postgres_server
    subprocess.run(["psql", "-h", str(socket_dir), "-p", str(port), "-U", "postgres", "-c", "CREATE DATABASE airflow"],
                   check=True, capture_output=True, timeout=60)
    init = services(deployment)["airflow-init"]
    # the airflow command of this interpreter's environment (the venv), as the image's is on its PATH
    env = {**environment(init), "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "AIRFLOW_HOME": str(tmp_path),
           "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"postgresql+psycopg2://postgres@/airflow?host={socket_dir}&port={port}",
           "AIRFLOW__CORE__DAGS_FOLDER": str(tmp_path / "dags"), "AIRFLOW__CORE__PLUGINS_FOLDER": str(tmp_path / "plugins"),
           "AIRFLOW__METRICS__STATSD_ON": "False"}
    # compose runs the command with $$ unescaped to $
    cmd = [part.replace("$$", "$") for part in command(init)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    listed = subprocess.run(["airflow", "pools", "list", "--output", "json"], env=env, capture_output=True, text=True,
                            timeout=300, check=True, cwd=tmp_path)
    pools = {row["pool"]: row for row in json.loads(listed.stdout)}
    for name, expected in makefile_pools().items():
        assert int(pools[name]["slots"]) == expected["slots"], pools[name]
        assert pools[name]["description"] == expected["description"]


@pytest.mark.cluster
def test_the_mlflow_service_serves_the_workers_host_name_and_keeps_artifacts_on_its_volume(
        deployment: dict[str, Any], postgres_server: tuple[Path, int], tmp_path: Path) -> None:
    """The mlflow service's own command against PostgreSQL 15 (its database made by the init script), on a free
    loopback port with a folder for its volume: it answers the Host header the workers send and refuses
    another, and an artifact a job logs through recsys.core.tracking lands in that folder."""
    socket_dir, pg_port = postgres_server
    postgres = environment(services(deployment)["postgres"])
    subprocess.run(["bash", str(INIT_SCRIPT)], check=True, capture_output=True, timeout=60, env={
        "PATH": os.environ["PATH"], "PGHOST": str(socket_dir), "PGPORT": str(pg_port), "POSTGRES_USER": "postgres",
        "POSTGRES_DB": "postgres", "MLFLOW_DB_PASSWORD": postgres["MLFLOW_DB_PASSWORD"]})
    mlflow = services(deployment)["mlflow"]
    port, volume = _free_port(), tmp_path / "mlartifacts"
    store = environment(mlflow)["MLFLOW_BACKEND_STORE_URI"].replace("@postgres:5432/", f"@127.0.0.1:{pg_port}/")
    cmd = [part.replace("$$", "$").replace("--host 0.0.0.0", "--host 127.0.0.1")
           .replace(f"--port {option(mlflow, '--port')}", f"--port {port}")
           .replace(option(mlflow, "--artifacts-destination"), str(volume)) for part in command(mlflow)]
    env = {**environment(mlflow), "MLFLOW_BACKEND_STORE_URI": store, "HOME": str(tmp_path),
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    server = subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while not _answers(f"http://127.0.0.1:{port}/health"):
            assert server.poll() is None and time.monotonic() < deadline, "the mlflow service did not start"
            time.sleep(1)
        search = f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/search?max_results=1"
        assert _answers(search, host=f"mlflow:{option(mlflow, '--port')}")  # what http://mlflow:5000 sends
        assert not _answers(search, host="attacker.example")
        job = ("from recsys.core.tracking import setup_mlflow; import mlflow; setup_mlflow()\n"
               "with mlflow.start_run():\n    mlflow.log_text('through the proxy', 'probe.txt')\n")
        artifacts = environment(celery_workers(deployment)["worker"])["RECSYS_MLFLOW_ARTIFACTS"]
        done = subprocess.run([sys.executable, "-c", job], cwd=REPO, capture_output=True, text=True, timeout=300, env={
            **os.environ, "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{port}", "RECSYS_MLFLOW_ARTIFACTS": artifacts,
            "RECSYS_HOME": str(tmp_path / "worker-home")})
        assert done.returncode == 0, done.stderr[-3000:]
        logged = list(volume.rglob("probe.txt"))
        assert [path.read_text() for path in logged] == ["through the proxy"], logged
        assert not list((tmp_path / "worker-home").rglob("probe.txt")), "the artifact was written on the worker"
    finally:
        _stop_group(server, signal.SIGTERM)


def _answers(url: str, host: str | None = None) -> bool:
    """Whether a GET of ``url`` (with that Host header) gets a 2xx answer."""
    request = urllib.request.Request(url, headers={"Host": host} if host else {})
    try:
        with urllib.request.urlopen(request, timeout=10):
            return True
    except (urllib.error.URLError, OSError):
        return False
