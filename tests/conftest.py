"""Shared fixtures: an isolated lake per test and one local Spark session for the whole run."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from jobs.common.lake import Lake


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
    import os

    os.environ.setdefault("SPARK_SHUFFLE_PARTITIONS", "1")
    os.environ.setdefault("SPARK_MASTER", "local[1]")
    os.environ.setdefault("SPARK_DRIVER_MEMORY", "1g")
    from jobs.common.spark import spark_session

    session = spark_session("recsys-tests")
    yield session
    session.stop()
