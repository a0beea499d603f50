"""Full-ranking metrics against values worked out by hand on tiny rankings."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp

from recsys.evaluation.metrics import only_rows, scored_metrics, target_users, top_k, user_metrics

# user 0: item 0 seen, ranking of the rest 1,2,3,4,5, targets {2, 5}
# user 1: nothing seen, ranking 5,4,3,2,1,0, target {5}
# user 2: no target, so not evaluated
SCORES = np.array([
    [0.9, 0.8, 0.7, 0.6, 0.5, 0.4],
    [0.1, 0.2, 0.3, 0.4, 0.5, 0.6],
    [0.6, 0.5, 0.4, 0.3, 0.2, 0.1],
], dtype=np.float32)
SEEN = sp.csr_matrix(np.array([[1, 0, 0, 0, 0, 0], [0] * 6, [0, 0, 1, 0, 0, 0]], dtype=np.float32))
TARGETS = sp.csr_matrix(np.array([[0, 0, 1, 0, 0, 1], [0, 0, 0, 0, 0, 1], [0] * 6], dtype=np.float32))

L3, L6 = math.log2(3), math.log2(6)
USER0 = {
    "recall@2": 0.5, "ndcg@2": (1 / L3) / (1 + 1 / L3), "precision@2": 0.5, "map@2": 0.25, "hitrate@2": 1.0,
    "recall@5": 1.0, "ndcg@5": (1 / L3 + 1 / L6) / (1 + 1 / L3), "precision@5": 0.4, "map@5": (1 / 2 + 2 / 5) / 2,
    "hitrate@5": 1.0,
}
USER1 = {
    "recall@2": 1.0, "ndcg@2": 1.0, "precision@2": 0.5, "map@2": 1.0, "hitrate@2": 1.0,
    "recall@5": 1.0, "ndcg@5": 1.0, "precision@5": 0.2, "map@5": 1.0, "hitrate@5": 1.0,
}


def test_metrics_match_hand_computed_values() -> None:
    got = user_metrics(SCORES, SEEN, TARGETS, [5, 2]).summary()
    assert got["users"] == 2
    for name, value in USER0.items():
        assert got[name] == pytest.approx((value + USER1[name]) / 2), name
    # top 5 of user 0 is {1..5}, of user 1 {1..5}: five of six items
    assert got["coverage"] == pytest.approx(5 / 6)


def test_users_argument_selects_rows() -> None:
    got = user_metrics(SCORES, SEEN, TARGETS, [2, 5], users=np.array([0, 2])).summary()
    assert got["users"] == 1
    for name, value in USER0.items():
        assert got[name] == pytest.approx(value), name


def test_per_user_values_and_subset_summaries() -> None:
    got = user_metrics(SCORES, SEEN, TARGETS, [2, 5])
    assert got.rows.tolist() == [0, 1]  # user 2 has no target
    for name in USER0:
        assert got.values[name].tolist() == pytest.approx([USER0[name], USER1[name]]), name
    assert got.ranked.tolist() == [[1, 2, 3, 4, 5], [5, 4, 3, 2, 1]]
    only_user1 = got.summary(np.array([1, 2]))  # user 2 is asked for but was not evaluated
    assert only_user1["users"] == 1 and only_user1["ndcg@2"] == pytest.approx(USER1["ndcg@2"])
    assert only_user1["coverage"] == pytest.approx(5 / 6)
    assert got.summary(np.array([2]))["users"] == 0


def test_seen_target_cannot_be_hit() -> None:
    targets = sp.csr_matrix(np.array([[1, 0, 0, 0, 0, 0]], dtype=np.float32))  # the only target is seen
    got = user_metrics(SCORES[:1], SEEN[:1], targets, [2]).summary()
    assert got["users"] == 1
    assert got["recall@2"] == 0.0 and got["ndcg@2"] == 0.0 and got["hitrate@2"] == 0.0


def test_no_users_with_targets_gives_zeros() -> None:
    empty = sp.csr_matrix((3, 6), dtype=np.float32)
    got = user_metrics(SCORES, SEEN, empty, [2]).summary()
    assert got["users"] == 0 and got["ndcg@2"] == 0.0 and got["coverage"] == 0.0


def test_shape_mismatch_is_an_error() -> None:
    with pytest.raises(ValueError, match="shapes differ"):
        user_metrics(SCORES[:2], SEEN, TARGETS, [2]).summary()


def test_top_k_orders_best_first_and_breaks_ties_by_index() -> None:
    scores = np.array([[0.5, 0.9, 0.5, 0.1, 0.5]], dtype=np.float32)
    assert top_k(scores, 3).tolist() == [[1, 0, 2]]


@pytest.mark.parametrize("batch_size", [1, 2, 2048])
def test_scored_in_batches_equals_scored_at_once(batch_size: int) -> None:
    rng = np.random.default_rng(3)
    history = sp.random(9, 6, density=0.4, random_state=4, format="csr", dtype=np.float32)
    weights = rng.normal(size=(6, 6)).astype(np.float32)
    targets = sp.random(9, 6, density=0.3, random_state=5, format="csr", dtype=np.float32)
    targets[4] = 0  # a row without a target is never scored
    targets.eliminate_zeros()
    calls = []

    def scorer(rows: sp.csr_matrix) -> np.ndarray:
        calls.append(rows.shape[0])
        return np.asarray(rows @ weights)

    at_once = user_metrics(np.asarray(history @ weights), history, targets, [2, 3])
    got = scored_metrics(scorer, history, history, targets, [3, 2], batch_size=batch_size)
    assert got.rows.tolist() == at_once.rows.tolist() == [r for r in range(9) if targets[r].nnz]
    assert got.ranked.tolist() == at_once.ranked.tolist()
    for name, values in at_once.values.items():
        assert got.values[name].tolist() == pytest.approx(values.tolist()), name
    assert got.summary() == pytest.approx(at_once.summary())
    assert max(calls) <= batch_size and sum(calls) == len(at_once.rows)


def test_scored_metrics_without_targets_and_with_mismatched_shapes() -> None:
    empty = sp.csr_matrix((3, 6), dtype=np.float32)
    assert scored_metrics(lambda h: h.toarray(), SEEN, SEEN, empty, [2]).summary()["users"] == 0
    with pytest.raises(ValueError, match="shapes differ"):
        scored_metrics(lambda h: h.toarray(), SEEN[:2], SEEN, TARGETS, [2])


def test_target_users_samples_a_seeded_subset_of_the_users_with_targets() -> None:
    rng = np.random.default_rng(3)
    targets = sp.random(200, 50, density=0.02, format="csr", random_state=rng, dtype=np.float32)
    with_target = np.flatnonzero(targets.getnnz(axis=1) > 0)
    assert 60 < len(with_target) < 200  # some rows have no target
    assert target_users(targets).tolist() == with_target.tolist()
    assert target_users(targets, len(with_target) + 5, 1).tolist() == with_target.tolist()
    sample = target_users(targets, 40, 1)
    assert len(sample) == 40 and np.all(np.diff(sample) > 0) and np.isin(sample, with_target).all()
    assert target_users(targets, 40, 1).tolist() == sample.tolist()
    assert target_users(targets, 40, 2).tolist() != sample.tolist()


def test_only_rows_empties_every_other_row() -> None:
    kept = only_rows(TARGETS, np.array([1]))
    assert kept.shape == TARGETS.shape and kept.nnz == 1
    assert kept[1].toarray().tolist() == TARGETS[1].toarray().tolist()
    assert kept[0].nnz == 0 and TARGETS[0].nnz == 2  # the input is left as it was
