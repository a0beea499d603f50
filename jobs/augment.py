"""GAN augmentation: expanded positives for sparse users, synthetic users, hard-negative candidates, quality."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import scipy.sparse as sp
from scipy.spatial.distance import jensenshannon

from recsys.core.cli import JobContext, job_parser, run_job
from recsys.core.columns import CONFIDENCE, ITEM_IDX, SCORE, SYN_USER, USER_IDX
from recsys.core.config import config_hash
from recsys.core.lake import (
    CANDIDATES_FILE,
    GAN_POS_FILE,
    GENERATOR_FILE,
    LENGTH_PLOT,
    POPULARITY_PLOT,
    QUALITY_FILE,
    SYN_USERS_FILE,
    write_json,
)
from recsys.core.matrices import load_matrices
from recsys.evaluation.metrics import top_k, user_metrics
from recsys.models.gan import (
    NOISE,
    PROFILE,
    SEGMENT,
    VECTOR,
    build_gan,
    build_generator,
    dense_rows,
    generate,
    training_dataset,
)
from recsys.models.runtime import configure_runtime

log = logging.getLogger(__name__)


GAN_POS_SCHEMA = pa.schema([(USER_IDX, pa.int32()), (ITEM_IDX, pa.int32()), (CONFIDENCE, pa.float32())])
SYN_USERS_SCHEMA = pa.schema([(SYN_USER, pa.int32()), (ITEM_IDX, pa.int32()), (CONFIDENCE, pa.float32())])
CANDIDATES_SCHEMA = pa.schema([(USER_IDX, pa.int32()), (ITEM_IDX, pa.int32()), (SCORE, pa.float32())])

TSTR_K = 10
LENGTH_BINS = 16
INFERENCE_BATCH = 512
_RATIOS = ("zr_ratio", "pm_ratio", "condition_dropout", "profile_drop", "sparse_user_quantile",
           "confidence_threshold", "discriminator_quantile", "memorisation_quantile", "label_smoothing")
_POSITIVE = ("epochs", "batch_size", "hidden", "noise_dim", "segments", "score_draws", "quality_max_users")


# ---------------------------------------------------------------------------------------------------
# sparse helpers and segments (NumPy / SciPy only)


def binarize(matrix: sp.spmatrix) -> sp.csr_matrix:
    """A 0/1 float32 CSR copy: every stored positive weight becomes 1."""
    m = sp.csr_matrix(matrix, dtype=np.float32, copy=True)
    m.data = (m.data > 0).astype(np.float32)
    m.eliminate_zeros()
    m.sort_indices()
    return m


def _row_normalised(x: sp.csr_matrix) -> sp.csr_matrix:
    norms = np.sqrt(np.asarray(x.multiply(x).sum(axis=1)).ravel())
    inverse = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
    return sp.csr_matrix(sp.diags(inverse) @ x)


def kmeans_segments(
    x: sp.csr_matrix, k: int, seed: int, iters: int = 30, restarts: int = 4
) -> tuple[np.ndarray, np.ndarray]:
    """Spherical k-means of the rows of a sparse matrix (k-means++ starts, Lloyd steps).

    Rows are L2-normalised first, so segments follow taste rather than activity. Centroids stay
    dense (k x items); rows are never densified. The best of ``restarts`` runs (lowest inertia) is
    kept, since one k-means++ start can put two centroids in one cluster. Clusters left empty are
    dropped at the end.

    Args:
        x: users x items; rows without entries get segment -1.
        k: wanted number of segments (fewer when there are fewer non-empty rows).
        seed: seeds the k-means++ starts.
        iters: most Lloyd steps per run.
        restarts: independent runs.

    Returns:
        ``(labels, centroids)``: labels in 0..k'-1 (-1 for empty rows) and the k' x items centroids.
    """
    xn = _row_normalised(sp.csr_matrix(x, dtype=np.float64))
    active = np.flatnonzero(np.diff(xn.indptr) > 0)
    if len(active) == 0:
        raise ValueError("kmeans_segments: the matrix has no non-empty row")
    xa = xn[active]
    k = max(1, min(int(k), len(active)))
    rng = np.random.default_rng(seed)
    best = min((_lloyd(xa, k, rng, iters) for _ in range(restarts)), key=lambda run: run[0])
    _, labels, centroids = best
    used = np.unique(labels)
    relabel = np.full(k, -1)
    relabel[used] = np.arange(len(used))
    out = np.full(x.shape[0], -1)
    out[active] = relabel[labels]
    return out, centroids[used]


def _lloyd(xa: sp.csr_matrix, k: int, rng: np.random.Generator, iters: int) -> tuple[float, np.ndarray, np.ndarray]:
    """One k-means++ start and Lloyd steps; returns (inertia, labels, centroids)."""
    n = xa.shape[0]
    centroids = np.zeros((k, xa.shape[1]))
    centroids[0] = xa[rng.integers(n)].toarray().ravel()
    nearest = np.clip(_squared_distances(xa, centroids[:1]).ravel(), 0, None)
    for j in range(1, k):
        pick = rng.choice(n, p=nearest / nearest.sum()) if nearest.sum() > 0 else rng.integers(n)
        centroids[j] = xa[pick].toarray().ravel()
        nearest = np.minimum(nearest, np.clip(_squared_distances(xa, centroids[j:j + 1]).ravel(), 0, None))
    labels = np.full(n, -1)
    for _ in range(iters):
        distances = _squared_distances(xa, centroids)
        new = np.argmin(distances, axis=1)
        if np.array_equal(new, labels):
            break
        labels = new
        onehot = sp.csr_matrix((np.ones(n), (labels, np.arange(n))), shape=(k, n))
        counts = np.asarray(onehot.sum(axis=1)).ravel()
        sums = np.asarray((onehot @ xa).todense())
        filled = counts > 0
        centroids[filled] = sums[filled] / counts[filled, None]
    inertia = float(np.sum(np.min(_squared_distances(xa, centroids), axis=1)))
    return inertia, labels, centroids


def _squared_distances(xn: sp.csr_matrix, centroids: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances of unit rows to centroids, without densifying the rows."""
    row_sq = np.asarray(xn.multiply(xn).sum(axis=1)).ravel()[:, None]
    return row_sq - 2.0 * np.asarray(xn @ centroids.T) + np.sum(centroids**2, axis=1)[None, :]


