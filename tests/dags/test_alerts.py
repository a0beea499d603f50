"""Alerts of recsys_nightly: the alert line and webhook on failures and retries, and the notifier list."""

from __future__ import annotations

import asyncio
import http.server
import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from recsys_airflow.alerts import (
    NotifierConfigError,
    RecsysAlertNotifier,
    alert_callbacks,
    alert_facts,
    configured_notifiers,
)

REPO = Path(__file__).resolve().parents[2]
DAG_FILE = REPO / "dags" / "recsys_nightly.py"
SMTP = "airflow.providers.smtp.notifications.smtp.SmtpNotifier"


class Webhook(SimpleNamespace):
    url: str
    received: list[dict]
    delay: float  # seconds each answer waits, to show whether a caller blocks on it


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    """A real HTTP server on 127.0.0.1 that records the JSON bodies POSTed to it."""
    hook = Webhook(url="", received=[], delay=0.0)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            hook.received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            time.sleep(hook.delay)
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        hook.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/recsys"
        yield hook
    finally:
        server.shutdown()
        server.server_close()


def _failure_context() -> dict:
    return {"ti": SimpleNamespace(task_id="train", try_number=2), "exception": RuntimeError("job train failed"),
            "dag_run": SimpleNamespace(run_id="scheduled__2026-03-01", dag_id="recsys_nightly")}


def test_failure_alert_writes_a_line_and_posts_to_the_webhook(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, webhook: Webhook) -> None:
    monkeypatch.setenv("RECSYS_ALERT_LOG", str(tmp_path / "alerts.log"))
    monkeypatch.setenv("AIRFLOW_CONN_RECSYS_ALERTS", webhook.url)
    RecsysAlertNotifier().notify(_failure_context())
    line = (tmp_path / "alerts.log").read_text()
    assert line.startswith("RECSYS ALERT task_failed ") and line.endswith("\n")
    assert "dag_id=recsys_nightly run_id=scheduled__2026-03-01 task_id=train try_number=2" in line
    assert "error=job train failed" in line
    assert len(webhook.received) == 1
    assert {k: webhook.received[0][k] for k in ("kind", "task_id", "run_id", "error")} == {
        "kind": "task_failed", "task_id": "train", "run_id": "scheduled__2026-03-01", "error": "job train failed"}


def test_without_a_webhook_connection_only_the_line_is_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECSYS_ALERT_LOG", str(tmp_path / "alerts.log"))
    monkeypatch.delenv("AIRFLOW_CONN_RECSYS_ALERTS", raising=False)
    RecsysAlertNotifier().notify(_failure_context())
    assert len((tmp_path / "alerts.log").read_text().splitlines()) == 1


def test_deadline_context_is_json() -> None:
    """Today's state: no deadline alert on the DAG (see docs/operating.md), the notifier reads its JSON context."""
    facts = alert_facts({"dag_run": {"dag_id": "recsys_nightly", "run_id": "r1"},
                         "deadline": {"id": "d", "deadline_time": "2026-03-02T09:00:00Z"}}, "deadline_missed")
    assert (facts["dag_id"], facts["run_id"], facts["deadline"], facts["task_id"]) == (
        "recsys_nightly", "r1", "2026-03-02T09:00:00Z", None)


def test_async_notify_posts_without_blocking_the_event_loop(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, webhook: Webhook) -> None:
    """In the triggerer the post must leave the loop free: a ticker keeps ticking while the webhook answers."""
    monkeypatch.setenv("RECSYS_ALERT_LOG", str(tmp_path / "alerts.log"))
    monkeypatch.setenv("AIRFLOW_CONN_RECSYS_ALERTS", webhook.url)
    webhook.delay = 1.0
    ticks: list[float] = []

    async def ticker(stop: asyncio.Event) -> None:
        while not stop.is_set():
            ticks.append(time.monotonic())
            await asyncio.sleep(0.05)

    async def scene() -> float:
        stop = asyncio.Event()
        ticking = asyncio.create_task(ticker(stop))
        await asyncio.sleep(0)
        start = time.monotonic()
        await RecsysAlertNotifier(kind="deadline_missed").async_notify(
            {"dag_run": {"dag_id": "recsys_nightly", "run_id": "r1"},
             "deadline": {"id": "d", "deadline_time": "2026-03-02T09:00:00Z"}})
        stop.set()
        await ticking
        return start

    start = asyncio.run(scene())
    during = [t for t in ticks if t > start + 0.1]  # ticks after the post had begun
    assert len(webhook.received) == 1 and webhook.received[0]["kind"] == "deadline_missed"
    # a blocking post would freeze the loop for the whole second: no tick between its start and its end
    assert len(during) >= 5, f"the event loop ticked {len(during)} times during a 1 s webhook answer"


