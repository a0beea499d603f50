"""The train job: a date's examples and tables in, the recommender, its no-augmentation ablation and its final fit out."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from recsys.content.vectors import read_item_vectors
from recsys.core.cli import JobContext, job_parser, run_job
from recsys.core.columns import ITEM_ID, ITEM_IDX
from recsys.core.lake import (
    COLD_ITEMS_FILE,
    COLD_MODEL_FILE,
    COLD_NOCONTENT_MODEL_FILE,
    FINAL_MODEL_FILE,
    MODEL_FILE,
    NOAUG_MODEL_FILE,
    TRAIN_FACTS_FILE,
    write_json,
    write_parquet,
)
from recsys.core.matrices import Matrices, load_matrices
from recsys.evaluation.cold import choose_cold_items, skip_reason, without_items
from recsys.sampling.examples import read_examples

log = logging.getLogger(__name__)

MODEL_FILES = {"model": MODEL_FILE, "model_noaug": NOAUG_MODEL_FILE, "model_final": FINAL_MODEL_FILE,
               "model_cold": COLD_MODEL_FILE, "model_cold_nocontent": COLD_NOCONTENT_MODEL_FILE}


def cold_start_plan(ctx: JobContext, matrices: Matrices) -> tuple[np.ndarray, pd.DataFrame | None, dict[str, Any]]:
    """The night's simulated new items and the content generator's positives for them, learnt without them.

    Returns:
        ``(cold items, content positives, facts)``; no items and no positives, with ``facts["skipped"]``
        saying why, when ``evaluate.cold_item_share`` is 0, the date has no text embeddings or no item a
        test interaction.
    """
    assert ctx.ds is not None
    share = float(ctx.config["evaluate"]["cold_item_share"])
    vectors, has = read_item_vectors(ctx.lake, ctx.ds, matrices.item_ids) if share > 0 else (None, None)
    cold = choose_cold_items(matrices.test, share, int(ctx.config["seed"]))
    reason = skip_reason(share, has) or (None if len(cold) else "no item has a test interaction")
    if reason is not None:
        log.info("cold-start fits skipped: %s", reason)
        return np.zeros(0, np.int64), None, {"skipped": reason}
    from recsys.augmentation.content import content_positives

    positives = content_positives(without_items(matrices, cold).train, vectors, has, cold, ctx.config["content"])
    facts = {"share": share, "items": int(len(cold)), "items_with_embedding": int(has[cold].sum()),
             "content_pos": int(len(positives)), "content_items": int(positives[ITEM_IDX].nunique())}
    log.info("cold start: %d items held out (%d with an embedding); the content generator gave %d positives "
             "to %d of them", facts["items"], facts["items_with_embedding"], facts["content_pos"],
             facts["content_items"])
    return cold, positives, facts


def body(ctx: JobContext) -> dict[str, Any]:
    """Train the models on the date's examples and commit them with their training facts.

    ``model`` and ``model_noaug`` are fitted on train with early stopping on valid (evaluate judges
    them on test); with ``train.final_fit``, ``model_final`` is then refit on the whole window with
    ``model``'s hyperparameters and best epoch count, for serving (:mod:`recsys.models.training`). With
    ``evaluate.cold_item_share`` above 0 and the date's text embeddings, ``model_cold`` and
    ``model_cold_nocontent`` are fitted without a seeded share of items (``cold_items.parquet``), for the
    cold-start evaluation (:mod:`recsys.evaluation.cold`).
    """
    assert ctx.ds is not None
    started = time.perf_counter()
    # the sampled objective's log-Q correction needs the popularity sampler the negatives came from
    config = {**ctx.config["train"], "seed": int(ctx.config["seed"]),
              "popularity_alpha": float(ctx.config["expand"]["popularity_alpha"])}
    matrices = load_matrices(ctx.lake, ctx.ds)
    examples = read_examples(ctx.lake, ctx.ds)

    # TensorFlow is imported only once the inputs are known to be there
    from recsys.models.recommender import save_recommender
    from recsys.models.runtime import configure_runtime
    from recsys.models.training import content_examples, fit_cold_start, train_models

    configure_runtime(config["seed"])
    cold, positives, cold_facts = cold_start_plan(ctx, matrices)
    trained = train_models(examples, matrices, config)
    if positives is not None:
        content = content_examples(positives, cold, float(ctx.config["expand"]["synthetic_weight"]), examples)
        fit_cold_start(trained, examples, matrices, config, cold, content)
    trained.facts["cold_start"] = cold_facts
    facts = {**trained.facts, "ds": ctx.ds, "n_users": matrices.n_users, "n_items": matrices.n_items,
             "config": config, "seconds": round(time.perf_counter() - started, 2)}
    with ctx.lake.writing("models", ctx.ds) as staged:
        for name, model in trained.models.items():
            save_recommender(model, staged / MODEL_FILES[name])
        if len(cold):
            write_parquet(pa.table({ITEM_IDX: pa.array(cold, pa.int32()),
                                    ITEM_ID: pa.array(matrices.item_ids[cold].astype(str), pa.string())}),
                          staged / COLD_ITEMS_FILE)
        write_json(staged / TRAIN_FACTS_FILE, facts)
    out = ctx.lake.path("models", ctx.ds)
    runs = facts["models"]
    return {
        "models_path": str(out),
        **{name: str(out / file) if name in trained.models else None for name, file in MODEL_FILES.items()},
        "epochs": runs["model"]["epochs"],
        "valid_ndcg@10": runs["model"]["best_valid_ndcg@10"],
        "valid_ndcg@10_noaug": runs["model_noaug"]["best_valid_ndcg@10"],
        "examples": int(len(examples)),
        "examples_noaug": runs["model_noaug"]["examples"],
        "cold_items": int(len(cold)),
        "seconds": facts["seconds"],
    }


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Command line: ``python -m jobs.train --ds YYYY-MM-DD [--set train.epochs=5]``."""
    return run_job(job_parser("Train the recommender, its no-augmentation ablation and its final fit."), body, argv)


if __name__ == "__main__":
    main()
