"""The connection recsys_embeddings reaches jobs.embed as RECSYS_EMBED_URL and RECSYS_EMBED_KEY."""

from __future__ import annotations

import datetime as dt
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from recsys_airflow.launch import embedding_endpoint_env, launch_job

CONTEXT = {
    "logical_date": dt.datetime(2026, 3, 1, 3, tzinfo=dt.UTC), "params": {}, "run_id": "scheduled__x",
    "dag": SimpleNamespace(dag_id="recsys_nightly"),
}


def test_the_connection_becomes_the_jobs_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RECSYS_EMBED_URL", raising=False)
    monkeypatch.delenv("RECSYS_EMBED_KEY", raising=False)
    monkeypatch.delenv("AIRFLOW_CONN_RECSYS_EMBEDDINGS", raising=False)
    assert embedding_endpoint_env() == {}  # no connection: the worker's own environment, if any, applies

    monkeypatch.setenv("AIRFLOW_CONN_RECSYS_EMBEDDINGS", json.dumps(
        {"conn_type": "http", "host": "http://gpu-box:8000/v1", "password": "s3cret"}))
    assert embedding_endpoint_env() == {"RECSYS_EMBED_URL": "http://gpu-box:8000/v1", "RECSYS_EMBED_KEY": "s3cret"}
    # a job sees them; a stand-in interpreter prints what it got as its result line
    script = tmp_path / "python"
    script.write_text('#!/bin/sh\nprintf \'RECSYS_RESULT {"url": "%s", "key": "%s"}\\n\' '
                      '"$RECSYS_EMBED_URL" "$RECSYS_EMBED_KEY"\n')
    script.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(script))
    assert launch_job("embed", CONTEXT, env=embedding_endpoint_env()) == {
        "url": "http://gpu-box:8000/v1", "key": "s3cret"}

    monkeypatch.setenv("AIRFLOW_CONN_RECSYS_EMBEDDINGS", json.dumps(
        {"conn_type": "http", "host": "gpu-box", "schema": "https", "port": 8443}))
    assert embedding_endpoint_env() == {"RECSYS_EMBED_URL": "https://gpu-box:8443"}
    monkeypatch.setenv("AIRFLOW_CONN_RECSYS_EMBEDDINGS", json.dumps({"conn_type": "http"}))
    with pytest.raises(ValueError, match="recsys_embeddings has no host"):
        embedding_endpoint_env()
