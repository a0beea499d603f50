"""register and publish on a tiny lake against a real MLflow (SQLite): versions, aliases, gate, recs contract."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from recsys.core.config import load_config
from recsys.core.lake import Lake, read_json, write_json
from tests.support import evaluation, registrable_lake, write_tables

pytestmark = pytest.mark.tf
DS = "2026-02-01"
NAME = "recsys-test"


@pytest.fixture
def mlflow_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    monkeypatch.setenv("RECSYS_MLFLOW_ARTIFACTS", str(tmp_path / "artifacts"))
    return tmp_path


def _register(lake: Lake, *flags: str) -> dict:
    from jobs import register

    return register.main(["--ds", DS, "--lake", str(lake.root), "--set", f"register.model_name={NAME}", *flags])


def _report(lake: Lake) -> dict:
    from jobs import report

    return report.main(["--ds", DS, "--lake", str(lake.root)])


def test_register_is_idempotent_and_the_gate_refuses_a_worse_challenger(lake: Lake, mlflow_home: Path) -> None:
    from mlflow import MlflowClient

    registrable_lake(lake, DS, ndcg=0.5)
    first = _register(lake)
    assert (first["version"], first["champion"], first["reused"]) == ("1", "1", False)
    assert _register(lake)["reused"] is True  # same training: no second version

    # a forced re-registration claiming a much worse evaluation must not take the champion alias
    write_json(lake.path("eval", DS) / "metrics.json", evaluation(0.0))
    third = _register(lake, "--set", "register.force=true")
    client = MlflowClient()
    assert third["version"] == "2"
    assert str(client.get_model_version_by_alias(NAME, "champion").version) == "1"
    assert str(client.get_model_version_by_alias(NAME, "challenger").version) == "2"
    assert client.get_model_version(NAME, "2").tags["validation_status"] == "rejected"
    gate = read_json(lake.path("registry", DS) / "registration.json")["gate"]
    assert gate["promoted"] is False and gate["champion_before"] > 0.0
    assert _report(lake)["run_id"] == third["run_id"]
    page = (lake.path("reports", DS) / "report.html").read_text()
    assert page.count("NOT promoted") == 1 and "No recommendations published for this date." in page


def test_the_first_model_is_champion_only_if_it_beats_popularity(lake: Lake, mlflow_home: Path) -> None:
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from jobs import publish

    registrable_lake(lake, DS, ndcg=0.05)
    write_json(lake.path("eval", DS) / "metrics.json", evaluation(0.05, popularity=0.2))
    first = _register(lake)
    assert (first["version"], first["champion"]) == ("1", None)
    client = MlflowClient()
    assert str(client.get_model_version_by_alias(NAME, "challenger").version) == "1"
    with pytest.raises(MlflowException):
        client.get_model_version_by_alias(NAME, "champion")
    gate = read_json(lake.path("registry", DS) / "registration.json")["gate"]
    assert "does not beat the popularity baseline 0.2000" in gate["reason"]
    with pytest.raises(RuntimeError, match="no champion"):
        publish.main(["--ds", DS, "--lake", str(lake.root), "--set", f"register.model_name={NAME}"])
    assert not lake.path("recs", DS).exists()


def test_publish_writes_the_champions_top_k_with_original_id_types(lake: Lake, mlflow_home: Path) -> None:
    from jobs import publish

    registrable_lake(lake, DS, ndcg=0.5)
    _register(lake)
    result = publish.main(["--ds", DS, "--lake", str(lake.root), "--set", f"register.model_name={NAME}",
                           "--set", "publish.k=2"])
    recs = pd.read_parquet(lake.path("recs", DS) / "recs.parquet")
    assert result["users"] == 5  # user 60 has no interaction in the window
    assert recs["user_id"].dtype == np.int64 and recs["item_id"].dtype == np.int64
    assert sorted(recs["user_id"].unique()) == [10, 20, 30, 40, 50]
    seen = {(10, 100), (10, 200), (10, 300), (20, 100), (20, 300), (20, 200), (30, 200), (30, 300), (30, 100),
            (40, 400), (40, 500), (40, 300), (50, 400), (50, 500)}
    assert not seen & set(zip(recs["user_id"], recs["item_id"], strict=True))
    assert recs.groupby("user_id")["rank"].apply(list).map(lambda r: r[: len(r)] == list(range(1, len(r) + 1))).all()
    # user 50 has seen 400 and 500, so exactly three items remain and k=2 of them are published
    assert (recs.groupby("user_id").size() == 2).all()
    _report(lake)
    page = (lake.path("reports", DS) / "report.html").read_text()
    assert "Recommendations from version 1: 5 of 5 users in the window served (100.0%), up to 2 each, 10 rows" in page


def test_register_serves_the_final_fit_and_records_the_held_outevaluation(lake: Lake, mlflow_home: Path) -> None:
    import mlflow
    from mlflow import MlflowClient

    from recsys.models.recommender import load_recommender

    registrable_lake(lake, DS, ndcg=0.5, final_fit=True)
    _register(lake)
    served = mlflow.pyfunc.load_model(f"models:/{NAME}@champion").unwrap_python_model().model
    final = load_recommender(lake.path("models", DS) / "model_final.keras")
    held_out = load_recommender(lake.path("models", DS) / "model.keras")
    kernel = [w for w in served.get_weights() if w.ndim == 2][0]
    np.testing.assert_array_equal(kernel, [w for w in final.get_weights() if w.ndim == 2][0])
    assert not np.array_equal(kernel, [w for w in held_out.get_weights() if w.ndim == 2][0])

    client = MlflowClient()
    version = client.get_model_version(NAME, "1")
    assert version.tags["final_fit"] == "true" and version.tags["test.ndcg_at_10"] == "0.5"
    run = client.get_run(version.run_id)
    assert run.data.metrics["models.model.all.ndcg_at_10"] == 0.5
    assert run.data.metrics["train.model_final.epochs"] == 2 and run.data.metrics["examples.gan_pos"] == 2
    assert run.data.tags["data_window"] == "2026-01-03..2026-02-01"  # the default 30 days up to the date
    assert "report.html" not in {Path(a.path).name for a in client.list_artifacts(version.run_id, "reports")}
    _report(lake)  # the report job logs the page to the date's run
    logged = {Path(a.path).name for a in client.list_artifacts(version.run_id, "reports")}
    assert {"_summary.json", "train.json", "metrics.json", "report.html"} <= logged
    assert [a.path for a in client.list_artifacts(version.run_id, "heldout")] == ["heldout/model.keras"]

    # the gate judges a final-fit champion through its held-out twin, not through weights fitted on test,
    # scored as evaluate scores a model: each test user's history without test pairs, their other items unranked
    from recsys.core.matrices import load_matrices
    from recsys.evaluation.gate import champion_metric
    from recsys.evaluation.protocol import HeldOut
    from recsys.serving.registry import current_champion

    m = load_matrices(lake, DS)
    champion, judged = current_champion(client, NAME)
    assert str(champion.version) == "1"
    np.testing.assert_array_equal([w for w in judged.get_weights() if w.ndim == 2][0],
                                  [w for w in held_out.get_weights() if w.ndim == 2][0])
    held_out_value = champion_metric(judged, HeldOut.of(m), "ndcg@10", [10, 20])
    rows = np.flatnonzero(np.diff(m.test.indptr))
    seen = (m.train + m.valid).toarray()[rows]
    scores = np.asarray(held_out(seen), dtype=np.float64)
    scores[seen > 0] = -np.inf
    order = np.argsort(-scores, axis=1, kind="stable")[:, :10]
    hits = np.asarray(m.test[rows].todense())[np.arange(len(rows))[:, None], order] > 0
    # one test item per user: NDCG@10 is 1 / log2(rank + 1) at its rank, 0 when missed
    expected = np.mean([1 / np.log2(np.flatnonzero(h)[0] + 2) if h.any() else 0.0 for h in hits])
    assert held_out_value == pytest.approx(expected)


def _night_of_curves(lake: Lake) -> dict:
    """A registrable lake with per-epoch curves in train.json (drawn at random), EASE and the augmentation lift
    in metrics.json, and a catalogue with its embeddings; returns the train.json written."""
    registrable_lake(lake, DS, ndcg=0.5, final_fit=True)
    rng = np.random.default_rng(11)
    runs = {name: {"loss": rng.uniform(0.1, 1.0, size=epochs).tolist(),
                   "valid_ndcg@10": rng.uniform(0.0, 0.5, size=epochs).tolist() if valid else [],
                   "epochs": epochs, "best_epoch": epochs}
            for name, epochs, valid in (("model", 4, True), ("model_noaug", 3, True), ("model_final", 2, False))}
    facts = {"models": runs, "examples_by_source": {"real_pos": 9}}
    write_json(lake.path("models", DS) / "train.json", facts)
    metrics = evaluation(0.5)
    metrics["models"]["ease"] = {"all": {"ndcg@10": 0.4}}
    metrics["augmentation"] = {"metric": "ndcg@10", "lift_all": 1.02, "lift_all_low": 0.8712, "lift_all_high": 1.4138,
                               "lift_sparse": 1.15, "lift_sparse_low": 0.9, "lift_sparse_high": 1.3}
    write_json(lake.path("eval", DS) / "metrics.json", metrics)
    for zone, name in (("catalogue", "catalogue.parquet"), ("embed", "embeddings.parquet")):
        lake.path(zone, DS).mkdir(parents=True)
        pd.DataFrame({"item_id": ["100", "200"], "text": ["a", "b"]}).to_parquet(lake.path(zone, DS) / name)
    return facts


def _digest(folder: Path) -> str:
    """sha256 over each file's relative path, size and sha256, computed here without the code under test."""
    import hashlib

    files = sorted(p for p in folder.rglob("*") if p.is_file())
    lines = "".join(f"{p.relative_to(folder).as_posix()}\0{p.stat().st_size}\0{hashlib.sha256(p.read_bytes()).hexdigest()}\n"
                    for p in files)
    return hashlib.sha256(lines.encode()).hexdigest()[:16]