def assign_segments(vectors: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """The nearest centroid of each dense row after L2 normalisation (as kmeans_segments measures)."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    unit = np.divide(vectors, norms, out=np.zeros_like(vectors, dtype=np.float64), where=norms > 0)
    return np.argmin(np.sum(centroids**2, axis=1)[None, :] - 2.0 * unit @ centroids.T, axis=1)


def sparse_users(train: sp.csr_matrix, quantile: float) -> np.ndarray:
    """Users with at least one train item whose history length is at most the ``quantile`` of such users.

    Ties at the cut-off are all included, so the share can exceed ``quantile`` a little.
    """
    lengths = np.diff(sp.csr_matrix(train).indptr)
    active = np.flatnonzero(lengths > 0)
    if len(active) == 0:
        return active
    cut = np.quantile(lengths[active], quantile, method="lower")
    return active[lengths[active] <= cut]


def top_unobserved(
    scores: np.ndarray, seen: sp.csr_matrix, k: int, min_score: float = -np.inf
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ``k`` best-scored unseen items of each row with a score of at least ``min_score``.

    Returns:
        ``(row, item, score)`` arrays, rows in order and best item first within a row.
    """
    masked = np.array(scores, dtype=np.float32, copy=True)
    coo = sp.coo_matrix(seen)
    masked[coo.row, coo.col] = -np.inf
    best = top_k(masked, k)
    values = np.take_along_axis(masked, best, axis=1)
    keep = np.isfinite(values) & (values >= min_score)
    rows = np.broadcast_to(np.arange(len(masked))[:, None], best.shape)
    return rows[keep], best[keep], values[keep]


def decode_top(scores: np.ndarray, lengths: np.ndarray) -> sp.csr_matrix:
    """A 0/1 CSR matrix holding, per row, the ``lengths[row]`` best-scored items."""
    lengths = np.minimum(lengths, scores.shape[1]).astype(np.int64)
    best = top_k(scores, int(lengths.max())) if len(lengths) else np.zeros((0, 0), dtype=np.int64)
    keep = np.arange(best.shape[1])[None, :] < lengths[:, None]
    rows = np.broadcast_to(np.arange(len(scores))[:, None], best.shape)[keep]
    return sp.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, best[keep])), shape=scores.shape)


