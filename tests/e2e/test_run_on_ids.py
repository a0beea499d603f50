"""End to end through `make run-on`: a play-count TSV with ids that differ only by case or leading zeros.

The published recs are checked against the input file itself (bench.recs_contract reads it with pandas,
independently of the pipeline): every user served, K rows each, no pair the user had, ids as they came.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench.recs_contract import check

pytestmark = [pytest.mark.e2e, pytest.mark.slow]  # a whole run through Airflow: make test-slow
REPO = Path(__file__).resolve().parents[2]
SMALL = {  # short training: the point is the contract, not the model
    "RECSYS__AUGMENT__EPOCHS": "2", "RECSYS__AUGMENT__MIN_STEPS": "0", "RECSYS__AUGMENT__SYNTHETIC_USERS": "20",
    "RECSYS__TRAIN__EPOCHS": "10", "RECSYS__TRAIN__PATIENCE": "3", "RECSYS__PUBLISH__K": "10",
}


def write_plays(path: Path, rng: np.random.Generator) -> pd.DataFrame:
    """A listening log of 160 users x 80 artists in 4 taste groups, tab-separated, plays and ms times.

    User ids come in pairs that differ only by leading zeros ("008" and "8") or by case ("Ab1" and "aB1");
    artist ids in pairs that differ only by case ("B00ABCDxyz7" and "b00abcdxyz7").
    """
    users = [f"{u // 2:03d}" if u % 4 == 0 else f"{u // 2}" if u % 4 == 1 else f"Ab{u // 2}" if u % 4 == 2
             else f"aB{u // 2}" for u in range(160)]
    artists = [f"B00ABCDxyz{a // 2}" if a % 2 == 0 else f"b00abcdxyz{a // 2}" for a in range(80)]
    rows = []
    start_ms = 1_767_225_600_000  # 2026-01-01T00:00:00Z
    for u, user in enumerate(users):
        group = u % 4
        for a in rng.choice(np.arange(group * 20, group * 20 + 20), size=12, replace=False):
            rows.append((user, artists[a], int(rng.integers(0, 50)), start_ms + int(rng.integers(0, 10 * 86_400_000))))
    frame = pd.DataFrame(rows, columns=["listener", "artist", "plays", "time_ms"])
    frame.to_csv(path, sep="\t", index=False)
    return frame


def test_run_on_serves_every_user_with_ids_as_they_came(tmp_path: Path) -> None:
    src = tmp_path / "plays.tsv"
    plays = write_plays(src, np.random.default_rng(16))
    home = tmp_path / "home"
    env = {
        **os.environ, **SMALL, "RECSYS_HOME": str(home), "AIRFLOW_HOME": str(home / "airflow"),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow/airflow.db",
        "MLFLOW_TRACKING_URI": f"sqlite:///{home}/mlflow.db", "RECSYS_MLFLOW_ARTIFACTS": str(home / "mlartifacts"),
        "SPARK_DRIVER_MEMORY": "2g",
    }
    for name in ("RECSYS_LAKE", "MAKEFLAGS", "MFLAGS", "MAKELEVEL"):
        env.pop(name, None)
    done = subprocess.run(
        ["make", "run-on", "FORMAT=csv", f"SRC={src}", "SEP=tab", "NAME=plays",
         "MAPPING=user=listener,item=artist,value=plays:count,ts=time_ms"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=1500,
    )
    assert done.returncode == 0, f"make run-on failed:\n{done.stdout[-6000:]}\n{done.stderr[-6000:]}"
    lake = home / "datasets" / "plays" / "lake"
    source = json.loads((lake / "raw" / "_source.json").read_text())
    assert (source["value_kind"], source["ts_unit"], source["user_id_type"]) == ("count", "milliseconds", "string")
    recs_dirs = sorted((lake / "recs").glob("ds=*"))
    assert len(recs_dirs) == 1
    result = check(src, recs_dirs[0] / "recs.parquet", sep="\t", user_col="listener", item_col="artist", header=True,
                   k=10)
    assert result["problems"] == [], result
    assert result["served_users"] == plays["listener"].nunique() == 160
    recs = pd.read_parquet(recs_dirs[0] / "recs.parquet")
    assert {"008", "8", "Ab3", "aB3"} <= set(recs["user_id"])  # four users, none merged
    # rows with 0 plays are interactions too (label 0): never recommended back
    zero = plays[plays["plays"] == 0]
    assert not set(zip(zero["listener"], zero["artist"], strict=True)) & set(
        zip(recs["user_id"], recs["item_id"], strict=True))
