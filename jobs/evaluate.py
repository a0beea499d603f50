"""Evaluate the recommender, its no-augmentation ablation and baselines on real held-out test data.

The protocol (who is evaluated, what each model reads and may not rank) is
:mod:`recsys.evaluation.protocol`; the augmentation lift and its noise, :mod:`recsys.evaluation.lift`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from recsys.core.cli import JobContext, job_parser, run_job
from recsys.core.lake import METRICS_FILE, MODEL_FILE, NOAUG_MODEL_FILE, TRAIN_FACTS_FILE, read_json, write_json
from recsys.core.matrices import load_matrices
from recsys.evaluation.baselines import ItemKNN, Popularity
from recsys.evaluation.lift import augmentation_lift
from recsys.evaluation.protocol import HeldOut, cutoffs, recommender_scorer, score_models, sparse_segment
from recsys.models.ease import EASE

log = logging.getLogger(__name__)


def body(ctx: JobContext) -> dict[str, Any]:
    """Score every model for the users with test items and commit ``metrics.json``."""
    from recsys.models.recommender import load_recommender

    assert ctx.ds is not None
    settings = ctx.config["evaluate"]
    ks = cutoffs(settings["k"])
    primary = f"ndcg@{ks[0]}"
    matrices = load_matrices(ctx.lake, ctx.ds)
    models_dir = ctx.lake.require("models", ctx.ds)
    held = HeldOut.of(matrices)
    sparse = sparse_segment(matrices.train, held.users, float(settings["sparse_share"]))
    log.info("evaluating %d test users (%d in the sparse segment), %d items", len(held.users), len(sparse),
             matrices.n_items)

    # EASE with the lambda train chose on valid this night (one choice, recorded in train.json)
    trained = read_json(models_dir / TRAIN_FACTS_FILE)
    ease = EASE(matrices.train, float(trained["ease_lambda"]))
    scorers = {
        "model": recommender_scorer(load_recommender(models_dir / MODEL_FILE), matrices.n_items),
        "model_noaug": recommender_scorer(load_recommender(models_dir / NOAUG_MODEL_FILE), matrices.n_items),
        "popularity": Popularity(matrices.train).scores,
        "itemknn": ItemKNN(matrices.train, neighbors=int(settings["knn_neighbors"])).scores,
        "ease": ease.scores,
    }
    results, per_user = score_models(scorers, held, ks, sparse)
    augmentation = augmentation_lift(per_user["model"], per_user["model_noaug"], primary, sparse,
                                     int(ctx.config["seed"]))
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
        "users": int(len(held.users)),
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
