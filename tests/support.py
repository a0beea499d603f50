"""Helpers several test modules share (not fixtures): data builders, lake writers and independent expected values.

Test modules import from here (or get fixtures from conftest.py), never from one another.
"""

from __future__ import annotations

import calendar
import datetime as dt
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import scipy.sparse as sp

from recsys.core.columns import ITEM_ID, ITEM_IDX, SPLIT, TS, USER_ID, USER_IDX, WEIGHT
from recsys.core.config import REPO_ROOT, load_config
from recsys.core.lake import (
    EXAMPLES_SUMMARY_FILE,
    FINAL_MODEL_FILE,
    INTERACTIONS_DIR,
    ITEMS_FILE,
    METRICS_FILE,
    MODEL_FILE,
    PART_FILE,
    SOURCE_FILE,
    TRAIN_FACTS_FILE,
    USERS_FILE,
    Lake,
    write_json,
)
from recsys.core.matrices import MATRICES_FILE, Matrices, save_matrices

# the real datasets beside the repository (../shared/data), wherever the checkout lives
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
ML_LATEST_SMALL = SHARED_DATA / "ml-latest-small"


def epoch(text: str) -> int:
    """Epoch seconds of a UTC time, computed without the code under test."""
    return calendar.timegm(dt.datetime.fromisoformat(text).timetuple())


def landed_rows(lake: Lake) -> list[tuple]:
    """Every raw row of every partition, with its partition date, in partition order."""
    rows = []
    for ds in lake.dates("raw"):
        rows += [(ds, *row.values()) for row in pq.read_table(lake.path("raw", ds)).to_pylist()]
    return rows


def write_tables(lake: Lake, ds: str, train: sp.csr_matrix, valid: sp.csr_matrix | None = None,
                 test: sp.csr_matrix | None = None, *, user_ids: Sequence[str] | None = None,
                 item_ids: Sequence[str] | None = None, history: sp.csr_matrix | None = None,
                 seen: sp.csr_matrix | None = None, ts: dt.datetime | None = None) -> None:
    """A tables partition as the tables job leaves it: matrices.npz, the interactions with their split (all
    at ``ts``, default a year before ``ds``) and the users/items index snapshots.

    Missing splits are empty; ids default to ``u0, u1, ...`` and ``i0, i1, ...``.
    """
    empty = sp.csr_matrix(train.shape, dtype=np.float32)
    n_users, n_items = train.shape
    user_ids = [f"u{u}" for u in range(n_users)] if user_ids is None else list(user_ids)
    item_ids = [f"i{i}" for i in range(n_items)] if item_ids is None else list(item_ids)
    with lake.writing("tables", ds) as staged:
        save_matrices(staged / MATRICES_FILE, {"train": train, "valid": empty if valid is None else valid,
                                                "test": empty if test is None else test}, history=history, seen=seen)
        splits = {"train": train, "valid": valid, "test": test}
        coo = {name: sp.coo_matrix(matrix) for name, matrix in splits.items() if matrix is not None}
        when = ts or dt.datetime.fromisoformat(ds).replace(tzinfo=dt.UTC) - dt.timedelta(days=365)
        (staged / INTERACTIONS_DIR).mkdir()
        pd.DataFrame({
            USER_IDX: np.concatenate([c.row for c in coo.values()]).astype(np.int32),
            ITEM_IDX: np.concatenate([c.col for c in coo.values()]).astype(np.int32),
            WEIGHT: np.concatenate([c.data for c in coo.values()]).astype(np.float32),
            TS: pd.Series([when] * sum(c.nnz for c in coo.values()), dtype="datetime64[us, UTC]"),
            SPLIT: np.concatenate([[name] * c.nnz for name, c in coo.items()]).astype(str),
        }).to_parquet(staged / INTERACTIONS_DIR / PART_FILE)
        pd.DataFrame({USER_ID: user_ids, USER_IDX: np.arange(n_users, dtype=np.int32)}).to_parquet(staged / USERS_FILE)
        pd.DataFrame({ITEM_ID: item_ids, ITEM_IDX: np.arange(n_items, dtype=np.int32)}).to_parquet(staged / ITEMS_FILE)


def write_matrices(lake: Lake, ds: str, m: Matrices) -> None:
    """:func:`write_tables` of a :class:`Matrices` (its splits and ids)."""
    write_tables(lake, ds, m.train, m.valid, m.test, user_ids=m.user_ids, item_ids=m.item_ids)


N_BLOCKS, BLOCK_ITEMS, USERS_PER_BLOCK = 4, 10, 30


