"""Failure, retry and deadline alerts of recsys_nightly: an alert line in the log and a file, and a webhook post.

The webhook is optional: it is used when the Airflow connection ``recsys_alerts`` exists (e.g.
``AIRFLOW_CONN_RECSYS_ALERTS='http://hooks.example.com:8080/recsys'`` or one made in the UI). The alert
line goes to the task's (or callback's) log and is appended to ``$RECSYS_ALERT_LOG`` (default
``$RECSYS_HOME/alerts.log`` when ``RECSYS_HOME`` is set). Further notifiers (Airflow's SMTP or Slack ones,
or any ``BaseNotifier``) are listed in ``$RECSYS_NOTIFIERS`` and run after the alert line
(:func:`alert_callbacks`). Standard library and ``airflow.sdk`` only.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import importlib
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
NOTIFIERS_VAR = "RECSYS_NOTIFIERS"
TASK_FAILED, TASK_RETRY = "task_failed", "task_retry"
CALLBACK_KINDS = (TASK_FAILED, TASK_RETRY)  # the alert kinds a task callback list is made for
log = logging.getLogger(__name__)


def _field(obj: Any, name: str) -> Any:
    """An attribute of a context object, or the key of its JSON form (deadline callbacks get dicts)."""
    return obj.get(name) if isinstance(obj, Mapping) else getattr(obj, name, None)


def alert_facts(context: Mapping[str, Any], kind: str) -> dict[str, Any]:
    """The small facts of an alert, from an Airflow callback context (task failure or retry, missed deadline).

    ``try_number`` is the try that failed and ``last_try`` the number of the task's last allowed try, so a
    retry alert reads ``try_number=1 last_try=3`` and the final failure ``try_number=3 last_try=3``.
    """
    ti = context.get("ti") or context.get("task_instance")
    dag_run = context.get("dag_run")
    error = context.get("exception") or context.get("reason")
    max_tries = _field(ti, "max_tries")  # Airflow's count of retries: the last try is number max_tries + 1
    return {
        "kind": kind,
        "at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "dag_id": _field(context.get("dag"), "dag_id") or _field(dag_run, "dag_id"),
        "run_id": _field(dag_run, "run_id") or context.get("run_id"),
        "task_id": _field(ti, "task_id"),
        "try_number": _field(ti, "try_number"),
        "last_try": None if max_tries is None else int(max_tries) + 1,
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
    """Notifier for ``on_failure_callback`` and ``on_retry_callback`` (sync) and deadline alerts (async).

    Args:
        kind: what happened, the first word of the alert line (``task_failed``, ``task_retry``,
            ``deadline_missed``).
        conn_id: the Airflow connection of the webhook; without such a connection only the line is written.
    """

    def __init__(self, kind: str = TASK_FAILED, conn_id: str = ALERT_CONN_ID, **kwargs: Any) -> None:
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
        # urllib blocks; in the triggerer's event loop the post runs in a worker thread so other triggers go on
        await asyncio.to_thread(post_alert, facts, conn)


class NotifierConfigError(ValueError):
    """``$RECSYS_NOTIFIERS`` is not a valid notifier list; raised at DAG parse time, so the DAG fails to import."""


def _notifier_error(index: int | None, problem: str) -> NotifierConfigError:
    where = f"{NOTIFIERS_VAR}" if index is None else f"{NOTIFIERS_VAR}[{index}]"
    return NotifierConfigError(
        f"{where}: {problem}; expected JSON like "
        '[{"class": "airflow.providers.smtp.notifications.smtp.SmtpNotifier", "kwargs": {"to": "ops@example.com"}, '
        '"kinds": ["task_failed"]}]')


def _notifier_class(index: int, dotted: Any) -> type[BaseNotifier]:
    if not isinstance(dotted, str) or "." not in dotted:
        raise _notifier_error(index, f'"class" must be a dotted path module.Class, got {dotted!r}')
    module_name, _, class_name = dotted.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as err:
        raise _notifier_error(index, f"cannot import {dotted}: {err}") from err
    if not (isinstance(cls, type) and issubclass(cls, BaseNotifier)):
        raise _notifier_error(index, f"{dotted} is not an Airflow notifier (a subclass of BaseNotifier)")
    return cls


def configured_notifiers(kind: str, value: str | None = None) -> list[BaseNotifier]:
    """The notifiers ``$RECSYS_NOTIFIERS`` lists for alerts of ``kind``, each a fresh instance.

    The variable holds a JSON list of ``{"class": "dotted.path.Notifier", "kwargs": {...}, "kinds": [...]}``;
    ``kwargs`` (default none) are passed to the class, ``kinds`` (default all) restricts it to some alert
    kinds, e.g. ``["task_failed"]`` to mail on a final failure only. Read at DAG parse time from the
    environment only (no Variable, connection or file), so a notifier needing a secret takes the id of a
    connection in its kwargs, as Airflow's own do.

    Args:
        kind: the alert kind the callback list is for (``task_failed``, ``task_retry``).
        value: the list's JSON; default ``$RECSYS_NOTIFIERS`` (unset or blank: no notifiers).

    Raises:
        NotifierConfigError: the JSON is invalid, an entry is malformed, its class cannot be imported or is no
            notifier, or its kwargs are refused; the message names the variable and the entry.
    """
    value = os.environ.get(NOTIFIERS_VAR, "") if value is None else value
    if not value.strip():
        return []
    try:
        entries = json.loads(value)
    except json.JSONDecodeError as err:
        raise _notifier_error(None, f"invalid JSON ({err})") from err
    if not isinstance(entries, list):
        raise _notifier_error(None, f"must be a JSON list, got {type(entries).__name__}")
    notifiers = []
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict) or set(entry) - {"class", "kwargs", "kinds"}:
            raise _notifier_error(index, f'must be an object with "class" and optional "kwargs", "kinds"; got {entry!r}')
        kwargs, kinds = entry.get("kwargs", {}), entry.get("kinds")
        if not isinstance(kwargs, dict):
            raise _notifier_error(index, f'"kwargs" must be an object, got {kwargs!r}')
        if kinds is not None and not (isinstance(kinds, list) and all(k in CALLBACK_KINDS for k in kinds)):
            raise _notifier_error(index, f'"kinds" must be a list of {", ".join(CALLBACK_KINDS)}, got {kinds!r}')
        cls = _notifier_class(index, entry.get("class"))  # checked for every kind, so any mistake fails the import
        if kinds is not None and kind not in kinds:
            continue
        try:
            notifiers.append(cls(**kwargs))
        except (TypeError, ValueError) as err:
            raise _notifier_error(index, f"{entry['class']} refused its kwargs: {err}") from err
    return notifiers


def alert_callbacks(kind: str, conn_id: str = ALERT_CONN_ID) -> list[BaseNotifier]:
    """A task callback list: the alert line and webhook first, then the notifiers of ``$RECSYS_NOTIFIERS``.

    Airflow runs each callback of a list on its own and logs one that raises, so the alert line is written
    whatever the configured notifiers do.

    Args:
        kind: ``task_failed`` for ``on_failure_callback``, ``task_retry`` for ``on_retry_callback``.
        conn_id: the webhook's Airflow connection.
    """
    return [RecsysAlertNotifier(kind=kind, conn_id=conn_id), *configured_notifiers(kind)]
