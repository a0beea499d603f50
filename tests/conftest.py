"""Shared fixtures: an isolated lake per test and one local Spark session for the whole run.

Helpers that are not fixtures (data builders, lake writers) live in tests/support.py; test modules import
from there and never from one another.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from recsys.core.lake import Lake
from tests.support import Listener

# TensorFlow reads these once, when it is first imported by a test: few threads on a shared CI machine
os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")
os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "2")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture
def lake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Lake:
    """An empty lake in a temporary folder, also exported as $RECSYS_LAKE for jobs run in-process."""
    root = tmp_path / "lake"
    root.mkdir()
    monkeypatch.setenv("RECSYS_LAKE", str(root))
    monkeypatch.setenv("RECSYS_HOME", str(tmp_path))
    return Lake(root)


@pytest.fixture(scope="session")
def spark() -> Iterator[object]:
    """One local Spark session with one shuffle partition, shared by all Spark tests."""
    os.environ.setdefault("SPARK_SHUFFLE_PARTITIONS", "1")
    os.environ.setdefault("SPARK_MASTER", "local[1]")
    os.environ.setdefault("SPARK_DRIVER_MEMORY", "1g")
    os.environ.setdefault("SPARK_UI_PORT", "0")  # the UI is on: any free port, so parallel runs never clash
    from recsys.core.spark import spark_session

    session = spark_session("recsys-tests")
    yield session
    session.stop()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip `gpu` tests unless TensorFlow sees a GPU (TensorFlow is imported only if such tests exist)."""
    gpu_items = [item for item in items if item.get_closest_marker("gpu")]
    if not gpu_items:
        return
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU"):
        return
    skip = pytest.mark.skip(reason="no GPU visible to TensorFlow")
    for item in gpu_items:
        item.add_marker(skip)


@pytest.fixture
def statsd() -> Iterator[Listener]:
    """A StatsD listener on a free UDP port of 127.0.0.1, closed after the test."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.bind(("127.0.0.1", 0))
        yield Listener(sock)
    finally:
        sock.close()
