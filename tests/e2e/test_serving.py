"""Serving the registered champion: pyfunc in a fresh process and `mlflow models serve` over HTTP."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from recsys.core.lake import Lake
from tests.support import free_port, registrable_lake

pytestmark = [pytest.mark.tf, pytest.mark.e2e]
NAME = "recsys-serving-test"
DS = "2026-02-01"
# the tiny lake's window (train + test) seen by hand: user -> items; popularity of every item over all users
SEEN = {10: {100, 200, 300}, 40: {300, 400, 500}}
CATALOGUE = {100, 200, 300, 400, 500}
# item 300 has 4 users, 100 and 200 have 3 each, 400 and 500 have 2 each
POPULAR_FIRST, POPULAR_NEXT = 300, {100, 200}
UNKNOWN = 999


@pytest.fixture
def champion(lake: Lake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """A tiny lake registered once, so version 1 is `champion`; returns the environment to serve it from."""
    from jobs import register

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    monkeypatch.setenv("RECSYS_MLFLOW_ARTIFACTS", str(tmp_path / "artifacts"))
    registrable_lake(lake, DS, ndcg=0.5)
    result = register.main(["--ds", DS, "--lake", str(lake.root), "--set", f"register.model_name={NAME}"])
    assert result["champion"] == "1"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # the model must bring its own code
    env.update({"TF_CPP_MIN_LOG_LEVEL": "2", "TF_NUM_INTEROP_THREADS": "1", "TF_NUM_INTRAOP_THREADS": "1"})
    return env


def _check_recommendations(rows: list[dict], k: int = 2) -> None:
    """Known users get k unseen items ranked 1..k; the unknown user gets the most popular items."""
    by_user: dict[int, list[dict]] = {}
    for row in rows:
        by_user.setdefault(int(row["user_id"]), []).append(row)
    assert set(by_user) == {10, 40, UNKNOWN}
    for user, recs in by_user.items():
        assert [int(r["rank"]) for r in recs] == list(range(1, k + 1))
        items = [int(r["item_id"]) for r in recs]
        if user == UNKNOWN:
            assert items[0] == POPULAR_FIRST and items[1] in POPULAR_NEXT
        else:
            # the catalogue is 100..500 and users 10 and 40 have seen three items each: k=2 leaves exactly the rest
            assert set(items) == CATALOGUE - SEEN[user]


def test_pyfunc_round_trip_in_a_fresh_process(champion: dict[str, str], tmp_path: Path) -> None:
    script = textwrap.dedent(f"""
        import json, mlflow, pandas as pd
        model = mlflow.pyfunc.load_model("models:/{NAME}@champion")
        out = model.predict(pd.DataFrame({{"user_id": [10, 40, {UNKNOWN}]}}), params={{"k": 2}})
        print("ROWS " + out.to_json(orient="records"))
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=champion, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    line = next(x for x in done.stdout.splitlines() if x.startswith("ROWS "))
    rows = json.loads(line[5:])
    _check_recommendations(rows, k=2)


def _post(url: str, payload: dict) -> dict:
    request = urllib.request.Request(url, data=json.dumps(payload).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def test_mlflow_models_serve_answers_invocations_over_http(
    champion: dict[str, str], tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    port = free_port()
    mlflow_bin = Path(sys.executable).with_name("mlflow")
    log = (tmp_path / "serve.log").open("w")
    server = subprocess.Popen(
        [str(mlflow_bin), "models", "serve", "-m", f"models:/{NAME}@champion", "--env-manager", "local",
         "-h", "127.0.0.1", "-p", str(port), "-w", "1"],
        cwd=tmp_path, env=champion, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )

    def stop() -> None:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)  # the server's own session: it and its workers only
            try:
                server.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait()
        log.close()

    request.addfinalizer(stop)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while True:
        assert server.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
        try:
            with urllib.request.urlopen(f"{base}/ping", timeout=5) as response:
                if response.status == 200:
                    break
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        assert time.monotonic() < deadline, "server did not answer /ping in 300 s:\n" + (
            tmp_path / "serve.log").read_text()[-3000:]
        time.sleep(1)

    answer = _post(f"{base}/invocations", {
        "dataframe_split": {"columns": ["user_id"], "data": [[10], [40], [UNKNOWN]]}, "params": {"k": 2},
    })
    _check_recommendations(answer["predictions"], k=2)
