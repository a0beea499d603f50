"""Did augmentation help? The lift of the model over its no-augmentation ablation, with its noise."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from recsys.evaluation.metrics import UserMetrics
from recsys.evaluation.protocol import segment_metrics

BOOTSTRAP_ROUNDS = 1000  # resamples of the test users behind each lift's interval


def lift_interval(
    augmented: np.ndarray, ablation: np.ndarray, seed: int, rounds: int = BOOTSTRAP_ROUNDS
) -> tuple[float, float] | None:
    """95% paired bootstrap interval of the lift, mean(augmented) / mean(ablation), users resampled.

    Both arrays hold one value per user, in the same user order. The interval says how far the lift
    could move with another draw of test users of the same kind: one that contains 1.0 means the
    difference is within the noise of this test set.

    Returns:
        ``(low, high)``, or ``None`` when there are no users or the ablation never scores above 0.
    """
    if len(augmented) != len(ablation):
        raise ValueError(f"lift_interval: {len(augmented)} augmented values vs {len(ablation)} ablation values")
    if len(ablation) == 0 or not (ablation > 0).any():
        return None
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(ablation), size=(rounds, len(ablation)))
    reference = ablation[draws].sum(axis=1)
    lifts = augmented[draws].sum(axis=1)[reference > 0] / reference[reference > 0]
    low, high = np.percentile(lifts, [2.5, 97.5])
    return float(low), float(high)


def _lift(value: float, reference: float) -> float | None:
    return value / reference if reference > 0 else None


SEGMENTS = (("all", "all users"), ("sparse", "the sparse segment"))


def augmentation_verdict(
    augmented: Mapping[str, Mapping[str, float]],
    ablation: Mapping[str, Mapping[str, float]],
    metric: str,
    intervals: Mapping[str, tuple[float, float] | None] | None = None,
) -> dict[str, Any]:
    """Did augmentation help? Compare the model with its ablation on ``metric`` in both segments.

    Augmentation helped when the augmented model is no worse on all users and on the sparse
    segment, and better on at least one of them. With ``intervals`` (per segment, from
    :func:`lift_interval`), the verdict also says whether each lift is beyond the test set's noise.

    Returns:
        ``{"metric", "lift_all", "lift_sparse", "helped", "verdict"}`` plus ``lift_<segment>_low`` and
        ``_high`` for each segment with an interval; a lift is ``None`` when the ablation scored 0.
    """
    a_all, n_all = float(augmented["all"][metric]), float(ablation["all"][metric])
    a_sp, n_sp = float(augmented["sparse"][metric]), float(ablation["sparse"][metric])
    helped = a_all >= n_all and a_sp >= n_sp and (a_all > n_all or a_sp > n_sp)
    if helped:
        lead = "Augmentation helped"
    elif a_all == n_all and a_sp == n_sp:
        lead = "Augmentation made no difference"
    else:
        lead = "Augmentation did not help"
    verdict = (
        f"{lead}: {metric} {a_all:.4f} with it vs {n_all:.4f} without on all users, "
        f"{a_sp:.4f} vs {n_sp:.4f} on the sparse segment."
    )
    out: dict[str, Any] = {"metric": metric, "lift_all": _lift(a_all, n_all), "lift_sparse": _lift(a_sp, n_sp)}
    spans = []
    for segment, label in SEGMENTS:
        interval = (intervals or {}).get(segment)
        if interval is None:
            continue
        low, high = interval
        out.update({f"lift_{segment}_low": low, f"lift_{segment}_high": high})
        noise = "within the noise" if low <= 1.0 <= high else "beyond the noise"
        spans.append(f"{label} {low:.3f}-{high:.3f}x ({noise})")
    if spans:
        verdict += f" 95% interval of the lift over resampled test users: {'; '.join(spans)}."
    return {**out, "helped": bool(helped), "verdict": verdict}


def augmentation_lift(augmented: UserMetrics, ablation: UserMetrics, metric: str, sparse: np.ndarray,
                      seed: int) -> dict[str, Any]:
    """The verdict of :func:`augmentation_verdict` on ``metric``, with each segment's bootstrap interval.

    Args:
        augmented: the model's per-user metrics.
        ablation: the ablation's, over the same users in the same order (every test user has a target).
        metric: the metric judged, e.g. ``ndcg@10``.
        sparse: positions of the sparse segment's users (:func:`recsys.evaluation.protocol.sparse_segment`).
        seed: the bootstrap's seed.
    """
    a, n = augmented.values[metric], ablation.values[metric]
    intervals = {"all": lift_interval(a, n, seed), "sparse": lift_interval(a[sparse], n[sparse], seed)}
    return augmentation_verdict(segment_metrics(augmented, sparse), segment_metrics(ablation, sparse), metric,
                                intervals)