def draw_items(scores: np.ndarray, lengths: np.ndarray, uniforms: np.ndarray) -> sp.csr_matrix:
    """Per row, ``lengths[row]`` items drawn without replacement with probability proportional to score.

    Gumbel top-k: the ``lengths[row]`` largest ``log(score) + Gumbel`` keys are a draw without
    replacement from the scores (Vieira 2014; Kool et al., 2019). The scores are the generator's item
    probabilities, so a synthetic user is a draw from them, as the discriminator judged in training,
    not the same few top-scored items for every user of a segment.

    Args:
        scores: rows x items, non-negative.
        lengths: items to draw per row.
        uniforms: rows x items uniform (0, 1) numbers, the draw's randomness (passed in, so two
            calls can share it).
    """
    tiny = np.finfo(np.float32).tiny  # a zero score is drawn only when a row has no other item left
    keys = np.log(np.maximum(scores, tiny)) - np.log(-np.log(np.clip(uniforms, tiny, 1.0 - 1e-7)))
    return decode_top(keys, lengths)


# ---------------------------------------------------------------------------------------------------
# quality measures


def jaccard_distances(a: sp.csr_matrix, b: sp.csr_matrix, chunk: int = 1024) -> np.ndarray:
    """Dense a_rows x b_rows Jaccard distances of 0/1 rows, computed a chunk of ``a`` at a time."""
    a, b = binarize(a), binarize(b)
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
    a, b = binarize(a), binarize(b)
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
    return np.asarray(binarize(x).sum(axis=0)).ravel()


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

    ``score(u, j) = sum_i h_ui cos(i, j)``, computed as ``(H D) F^T F D`` with ``D`` the inverse item
    norms, so the items x items similarity matrix is never formed.
    """
    fit = binarize(fit)
    norms = np.sqrt(item_counts(fit))
    inverse = sp.diags(np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0))
    return np.asarray(((binarize(history) @ inverse) @ fit.T @ (fit @ inverse)).todense(), dtype=np.float32)


def ndcg_at_k(
    score_rows: Any, train: sp.csr_matrix, valid: sp.csr_matrix, users: np.ndarray, k: int = TSTR_K
) -> float:
    """Full-ranking NDCG@k on ``valid`` (train items removed), over ``users``, a chunk at a time.

    Args:
        score_rows: callable rows -> dense scores for those rows.
        train: history whose items are excluded from the ranking.
        valid: held-out relevant items.
        users: rows to evaluate (rows without valid items are skipped).
        k: cut-off.
    """
    per_user = [np.zeros(0)]
    for start in range(0, len(users), INFERENCE_BATCH):
        rows = users[start:start + INFERENCE_BATCH]
        per_user.append(user_metrics(score_rows(rows), train[rows], valid[rows], [k]).values[f"ndcg@{k}"])
    values = np.concatenate(per_user)
    return float(values.mean()) if len(values) else 0.0


# ---------------------------------------------------------------------------------------------------
# generation


@dataclass
class Synthetic:
    """Synthetic users drawn from (segment, noise), decoded to item sets."""

    items: sp.csr_matrix          # synthetic users x items, 0/1
    confidence: sp.csr_matrix     # same pattern, the generator score of each item
    requested: np.ndarray         # the segment asked for
    landed: np.ndarray            # the segment the generated vector is nearest to
    second_draw: sp.csr_matrix    # the same conditions, lengths and decoding draw with fresh noise


@dataclass
class Augmentation:
    """Everything the augment stage produces, before it is written."""

    gan_pos: pd.DataFrame
    syn_users: pd.DataFrame
    candidates: pd.DataFrame
    quality: dict[str, Any]
    generator: Any
    plots: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)


def _generate_batches(generator: Any, profile: Any, segment: np.ndarray, noise: np.ndarray) -> np.ndarray:
    """Generator scores for many rows, a batch at a time; ``profile`` is a CSR matrix or None (zeros)."""
    n_items = int(generator.output.shape[-1])
    out = np.empty((len(segment), n_items), dtype=np.float32)
    for start in range(0, len(segment), INFERENCE_BATCH):
        stop = min(start + INFERENCE_BATCH, len(segment))
        block = (
            np.zeros((stop - start, n_items), dtype=np.float32) if profile is None
            else dense_rows(profile, np.arange(start, stop))
        )
        out[start:stop] = generate(generator, block, segment[start:stop], noise[start:stop])
    return out


def sample_synthetic(
    generator: Any,
    n: int,
    segment_sizes: np.ndarray,
    segment_lengths: list[np.ndarray],
    centroids: np.ndarray,
    seed: int,
    length_from: str = "segment",
) -> Synthetic:
    """Draw ``n`` users from (segment, noise) with the profile zeroed.

    Segments are drawn in proportion to the real segment sizes. A user's items are ``length`` items
    drawn from its scores (``draw_items``). With ``length_from="segment"`` the length is drawn from
    the real lengths of the segment the generated vector lands in (nearest centroid), so a generator
    that ignores the segment also gets the length mix wrong; with ``"generated"`` it is the expected
    size of a 0/1 draw from the scores (their sum, at least 1), so the length distribution is learnt,
    not copied. The second draw uses fresh generator noise but the same lengths and decoding
    randomness, so the two differ only through the noise.
    """
    rng = np.random.default_rng(seed)
    noise_dim = int(generator.input[NOISE].shape[-1])
    requested = rng.choice(len(segment_sizes), size=n, p=segment_sizes / segment_sizes.sum())
    noise_a = rng.standard_normal((n, noise_dim)).astype(np.float32)
    noise_b = rng.standard_normal((n, noise_dim)).astype(np.float32)
    scores = _generate_batches(generator, None, requested, noise_a)
    landed = assign_segments(scores, centroids)
    if length_from == "generated":
        lengths = np.maximum(np.rint(scores.sum(axis=1)), 1).astype(np.int64)
    elif length_from == "segment":
        lengths = np.array([rng.choice(segment_lengths[s]) for s in landed], dtype=np.int64)
    else:
        raise ValueError(f"length_from must be 'segment' or 'generated', got {length_from!r}")
    uniforms = rng.random(scores.shape)
    items = draw_items(scores, lengths, uniforms)
    confidence = items.multiply(scores).tocsr()
    second = draw_items(_generate_batches(generator, None, requested, noise_b), lengths, uniforms)
    return Synthetic(items, confidence, requested, landed, second)


def score_users(
    generator: Any, train: sp.csr_matrix, users: np.ndarray, segments: np.ndarray, draws: int, seed: int
) -> np.ndarray:
    """Mean generator score over ``draws`` noise draws for each of ``users``, conditioned on their profile."""
    rng = np.random.default_rng(seed)
    noise_dim = int(generator.input[NOISE].shape[-1])
    profile = train[users]
    total = np.zeros((len(users), train.shape[1]), dtype=np.float32)
    for _ in range(draws):
        noise = rng.standard_normal((len(users), noise_dim)).astype(np.float32)
        total += _generate_batches(generator, profile, segments[users], noise)
    return total / draws


def discriminator_scores(discriminator: Any, vectors: sp.csr_matrix, segments: np.ndarray) -> np.ndarray:
    """D's probability that each 0/1 row is a real user of its segment (segment-only condition)."""
    out = np.empty(vectors.shape[0], dtype=np.float32)
    for start in range(0, vectors.shape[0], INFERENCE_BATCH):
        rows = np.arange(start, min(start + INFERENCE_BATCH, vectors.shape[0]))
        block = dense_rows(vectors, rows)
        logits = discriminator(
            {VECTOR: block, PROFILE: np.zeros_like(block), SEGMENT: segments[rows].astype(np.int32)}, training=False
        )
        out[rows] = 1.0 / (1.0 + np.exp(-np.asarray(logits, dtype=np.float64).ravel()))
    return out