# --- the notifier list of $RECSYS_NOTIFIERS ---------------------------------------------------------------


def test_no_variable_means_no_extra_notifiers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RECSYS_NOTIFIERS", raising=False)
    assert configured_notifiers("task_failed") == []
    assert configured_notifiers("task_failed", "  ") == []
    callbacks = alert_callbacks("task_retry")
    assert [(type(c), c.kind, c.conn_id) for c in callbacks] == [(RecsysAlertNotifier, "task_retry", "recsys_alerts")]


def test_a_good_list_builds_airflows_notifiers_after_the_alert_line(monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow.providers.smtp.notifications.smtp import SmtpNotifier

    monkeypatch.setenv("RECSYS_NOTIFIERS", json.dumps([
        {"class": SMTP, "kwargs": {"to": "ops@example.com", "smtp_conn_id": "ops_mail"}, "kinds": ["task_failed"]},
        {"class": "recsys_airflow.alerts.RecsysAlertNotifier", "kwargs": {"kind": "second", "conn_id": "chat"}},
    ]))
    failed = alert_callbacks("task_failed")
    assert [type(c) for c in failed] == [RecsysAlertNotifier, SmtpNotifier, RecsysAlertNotifier]
    assert (failed[0].kind, failed[1].to, failed[1].smtp_conn_id, failed[2].conn_id) == (
        "task_failed", "ops@example.com", "ops_mail", "chat")
    retry = alert_callbacks("task_retry")  # the mail is for final failures only
    assert [(type(c), c.kind) for c in retry] == [(RecsysAlertNotifier, "task_retry"), (RecsysAlertNotifier, "second")]


@pytest.mark.parametrize(("value", "problem"), [
    ('[{"class": "x.Y"', "invalid JSON"),
    ('{"class": "' + SMTP + '"}', "must be a JSON list"),
    ('[{"klass": "' + SMTP + '"}]', r"RECSYS_NOTIFIERS\[0\]: must be an object"),
    ('[{"class": "SmtpNotifier"}]', "dotted path"),
    ('[{"class": "airflow.providers.nowhere.Notifier"}]', r"cannot import airflow\.providers\.nowhere\.Notifier"),
    ('[{"class": "airflow.providers.smtp.notifications.smtp.NoSuchNotifier"}]', "cannot import"),
    ('[{"class": "json.JSONDecoder"}]', "is not an Airflow notifier"),
    ('[{"class": "' + SMTP + '", "kwargs": ["ops@example.com"]}]', '"kwargs" must be an object'),
    ('[{"class": "' + SMTP + '", "kwargs": {}}]', "refused its kwargs"),  # SmtpNotifier needs `to`
    ('[{"class": "' + SMTP + '", "kwargs": {"to": "a@b"}, "kinds": ["task_fail"]}]', '"kinds" must be a list'),
])
def test_a_bad_list_is_refused_naming_the_variable(value: str, problem: str) -> None:
    with pytest.raises(NotifierConfigError, match=problem) as raised:
        configured_notifiers("task_retry", value)
    assert str(raised.value).startswith("RECSYS_NOTIFIERS")


def _load_nightly(monkeypatch: pytest.MonkeyPatch, notifiers: str | None):  # noqa: ANN202 - a DagBag
    from airflow.dag_processing.dagbag import DagBag

    if notifiers is None:
        monkeypatch.delenv("RECSYS_NOTIFIERS", raising=False)
    else:
        monkeypatch.setenv("RECSYS_NOTIFIERS", notifiers)
    return DagBag(dag_folder=str(DAG_FILE))


def test_the_nightly_dag_alerts_on_every_try_with_the_configured_notifiers(monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow.providers.smtp.notifications.smtp import SmtpNotifier

    bag = _load_nightly(monkeypatch, json.dumps([{"class": SMTP, "kwargs": {"to": "ops@example.com"}}]))
    assert bag.import_errors == {}, bag.import_errors
    dag = bag.get_dag("recsys_nightly")
    for task in dag.tasks:
        for callbacks, kind in ((task.on_retry_callback, "task_retry"), (task.on_failure_callback, "task_failed")):
            assert [type(c) for c in callbacks] == [RecsysAlertNotifier, SmtpNotifier], task.task_id
            assert callbacks[0].kind == kind, task.task_id


def test_a_bad_notifier_list_fails_the_dag_import_naming_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    bag = _load_nightly(monkeypatch, '[{"class": "airflow.providers.nowhere.Notifier"}]')
    assert bag.get_dag("recsys_nightly") is None
    errors = "\n".join(bag.import_errors.values())
    assert "NotifierConfigError: RECSYS_NOTIFIERS[0]: cannot import airflow.providers.nowhere.Notifier" in errors


# --- a real Airflow run: a task that fails once, one that always fails ---------------------------------------

PROBE_DAG = '''
"""A tiny DAG for the alert test: flaky fails on its first try only, broken on every try."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import pendulum
from airflow.sdk import dag, task

from recsys_airflow.alerts import TASK_FAILED, TASK_RETRY, alert_callbacks


@task
def flaky() -> str:
    marker = Path(os.environ["PROBE_MARKER"])
    if not marker.exists():
        marker.write_text("tried")
        raise RuntimeError("first try fails")
    return "ok"


@task
def broken() -> None:
    raise RuntimeError("always fails")


@dag(dag_id="alerts_probe", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
     default_args={"retries": 1, "retry_delay": dt.timedelta(0), "on_failure_callback": alert_callbacks(TASK_FAILED),
                   "on_retry_callback": alert_callbacks(TASK_RETRY)})
def alerts_probe() -> None:
    flaky()
    broken()


alerts_probe()
'''

PROBE_NOTIFIER = '''
"""A configured notifier for the alert test: one JSON line per call, as a mail or chat notifier would send one."""

from __future__ import annotations

import json

from airflow.sdk import BaseNotifier


class FileNotifier(BaseNotifier):
    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path

    def notify(self, context) -> None:
        ti = context["ti"]
        with open(self.path, "a", encoding="utf-8") as out:
            out.write(json.dumps({"task_id": ti.task_id, "try_number": ti.try_number}) + "\\n")
'''


def _airflow_db(home: Path) -> str:
    """A private metadata DB: a consistent copy of the migrated one `make test` prepares, else a fresh one."""
    db = home / "airflow.db"
    shared = Path(os.environ.get("AIRFLOW_HOME", REPO / ".recsys" / "airflow")) / "airflow.db"
    if shared.is_file():
        source, target = sqlite3.connect(shared), sqlite3.connect(db)
        try:
            source.backup(target)  # the SQLite backup API: a consistent copy while others write
        finally:
            target.close()
            source.close()
    return f"sqlite:///{db}"


def test_a_retried_try_alerts_through_a_real_airflow_run(tmp_path: Path, webhook: Webhook) -> None:
    dags, lib, home = tmp_path / "dags", tmp_path / "lib", tmp_path / "airflow"
    for folder in (dags, lib, home):
        folder.mkdir()
    (dags / "alerts_probe.py").write_text(PROBE_DAG)
    (lib / "probe_notifier.py").write_text(PROBE_NOTIFIER)
    alert_log, notified = tmp_path / "alerts.log", tmp_path / "notified.jsonl"
    env = {
        **os.environ, "AIRFLOW_HOME": str(home), "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": _airflow_db(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "plugins"), str(lib)]),
        "RECSYS_ALERT_LOG": str(alert_log), "PROBE_MARKER": str(tmp_path / "flaky.marker"),
        "AIRFLOW_CONN_RECSYS_ALERTS": webhook.url,
        "RECSYS_NOTIFIERS": json.dumps([{"class": "probe_notifier.FileNotifier", "kwargs": {"path": str(notified)},
                                         "kinds": ["task_failed"]}]),
    }
    airflow = str(Path(sys.executable).parent / "airflow")
    if not Path(env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].removeprefix("sqlite:///")).is_file():
        subprocess.run([airflow, "db", "migrate"], env=env, capture_output=True, check=True, timeout=600)
    done = subprocess.run([airflow, "dags", "test", "alerts_probe", "2026-01-05"], env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]  # broken fails the run
    assert "DagRun failed" in done.stdout + done.stderr

    lines = alert_log.read_text().splitlines()
    assert all(line.startswith("RECSYS ALERT ") for line in lines), lines
    fields = [(line.split()[2], dict(pair.split("=", 1) for pair in line.split()[3:] if "=" in pair)) for line in lines]
    assert sorted((f["task_id"], f["try_number"], kind, f["last_try"], f["dag_id"]) for kind, f in fields) == [
        ("broken", "1", "task_retry", "2", "alerts_probe"),
        ("broken", "2", "task_failed", "2", "alerts_probe"),
        ("flaky", "1", "task_retry", "2", "alerts_probe"),
    ]
    posted = sorted((p["task_id"], p["try_number"], p["kind"], p["error"]) for p in webhook.received)
    assert posted == [("broken", 1, "task_retry", "always fails"), ("broken", 2, "task_failed", "always fails"),
                      ("flaky", 1, "task_retry", "first try fails")]
    # the configured notifier is restricted to final failures
    assert [json.loads(line) for line in notified.read_text().splitlines()] == [{"task_id": "broken", "try_number": 2}]
