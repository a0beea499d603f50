"""Sampled softmax for large catalogues: each positive against its row's sampled negatives, log-Q corrected."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import scipy.sparse as sp
import tensorflow as tf

from recsys.sampling.popularity import popularity_weights

OBJECTIVES = ("auto", "full", "sampled")
DEFAULT_LARGE_CATALOGUE_ITEMS = 50_000
DEFAULT_POPULARITY_ALPHA = 0.75  # expand.popularity_alpha's default: the sampler the negatives came from
# a masked-out candidate's logit: exp() of it is 0 in float32, yet it stays finite so gradients do too
_MASKED = -1e9

# loss(labels, weights, logits) -> scalar; labels and weights are dense users x items batches, and a
# weight of 0 marks a position that is not an example.
Loss = Callable[[tf.Tensor, tf.Tensor, tf.Tensor], tf.Tensor]


def choose_objective(n_items: int, config: Mapping[str, Any]) -> str:
    """``full`` or ``sampled``: ``train.objective``, where ``auto`` picks sampled above ``train.large_catalogue_items``.

    Raises:
        ValueError: ``train.objective`` is not one of auto, full, sampled.
    """
    objective = str(config.get("objective", "auto"))
    if objective not in OBJECTIVES:
        raise ValueError(f"train.objective: unknown objective {objective!r}; known: {', '.join(OBJECTIVES)}")
    if objective != "auto":
        return objective
    threshold = int(config.get("large_catalogue_items", DEFAULT_LARGE_CATALOGUE_ITEMS))
    return "sampled" if n_items > threshold else "full"


def popularity_log_q(train: sp.spmatrix, alpha: float) -> np.ndarray:
    """log of each item's draw probability under the popularity sampler (``count ** alpha`` on train counts).

    Items the sampler never draws (no train interaction; the uniform sampler covers them) get the
    smallest probability of a drawn item, so their correction is the largest but finite.
    """
    counts = np.asarray(sp.csc_matrix(train).getnnz(axis=0), dtype=np.float64)
    weights = popularity_weights(counts, alpha)
    q = weights / weights.sum()
    q = np.where(q > 0, q, q[q > 0].min())
    return np.log(q).astype(np.float32)


def _softmax_against(z: tf.Tensor, labels: tf.Tensor, weights: tf.Tensor, negatives: tf.Tensor) -> tf.Tensor:
    """Per positive ``-log(exp(z_p) / (exp(z_p) + sum_n exp(z_n)))`` over its row's negatives, weighted, mean over rows."""
    neg_lse = tf.reduce_logsumexp(tf.where(negatives, z, _MASKED), axis=-1, keepdims=True)
    per_candidate = tf.nn.softplus(neg_lse - z)  # log(1 + sum_n exp(z_n - z_p)), stable
    return tf.reduce_mean(tf.reduce_sum(labels * weights * per_candidate, axis=-1))


def sampled_softmax(log_q: np.ndarray) -> Loss:
    """The sampled softmax loss with the log-Q correction of a sampler with ``log_q``.

    A row's candidates are its positives (label 1) and its sampled negatives (label 0 with a weight
    above 0: the expanded negatives). Every candidate's logit has ``log q`` of its item subtracted,
    as ``tf.nn.sampled_softmax_loss`` does (Bengio & Senecal 2008; Yi et al. 2019), so popular items
    that the sampler over-draws are not pushed down more than the full softmax would push them.
    Each positive counts with its weight against all of its row's negatives.
    """
    lq = tf.constant(np.asarray(log_q, dtype=np.float32))

    def loss(labels: tf.Tensor, weights: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
        negatives = (weights > 0) & (labels == 0)
        return _softmax_against(logits - lq, labels, weights, negatives)

    return loss


def in_batch_softmax(labels: tf.Tensor, weights: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
    """The ablation without sampled negatives: each positive against the batch's other positives, uncorrected.

    The rows' own label-0 examples are ignored; an item that is a positive of another row in the
    batch (and not of this one) is this row's negative.
    """
    positive = (labels > 0) & (weights > 0)
    in_batch = tf.reduce_any(positive, axis=0, keepdims=True)
    return _softmax_against(logits, labels, weights, in_batch & ~positive)