def test_the_run_draws_each_models_epoch_curves_lists_its_partitions_and_the_version_tells_the_headline(
        lake: Lake, mlflow_home: Path) -> None:
    from mlflow import MlflowClient

    facts = _night_of_curves(lake)
    first = _register(lake)
    client = MlflowClient()
    for model, run in facts["models"].items():
        for key, curve in (("loss", run["loss"]), ("valid_ndcg_at_10", run["valid_ndcg@10"])):
            history = sorted(client.get_metric_history(first["run_id"], f"train.{model}.{key}"), key=lambda m: m.step)
            assert [m.step for m in history] == list(range(len(curve)))
            np.testing.assert_allclose([m.value for m in history], curve)
    assert client.get_metric_history(first["run_id"], "train.model_final.valid_ndcg_at_10") == []  # no validation

    inputs = {i.dataset.name: i for i in client.get_run(first["run_id"]).inputs.dataset_inputs}
    read = {f"{zone}/ds={DS}" for zone in ("tables", "examples", "catalogue", "embed")}  # no augment partition here
    assert set(inputs) == read
    for name, given in inputs.items():
        assert given.dataset.digest == _digest(lake.root / name)
        tags = {t.key: t.value for t in given.tags}
        assert tags["mlflow.data.context"] == "training"
        assert int(tags["files"]) == sum(1 for p in (lake.root / name).rglob("*") if p.is_file())
    assert "test" in {t.key: t.value for t in inputs[f"tables/ds={DS}"].tags}["splits"]

    gate = read_json(lake.path("registry", DS) / "registration.json")["gate"]
    text = client.get_model_version(NAME, first["version"]).description
    assert gate["reason"] in text and "no champion before" in text and "promoted to champion" in text
    assert f"model 0.5000; EASE 0.4000 (model {0.5 / 0.4:.3f}x)" in text
    assert "all users 1.020x (95% interval 0.871-1.414x)" in text and "sparse segment 1.150x (95% interval" in text

    # the catalogue changes: a new run lists a new catalogue digest, the same tables digest
    catalogue = lake.path("catalogue", DS) / "catalogue.parquet"
    pd.DataFrame({"item_id": ["100", "200", "300"], "text": ["a", "b", "c"]}).to_parquet(catalogue)
    second = _register(lake, "--set", "register.force=true")
    again = {i.dataset.name: i.dataset.digest for i in client.get_run(second["run_id"]).inputs.dataset_inputs}
    assert again[f"catalogue/ds={DS}"] == _digest(lake.path("catalogue", DS)) != inputs[f"catalogue/ds={DS}"].dataset.digest
    assert again[f"tables/ds={DS}"] == inputs[f"tables/ds={DS}"].dataset.digest
    gate = read_json(lake.path("registry", DS) / "registration.json")["gate"]
    text = client.get_model_version(NAME, second["version"]).description
    assert gate["reason"] in text and gate["champion_version_before"] == first["version"]
    assert f"champion (version {first['version']}) {gate['champion_before']:.4f}" in text


