"""Quality of synthetic users against real ones: fidelity, diversity, memorisation, TSTR, and the report."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
from scipy.spatial.distance import jensenshannon

from recsys.augmentation.decoding import top_unobserved
from recsys.augmentation.synthesis import INFERENCE_BATCH, Synthetic, score_users
from recsys.core.lake import SYN_USERS_FILE
from recsys.core.matrices import binary
from recsys.evaluation.metrics import scored_metrics, target_users
from recsys.models.item_item import unit_columns

TSTR_K = 10
LENGTH_BINS = 16


def jaccard_distances(a: sp.csr_matrix, b: sp.csr_matrix, chunk: int = 1024) -> np.ndarray:
    """Dense a_rows x b_rows Jaccard distances of 0/1 rows, computed a chunk of ``a`` at a time."""
    a, b = binary(a), binary(b)
    size_a = np.diff(a.indptr).astype(np.float64)
    size_b = np.diff(b.indptr).astype(np.float64)
    out = np.empty((a.shape[0], b.shape[0]))
    for start in range(0, a.shape[0], chunk):
        stop = min(start + chunk, a.shape[0])
        inter = np.asarray((a[start:stop] @ b.T).todense())
        union = size_a[start:stop, None] + size_b[None, :] - inter
        out[start:stop] = 1.0 - np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    return out


def nearest_real_distance(syn: sp.csr_matrix, real: sp.csr_matrix) -> np.ndarray:
    """For each synthetic row, the Jaccard distance to its nearest real row."""
    if syn.shape[0] == 0:
        return np.zeros(0)
    return jaccard_distances(syn, real).min(axis=1)


def memorisation_threshold(real: sp.csr_matrix, quantile: float, sample: np.ndarray) -> float:
    """The ``quantile`` of real-to-real nearest-neighbour Jaccard distances (self excluded).

    Args:
        real: real users x items.
        quantile: e.g. 0.05.
        sample: rows of ``real`` whose nearest other real user is measured (all of ``real`` is searched).
    """
    distances = jaccard_distances(real[sample], real)
    distances[np.arange(len(sample)), sample] = np.inf
    return float(np.quantile(distances.min(axis=1), quantile))


def memorised(syn: sp.csr_matrix, real: sp.csr_matrix, threshold: float) -> np.ndarray:
    """True for synthetic rows whose nearest real row is closer than ``threshold`` (or identical)."""
    nearest = nearest_real_distance(syn, real)
    return (nearest < threshold) | (nearest == 0.0)


def mean_pairwise_jaccard(x: sp.csr_matrix) -> float:
    """Mean Jaccard similarity over all pairs of distinct rows (0.0 with fewer than two rows)."""
    n = x.shape[0]
    if n < 2:
        return 0.0
    similarity = 1.0 - jaccard_distances(x, x)
    return float((similarity.sum() - np.trace(similarity)) / (n * (n - 1)))


def paired_jaccard(a: sp.csr_matrix, b: sp.csr_matrix) -> float:
    """Mean Jaccard similarity of row i of ``a`` with row i of ``b``."""
    a, b = binary(a), binary(b)
    inter = np.asarray(a.multiply(b).sum(axis=1)).ravel()
    union = np.diff(a.indptr) + np.diff(b.indptr) - inter
    return float(np.mean(np.divide(inter, union, out=np.zeros_like(inter), where=union > 0))) if len(inter) else 0.0


def js_distance(p_counts: np.ndarray, q_counts: np.ndarray) -> float:
    """Jensen–Shannon distance (base 2, in [0, 1]) of two count vectors; 1.0 when one is empty."""
    p = np.asarray(p_counts, dtype=np.float64)
    q = np.asarray(q_counts, dtype=np.float64)
    if p.sum() <= 0 or q.sum() <= 0:
        return 1.0
    return float(jensenshannon(p, q, base=2))


def item_counts(x: sp.csr_matrix) -> np.ndarray:
    """Users per item of a 0/1 matrix."""
    return np.asarray(binary(x).sum(axis=0)).ravel()


def length_edges(max_length: int, bins: int = LENGTH_BINS) -> np.ndarray:
    """Log-spaced integer bin edges covering lengths 1..max_length.

    Lengths are long-tailed, so equal-width bins would leave the tail to sampling noise.
    """
    return np.unique(np.round(np.geomspace(1, max_length + 1, bins + 1)).astype(np.int64))


def length_counts(x: sp.csr_matrix, edges: np.ndarray) -> np.ndarray:
    """Histogram of non-empty row lengths over ``edges`` (longer rows land in the last bin)."""
    lengths = np.diff(sp.csr_matrix(x).indptr)
    lengths = np.clip(lengths[lengths > 0], edges[0], edges[-1] - 1)
    return np.histogram(lengths, bins=edges)[0]


def itemknn_scores(fit: sp.csr_matrix, history: sp.csr_matrix) -> np.ndarray:
    """Item-item cosine scores of ``history`` rows with similarities from ``fit`` rows.

    ``score(u, j) = sum_i h_ui cos(i, j)``, computed as ``(x̂ᵀ (x̂ Hᵀ))ᵀ`` with ``x̂`` the unit-column 0/1
    ``fit``, so the items x items similarity matrix is never formed. Both products are sparse x dense: the
    history rows are densified first, since ``H x̂ᵀ`` is nearly dense on a large catalogue and a sparse
    product with a dense result is slow (minutes a batch at 58,669 x 207,805).
    """
    unit = unit_columns(binary(fit))
    history = binary(history).toarray().T  # items x rows
    return np.ascontiguousarray((unit.T @ (unit @ history)).T, dtype=np.float32)


def ndcg_at_k(
    scorer: Any, train: sp.csr_matrix, valid: sp.csr_matrix, users: np.ndarray, k: int = TSTR_K
) -> float:
    """Full-ranking NDCG@k on ``valid`` (train items removed), over ``users``, ``INFERENCE_BATCH`` at a time.

    Args:
        scorer: callable history rows -> dense scores for those rows (:func:`scored_metrics`).
        train: history whose items are excluded from the ranking.
        valid: held-out relevant items.
        users: rows to evaluate (rows without valid items are skipped).
        k: cut-off.
    """
    history = train[users]
    return float(scored_metrics(scorer, history, history, valid[users], [k], INFERENCE_BATCH).summary()[f"ndcg@{k}"])


def profile_noise_jaccard(
    generator: Any, train: sp.csr_matrix, users: np.ndarray, segments: np.ndarray, seed: int
) -> float:
    """Noise use in the user-conditioned mode: Jaccard of the top-10 unseen items of two noise draws."""
    draws = [score_users(generator, train, users, segments, 1, seed + i) for i in range(2)]
    tops = []
    for scores in draws:
        rows, items, _ = top_unobserved(scores, train[users], TSTR_K)
        tops.append(sp.csr_matrix((np.ones(len(rows)), (rows, items)), shape=scores.shape))
    return paired_jaccard(*tops)


@dataclass(frozen=True)
class RealUsers:
    """The real users synthetic ones are measured against."""

    matrix: sp.csr_matrix  # active users x items, 0/1
    reference: np.ndarray  # rows of ``matrix`` searched pairwise (at most quality_max_users), sorted
    sample: np.ndarray     # as many rows as synthetic users: the sampling floor of the fidelity figures
    quantile: float        # memorisation quantile of real-to-real nearest-neighbour distances
    threshold: float       # that quantile's distance: nearer synthetic users count as memorised
    items: np.ndarray      # users per item
    edges: np.ndarray      # history length bin edges, up to the longest real history
    lengths: np.ndarray    # users per length bin


def real_users(real: sp.csr_matrix, n_synthetic: int, max_users: int, quantile: float, seed: int) -> RealUsers:
    """Draw the reference and sample rows of ``real`` and measure what synthetic users are compared with.

    Args:
        real: active users x items, 0/1.
        n_synthetic: synthetic users drawn (the size of the real sample).
        max_users: most reference rows (pairwise measures are quadratic in them).
        quantile: e.g. 0.05, see ``memorisation_threshold``.
        seed: seeds both draws.
    """
    rng = np.random.default_rng(seed)
    reference = np.sort(rng.choice(real.shape[0], size=min(max_users, real.shape[0]), replace=False))
    sample = rng.choice(real.shape[0], size=min(n_synthetic, real.shape[0]), replace=False)
    threshold = memorisation_threshold(real, quantile, reference)
    edges = length_edges(int(np.diff(real.indptr).max()))
    return RealUsers(real, reference, sample, quantile, threshold, item_counts(real), edges, length_counts(real, edges))


def _figures(
    syn: sp.csr_matrix, real: RealUsers, train: sp.csr_matrix, valid: sp.csr_matrix, eval_users: np.ndarray
) -> dict[str, float]:
    """Fidelity, diversity, memorisation and TSTR figures of one set of synthetic users."""
    return {
        "js_item_popularity": js_distance(real.items, item_counts(syn)),
        "js_user_length": js_distance(real.lengths, length_counts(syn, real.edges)),
        "pairwise_jaccard": mean_pairwise_jaccard(syn),
        "memorised_share": float(np.mean(memorised(syn, real.matrix, real.threshold))) if syn.shape[0] else 0.0,
        "tstr_ndcg": ndcg_at_k(lambda h: itemknn_scores(syn, h), train, valid, eval_users),
    }


def _pivot(figures: dict[str, dict[str, float]], name: str) -> dict[str, float]:
    return {variant: values[name] for variant, values in figures.items()}


def _variants(n_syn: int, n_written: int) -> dict[str, str]:
    return {
        "trained": f"all {n_syn} synthetic users drawn from the trained generator, before the filters",
        "written": f"the {n_written} of them kept by the filters, as written to {SYN_USERS_FILE}",
        "untrained": "the same draw (segments, noise, lengths) from the generator's initial weights",
        "real_sample": "as many real users drawn at random: the sampling floor of the fidelity figures",
    }


def _fidelity(figures: dict[str, dict[str, float]], real: RealUsers, trained: Synthetic,
              untrained: Synthetic) -> dict[str, Any]:
    sample = real.matrix[real.sample]
    return {
        "js_item_popularity": _pivot(figures, "js_item_popularity"),
        "js_user_length": _pivot(figures, "js_user_length"),
        "segment_agreement": {
            "trained": float(np.mean(trained.requested == trained.landed)),
            "untrained": float(np.mean(untrained.requested == untrained.landed)),
        },
        "real_sample": {
            "users": sample.shape[0],
            "js_item_popularity": js_distance(real.items, item_counts(sample)),
            "js_user_length": js_distance(real.lengths, length_counts(sample, real.edges)),
        },
    }


def _diversity(figures: dict[str, dict[str, float]], real: RealUsers, trained: Synthetic, untrained: Synthetic,
               profile_jaccard: dict[str, float]) -> dict[str, Any]:
    return {
        "pairwise_jaccard": {**_pivot(figures, "pairwise_jaccard"), "real": mean_pairwise_jaccard(real.matrix[real.reference])},
        "noise_draws_jaccard_segment": {
            "trained": paired_jaccard(trained.items, trained.second_draw),
            "untrained": paired_jaccard(untrained.items, untrained.second_draw),
        },
        "noise_draws_jaccard_profile_top10": profile_jaccard,
    }


def _tstr(figures: dict[str, dict[str, float]], real: RealUsers, train: sp.csr_matrix, valid: sp.csr_matrix,
          eval_users: np.ndarray) -> dict[str, Any]:
    popularity = np.broadcast_to(real.items.astype(np.float32), (1, train.shape[1]))
    return {
        "metric": f"ndcg@{TSTR_K}",
        "split": "valid",
        "users": len(eval_users),
        "itemknn_on_synthetic": _pivot(figures, "tstr_ndcg"),
        "itemknn_on_real": ndcg_at_k(lambda h: itemknn_scores(real.matrix, h), train, valid, eval_users),
        "popularity": ndcg_at_k(lambda h: np.repeat(popularity, h.shape[0], axis=0), train, valid, eval_users),
    }


def quality_report(
    real: RealUsers,
    train: sp.csr_matrix,
    valid: sp.csr_matrix,
    trained: Synthetic,
    untrained: Synthetic,
    written: sp.csr_matrix,
    profile_jaccard: dict[str, float],
    filters: list[dict[str, Any]],
    outputs: dict[str, Any],
    training: dict[str, Any],
    max_eval_users: int = 0,
    seed: int = 0,
) -> dict[str, Any]:
    """The quality report (``quality.json`` less its lineage) of one augment run.

    Args:
        real: the real users measured against.
        train: all users x items train interactions, 0/1 (the TSTR histories).
        valid: all users x items validation interactions, 0/1 (the TSTR targets).
        trained: the synthetic users drawn from the trained generator, before the filters.
        untrained: the same draw from the generator's initial weights.
        written: the rows of ``trained.items`` kept by the filters.
        profile_jaccard: ``profile_noise_jaccard`` of the trained and untrained generators.
        filters: what each filter kept (``filters.filter_synthetic``).
        outputs: counts of what the stage writes.
        training: epochs, steps, losses and timings of the GAN fit.
        max_eval_users: TSTR ranks at most this many users with validation items, a seeded sample (every
            user's full ranking of a large catalogue would dominate the stage); 0 = all.
        seed: the sample's seed.
    """
    eval_users = target_users(valid, max_eval_users, seed)
    figures = {
        name: _figures(matrix, real, train, valid, eval_users)
        for name, matrix in (("trained", trained.items), ("untrained", untrained.items), ("written", written))
    }
    return {
        "enabled": True,
        "variants": _variants(trained.items.shape[0], written.shape[0]),
        "fidelity": _fidelity(figures, real, trained, untrained),
        "diversity": _diversity(figures, real, trained, untrained, profile_jaccard),
        "memorisation": {
            "quantile": real.quantile, "threshold_jaccard_distance": real.threshold,
            "share": _pivot(figures, "memorised_share"),
        },
        "tstr": _tstr(figures, real, train, valid, eval_users),
        "filters": filters,
        "outputs": outputs,
        "training": training,
    }