def planted_blocks(seed: int = 0) -> tuple[Matrices, pd.DataFrame]:
    """Users who each like one block of items; block 0 is by far the most popular.

    Each user has 5 train, 1 valid and 2 test items, all from their own block; popularity alone
    would recommend block 0 to everyone. Examples: every train positive plus two uniform negatives
    outside the user's train row per positive.
    """
    rng = np.random.default_rng(seed)
    n_items = N_BLOCKS * BLOCK_ITEMS
    sizes = [USERS_PER_BLOCK * 3] + [USERS_PER_BLOCK] * (N_BLOCKS - 1)
    splits: dict[str, list[tuple[int, int]]] = {"train": [], "valid": [], "test": []}
    user = 0
    for block, size in enumerate(sizes):
        for _ in range(size):
            items = block * BLOCK_ITEMS + rng.permutation(BLOCK_ITEMS)[:8]
            for split, chosen in (("train", items[:5]), ("valid", items[5:6]), ("test", items[6:])):
                splits[split] += [(user, int(i)) for i in chosen]
            user += 1
    shape = (user, n_items)
    mats = {
        name: sp.csr_matrix((np.ones(len(p), np.float32), tuple(np.array(p).T)), shape=shape)
        for name, p in splits.items()
    }
    matrices = Matrices(**mats, user_ids=np.array([f"u{u}" for u in range(user)], dtype=object),
                        item_ids=np.array([f"i{i}" for i in range(n_items)], dtype=object))
    pos = np.array(splits["train"])
    neg_users = np.repeat(pos[:, 0], 2)
    neg_items = rng.integers(0, n_items, len(neg_users))
    keep = np.asarray(matrices.train[neg_users, neg_items]).ravel() == 0
    examples = pd.concat([
        pd.DataFrame({"user_idx": pos[:, 0], "item_idx": pos[:, 1], "label": 1, "weight": 1.0, "source": "real_pos"}),
        pd.DataFrame({"user_idx": neg_users[keep], "item_idx": neg_items[keep], "label": 0, "weight": 1.0,
                      "source": "neg_uniform"}),
    ], ignore_index=True).astype({"user_idx": "int32", "item_idx": "int32", "label": "int8", "weight": "float32"})
    return matrices, examples


def evaluation(ndcg: float, popularity: float = 0.1) -> dict:
    """A metrics.json with the model's and popularity's ndcg@10 on all users (what the gate reads)."""
    return {"models": {"model": {"all": {"ndcg@10": ndcg}}, "popularity": {"all": {"ndcg@10": popularity}}}}


def registrable_lake(lake: Lake, ds: str, ndcg: float, final_fit: bool = False) -> None:
    """6 users x 5 items with int64 ids, an untrained recommender (and final fit) and an evaluation result:
    everything register reads for ``ds``."""
    from recsys.models.recommender import build_recommender, save_recommender

    train = sp.csr_matrix(np.array([[1, 1, 0, 0, 0], [1, 0, 1, 0, 0], [0, 1, 1, 0, 0],
                                    [0, 0, 0, 1, 1], [0, 0, 0, 1, 0], [0, 0, 0, 0, 0]], dtype=np.float32))
    test = sp.csr_matrix(np.array([[0, 0, 1, 0, 0], [0, 1, 0, 0, 0], [1, 0, 0, 0, 0],
                                   [0, 0, 1, 0, 0], [0, 0, 0, 0, 1], [0, 0, 0, 0, 0]], dtype=np.float32))
    write_tables(lake, ds, train, test=test, user_ids=[str(u) for u in (10, 20, 30, 40, 50, 60)],
                 item_ids=[str(i) for i in (100, 200, 300, 400, 500)])
    write_json(lake.path("raw") / SOURCE_FILE, {"user_id_type": "int64", "item_id_type": "int64"})
    models = lake.path("models", ds)
    models.mkdir(parents=True)
    config = {**load_config()["train"], "seed": 1}
    save_recommender(build_recommender(5, config), models / MODEL_FILE)
    runs = {"model": {"epochs": 3, "best_epoch": 2, "best_valid_ndcg@10": 0.25, "examples": 9}}
    if final_fit:
        save_recommender(build_recommender(5, {**config, "seed": 2}), models / FINAL_MODEL_FILE)
        runs["model_final"] = {"epochs": 2, "best_epoch": 2, "best_valid_ndcg@10": None, "examples": 14}
    write_json(models / TRAIN_FACTS_FILE, {"models": runs, "examples_by_source": {"real_pos": 9, "gan_pos": 2}})
    write_json(lake.path("examples", ds) / EXAMPLES_SUMMARY_FILE,
               {"sources": {"real_pos": {"rows": 9, "weight_sum": 9.0}}})
    write_json(lake.path("eval", ds) / METRICS_FILE, evaluation(ndcg))




