"""The history autoencoder: losses, example arrangement, ranking quality, serving and saving."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from recsys.core.matrices import Matrices
from tests.support import planted_blocks

pytestmark = pytest.mark.tf

TEST_CONFIG = {
    "epochs": 40, "patience": 8, "batch_size": 32, "hidden": 16, "dropout": 0.2, "learning_rate": 0.01,
    "l2": 0.0, "loss": "multinomial", "seed": 7,
}


@pytest.fixture(scope="module")
def trained() -> tuple[object, dict, Matrices]:
    from recsys.models.recommender import fit_recommender

    matrices, examples = planted_blocks()
    model, history = fit_recommender(examples, matrices, TEST_CONFIG)
    return model, history, matrices


def test_weighted_bce_matches_hand_computation() -> None:
    from recsys.models.recommender import weighted_bce

    logits = np.array([[2.0, -1.0, 0.5]], np.float32)
    labels = np.array([[1.0, 0.0, 0.0]], np.float32)
    weights = np.array([[2.0, 1.0, 0.0]], np.float32)  # the third position is not an example
    sig = lambda z: 1 / (1 + math.exp(-z))  # noqa: E731
    expected = (2.0 * -math.log(sig(2.0)) + 1.0 * -math.log(1 - sig(-1.0))) / 3.0
    assert float(weighted_bce(labels, weights, logits)) == pytest.approx(expected, rel=1e-5)


def test_weighted_multinomial_matches_hand_computation() -> None:
    from recsys.models.recommender import weighted_multinomial

    logits = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]], np.float32)
    labels = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]], np.float32)
    weights = np.array([[1.0, 1.0, 0.0], [0.0, 0.5, 2.0]], np.float32)
    log_p0 = 1.0 - math.log(math.e + 2.0)
    expected = (-log_p0 + 2.5 * math.log(3.0)) / 2.0
    assert float(weighted_multinomial(labels, weights, logits)) == pytest.approx(expected, rel=1e-5)


def test_training_set_histories_and_duplicates() -> None:
    from recsys.models.recommender import training_set

    train = sp.csr_matrix(np.array([[1.0, 0, 0, 0], [0, 0, 0, 0]], np.float32))  # user 1: no history
    examples = pd.DataFrame({
        "user_idx": [0, 0, 0, 0, 1, 2, 2, 2],
        "item_idx": [0, 1, 1, 2, 3, 1, 2, 3],
        "label": [1, 0, 1, 0, 1, 1, 1, 0],
        "weight": [1.0, 1.0, 0.3, 1.0, 1.0, 0.2, 0.4, 1.0],
        "source": ["real_pos", "neg_pop", "gan_pos", "neg_uniform", "real_pos", "syn_user", "syn_user", "neg_pop"],
    })
    got = training_set(examples, train)
    np.testing.assert_allclose(got.histories.toarray(), [[1, 0, 0, 0], [0, 0, 0, 0], [0, 0.2, 0.4, 0]])
    # (0, 1) is both a negative and a GAN positive: the positive wins with its own weight
    np.testing.assert_array_equal(got.labels.toarray(), [[1, 1, 0, 0], [0, 0, 0, 1], [0, 1, 1, 0]])
    np.testing.assert_allclose(got.weights.toarray(), [[1, 0.3, 1, 0], [0, 0, 0, 1], [0, 0.2, 0.4, 1]])
    assert got.rows.tolist() == [0, 2]  # user 1 has a positive but nothing to encode


def test_training_set_rejects_bad_input() -> None:
    from recsys.models.recommender import training_set

    train = sp.csr_matrix((2, 3), dtype=np.float32)
    good = {"user_idx": [0], "item_idx": [1], "label": [1], "weight": [1.0], "source": ["real_pos"]}
    with pytest.raises(ValueError, match="missing column.*weight"):
        training_set(pd.DataFrame({k: v for k, v in good.items() if k != "weight"}), train)
    with pytest.raises(ValueError, match="out of range"):
        training_set(pd.DataFrame({**good, "item_idx": [3]}), train)
    with pytest.raises(ValueError, match="syn_user rows must have user_idx >= 2"):
        training_set(pd.DataFrame({**good, "source": ["syn_user"]}), train)


def test_recommender_beats_popularity_on_planted_blocks(trained) -> None:
    from recsys.evaluation.baselines import Popularity
    from recsys.evaluation.metrics import user_metrics
    from recsys.models.recommender import score_histories

    model, history, m = trained
    seen = m.train + m.valid
    ours = user_metrics(score_histories(model, seen), seen, m.test, [5]).summary()
    popular = user_metrics(Popularity(m.train).scores(seen), seen, m.test, [5]).summary()
    # a user's 4 unseen block items hold the 2 test items; in random order within the block the
    # expected NDCG@5 is 0.785. Popularity serves only block 0 (half the users) that well.
    assert popular["ndcg@5"] < 0.5
    assert ours["ndcg@5"] > 0.7
    assert ours["hitrate@5"] > 0.95
    assert history["best_valid_ndcg@10"] == max(history["valid_ndcg@10"])
    assert history["epochs"] == len(history["loss"])
    assert history["objective"] == "full"  # 40 items, far below train.large_catalogue_items


@pytest.mark.parametrize(("max_steps", "epochs", "fixed"), [(4, 1, None), (13, 3, None), (13, 3, 5)])
def test_max_steps_ends_the_fit_within_an_epoch(max_steps: int, epochs: int, fixed: int | None) -> None:
    from recsys.models.recommender import fit_recommender

    matrices, examples = planted_blocks()  # 180 users with train positives: 6 batches of 32 an epoch
    config = {**TEST_CONFIG, "patience": 100, "max_steps": max_steps}
    _, history = fit_recommender(examples, matrices, config, fixed_epochs=fixed)
    assert history["steps_per_epoch"] == 6
    assert history["steps"] == max_steps and history["epochs"] == epochs == len(history["loss"])
    assert 0 < history["step_seconds"] <= history["seconds"]
    assert len(history["valid_ndcg@10"]) == (0 if fixed else epochs)  # the cut epoch is still validated


def test_fit_is_reproducible(trained) -> None:
    from recsys.models.recommender import fit_recommender

    model, _, _ = trained
    matrices, examples = planted_blocks()
    again, _ = fit_recommender(examples, matrices, TEST_CONFIG)
    for a, b in zip(model.get_weights(), again.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_score_histories_extra_and_missing_columns(trained) -> None:
    from recsys.models.recommender import score_histories

    model, _, m = trained
    base = score_histories(model, m.train[:5], batch_size=2)
    assert base.shape == (5, m.n_items) and base.dtype == np.float32
    wider = sp.hstack([m.train[:5], sp.csr_matrix(np.ones((5, 3), np.float32))]).tocsr()
    got = score_histories(model, wider)
    assert got.shape == (5, m.n_items + 3)
    assert np.isneginf(got[:, m.n_items:]).all()
    np.testing.assert_allclose(got[:, :m.n_items], base, rtol=1e-6)
    # a history over fewer items is the same history with zeros for the rest
    narrow = m.train[:5, :-2]
    padded = sp.hstack([narrow, sp.csr_matrix((5, 2), dtype=np.float32)]).tocsr()
    np.testing.assert_allclose(score_histories(model, narrow), score_histories(model, padded), rtol=1e-6)


def test_save_and_load_round_trip(trained, tmp_path: Path) -> None:
    from recsys.models.recommender import load_recommender, save_recommender, score_histories

    model, _, m = trained
    path = tmp_path / "model.keras"
    save_recommender(model, path)
    loaded = load_recommender(path)
    np.testing.assert_array_equal(score_histories(loaded, m.train), score_histories(model, m.train))
    with pytest.raises(FileNotFoundError, match="missing.keras"):
        load_recommender(tmp_path / "missing.keras")


@pytest.mark.tf
def test_item_item_blend_standardises_and_weighs_both_paths(tmp_path: Path) -> None:
    from recsys.models.recommender import (
        build_recommender,
        load_recommender,
        save_recommender,
        score_histories,
        with_item_item,
    )

    model = build_recommender(4, {"hidden": 3, "dropout": 0.0, "seed": 1})
    item_item = np.array([[0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 2], [0, 0, 1, 0]], dtype=np.float32)
    history = np.array([[1, 0, 0, 0], [0, 0, 1, 0]], dtype=np.float32)

    def z(x: np.ndarray) -> np.ndarray:
        return (x - x.mean(axis=1, keepdims=True)) / (x.std(axis=1, keepdims=True) + 1e-6)

    # history @ item_item puts one item at 1 (row 0: item 1) or 2 (row 1: item 3) and the rest at 0:
    # standardised, that item is sqrt(3) and the others -1/sqrt(3)
    linear = np.full((2, 4), -1 / math.sqrt(3), dtype=np.float32)
    linear[0, 1] = linear[1, 3] = math.sqrt(3)
    logits = np.asarray(model(history))
    blended = with_item_item(model, item_item, 0.25)
    np.testing.assert_allclose(np.asarray(blended(history)), 0.75 * z(logits) + 0.25 * linear, atol=1e-4)
    save_recommender(blended, tmp_path / "blend.keras")
    np.testing.assert_allclose(score_histories(load_recommender(tmp_path / "blend.keras"), sp.csr_matrix(history)),
                               np.asarray(blended(history)), atol=1e-6)
    with pytest.raises(ValueError, match="shape"):
        with_item_item(model, item_item[:3, :3], 0.5)


def z_rows(x: np.ndarray) -> np.ndarray:
    """Row-standardised scores as the blend computes them, in NumPy."""
    return (x - x.mean(axis=1, keepdims=True)) / (x.std(axis=1, keepdims=True) + 1e-6)


def random_train(n_users: int, n_items: int, seed: int = 0) -> sp.csr_matrix:
    """Binary interactions with a skewed item popularity, every item interacted at least once."""
    rng = np.random.default_rng(seed)
    dense = (rng.random((n_users, n_items)) < np.linspace(0.6, 0.02, n_items)).astype(np.float32)
    dense[rng.integers(0, n_users, n_items), np.arange(n_items)] = 1.0
    return sp.csr_matrix(dense)


@pytest.mark.tf
def test_bounded_ease_covers_the_most_interacted_items_and_the_rest_keep_autoencoder_scores(tmp_path: Path) -> None:
    from recsys.models.ease import EASE
    from recsys.models.recommender import (
        build_recommender,
        load_recommender,
        save_recommender,
        score_histories,
        with_item_item,
    )

    train = random_train(60, 30)
    ease = EASE(train, lam=10.0, max_items=12)
    counts = np.asarray(train.sum(axis=0)).ravel()
    top = np.sort(np.argsort(-counts, kind="stable")[:12])
    np.testing.assert_array_equal(ease.active, top)
    assert ease.weights.shape == (12, 12)
    # the bounded EASE is the EASE of the train matrix restricted to those columns
    np.testing.assert_allclose(ease.weights, EASE(sp.csr_matrix(train[:, top]), lam=10.0).weights, atol=1e-5)

    model = build_recommender(30, {"hidden": 4, "dropout": 0.0, "seed": 1})
    history = train[:5].toarray()
    linear = np.zeros((5, 30), np.float32)
    linear[:, top] = history[:, top] @ ease.weights
    blended = with_item_item(model, ease.weights, 0.4, items=ease.active)
    expected = 0.6 * z_rows(np.asarray(model(history))) + 0.4 * z_rows(linear)
    got = np.asarray(blended(history))
    np.testing.assert_allclose(got, expected, atol=1e-4)
    # outside the bound the linear path is 0: those items are ordered by the autoencoder's logits alone
    outside = np.setdiff1d(np.arange(30), top)
    logits = np.asarray(model(history))
    for row in range(5):
        np.testing.assert_array_equal(np.argsort(got[row, outside]), np.argsort(logits[row, outside]))
    assert np.isfinite(got).all()
    save_recommender(blended, tmp_path / "bounded.keras")
    np.testing.assert_allclose(score_histories(load_recommender(tmp_path / "bounded.keras"), train[:5]), got,
                               atol=1e-6)
    with pytest.raises(ValueError, match="covers 12"):
        with_item_item(model, ease.weights[:11, :11], 0.4, items=ease.active)


@pytest.mark.tf
def test_bounded_model_file_grows_linearly_with_the_catalogue(tmp_path: Path) -> None:
    from recsys.models.ease import EASE
    from recsys.models.recommender import build_recommender, save_recommender, with_item_item

    hidden, bound = 8, 100
    sizes = {}
    for n_items in (500, 1000):
        ease = EASE(random_train(150, n_items, seed=n_items), lam=50.0, max_items=bound)
        assert ease.weights.shape == (bound, bound)
        model = with_item_item(build_recommender(n_items, {"hidden": hidden, "dropout": 0.0}), ease.weights, 0.5,
                               items=ease.active)
        save_recommender(model, tmp_path / f"{n_items}.keras")
        sizes[n_items] = (tmp_path / f"{n_items}.keras").stat().st_size
    # per added item: an encoder row, a logits column and bias (2 x hidden + 1 float32); the bounded
    # path adds nothing. A dense items x items path would add 4 x (1000^2 - 500^2) bytes = 3 MB.
    per_item = 4 * (2 * hidden + 1)
    growth = sizes[1000] - sizes[500]
    assert growth == pytest.approx(per_item * 500, rel=0.1)


@pytest.mark.tf
def test_item_item_blend_stays_float32_under_mixed_precision() -> None:
    import keras

    from recsys.models.recommender import build_recommender, with_item_item

    before = keras.mixed_precision.global_policy().name
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = build_recommender(6, {"hidden": 4, "dropout": 0.0, "seed": 1})
        blended = with_item_item(model, np.eye(3, dtype=np.float32), 0.5, items=np.array([0, 2, 4]))
    finally:
        keras.mixed_precision.set_global_policy(before)
    blend = blended.get_layer("item_item_blend")
    assert model.get_layer("encoder").compute_dtype == "bfloat16"  # the policy did apply
    assert blend.compute_dtype == "float32" and blend.item_item.dtype == "float32"
    out = blended(np.ones((2, 6), np.float32))
    assert out.dtype == "float32"
