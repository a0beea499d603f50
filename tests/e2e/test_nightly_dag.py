"""End to end: the DAG through `airflow dags test` on small synthetic data, checked against the output contract."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recsys.core.lake import Lake, read_json
from recsys.core.matrices import load_matrices

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]
DS = "2026-01-10"
MODEL = "recsys-augment-e2e"
SMALL = {  # a small world that still has planted structure, and short training
    "RECSYS__GENERATE__USERS": "400", "RECSYS__GENERATE__ITEMS": "300", "RECSYS__GENERATE__EVENTS": "30000",
    "RECSYS__GENERATE__DAYS": "5", "RECSYS__GENERATE__BOT_EVENTS_PER_DAY": "1500",
    "RECSYS__AUGMENT__EPOCHS": "5", "RECSYS__AUGMENT__MIN_STEPS": "0", "RECSYS__AUGMENT__SYNTHETIC_USERS": "50", "RECSYS__TRAIN__EPOCHS": "30",
    "RECSYS__REGISTER__MODEL_NAME": MODEL,
}


def _popularity_ndcg10(lake: Lake) -> float:
    """NDCG@10 of most-popular-unseen on the test split, computed here independently of recsys.evaluation.metrics.

    Popularity is counted on train (every model is fitted on train); every item the user interacted with
    in the window (any label) other than their test targets is not ranked, as serving never recommends it.
    """
    m = load_matrices(lake, DS)
    seen = (m.seen - m.seen.multiply(m.test > 0)).tocsr()
    seen.eliminate_zeros()
    popularity = np.asarray((m.train > 0).sum(axis=0)).ravel()
    discounts = 1.0 / np.log2(np.arange(2, 12))
    values = []
    for u in np.flatnonzero(np.diff(m.test.indptr)):
        held = set(m.test.indices[m.test.indptr[u]:m.test.indptr[u + 1]])
        scores = popularity.astype(float)
        scores[seen.indices[seen.indptr[u]:seen.indptr[u + 1]]] = -np.inf
        top = np.argsort(-scores, kind="stable")[:10]
        dcg = sum(d for d, i in zip(discounts, top, strict=True) if i in held)
        values.append(dcg / discounts[: min(len(held), 10)].sum())
    return float(np.mean(values))


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict:
    home = tmp_path_factory.mktemp("recsys-home")
    env = {
        **os.environ, **SMALL,
        "RECSYS_HOME": str(home), "RECSYS_LAKE": str(home / "lake"), "AIRFLOW_HOME": str(home / "airflow"),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow/airflow.db",
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"), "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False", "MLFLOW_TRACKING_URI": f"sqlite:///{home}/mlflow.db",
        "RECSYS_MLFLOW_ARTIFACTS": str(home / "mlartifacts"), "PYTHONPATH": f"{REPO}:{REPO / 'plugins'}",
        "SPARK_DRIVER_MEMORY": "2g",
    }
    airflow = str(Path(sys.executable).parent / "airflow")
    (home / "airflow").mkdir()

    def run(*cmd: str) -> subprocess.CompletedProcess:
        done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=1200)
        assert done.returncode == 0, f"{' '.join(cmd)} failed:\n{done.stdout[-5000:]}\n{done.stderr[-5000:]}"
        return done

    run(sys.executable, "-m", "jobs.generate", "--end-date", DS)
    run(airflow, "db", "migrate")
    first = run(airflow, "dags", "test", "recsys_nightly", DS)
    second = run(airflow, "dags", "test", "recsys_nightly", DS)  # a rerun of the same date
    return {"home": home, "env": env, "lake": Lake(home / "lake"), "logs": (first, second)}


def test_recs_follow_the_output_contract(world: dict) -> None:
    lake: Lake = world["lake"]
    recs = pd.read_parquet(lake.path("recs", DS))
    assert list(recs.columns) == ["user_id", "item_id", "rank", "score"]
    assert recs["user_id"].map(type).eq(str).all() and recs["item_id"].map(type).eq(str).all()
    # the window's interactions as the lake holds them, read here, not from the tables: clean rows of any
    # label, and the valid rows of users judged bots (quarantined, never trained on, still theirs)
    clean = pd.concat([pd.read_parquet(lake.path("clean", d), columns=["user_id", "item_id", "label"])
                       for d in lake.dates("clean") if d <= DS])
    quarantine = pd.concat([pd.read_parquet(lake.path("quarantine", d), columns=["user_id", "item_id", "reason"])
                            for d in lake.dates("quarantine") if d <= DS])
    bots = quarantine[quarantine["reason"] == "bot"].assign(user_id=lambda f: f["user_id"].str.strip(" "),
                                                             item_id=lambda f: f["item_id"].str.strip(" "))
    assert (clean["label"] == 0).any(), "the synthetic data should hold low ratings (label 0)"
    assert len(bots), "the synthetic data should hold a bot"
    served = set(recs["user_id"])
    assert set(clean["user_id"]) <= served <= set(clean["user_id"]) | set(bots["user_id"]), \
        "every user with a clean interaction is served, and nobody without an interaction"
    per_user = recs[recs["user_id"].isin(set(clean["user_id"]))].groupby("user_id")["rank"].agg(["min", "max", "count"])
    assert (per_user["min"] == 1).all() and (per_user["max"] == 20).all() and (per_user["count"] == 20).all()
    seen = set(zip(clean["user_id"], clean["item_id"], strict=True)) | set(zip(bots["user_id"], bots["item_id"],
                                                                              strict=True))
    assert not seen & set(zip(recs["user_id"], recs["item_id"], strict=True)), "a recommended item was already seen"
    # items come from the events or the catalogue: the model also ranks catalogue items nobody has touched yet
    catalogue = pd.read_parquet(lake.path("catalogue", DS) / "catalogue.parquet", columns=["item_id"])
    assert set(recs["item_id"]) <= set(clean["item_id"]) | set(bots["item_id"]) | set(catalogue["item_id"])


def test_catalogue_items_without_events_are_indexed_encoded_augmented_and_served_as_new(world: dict) -> None:
    """The content path end to end: the synthetic catalogue holds items nobody has touched; they get indexes,
    text embeddings and content positives, and the model ranks them in recs_new/ under the same contract."""
    lake: Lake = world["lake"]
    catalogue = pd.read_parquet(lake.path("catalogue", DS) / "catalogue.parquet")
    m = load_matrices(lake, DS)
    untouched = np.flatnonzero(np.diff(m.seen.tocsc().indptr) == 0)
    assert len(untouched) and set(m.item_ids[untouched]) <= set(catalogue["item_id"])
    embedded = pd.read_parquet(lake.path("embed", DS) / "embeddings.parquet")
    assert set(embedded["item_id"]) == set(catalogue["item_id"])
    content = pd.read_parquet(lake.path("augment", DS) / "content_pos.parquet")
    assert set(untouched) & set(content["item_idx"]), "no content positive for an item without events"
    examples = pd.read_parquet(lake.path("examples", DS) / "examples.parquet", columns=["item_idx", "source"])
    assert (examples["source"] == "content_pos").any()
    recs_new = pd.read_parquet(lake.path("recs_new", DS) / "recs.parquet")
    recs = pd.read_parquet(lake.path("recs", DS) / "recs.parquet")
    assert list(recs_new.columns) == list(recs.columns)
    assert set(recs_new["user_id"]) == set(recs["user_id"])
    assert set(recs_new["item_id"]) & set(m.item_ids[untouched]), "recs_new never serves an untouched item"
    seen = {(m.user_ids[u], m.item_ids[i]) for u, i in zip(*m.seen.nonzero(), strict=True)}
    assert not seen & set(zip(recs_new["user_id"], recs_new["item_id"], strict=True))


def test_model_beats_popularity_on_held_out_interactions(world: dict) -> None:
    metrics = read_json(world["lake"].path("eval", DS) / "metrics.json")
    model = metrics["models"]["model"]["all"]["ndcg@10"]
    popularity = _popularity_ndcg10(world["lake"])
    assert popularity == pytest.approx(metrics["models"]["popularity"]["all"]["ndcg@10"], rel=1e-6)
    assert model > popularity * 1.1, f"model NDCG@10 {model:.4f} vs popularity {popularity:.4f}"


def test_registry_has_one_champion_version_after_a_rerun(world: dict) -> None:
    code = f"""
import json, mlflow, pandas as pd
from mlflow import MlflowClient
client = MlflowClient()
versions = client.search_model_versions("name='{MODEL}'")
champion = client.get_model_version_by_alias('{MODEL}', 'champion')
out = mlflow.pyfunc.load_model('models:/{MODEL}@champion').predict(
    pd.DataFrame({{'user_id': ['u1', 'no-such-user']}}), params={{'k': 5}})
print(json.dumps([len(versions), str(champion.version), sorted(out['user_id'].unique()), out.groupby('user_id').size().tolist()]))
"""
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=world["env"], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    n_versions, champion, users, sizes = json.loads(done.stdout.strip().splitlines()[-1])
    assert n_versions == 1 and champion == "1"
    assert "no-such-user" in users and sizes == [5, 5]
