"""Baselines against small worked examples computed independently of their implementation."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from recsys.evaluation.baselines import ItemKNN, Popularity
from recsys.evaluation.metrics import user_metrics
from recsys.models.ease import EASE, choose_ease

# 4 users x 5 items, weighted; item 4 has no interaction at all
X = np.array([
    [1.0, 2.0, 0.0, 0.0, 0.0],
    [1.0, 0.0, 1.0, 3.0, 0.0],
    [0.0, 1.0, 1.0, 0.0, 0.0],
    [2.0, 1.0, 0.0, 1.0, 0.0],
])
HIST = np.array([[0.0, 1.0, 0.0, 2.0, 0.0], [1.0, 0.0, 0.0, 0.0, 0.0]])


def test_popularity_counts_distinct_users() -> None:
    got = Popularity(sp.csr_matrix(X)).scores(sp.csr_matrix(HIST))
    np.testing.assert_array_equal(got, [[3, 3, 2, 2, 0]] * 2)


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    na, nb = np.sqrt((a * a).sum()), np.sqrt((b * b).sum())
    return 0.0 if na == 0 or nb == 0 else float((a * b).sum() / (na * nb))


def test_itemknn_cosine_scores() -> None:
    n = X.shape[1]
    sim = np.array([[0.0 if i == j else _cosine(X[:, i], X[:, j]) for j in range(n)] for i in range(n)])
    expected = np.array([[sum(h[i] * sim[i, j] for i in range(n)) for j in range(n)] for h in HIST])
    got = ItemKNN(sp.csr_matrix(X), neighbors=10).scores(sp.csr_matrix(HIST))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_itemknn_keeps_only_nearest_neighbours() -> None:
    n = X.shape[1]
    sim = np.array([[0.0 if i == j else _cosine(X[:, i], X[:, j]) for j in range(n)] for i in range(n)])
    nearest = sim.argmax(axis=0)  # each candidate j keeps its single most similar item
    expected = np.array([[h[nearest[j]] * sim[nearest[j], j] for j in range(n)] for h in HIST])
    got = ItemKNN(sp.csr_matrix(X), neighbors=1).scores(sp.csr_matrix(HIST))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def _ease_by_ridge(x: np.ndarray, lam: float) -> np.ndarray:
    """EASE column by column: ridge regression of item j on every other item (so b_jj = 0)."""
    n = x.shape[1]
    b = np.zeros((n, n))
    for j in range(n):
        others = [i for i in range(n) if i != j]
        xo = x[:, others]
        b[others, j] = np.linalg.solve(xo.T @ xo + lam * np.eye(n - 1), xo.T @ x[:, j])
    return b


@pytest.mark.parametrize("lam", [0.5, 3.0])
def test_ease_matches_per_item_ridge_regression(lam: float) -> None:
    expected = HIST @ _ease_by_ridge(X, lam)
    got = EASE(sp.csr_matrix(X), lam=lam).scores(sp.csr_matrix(HIST))
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    assert got.dtype == np.float32


def test_ease_rejects_other_catalogue() -> None:
    with pytest.raises(ValueError, match="fitted on 5"):
        EASE(sp.csr_matrix(X), lam=1.0).scores(sp.csr_matrix(HIST[:, :4]))


def test_choose_ease_keeps_the_best_validation_lambda() -> None:
    rng = np.random.default_rng(0)
    train = (rng.random((30, 8)) < 0.4).astype(float)
    valid = ((rng.random((30, 8)) < 0.2) & (train == 0)).astype(float)
    lambdas = [0.1, 10.0, 1000.0]
    expected = {
        lam: user_metrics(train @ _ease_by_ridge(train, lam), sp.csr_matrix(train), sp.csr_matrix(valid), [2]).summary()["ndcg@2"]
        for lam in lambdas
    }
    best, tried = choose_ease(sp.csr_matrix(train), sp.csr_matrix(valid), lambdas, k=2)
    assert tried == pytest.approx(expected)
    assert best.lam == max(expected, key=expected.get)


def test_choose_ease_needs_a_lambda() -> None:
    with pytest.raises(ValueError, match="ease_lambdas"):
        choose_ease(sp.csr_matrix(X), sp.csr_matrix(X), [])


def test_ease_full_weights_leave_inactive_items_at_zero() -> None:
    train = sp.csr_matrix(np.array([[1, 0, 1], [1, 0, 1], [0, 0, 1]], dtype=np.float32))  # item 1 never seen
    ease = EASE(train, lam=1.0)
    full = ease.full_weights()
    # the 2x2 closed form over items 0 and 2: G = [[2, 2], [2, 3]], P = (G + I)^-1 = [[4, -2], [-2, 3]] / 8,
    # B = -P / diag(P) off the diagonal: b_02 = 2/8 / (3/8) = 2/3, b_20 = 2/8 / (4/8) = 1/2
    np.testing.assert_allclose(full, [[0, 0, 2 / 3], [0, 0, 0], [0.5, 0, 0]], rtol=1e-5)


def test_nearest_keeps_the_largest_similarities_per_row_ties_by_lower_index() -> None:
    from recsys.evaluation.baselines import nearest

    # rows are items 2 and 3 of a 6-item catalogue; each row's own item is dropped
    sim = sp.csr_matrix(np.array([[0.5, 0.2, 0.9, 0.5, 0.0, 0.5], [0.1, 0.0, 0.3, 0.8, 0.3, 0.0]], np.float32))
    got = nearest(sim, 2, 2).toarray()
    np.testing.assert_allclose(got, [[0.5, 0, 0, 0.5, 0, 0], [0, 0, 0.3, 0, 0.3, 0]])
    assert nearest(sim, 2, 10).nnz == 7  # every non-zero entry but the two items' own