def duplicate_rows(syn: sp.csr_matrix, real: sp.csr_matrix) -> np.ndarray:
    """True for synthetic rows whose item set equals a real user's or an earlier synthetic row's."""
    def key(m: sp.csr_matrix, i: int) -> bytes:
        return np.sort(m.indices[m.indptr[i]:m.indptr[i + 1]]).tobytes()

    seen = {key(real, i) for i in range(real.shape[0])}
    out = np.zeros(syn.shape[0], dtype=bool)
    for i in range(syn.shape[0]):
        k = key(syn, i)
        out[i] = k in seen
        seen.add(k)
    return out


# ---------------------------------------------------------------------------------------------------
# the stage


def check_config(config: dict[str, Any]) -> None:
    """Raise ValueError naming the first ``augment`` key out of range."""
    for key in _RATIOS:
        if not 0.0 <= float(config[key]) <= 1.0:
            raise ValueError(f"augment.{key} must be in [0, 1], got {config[key]!r}")
    for key in _POSITIVE:
        if int(config[key]) < 1:
            raise ValueError(f"augment.{key} must be a positive integer, got {config[key]!r}")
    if int(config["min_steps"]) < 0:
        raise ValueError(f"augment.min_steps must be >= 0, got {config['min_steps']!r}")
    if float(config["popularity_weight"]) < 0.0:
        raise ValueError(f"augment.popularity_weight must be >= 0, got {config['popularity_weight']!r}")
    if not float(config["d_learning_rate_ratio"]) > 0.0:
        raise ValueError(f"augment.d_learning_rate_ratio must be > 0, got {config['d_learning_rate_ratio']!r}")