# --- Airflow processes for the tests that start them (e2e): an isolated home, loopback only, always stopped ---

def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (bound to port 0, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def airflow_env(home: Path, port: int, **extra: str) -> dict[str, str]:
    """The environment of an Airflow on its own home under ``home``: SQLite metadata DB, this repository's DAGs and
    plugins, the API server on 127.0.0.1:``port`` with a fresh JWT secret, the lake at ``home/lake``; ``extra`` wins."""
    return {
        **os.environ,
        "RECSYS_HOME": str(home), "RECSYS_LAKE": str(home / "lake"), "AIRFLOW_HOME": str(home / "airflow"),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow/airflow.db",
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO_ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO_ROOT / "plugins"), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}", "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
        "AIRFLOW__CORE__AUTH_MANAGER": "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
        "PYTHONPATH": f"{REPO_ROOT}:{REPO_ROOT / 'plugins'}",
        **extra,
    }


def airflow_cli(env: Mapping[str, str], *args: str, timeout: float = 600) -> str:
    """Run ``airflow <args>`` of this venv to completion; its stdout, or an AssertionError with its output."""
    done = subprocess.run([str(Path(sys.executable).parent / "airflow"), *args], cwd=REPO_ROOT, env=dict(env),
                          capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"airflow {' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def start_airflow(env: Mapping[str, str], commands: Mapping[str, Sequence[str]], log_dir: Path,
                  ) -> tuple[dict[str, subprocess.Popen], dict[str, Path]]:
    """Start ``airflow <args>`` per name, each in its own session (so :func:`stop_processes` stops it and its
    children only), its output in ``log_dir/<name>.log``. Returns the processes and the log files by name."""
    procs: dict[str, subprocess.Popen] = {}
    logs: dict[str, Path] = {}
    try:
        for name, args in commands.items():
            logs[name] = log_dir / f"{name}.log"
            with logs[name].open("w") as log:
                procs[name] = subprocess.Popen([str(Path(sys.executable).parent / "airflow"), *args], cwd=REPO_ROOT,
                                               env=dict(env), stdout=log, stderr=subprocess.STDOUT,
                                               start_new_session=True)
    except BaseException:
        stop_processes(procs)
        raise
    return procs, logs


def stop_processes(procs: Mapping[str, subprocess.Popen], grace: float = 30) -> None:
    """SIGTERM each process's group (one of ours: started with start_new_session), SIGKILL what outlives ``grace``."""
    for proc in procs.values():
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
    for proc in procs.values():
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def wait_for(done: Callable[[], bool], seconds: float, what: str, logs: Mapping[str, Path], every: float = 2) -> None:
    """Poll ``done`` until it is true; after ``seconds``, an AssertionError with the tail of each log."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if done():
            return
        time.sleep(every)
    tails = "\n".join(f"--- {name}\n{path.read_text()[-3000:]}" for name, path in logs.items())
    raise AssertionError(f"timed out waiting for {what}\n{tails}")


class Listener:
    """A StatsD server stand-in: a UDP socket on 127.0.0.1 that collects the lines it receives."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.port = sock.getsockname()[1]
        self.sizes: list[int] = []  # bytes of each datagram received

    def lines(self, expected: int, timeout: float = 10.0) -> list[str]:
        """The lines of the datagrams received, waiting until ``expected`` lines came or ``timeout`` passed."""
        lines: list[str] = []
        deadline = time.monotonic() + timeout
        while len(lines) < expected and time.monotonic() < deadline:
            self.sock.settimeout(max(deadline - time.monotonic(), 0.01))
            try:
                data = self.sock.recv(65535)
            except TimeoutError:
                break
            self.sizes.append(len(data))
            lines += data.decode().split("\n")
        return lines

    def quiet(self, seconds: float = 0.3) -> bool:
        """True when nothing arrives for ``seconds``."""
        self.sock.settimeout(seconds)
        try:
            self.sock.recv(65535)
        except TimeoutError:
            return True
        return False


def gauges_of(lines: list[str]) -> dict[str, float]:
    """Parse ``name:value|g`` lines as a StatsD server does: a signed value changes the gauge, else sets it."""
    values: dict[str, float] = {}
    for line in lines:
        name, rest = line.split(":", 1)
        text, kind = rest.split("|")
        assert kind == "g", line
        values[name] = values.get(name, 0.0) + float(text) if text[0] in "+-" else float(text)
    return values
