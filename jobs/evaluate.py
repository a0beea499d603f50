"""Evaluate the recommender, its no-augmentation ablation and baselines on real held-out test data.

The protocol (who is evaluated, what each model reads and may not rank) is
:mod:`recsys.evaluation.protocol`; the augmentation lift and its noise, :mod:`recsys.evaluation.lift`; the
cold-start evaluation of the items train held out as simulated new items, :mod:`recsys.evaluation.cold`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recsys.content.vectors import read_item_vectors
from recsys.core.cli import JobContext, job_parser, run_job
from recsys.core.columns import ITEM_ID, ITEM_IDX, TEXT
from recsys.core.lake import (
    CATALOGUE_FILE,
    COLD_ITEMS_FILE,
    COLD_MODEL_FILE,
    COLD_NOCONTENT_MODEL_FILE,
    METRICS_FILE,
    MODEL_FILE,
    NOAUG_MODEL_FILE,
    TRAIN_FACTS_FILE,
    read_json,
    write_json,
)
from recsys.core.matrices import Matrices, load_matrices
from recsys.evaluation.baselines import ItemKNN, Popularity
from recsys.evaluation.cold import (
    EmbeddingProfile,
    RandomOrder,
    TfidfProfile,
    catalogue_texts,
    cold_start_section,
    skip_reason,
)
from recsys.evaluation.lift import augmentation_lift
from recsys.evaluation.metrics import target_users
from recsys.evaluation.protocol import HeldOut, cutoffs, recommender_scorer, score_models, sparse_segment
from recsys.models.ease import EASE

log = logging.getLogger(__name__)


def cold_start(ctx: JobContext, matrices: Matrices, held: HeldOut, models_dir: Path, trained: dict[str, Any],
               ks: Sequence[int]) -> dict[str, Any]:
    """metrics.json's ``cold_start``: the cold fits and the baselines on the items train held out.

    ``{"skipped": why}`` when train made no cold-start fits (share 0, no embeddings) or there is no catalogue.
    """
    from recsys.models.recommender import load_recommender

    assert ctx.ds is not None
    share = float(ctx.config["evaluate"]["cold_item_share"])
    items_path = models_dir / COLD_ITEMS_FILE
    catalogue_path = ctx.lake.path("catalogue", ctx.ds) / CATALOGUE_FILE
    reason, vectors, has = None, None, None
    if share <= 0:
        reason = skip_reason(share, None)
    elif not items_path.is_file():  # train says why it made no cold fits
        reason = trained.get("cold_start", {}).get("skipped", f"train wrote no {COLD_ITEMS_FILE}")
    elif not catalogue_path.is_file():
        reason = f"no catalogue for this date ({catalogue_path})"
    else:
        vectors, has = read_item_vectors(ctx.lake, ctx.ds, matrices.item_ids)
        reason = skip_reason(share, has)
    if reason is not None:
        return {"skipped": reason}
    cold = pd.read_parquet(items_path, columns=[ITEM_IDX])[ITEM_IDX].to_numpy(np.int64)
    texts = catalogue_texts(pd.read_parquet(catalogue_path, columns=[ITEM_ID, TEXT]), matrices.item_ids)
    scorers = {
        "model_cold": recommender_scorer(load_recommender(models_dir / COLD_MODEL_FILE), matrices.n_items),
        "model_cold_nocontent": recommender_scorer(load_recommender(models_dir / COLD_NOCONTENT_MODEL_FILE),
                                                   matrices.n_items),
        "tfidf": TfidfProfile(texts).scores,
        "embedding_knn": EmbeddingProfile(vectors, has).scores,
        "random": RandomOrder(int(ctx.config["seed"])).scores,
    }
    return cold_start_section(scorers, held, cold, ks, int(ctx.config["seed"]), share)


def body(ctx: JobContext) -> dict[str, Any]:
    """Score every model for the users with test items (a sample of ``evaluate.max_users``); commit metrics.json."""
    from recsys.models.recommender import load_recommender

    assert ctx.ds is not None
    settings = ctx.config["evaluate"]
    ks = cutoffs(settings["k"])
    primary = f"ndcg@{ks[0]}"
    matrices = load_matrices(ctx.lake, ctx.ds)
    models_dir = ctx.lake.require("models", ctx.ds)
    held = HeldOut.of(matrices, int(settings["max_users"]), int(ctx.config["seed"]))
    sparse = sparse_segment(matrices.train, held.users, float(settings["sparse_share"]))
    log.info("evaluating %d of the %d test users (evaluate.max_users; %d in the sparse segment), %d items",
             len(held.users), len(target_users(matrices.test)), len(sparse), matrices.n_items)

    # EASE with the lambda train chose on valid this night and over the items its path covers (train.json)
    trained = read_json(models_dir / TRAIN_FACTS_FILE)
    ease = EASE(matrices.train, float(trained["ease_lambda"]), max_items=trained.get("ease_max_items"))
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
    cold = cold_start(ctx, matrices, held, models_dir, trained, ks)
    log.info("%s", cold.get("verdict") or f"Cold-start evaluation skipped: {cold['skipped']}")

    payload = {
        "ds": ctx.ds,
        "models": results,
        "ease_lambda": ease.lam,
        "ease_items": int(len(ease.active)),
        "ease_validation": trained["ease_validation"],
        "augmentation": augmentation,
        "cold_start": cold,
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
        "cold_start_met": cold.get("targets", {}).get("met"),
    }
    for name in scorers:
        facts[f"{name}_{primary}"] = float(results[name]["all"][primary])
    return facts


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Command line: ``python -m jobs.evaluate --ds YYYY-MM-DD``."""
    return run_job(job_parser("Evaluate the model, its ablation and baselines on held-out test data."), body, argv)


if __name__ == "__main__":
    main()
