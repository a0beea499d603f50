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

# what a segment's lift says: beyond the noise either way, within it, or (without an interval) its point estimate
HELPED, HURT, UNCLEAR, SAME = "helped", "hurt", "unclear", "same"
_PHRASES = {HELPED: "helped on", HURT: "hurt on", UNCLEAR: "made no clear difference on",
            SAME: "made no difference on"}


def segment_status(augmented: float, ablation: float, interval: tuple[float, float] | None) -> str:
    """What one segment's lift says: :data:`HELPED`, :data:`HURT`, :data:`UNCLEAR` or :data:`SAME`.

    With an interval the interval decides: above 1 helped, below 1 hurt, containing 1 unclear (within
    the test set's noise), whatever the point estimate. Without one (too few users, or an ablation that
    never scored) only the point estimates can be compared.
    """
    if interval is not None:
        low, high = interval
        return HELPED if low > 1.0 else HURT if high < 1.0 else UNCLEAR
    return HELPED if augmented > ablation else HURT if augmented < ablation else SAME


def _figure(augmented: float, ablation: float, interval: tuple[float, float] | None) -> str:
    lift = _lift(augmented, ablation)
    text = f"{lift:.3f}×" if lift is not None else f"{augmented:.4f} vs 0 without"
    if interval is None:
        return f"{text}, no interval"
    low, high = interval
    where = "above 1" if low > 1.0 else "below 1" if high < 1.0 else "contains 1: within the noise"
    return f"{text}, 95% interval {low:.3f}–{high:.3f}×, {where}"


def verdict_text(
    values: Mapping[str, tuple[float, float]],
    intervals: Mapping[str, tuple[float, float] | None] | None = None,
) -> tuple[bool, str]:
    """Whether augmentation helped, and the sentence that says so segment by segment.

    Args:
        values: per segment (``all``, ``sparse``), the metric with augmentation and without.
        intervals: per segment, the lift's 95% interval (:func:`lift_interval`) where there is one.

    Returns:
        ``(helped, sentence)``: helped when at least one segment helped and none was hurt, each judged by
        :func:`segment_status`; the sentence names each segment's status with its lift and interval,
        e.g. ``Augmentation helped on all users (1.008×, 95% interval 1.003–1.013×, above 1) and made no
        clear difference on the sparse segment (0.970×, 95% interval 0.850–1.100×, contains 1: within the
        noise).``
    """
    clauses, statuses, previous = [], [], None
    for segment, label in SEGMENTS:
        if segment not in values:
            continue
        augmented, ablation = values[segment]
        interval = (intervals or {}).get(segment)
        status = segment_status(augmented, ablation, interval)
        # a second segment with the same status reads "and on ..." rather than repeating the verb
        phrase = "on" if status == previous else _PHRASES[status]
        clauses.append(f"{phrase} {label} ({_figure(augmented, ablation, interval)})")
        statuses.append(status)
        previous = status
    helped = HELPED in statuses and HURT not in statuses
    return helped, f"Augmentation {' and '.join(clauses)}." if clauses else "No augmentation lift."


def augmentation_verdict(
    augmented: Mapping[str, Mapping[str, float]],
    ablation: Mapping[str, Mapping[str, float]],
    metric: str,
    intervals: Mapping[str, tuple[float, float] | None] | None = None,
) -> dict[str, Any]:
    """Did augmentation help? Compare the model with its ablation on ``metric`` in both segments.

    Each segment is judged by its interval when there is one (:func:`segment_status`): a lift whose 95%
    interval contains 1 is within the noise, whatever its point estimate. Augmentation helped when at
    least one segment helped and none was hurt.

    Returns:
        ``{"metric", "lift_all", "lift_sparse", "helped", "verdict"}`` plus ``lift_<segment>_low`` and
        ``_high`` for each segment with an interval; a lift is ``None`` when the ablation scored 0.
    """
    values = {segment: (float(augmented[segment][metric]), float(ablation[segment][metric]))
              for segment, _ in SEGMENTS}
    helped, verdict = verdict_text(values, intervals)
    (a_all, n_all), (a_sp, n_sp) = values["all"], values["sparse"]
    verdict += (f" {metric} {a_all:.4f} with it vs {n_all:.4f} without on all users, "
                f"{a_sp:.4f} vs {n_sp:.4f} on the sparse segment.")
    out: dict[str, Any] = {"metric": metric, "lift_all": _lift(a_all, n_all), "lift_sparse": _lift(a_sp, n_sp)}
    for segment, _ in SEGMENTS:
        interval = (intervals or {}).get(segment)
        if interval is not None:
            out.update({f"lift_{segment}_low": interval[0], f"lift_{segment}_high": interval[1]})
    return {**out, "helped": helped, "verdict": verdict}


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