NEW_BELOW = 2  # publish.new_item_max_interactions of the recs_new check


def _window_lake(lake: Lake) -> None:
    """String ids as they came (leading zeros, mixed case), weights of several event kinds, a user below the
    k-core (no training row) and a user with only a low rating (seen, nothing the model reads)."""
    from recsys.models.recommender import build_recommender, save_recommender

    registrable_lake(lake, DS, ndcg=0.5)
    users = ["007", "7", "B00ABCDxyz", "b00abcdxyz", "u-below-core", "u-low-only"]
    items = ["i01", "i1", "I1", "i2", "i3", "i4", "i5", "i6"]
    n_users, n_items = len(users), len(items)
    rng = np.random.default_rng(4)
    weights = np.array([1.0, 1.5, 3.0, 5.0], dtype=np.float32)  # view, click, cart, purchase
    history = np.zeros((n_users, n_items), np.float32)
    for u in range(4):
        cols = rng.choice(n_items, size=3, replace=False)
        history[u, cols] = rng.choice(weights, size=3)
    history[4, [1, 2]] = [5.0, 1.0]
    seen = (history > 0).astype(np.float32)
    seen[0, 7] = seen[5, 3] = 1.0  # low ratings: seen, not in the model's input (nonpositive_weight 0)
    train = sp.csr_matrix(history * (np.arange(n_users) < 4)[:, None])
    write_tables(lake, DS, train, user_ids=users, item_ids=items, history=sp.csr_matrix(history),
                 seen=sp.csr_matrix(seen))
    write_json(lake.path("raw") / "_source.json", {"user_id_type": "string", "item_id_type": "string"})
    save_recommender(build_recommender(n_items, {**load_config()["train"], "seed": 5}),
                     lake.path("models", DS) / "model.keras")


