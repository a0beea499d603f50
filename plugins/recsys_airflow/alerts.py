"""Failure and deadline alerts of recsys_nightly: an alert line in the log and a file, and a webhook post.

The webhook is optional: it is used when the Airflow connection ``recsys_alerts`` exists (e.g.
``AIRFLOW_CONN_RECSYS_ALERTS='http://hooks.example.com:8080/recsys'`` or one made in the UI). The alert
line goes to the task's (or callback's) log and is appended to ``$RECSYS_ALERT_LOG`` (default
``$RECSYS_HOME/alerts.log`` when ``RECSYS_HOME`` is set). Standard library and ``airflow.sdk`` only.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from airflow.sdk import BaseHook, BaseNotifier
from airflow.sdk.exceptions import AirflowNotFoundException

ALERT_CONN_ID = "recsys_alerts"
WEBHOOK_TIMEOUT_SECONDS = 10
log = logging.getLogger(__name__)


def _field(obj: Any, name: str) -> Any:
    """An attribute of a context object, or the key of its JSON form (deadline callbacks get dicts)."""
    return obj.get(name) if isinstance(obj, Mapping) else getattr(obj, name, None)


def alert_facts(context: Mapping[str, Any], kind: str) -> dict[str, Any]:
    """The small facts of an alert, from an Airflow callback context (task failure or missed deadline)."""
    ti = context.get("ti") or context.get("task_instance")
    dag_run = context.get("dag_run")
    error = context.get("exception") or context.get("reason")
    return {
        "kind": kind,
        "at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "dag_id": _field(context.get("dag"), "dag_id") or _field(dag_run, "dag_id"),
        "run_id": _field(dag_run, "run_id") or context.get("run_id"),
        "task_id": _field(ti, "task_id"),
        "try_number": _field(ti, "try_number"),
        "deadline": _field(context.get("deadline"), "deadline_time"),
        "error": None if error is None else str(error)[:2000],
    }


def alert_line(facts: Mapping[str, Any]) -> str:
    """One greppable line: ``RECSYS ALERT <kind> key=value ...`` (empty facts left out)."""
    pairs = " ".join(f"{key}={value}" for key, value in facts.items() if key != "kind" and value is not None)
    return f"RECSYS ALERT {facts['kind']} {pairs}"


def webhook_url(conn: Any) -> str:
    """The URL to post to, from a connection: its host if that is a URL, else built from its parts."""
    host = conn.host or ""
    if "://" in host:
        return host
    port = f":{conn.port}" if conn.port else ""
    path = conn.schema if conn.schema and conn.schema not in ("http", "https") else ""
    scheme = "https" if conn.conn_type == "https" or conn.schema == "https" else "http"
    return f"{scheme}://{host}{port}/{path.lstrip('/')}"


def record_alert(facts: Mapping[str, Any]) -> str:
    """Log the alert line and append it to the alert log; return the line."""
    line = alert_line(facts)
    log.error("%s", line)
    alert_log = os.environ.get("RECSYS_ALERT_LOG") or (
        str(Path(os.environ["RECSYS_HOME"]) / "alerts.log") if os.environ.get("RECSYS_HOME") else None)
    if alert_log:
        Path(alert_log).parent.mkdir(parents=True, exist_ok=True)
        with open(alert_log, "a", encoding="utf-8") as out:
            out.write(line + "\n")
    return line


def post_alert(facts: Mapping[str, Any], conn: Any) -> bool:
    """Post the facts as JSON to the connection's webhook; a broken webhook is logged, never raised."""
    url = webhook_url(conn)
    request = urllib.request.Request(url, data=json.dumps(facts, default=str).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=WEBHOOK_TIMEOUT_SECONDS) as response:
            log.info("alert posted to %s: HTTP %s", url, response.status)
        return True
    except OSError as err:
        log.error("alert webhook %s failed: %s", url, err)
        return False


class RecsysAlertNotifier(BaseNotifier):
    """Notifier for ``on_failure_callback`` (sync) and deadline alerts (async, in the triggerer).

    Args:
        kind: what happened, the first word of the alert line (``task_failed``, ``deadline_missed``).
        conn_id: the Airflow connection of the webhook; without such a connection only the line is written.
    """

    def __init__(self, kind: str = "task_failed", conn_id: str = ALERT_CONN_ID, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.kind = kind
        self.conn_id = conn_id

    def notify(self, context: Any) -> None:
        facts = alert_facts(context, self.kind)
        record_alert(facts)
        try:
            conn = BaseHook.get_connection(self.conn_id)
        except AirflowNotFoundException:
            return
        post_alert(facts, conn)

    async def async_notify(self, context: Any) -> None:
        facts = alert_facts(context, self.kind)
        record_alert(facts)
        try:
            conn = await BaseHook.aget_connection(self.conn_id)
        except AirflowNotFoundException:
            return
        post_alert(facts, conn)
