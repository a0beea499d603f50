"""Sampled softmax with the log-Q correction: the loss by hand, the objective's choice, learning, and train.json's facts."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp

from recsys.core.matrices import Matrices
from tests.support import planted_blocks

pytestmark = pytest.mark.tf

SAMPLED_CONFIG = {
    "epochs": 30, "patience": 6, "batch_size": 32, "hidden": 16, "dropout": 0.2, "learning_rate": 0.01,
    "l2": 0.0, "loss": "multinomial", "seed": 7, "objective": "sampled", "popularity_alpha": 0.75,
}
# 2 users x 5 items. User 0: positive item 0, sampled negatives 2 and 3. User 1: positives 1 (weight 2)
# and 4 (weight 0.5), sampled negative 0. A weight of 0 is not an example.
LOGITS = np.array([[1.0, 0.0, 2.0, -1.0, 0.5], [1.0, 0.0, 0.3, 0.2, 0.5]], np.float32)
LABELS = np.array([[1, 0, 0, 0, 0], [0, 1, 0, 0, 1]], np.float32)
WEIGHTS = np.array([[1, 0, 1, 1, 0], [1, 2, 0, 0, 0.5]], np.float32)
Q = [0.4, 0.3, 0.1, 0.1, 0.1]


def softmax_nll(target: float, others: list[float]) -> float:
    return -target + math.log(math.exp(target) + sum(math.exp(o) for o in others))


def test_sampled_softmax_with_log_q_matches_hand_computation() -> None:
    from recsys.models.sampled import sampled_softmax

    z = [[LOGITS[u, i] - math.log(Q[i]) for i in range(5)] for u in range(2)]
    user0 = 1.0 * softmax_nll(z[0][0], [z[0][2], z[0][3]])
    user1 = 2.0 * softmax_nll(z[1][1], [z[1][0]]) + 0.5 * softmax_nll(z[1][4], [z[1][0]])
    loss = sampled_softmax(np.log(np.array(Q, np.float32)))
    assert float(loss(LABELS, WEIGHTS, LOGITS)) == pytest.approx((user0 + user1) / 2, rel=1e-5)
    # without the correction the value differs: the test can tell whether log q was subtracted
    uncorrected = sampled_softmax(np.zeros(5, np.float32))
    assert float(uncorrected(LABELS, WEIGHTS, LOGITS)) != pytest.approx((user0 + user1) / 2, rel=1e-3)


def test_in_batch_ablation_ignores_sampled_negatives() -> None:
    from recsys.models.sampled import in_batch_softmax

    s = LOGITS
    # the batch's positives are items 0, 1 and 4: user 0 competes with 1 and 4, user 1 with 0
    user0 = softmax_nll(s[0, 0], [s[0, 1], s[0, 4]])
    user1 = 2.0 * softmax_nll(s[1, 1], [s[1, 0]]) + 0.5 * softmax_nll(s[1, 4], [s[1, 0]])
    assert float(in_batch_softmax(LABELS, WEIGHTS, LOGITS)) == pytest.approx((user0 + user1) / 2, rel=1e-5)


def test_popularity_log_q_is_the_samplers_distribution() -> None:
    from recsys.models.sampled import popularity_log_q

    train = sp.csr_matrix(np.array([[1, 1, 0, 0], [1, 0, 1, 0], [1, 1, 0, 0]], np.float32))
    counts = np.array([3.0, 2.0, 1.0])  # item 3 has no interaction: the popularity sampler never draws it
    p = counts ** 0.5 / (counts ** 0.5).sum()
    expected = np.log([p[0], p[1], p[2], p[2]])  # floored at the smallest drawn item's probability
    np.testing.assert_allclose(popularity_log_q(train, 0.5), expected, rtol=1e-6)


def test_objective_is_chosen_by_catalogue_size() -> None:
    from recsys.models.sampled import choose_objective

    config = {"large_catalogue_items": 100}
    assert choose_objective(100, config) == "full"
    assert choose_objective(101, config) == "sampled"
    assert choose_objective(50_001, {}) == "sampled" and choose_objective(50_000, {}) == "full"
    assert choose_objective(10, {**config, "objective": "sampled"}) == "sampled"
    assert choose_objective(10**6, {**config, "objective": "full"}) == "full"
    with pytest.raises(ValueError, match="unknown objective 'softmax'"):
        choose_objective(10, {"objective": "softmax"})


def valid_ndcg_of_popularity(m: Matrices) -> float:
    from recsys.evaluation.baselines import Popularity
    from recsys.evaluation.metrics import user_metrics

    users = np.flatnonzero(np.diff(m.valid.indptr) > 0)
    scores = Popularity(m.train).scores(m.train[users])
    return float(user_metrics(scores, m.train[users], m.valid[users], [10]).summary()["ndcg@10"])


def test_sampled_objective_learns_planted_blocks() -> None:
    from recsys.models.recommender import fit_recommender

    matrices, examples = planted_blocks()
    model, history = fit_recommender(examples, matrices, SAMPLED_CONFIG)
    assert history["objective"] == "sampled"
    popular = valid_ndcg_of_popularity(matrices)
    # each user's one valid item is among the 5 unseen items of their block: random order there gives
    # about 0.58; popularity ranks block 0 first, which serves only half the users
    assert popular < 0.45
    assert history["best_valid_ndcg@10"] > popular + 0.1


def test_train_models_records_the_objective_and_the_negatives_ablation() -> None:
    from recsys.models.training import train_models

    matrices, examples = planted_blocks()
    config = {**SAMPLED_CONFIG, "epochs": 4, "patience": 2, "objective": "auto", "large_catalogue_items": 30,
              "final_fit": False, "ease_lambdas": [200.0], "item_item_alphas": [0.0, 0.5], "ease_max_items": 25,
              "valid_max_users": 50}
    trained = train_models(examples, matrices, config)
    assert trained.facts["ease_items"] == 25 and trained.facts["ease_max_items"] == 25
    assert trained.facts["valid_users"] == 50 < matrices.n_users  # every user has a validation item
    for name in ("model", "model_noaug"):
        run = trained.facts["models"][name]
        assert run["objective"] == "sampled"  # 40 items > 30
        assert 0.0 < run["negatives_ablation_valid_ndcg@10"] <= 1.0
        # a separate fit: without the negatives the validation curve is not the sampled one's
        assert run["negatives_ablation_valid_ndcg@10"] != run["best_valid_ndcg@10"]
        assert trained.models[name].output_shape == (None, matrices.n_items)


def test_validation_sample_cuts_only_valid_to_a_seeded_sample() -> None:
    from recsys.models.training import validation_sample

    matrices, _ = planted_blocks()
    held = validation_sample(matrices, {"valid_max_users": 50, "seed": 7})
    kept = np.flatnonzero(held.valid.getnnz(axis=1) > 0)
    assert len(kept) == 50 and held.valid.shape == matrices.valid.shape
    assert (held.valid[kept] != matrices.valid[kept]).nnz == 0
    assert held.train is matrices.train and held.test is matrices.test
    assert validation_sample(matrices, {"valid_max_users": 0, "seed": 7}).valid.nnz == matrices.valid.nnz
