"""The evaluate job: every model on real held-out test data, both segments, and the verdict."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import scipy.sparse as sp

from recsys.core.lake import TRAIN_FACTS_FILE, Lake
from recsys.core.matrices import Matrices
from tests.support import planted_blocks, write_matrices

DS = "2026-01-31"
SPARSE = range(100, 120)  # users left with 2 train items: exactly the sparse segment at share 20/170


def sparse_planted() -> Matrices:
    """Planted blocks where 20 users keep only their first two train items; 10 users lose their test."""
    m, _ = planted_blocks()
    train = m.train.tolil()
    for u in SPARSE:
        for i in train.rows[u][2:]:
            train[u, i] = 0
    test = m.test.tolil()
    for u in range(170, 180):
        for i in list(test.rows[u]):
            test[u, i] = 0
    m.train, m.test = sp.csr_matrix(train), sp.csr_matrix(test)
    m.train.eliminate_zeros()
    m.test.eliminate_zeros()
    return m


def loop_ndcg(scores: np.ndarray, m: Matrices, users: list[int], k: int) -> float:
    """NDCG@k the slow, obvious way: one user at a time, train and valid items excluded."""
    seen = (m.train + m.valid).toarray() > 0
    test = m.test.toarray() > 0
    total = 0.0
    for u in users:
        ranked = [i for i in np.argsort(-scores[u], kind="stable") if not seen[u, i]][:k]
        dcg = sum(1 / math.log2(r + 2) for r, i in enumerate(ranked) if test[u, i])
        ideal = sum(1 / math.log2(r + 2) for r in range(min(k, test[u].sum())))
        total += dcg / ideal
    return total / len(users)


@pytest.mark.tf
def test_evaluate_scores_all_models_on_test_users(lake: Lake) -> None:
    import keras

    from jobs.evaluate import main
    from recsys.models.recommender import build_recommender

    m = sparse_planted()
    write_matrices(lake, DS, m)
    config = {"hidden": 8, "dropout": 0.0, "l2": 0.0}
    models = {name: build_recommender(m.n_items, {**config, "seed": seed}) for seed, name in ((1, "model"),
                                                                                          (2, "model_noaug"))}
    with lake.writing("models", DS) as staged:
        for name, model in models.items():
            model.save(staged / f"{name}.keras")
        # train chooses EASE's lambda once a night; evaluate's baseline takes it from train.json
        # ... and the items its path covers
        (staged / TRAIN_FACTS_FILE).write_text(json.dumps({"ease_lambda": 200.0, "ease_validation": {"200.0": 0.5},
                                                           "ease_max_items": 39}))

    result = main(["--ds", DS, "--lake", str(lake.root), "--set", "evaluate.sparse_share=0.1176471"])
    metrics = json.loads((lake.path("eval", DS) / "metrics.json").read_text())
    assert set(metrics["models"]) == {"model", "model_noaug", "popularity", "itemknn", "ease"}
    assert metrics["ease_lambda"] == 200.0 and metrics["ease_validation"] == {"200.0": 0.5}
    assert metrics["ease_items"] == 39  # of the 40 items with a train interaction

    users = list(range(170))
    history = (m.train + m.valid).toarray()
    popularity = np.tile((m.train.toarray() > 0).sum(axis=0).astype(float), (m.n_users, 1))
    expected = {
        "popularity": popularity,
        "model": keras.ops.convert_to_numpy(models["model"](history)),
        "model_noaug": keras.ops.convert_to_numpy(models["model_noaug"](history)),
    }
    for name, scores in expected.items():
        got = metrics["models"][name]
        assert got["all"]["users"] == 170 and got["sparse"]["users"] == 20
        assert got["all"]["ndcg@10"] == pytest.approx(loop_ndcg(scores, m, users, 10), abs=1e-6), name
        assert got["sparse"]["ndcg@20"] == pytest.approx(loop_ndcg(scores, m, list(SPARSE), 20), abs=1e-6), name
        assert {"recall@10", "precision@20", "map@10", "hitrate@20", "coverage"} <= set(got["all"])
    assert result["popularity_ndcg@10"] == pytest.approx(loop_ndcg(popularity, m, users, 10), abs=1e-6)
    # the planted block structure is what item-item models pick up and popularity cannot
    assert result["ease_ndcg@10"] > result["popularity_ndcg@10"] + 0.2
    assert result["itemknn_ndcg@10"] > result["popularity_ndcg@10"] + 0.2

    aug = metrics["augmentation"]
    a, n = metrics["models"]["model"], metrics["models"]["model_noaug"]
    assert aug["lift_all"] == pytest.approx(a["all"]["ndcg@10"] / n["all"]["ndcg@10"])
    assert aug["lift_sparse"] == pytest.approx(a["sparse"]["ndcg@10"] / n["sparse"]["ndcg@10"])
    assert result["helped"] == aug["helped"]
    for segment in ("all", "sparse"):  # the bootstrap's wiring; lift_interval itself is tested below
        assert aug[f"lift_{segment}_low"] <= aug[f"lift_{segment}_high"]
    assert "95% interval" in aug["verdict"]

    # evaluate.max_users: every model judged on the same seeded sample of the test users
    from recsys.core.config import load_config
    from recsys.evaluation.metrics import target_users

    main(["--ds", DS, "--lake", str(lake.root), "--set", "evaluate.max_users=50"])
    sampled = json.loads((lake.path("eval", DS) / "metrics.json").read_text())["models"]
    sample = target_users(m.test, 50, int(load_config()["seed"])).tolist()
    assert all(sampled[name]["all"]["users"] == 50 for name in sampled)
    assert sampled["popularity"]["all"]["ndcg@10"] == pytest.approx(loop_ndcg(popularity, m, sample, 10), abs=1e-6)
    assert sampled["popularity"]["all"]["ndcg@10"] != pytest.approx(metrics["models"]["popularity"]["all"]["ndcg@10"])


def test_held_out_sample_keeps_the_sampled_users_rows() -> None:
    from recsys.evaluation.protocol import HeldOut

    m = sparse_planted()
    everyone, sample = HeldOut.of(m), HeldOut.of(m, 40, 3)
    assert len(everyone.users) == 170 and len(sample.users) == 40
    positions = np.searchsorted(everyone.users, sample.users)
    assert everyone.users[positions].tolist() == sample.users.tolist()
    for name in ("history", "exclude", "test"):
        assert (getattr(everyone, name)[positions] != getattr(sample, name)).nnz == 0, name
    assert HeldOut.of(m, 40, 3).users.tolist() == sample.users.tolist()


def test_sparse_segment_takes_shortest_histories() -> None:
    from recsys.evaluation.protocol import sparse_segment

    train = sp.csr_matrix(np.array([[1, 1, 1], [1, 0, 0], [1, 1, 0], [0, 0, 1], [1, 1, 1]], np.float32))
    users = np.array([0, 1, 2, 3, 4])
    assert sparse_segment(train, users, 0.4).tolist() == [1, 3]
    assert sparse_segment(train, users[[0, 2, 4]], 0.34).tolist() == [1]  # positions, not user ids
    with pytest.raises(ValueError, match="sparse_share"):
        sparse_segment(train, users, 0.0)


@pytest.mark.parametrize(
    ("aug", "noaug", "helped", "lead"),
    [
        # without intervals only the point estimates speak, segment by segment
        ((0.30, 0.20), (0.30, 0.10), True,
         "Augmentation made no difference on all users (1.000×, no interval) and helped on the sparse segment "
         "(2.000×, no interval)."),
        ((0.31, 0.10), (0.30, 0.12), False,
         "Augmentation helped on all users (1.033×, no interval) and hurt on the sparse segment (0.833×, no interval)."),
        ((0.30, 0.10), (0.30, 0.10), False,
         "Augmentation made no difference on all users (1.000×, no interval) and on the sparse segment (1.000×, "
         "no interval)."),
    ],
)
def test_augmentation_verdict(aug: tuple, noaug: tuple, helped: bool, lead: str) -> None:
    from recsys.evaluation.lift import augmentation_verdict

    def seg(v: tuple) -> dict:
        return {"all": {"ndcg@10": v[0]}, "sparse": {"ndcg@10": v[1]}}

    got = augmentation_verdict(seg(aug), seg(noaug), "ndcg@10")
    assert got["helped"] is helped
    assert got["verdict"].startswith(lead)
    assert got["lift_all"] == pytest.approx(aug[0] / noaug[0])
    assert got["lift_sparse"] == pytest.approx(aug[1] / noaug[1])


def test_augmentation_verdict_without_reference() -> None:
    from recsys.evaluation.lift import augmentation_verdict

    zero = {"all": {"ndcg@10": 0.0}, "sparse": {"ndcg@10": 0.0}}
    got = augmentation_verdict({"all": {"ndcg@10": 0.1}, "sparse": {"ndcg@10": 0.0}}, zero, "ndcg@10")
    assert got["lift_all"] is None and got["helped"] is True


def test_lift_interval_is_a_paired_bootstrap_of_the_ratio_of_means() -> None:
    from recsys.evaluation.lift import lift_interval

    rng = np.random.default_rng(0)
    ablation = rng.random(400)
    # a constant ratio survives every resample: the interval is that ratio
    low, high = lift_interval(1.2 * ablation, ablation, seed=1)
    assert low == pytest.approx(1.2) and high == pytest.approx(1.2)
    # independent noise of the same mean: the interval contains 1 and matches the bootstrap done by hand
    augmented = rng.permutation(ablation)
    low, high = lift_interval(augmented, ablation, seed=1, rounds=200)
    draws = np.random.default_rng(1).integers(0, 400, size=(200, 400))
    by_hand = np.percentile(augmented[draws].sum(axis=1) / ablation[draws].sum(axis=1), [2.5, 97.5])
    assert (low, high) == pytest.approx(tuple(by_hand))
    assert low < 1.0 < high and high - low > 0.05
    assert lift_interval(augmented, np.zeros(400), seed=1) is None
    with pytest.raises(ValueError, match="400 augmented values vs 3"):
        lift_interval(augmented, ablation[:3], seed=1)


def test_verdict_says_whether_each_lift_is_beyond_the_noise() -> None:
    from recsys.evaluation.lift import augmentation_verdict

    seg = {"all": {"ndcg@10": 0.33}, "sparse": {"ndcg@10": 0.12}}
    ref = {"all": {"ndcg@10": 0.30}, "sparse": {"ndcg@10": 0.10}}
    got = augmentation_verdict(seg, ref, "ndcg@10", {"all": (1.04, 1.16), "sparse": (0.91, 1.52)})
    assert got["helped"] is True
    assert got["lift_sparse_low"] == 0.91 and got["lift_all_high"] == 1.16
    assert got["verdict"] == (
        "Augmentation helped on all users (1.100×, 95% interval 1.040–1.160×, above 1) and made no clear difference "
        "on the sparse segment (1.200×, 95% interval 0.910–1.520×, contains 1: within the noise). "
        "ndcg@10 0.3300 with it vs 0.3000 without on all users, 0.1200 vs 0.1000 on the sparse segment.")
