"""Evaluate the recommender, its no-augmentation ablation and baselines on real held-out test data.

Every model ranks the whole catalogue for each test user from the same input, the user's window
history without their test pairs, and with every item the user interacted with (any label) other than
the test targets removed: the ranking that ``publish`` would serve.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp

from recsys.core.cli import JobContext, job_parser, run_job
from recsys.core.lake import METRICS_FILE, MODEL_FILE, NOAUG_MODEL_FILE, TRAIN_FACTS_FILE, read_json, write_json
from recsys.core.matrices import load_matrices
from recsys.evaluation.baselines import ItemKNN, Popularity
from recsys.evaluation.metrics import UserMetrics, user_metrics
from recsys.models.ease import EASE

log = logging.getLogger(__name__)

BOOTSTRAP_ROUNDS = 1000  # resamples of the test users behind each lift's interval


def sparse_segment(train: sp.csr_matrix, users: np.ndarray, share: float) -> np.ndarray:
    """The ``share`` of ``users`` with the shortest train history (at least one user; ties by index).

    Returns:
        Positions into ``users`` (not user indices), sorted.
    """
    if not 0 < share <= 1:
        raise ValueError(f"evaluate.sparse_share must lie in (0, 1], got {share}")
    if len(users) == 0:
        return np.array([], dtype=np.int64)
    lengths = np.diff(train.indptr)[users]
    size = max(1, int(round(share * len(users))))
    return np.sort(np.argsort(lengths, kind="stable")[:size])


def segment_metrics(per_user: UserMetrics, sparse: np.ndarray) -> dict[str, dict[str, float | int]]:
    """One model's ranking metrics for all its evaluated rows and for the sparse rows among them."""
    return {"all": per_user.summary(), "sparse": per_user.summary(sparse)}


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


def body(ctx: JobContext) -> dict[str, Any]:
    """Score every model for the users with test items and commit ``metrics.json``."""
    from recsys.models.recommender import load_recommender, score_histories

    assert ctx.ds is not None
    settings = ctx.config["evaluate"]
    ks = sorted({int(k) for k in settings["k"]})
    primary = f"ndcg@{ks[0]}"
    matrices = load_matrices(ctx.lake, ctx.ds)
    models_dir = ctx.lake.require("models", ctx.ds)

    # test users only. Each model reads and removes from the ranking what serving would (the window's
    # history and every item the user interacted with, any label), the test targets aside: an item that
    # is never recommended to the user is never ranked here either
    users = np.flatnonzero(np.diff(matrices.test.indptr) > 0)
    history, exclude = matrices.held_out(users)
    test = matrices.test[users]
    sparse = sparse_segment(matrices.train, users, float(settings["sparse_share"]))
    log.info("evaluating %d test users (%d in the sparse segment), %d items", len(users), len(sparse),
             matrices.n_items)

    # EASE with the lambda train chose on valid this night (one choice, recorded in train.json)
    trained = read_json(models_dir / TRAIN_FACTS_FILE)
    ease = EASE(matrices.train, float(trained["ease_lambda"]))
    scorers: dict[str, Callable[[sp.csr_matrix], np.ndarray]] = {
        "model": lambda h: score_histories(load_recommender(models_dir / MODEL_FILE), h),
        "model_noaug": lambda h: score_histories(load_recommender(models_dir / NOAUG_MODEL_FILE), h),
        "popularity": Popularity(matrices.train).scores,
        "itemknn": ItemKNN(matrices.train, neighbors=int(settings["knn_neighbors"])).scores,
        "ease": ease.scores,
    }
    results, per_user = {}, {}
    for name, score in scorers.items():
        per_user[name] = user_metrics(score(history), exclude, test, ks)
        results[name] = segment_metrics(per_user[name], sparse)
        log.info("%s: %s %.4f (all), %.4f (sparse)", name, primary, results[name]["all"][primary],
                 results[name]["sparse"][primary])
    # every test user has a target, so both models' per-user values line up row for row
    augmented, ablation = per_user["model"].values[primary], per_user["model_noaug"].values[primary]
    seed = int(ctx.config["seed"])
    intervals = {"all": lift_interval(augmented, ablation, seed),
                 "sparse": lift_interval(augmented[sparse], ablation[sparse], seed)}
    augmentation = augmentation_verdict(results["model"], results["model_noaug"], primary, intervals)
    log.info("%s", augmentation["verdict"])

    payload = {
        "ds": ctx.ds,
        "models": results,
        "ease_lambda": ease.lam,
        "ease_validation": trained["ease_validation"],
        "augmentation": augmentation,
    }
    with ctx.lake.writing("eval", ctx.ds) as staged:
        write_json(staged / METRICS_FILE, payload)
    facts: dict[str, Any] = {
        "metrics_path": str(ctx.lake.path("eval", ctx.ds) / METRICS_FILE),
        "users": int(len(users)),
        "sparse_users": int(len(sparse)),
        "ease_lambda": ease.lam,
        "helped": augmentation["helped"],
        "lift_all": augmentation["lift_all"],
        "lift_sparse": augmentation["lift_sparse"],
    }
    for name in scorers:
        facts[f"{name}_{primary}"] = float(results[name]["all"][primary])
    return facts


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Command line: ``python -m jobs.evaluate --ds YYYY-MM-DD``."""
    return run_job(job_parser("Evaluate the model, its ablation and baselines on held-out test data."), body, argv)


if __name__ == "__main__":
    main()