def training_epochs(n_users: int, config: dict[str, Any]) -> int:
    """``augment.epochs``, raised so that training takes at least ``augment.min_steps`` batches.

    A few hundred users make a few batches per epoch: without a floor the GAN stops after too few
    steps to move away from its initial scores.
    """
    batches = -(-n_users // int(config["batch_size"]))
    return max(int(config["epochs"]), -(-int(config["min_steps"]) // batches))


def augment(
    train: sp.csr_matrix, valid: sp.csr_matrix, config: dict[str, Any], seed: int
) -> Augmentation:
    """Train the GAN on ``train`` and derive every output and quality figure (no I/O).

    Args:
        train: users x items train interactions (weights; any stored positive counts).
        valid: users x items validation interactions, used only for train-on-synthetic-test-on-real.
        config: the ``augment`` config section.
        seed: the run's seed.
    """
    check_config(config)
    started = time.perf_counter()
    train, valid = binarize(train), binarize(valid)
    n_users, n_items = train.shape
    lengths = np.diff(train.indptr)
    active = np.flatnonzero(lengths > 0)
    if len(active) < 2:
        raise ValueError(f"augment needs at least two users with train interactions, got {len(active)}")
    segments, centroids = kmeans_segments(train, int(config["segments"]), seed)
    n_segments = len(centroids)
    segment_sizes = np.bincount(segments[active], minlength=n_segments).astype(np.float64)
    segment_lengths = [lengths[active][segments[active] == s] for s in range(n_segments)]
    log.info("augment: %d users (%d active) x %d items, %d segments", n_users, len(active), n_items, n_segments)

    strategy = configure_runtime(seed)
    with strategy.scope():
        gan = build_gan(n_items, n_segments, config, seed)
        untrained = build_generator(n_items, n_segments, int(config["hidden"]), int(config["noise_dim"]))
    untrained.set_weights(gan.generator.get_weights())
    dataset = training_dataset(train, np.maximum(segments, 0), active, int(config["batch_size"]), seed)
    epochs = training_epochs(len(active), config)
    fit_started = time.perf_counter()
    progress = keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: log.info(
        "augment: epoch %d/%d: %s", epoch + 1, epochs, ", ".join(f"{k} {v:.4f}" for k, v in sorted(logs.items()))))
    # the dataset shuffles; the task log gets one line per epoch with its losses
    history = gan.fit(dataset, epochs=epochs, verbose=0, shuffle=False, callbacks=[progress])
    losses = {name: float(values[-1]) for name, values in history.history.items()}
    fit_seconds = time.perf_counter() - fit_started
    log.info("augment: GAN trained in %.1fs, final losses %s", fit_seconds, losses)

    # real users: candidates for hard negatives and expanded positives for the sparse ones
    scores = score_users(gan.generator, train, active, segments, int(config["score_draws"]), seed)
    rows, items, values = top_unobserved(scores, train[active], int(config["candidates_per_user"]))
    candidates = _frame(CANDIDATES_SCHEMA, active[rows], items, values)
    sparse = sparse_users(train, float(config["sparse_user_quantile"]))
    in_sparse = np.isin(active, sparse)
    rows, items, values = top_unobserved(
        scores[in_sparse], train[active[in_sparse]], int(config["expand_per_user"]),
        float(config["confidence_threshold"]),
    )
    gan_pos = _frame(GAN_POS_SCHEMA, active[in_sparse][rows], items, values)

    # synthetic users, from the trained and (for comparison) the untrained generator
    n_syn = int(config["synthetic_users"])
    draw = (n_syn, segment_sizes, segment_lengths, centroids, seed + 1, str(config["synthetic_length"]))
    trained_syn = sample_synthetic(gan.generator, *draw)
    untrained_syn = sample_synthetic(untrained, *draw)

    real = train[active]
    rng = np.random.default_rng(seed + 2)
    max_users = int(config["quality_max_users"])
    reference = np.sort(rng.choice(len(active), size=min(max_users, len(active)), replace=False))
    threshold = memorisation_threshold(real, float(config["memorisation_quantile"]), reference)
    kept, filters = _filter(gan.discriminator, trained_syn, real, segments[active][reference], reference,
                            threshold, float(config["discriminator_quantile"]))
    written = trained_syn.items[kept]
    confidence = trained_syn.confidence[kept].tocoo()
    syn_users = _frame(SYN_USERS_SCHEMA, confidence.row, confidence.col, confidence.data)

    # noise use in the user-conditioned mode: top-10 unseen items of the same users from two draws
    probe = active[reference[:200]]
    profile_jaccard = {
        name: _profile_noise_jaccard(generator, train, probe, segments, seed + 3)
        for name, generator in (("trained", gan.generator), ("untrained", untrained))
    }

    edges = length_edges(int(lengths.max()))
    real_items, real_lengths = item_counts(real), length_counts(real, edges)
    eval_users = np.flatnonzero(np.diff(valid.indptr) > 0)
    popularity = np.broadcast_to(real_items.astype(np.float32), (1, n_items))
    # the floor of the JS figures: as many real users as synthetic ones drawn, measured the same way
    real_sample = real[rng.choice(real.shape[0], size=min(n_syn, real.shape[0]), replace=False)]
    figures = {
        name: _figures(matrix, real, real_items, real_lengths, edges, threshold, train, valid, eval_users)
        for name, matrix in (("trained", trained_syn.items), ("untrained", untrained_syn.items), ("written", written))
    }
    quality = {
        "enabled": True,
        "variants": {
            "trained": f"all {n_syn} synthetic users drawn from the trained generator, before the filters",
            "written": f"the {written.shape[0]} of them kept by the filters, as written to {SYN_USERS_FILE}",
            "untrained": "the same draw (segments, noise, lengths) from the generator's initial weights",
            "real_sample": "as many real users drawn at random: the sampling floor of the fidelity figures",
        },
        "fidelity": {
            "js_item_popularity": _pivot(figures, "js_item_popularity"),
            "js_user_length": _pivot(figures, "js_user_length"),
            "segment_agreement": {
                "trained": float(np.mean(trained_syn.requested == trained_syn.landed)),
                "untrained": float(np.mean(untrained_syn.requested == untrained_syn.landed)),
            },
            "real_sample": {
                "users": real_sample.shape[0],
                "js_item_popularity": js_distance(real_items, item_counts(real_sample)),
                "js_user_length": js_distance(real_lengths, length_counts(real_sample, edges)),
            },
        },
        "diversity": {
            "pairwise_jaccard": {**_pivot(figures, "pairwise_jaccard"), "real": mean_pairwise_jaccard(real[reference])},
            "noise_draws_jaccard_segment": {
                "trained": paired_jaccard(trained_syn.items, trained_syn.second_draw),
                "untrained": paired_jaccard(untrained_syn.items, untrained_syn.second_draw),
            },
            "noise_draws_jaccard_profile_top10": profile_jaccard,
        },
        "memorisation": {
            "quantile": float(config["memorisation_quantile"]),
            "threshold_jaccard_distance": threshold,
            "share": _pivot(figures, "memorised_share"),
        },
        "tstr": {
            "metric": f"ndcg@{TSTR_K}",
            "split": "valid",
            "users": len(eval_users),
            "itemknn_on_synthetic": _pivot(figures, "tstr_ndcg"),
            "itemknn_on_real": ndcg_at_k(lambda r: itemknn_scores(real, train[r]), train, valid, eval_users),
            "popularity": ndcg_at_k(lambda r: np.repeat(popularity, len(r), axis=0), train, valid, eval_users),
        },
        "filters": filters,
        "outputs": {
            "segments": n_segments,
            "sparse_users": len(sparse),
            "sparse_length_max": int(lengths[sparse].max()) if len(sparse) else 0,
            "gan_pos_rows": len(gan_pos),
            "gan_pos_users": int(gan_pos[USER_IDX].nunique()),
            "syn_users": int(written.shape[0]),
            "syn_rows": len(syn_users),
            "candidate_rows": len(candidates),
        },
        "training": {
            "epochs": epochs, "steps": epochs * -(-len(active) // int(config["batch_size"])), "users": len(active), "final_losses": losses,
            "seconds": round(fit_seconds, 2),  # fit only (first epoch includes tracing)
            "setup_seconds": round(fit_started - started, 2),  # binarize, k-means, model build
        },
    }
    plots = {
        "item_popularity": {"real": real_items, "trained": item_counts(trained_syn.items),
                            "untrained": item_counts(untrained_syn.items)},
        "user_length": {"real": real_lengths, "trained": length_counts(trained_syn.items, edges),
                        "untrained": length_counts(untrained_syn.items, edges), "edges": edges},
    }
    return Augmentation(gan_pos, syn_users, candidates, quality, gan.generator, plots)


def _frame(schema: pa.Schema, first: np.ndarray, second: np.ndarray, third: np.ndarray) -> pd.DataFrame:
    a, b, c = schema.names
    return pd.DataFrame({
        a: np.asarray(first, dtype=np.int32), b: np.asarray(second, dtype=np.int32),
        c: np.asarray(third, dtype=np.float32),
    })


def _pivot(figures: dict[str, dict[str, float]], name: str) -> dict[str, float]:
    return {variant: values[name] for variant, values in figures.items()}


def _figures(
    syn: sp.csr_matrix, real: sp.csr_matrix, real_items: np.ndarray, real_lengths: np.ndarray,
    edges: np.ndarray, threshold: float, train: sp.csr_matrix, valid: sp.csr_matrix, eval_users: np.ndarray,
) -> dict[str, float]:
    """Fidelity, diversity, memorisation and TSTR figures of one set of synthetic users."""
    return {
        "js_item_popularity": js_distance(real_items, item_counts(syn)),
        "js_user_length": js_distance(real_lengths, length_counts(syn, edges)),
        "pairwise_jaccard": mean_pairwise_jaccard(syn),
        "memorised_share": float(np.mean(memorised(syn, real, threshold))) if syn.shape[0] else 0.0,
        "tstr_ndcg": ndcg_at_k(lambda r: itemknn_scores(syn, train[r]), train, valid, eval_users),
    }


def _filter(
    discriminator: Any, syn: Synthetic, real: sp.csr_matrix, reference_segments: np.ndarray,
    reference: np.ndarray, threshold: float, d_quantile: float,
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Apply the discriminator, memorisation and duplicate filters in turn; return kept rows and counts."""
    real_cut = float(np.quantile(discriminator_scores(discriminator, real[reference], reference_segments), d_quantile))
    syn_d = discriminator_scores(discriminator, syn.items, syn.requested)
    syn_cut = float(np.quantile(syn_d, d_quantile)) if len(syn_d) else 0.0
    # below the worst real users' score, but an over-confident D (it can tell every synthetic user
    # apart on a wide catalogue) must not wipe out the sample: never drop more than the quantile
    d_cut = min(real_cut, syn_cut)
    kept = np.flatnonzero(syn_d >= d_cut)
    filters = [{
        "name": "discriminator", "threshold": d_cut, "real_quantile": real_cut, "synthetic_quantile": syn_cut,
        "before": syn.items.shape[0], "after": len(kept),
    }]
    before = len(kept)
    kept = kept[~memorised(syn.items[kept], real, threshold)]
    filters.append({"name": "memorisation", "threshold": threshold, "before": before, "after": len(kept)})
    before = len(kept)
    kept = kept[~duplicate_rows(syn.items[kept], real)]
    filters.append({"name": "duplicates", "before": before, "after": len(kept)})
    return kept, filters


def _profile_noise_jaccard(
    generator: Any, train: sp.csr_matrix, users: np.ndarray, segments: np.ndarray, seed: int
) -> float:
    draws = [score_users(generator, train, users, segments, 1, seed + i) for i in range(2)]
    tops = []
    for scores in draws:
        rows, items, _ = top_unobserved(scores, train[users], TSTR_K)
        tops.append(sp.csr_matrix((np.ones(len(rows)), (rows, items)), shape=scores.shape))
    return paired_jaccard(*tops)


# ---------------------------------------------------------------------------------------------------
# load


def save_plots(plots: dict[str, dict[str, np.ndarray]], folder: Path) -> list[Path]:
    """Write the popularity and length comparison plots as PNGs; return their paths.

    ``plots["item_popularity"]`` holds item counts per variant (drawn as sorted popularity
    curves); ``plots["user_length"]`` holds length histograms per variant plus their ``edges``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for name, file in (("item_popularity", POPULARITY_PLOT), ("user_length", LENGTH_PLOT)):
        series = dict(plots[name])
        edges = series.pop("edges", None)
        fig, ax = plt.subplots(figsize=(6, 4))
        for label, counts in series.items():
            share = counts / counts.sum() if counts.sum() > 0 else counts.astype(float)
            if edges is None:
                ax.plot(np.arange(1, len(share) + 1), np.sort(share)[::-1], label=label)
            else:
                ax.stairs(share, edges, label=label)
        if edges is None:
            ax.set(xlabel="item rank (each curve sorted by its own popularity)", ylabel="share of interactions",
                   yscale="log")
        else:
            ax.set(xlabel="items per user", ylabel="share of users", xscale="log")
        ax.set_title(name.replace("_", " "))
        ax.legend()
        fig.tight_layout()
        fig.savefig(folder / file, dpi=100)
        plt.close(fig)
        paths.append(folder / file)
    return paths


def _write_parquet(frame: pd.DataFrame, schema: pa.Schema, path: Path) -> None:
    pq.write_table(pa.Table.from_pandas(frame, schema=schema, preserve_index=False), path)


def body(ctx: JobContext) -> dict[str, Any]:
    """Read the date's tables, run the GAN stage (or write empty outputs when disabled), commit."""
    config = ctx.config["augment"]
    seed = int(ctx.config["seed"])
    lineage = {"ds": ctx.ds, "config_hash": config_hash(config), "seed": seed}
    facts: dict[str, Any] = {"ds": ctx.ds, "enabled": bool(config["enabled"]), "path": str(ctx.lake.path("augment", ctx.ds))}
    if not config["enabled"]:
        with ctx.lake.writing("augment", ctx.ds) as out:
            for file, schema in ((GAN_POS_FILE, GAN_POS_SCHEMA), (SYN_USERS_FILE, SYN_USERS_SCHEMA),
                                 (CANDIDATES_FILE, CANDIDATES_SCHEMA)):
                pq.write_table(schema.empty_table(), out / file)
            write_json(out / QUALITY_FILE, {"enabled": False, "lineage": lineage})
        log.info("augment disabled: wrote empty outputs for %s", ctx.ds)
        return facts

    matrices = load_matrices(ctx.lake, ctx.ds)
    result = augment(matrices.train, matrices.valid, config, seed)
    with ctx.lake.writing("augment", ctx.ds) as out:
        _write_parquet(result.gan_pos, GAN_POS_SCHEMA, out / GAN_POS_FILE)
        _write_parquet(result.syn_users, SYN_USERS_SCHEMA, out / SYN_USERS_FILE)
        _write_parquet(result.candidates, CANDIDATES_SCHEMA, out / CANDIDATES_FILE)
        result.generator.save(out / GENERATOR_FILE)
        write_json(out / QUALITY_FILE, {**result.quality, "lineage": lineage})
        save_plots(result.plots, out)
    fidelity = result.quality["fidelity"]
    facts.update(result.quality["outputs"])
    facts.update({
        "js_item_popularity": fidelity["js_item_popularity"]["written"],
        "js_item_popularity_untrained": fidelity["js_item_popularity"]["untrained"],
        "js_user_length": fidelity["js_user_length"]["written"],
        "js_user_length_untrained": fidelity["js_user_length"]["untrained"],
        "generator": str(ctx.lake.path("augment", ctx.ds) / GENERATOR_FILE),
    })
    log.info("augment %s: %s", ctx.ds, facts)
    return facts


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Command line: ``python -m jobs.augment --ds YYYY-MM-DD [--set augment.epochs=5]``."""
    parser = job_parser("Train the augmentation GAN and write expanded positives, synthetic users and candidates.")
    return run_job(parser, body, argv)


if __name__ == "__main__":
    main()
