"""EASE (Steck 2019), the closed-form item-item model: the production model's linear path and a baseline."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp
from scipy.linalg import lapack

from recsys.core.matrices import check_items
from recsys.evaluation.metrics import scored_metrics

log = logging.getLogger(__name__)

DEFAULT_MAX_ITEMS = 10_000  # train.ease_max_items when unset: a 400 MB float32 path, an inverse of about a minute


def most_interacted(train: sp.spmatrix, max_items: int | None = None) -> np.ndarray:
    """Sorted indices of the items with a training interaction, at most ``max_items`` of the most interacted.

    Ties in the interaction count keep the lower index, so the choice is deterministic.
    """
    counts = sp.csc_matrix(train).getnnz(axis=0)
    active = np.flatnonzero(counts > 0)
    if max_items is not None and len(active) > max_items:
        active = np.sort(active[np.argsort(-counts[active], kind="stable")[:max_items]])
    return active


class Gram:
    """X^T X over the items that have any training interaction, shared by every EASE lambda.

    Items without training interactions get all-zero EASE weights in the closed form, so leaving
    them out of the inverse changes no score and shrinks the cubic cost to the active items. With
    ``max_items`` only that many of the most interacted items take part (``train.ease_max_items``):
    the weights, the inverse's cost and a saved model's item-item path stay bounded on a large
    catalogue, and the other items get no EASE score.
    """

    def __init__(self, train: sp.csr_matrix, max_items: int | None = None) -> None:
        if max_items is not None and max_items < 1:
            raise ValueError(f"train.ease_max_items must be at least 1, got {max_items}")
        x = sp.csc_matrix(train, dtype=np.float32)
        self.n_items = x.shape[1]
        self.active = most_interacted(x, max_items)
        xa = x[:, self.active]
        self.matrix = np.asarray((xa.T @ xa).todense(), dtype=np.float32)


def ease_weights(gram_matrix: np.ndarray, lam: float) -> np.ndarray:
    """EASE's closed form (Steck 2019): B = I - P diag(1/diag(P)) with P = (G + lam I)^-1, diag(B) = 0.

    P is inverted through a Cholesky factor (G + lam I is symmetric positive definite), which costs
    about a third of a general inverse; float32 keeps a 10k-item catalogue within seconds.
    """
    if lam <= 0:
        raise ValueError(f"EASE lambda must be positive, got {lam}")
    a = np.array(gram_matrix, dtype=np.float32, copy=True)
    a[np.diag_indices_from(a)] += lam
    factor, info = lapack.spotrf(a, lower=False, overwrite_a=True)
    if info != 0:
        raise ValueError(f"EASE: Cholesky of G + {lam} I failed (info={info})")
    p, info = lapack.spotri(factor, lower=False, overwrite_c=True)
    if info != 0:
        raise ValueError(f"EASE: inverse of G + {lam} I failed (info={info})")
    p = np.triu(p)
    p += np.triu(p, 1).T  # spotri fills only the upper triangle
    b = p / -np.diag(p)[None, :]
    b[np.diag_indices_from(b)] = 0.0
    return b


class EASE:
    """Embarrassingly shallow autoencoder: a dense item-item weight matrix from a ridge regression."""

    def __init__(self, train: sp.csr_matrix | None = None, lam: float = 500.0, *, gram: Gram | None = None,
                 max_items: int | None = None) -> None:
        if gram is None:
            if train is None:
                raise ValueError("EASE needs a training matrix or its Gram matrix")
            gram = Gram(train, max_items)
        self.lam = float(lam)
        self.n_items = gram.n_items
        self.active = gram.active
        self.weights = ease_weights(gram.matrix, self.lam)

    def full_weights(self) -> np.ndarray:
        """The items x items weight matrix over the whole catalogue (zero rows and columns for inactive items)."""
        out = np.zeros((self.n_items, self.n_items), dtype=np.float32)
        out[np.ix_(self.active, self.active)] = self.weights
        return out

    def scores(self, histories: sp.csr_matrix) -> np.ndarray:
        check_items(histories, self.n_items, "ease")
        out = np.zeros(histories.shape, dtype=np.float32)
        h = sp.csr_matrix(histories, dtype=np.float32)[:, self.active]
        out[:, self.active] = h @ self.weights
        return out


def choose_ease(
    train: sp.csr_matrix, valid: sp.csr_matrix, lambdas: Sequence[float], k: int = 10, max_items: int | None = None
) -> tuple[EASE, dict[float, float]]:
    """Fit EASE for every lambda on ``train`` and keep the best NDCG@k on ``valid`` (history = train).

    ``max_items`` bounds the items EASE covers (:class:`Gram`).

    Returns:
        The chosen model and the validation NDCG@k of every lambda tried. Ties keep the first lambda.
    """
    if not lambdas:
        raise ValueError("train.ease_lambdas is empty: give at least one EASE lambda")
    g = Gram(train, max_items)
    best: EASE | None = None
    tried: dict[float, float] = {}
    for lam in lambdas:
        model = EASE(lam=lam, gram=g)
        ndcg = float(scored_metrics(model.scores, train, train, valid, [k]).summary()[f"ndcg@{k}"])
        tried[float(lam)] = ndcg
        log.info("EASE lambda %s: validation ndcg@%d %.4f", lam, k, ndcg)
        if best is None or ndcg > tried[best.lam]:
            best = model
    assert best is not None
    return best, tried