def test_publish_serves_every_window_user_never_a_seen_item_with_ids_as_they_came_and_the_pyfunc_agrees(
        lake: Lake, mlflow_home: Path) -> None:
    import mlflow

    from jobs import publish
    from recsys.core.matrices import load_matrices

    _window_lake(lake)
    _register(lake, "--set", f"publish.new_item_max_interactions={NEW_BELOW}")
    result = publish.main(["--ds", DS, "--lake", str(lake.root), "--set", f"register.model_name={NAME}",
                           "--set", "publish.k=3", "--set", f"publish.new_item_max_interactions={NEW_BELOW}"])
    recs = pd.read_parquet(lake.path("recs", DS) / "recs.parquet")
    summary = read_json(lake.path("recs", DS) / "_summary.json")
    assert (result["users"], result["users_in_window"], summary["served_share"]) == (6, 6, 1.0)
    assert summary["users_from_popularity"] == 1  # u-low-only: nothing the model reads
    assert set(recs["user_id"]) == {"007", "7", "B00ABCDxyz", "b00abcdxyz", "u-below-core", "u-low-only"}
    assert (recs.groupby("user_id").size() == 3).all()
    m = load_matrices(lake, DS)
    seen = {(m.user_ids[u], m.item_ids[i]) for u, i in zip(*m.seen.nonzero(), strict=True)}
    assert not seen & set(zip(recs["user_id"], recs["item_id"], strict=True))
    assert ("007", "i6") in seen and ("u-low-only", "i2") in seen  # the low ratings are among them
    assert set(recs["item_id"]) <= set(m.item_ids)

    # the pyfunc ranks each user exactly as publish did, from the same weighted history
    model = mlflow.pyfunc.load_model(f"models:/{NAME}@champion")
    served = model.predict(pd.DataFrame({"user_id": list(recs["user_id"].unique())}), params={"k": 3})
    merged = recs.merge(served, on=["user_id", "rank"], suffixes=("", "_pyfunc"))
    assert len(merged) == len(recs)
    assert (merged["item_id"] == merged["item_id_pyfunc"]).all()
    np.testing.assert_allclose(merged["score"], merged["score_pyfunc"], rtol=1e-6)
    # ids are looked up as they came: the lowercase spelling of another user's id is that other user
    upper = model.predict(pd.DataFrame({"user_id": ["B00ABCDxyz"]}), params={"k": 3})
    lower = model.predict(pd.DataFrame({"user_id": ["b00abcdxyz"]}), params={"k": 3})
    assert list(upper["item_id"]) == list(recs[recs["user_id"] == "B00ABCDxyz"]["item_id"])
    assert list(lower["item_id"]) == list(recs[recs["user_id"] == "b00abcdxyz"]["item_id"])

    # recs_new/: the same users, only items with fewer than NEW_BELOW interactions in the window (every
    # interaction is a year old here), none they had; the pyfunc's new_only gives the same lists
    new_recs = pd.read_parquet(lake.path("recs_new", DS) / "recs.parquet")
    counts = np.diff(m.seen.tocsc().indptr)
    new_items = set(m.item_ids[counts < NEW_BELOW])
    assert 0 < len(new_items) < m.n_items and result["new_items"] == len(new_items)
    assert set(new_recs["item_id"]) <= new_items
    assert not seen & set(zip(new_recs["user_id"], new_recs["item_id"], strict=True))
    unseen_new = {u: len(new_items - {i for v, i in seen if v == u}) for u in recs["user_id"].unique()}
    assert new_recs.groupby("user_id").size().to_dict() == {u: min(3, n) for u, n in unseen_new.items() if n}
    served_new = model.predict(pd.DataFrame({"user_id": list(unseen_new)}), params={"k": 3, "new_only": True})
    pd.testing.assert_frame_equal(served_new.sort_values(["user_id", "rank"]).reset_index(drop=True),
                                  new_recs.sort_values(["user_id", "rank"]).reset_index(drop=True), rtol=1e-6)
