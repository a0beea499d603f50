"""Airflow's ``hostname_callable`` for the loopback cluster: each Celery worker reports its own Celery hostname.

Both workers run on one machine, whose name alone would not tell which of them ran a task. Standard library
only: every Airflow process imports it.
"""

from __future__ import annotations

import os
import socket

WORKER_HOSTNAME_ENV = "RECSYS_WORKER_HOSTNAME"


def worker_hostname() -> str:
    """``$RECSYS_WORKER_HOSTNAME`` (set per Celery worker by tests/cluster/services.py), else the machine's name."""
    return os.environ.get(WORKER_HOSTNAME_ENV) or socket.getfqdn()
