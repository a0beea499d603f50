"""The train job: a date's examples and tables in, the recommender, its no-augmentation ablation and its final fit out."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

from recsys.core.cli import JobContext, job_parser, run_job
from recsys.core.lake import FINAL_MODEL_FILE, MODEL_FILE, NOAUG_MODEL_FILE, TRAIN_FACTS_FILE, write_json
from recsys.core.matrices import load_matrices
from recsys.sampling.examples import read_examples

log = logging.getLogger(__name__)

MODEL_FILES = {"model": MODEL_FILE, "model_noaug": NOAUG_MODEL_FILE, "model_final": FINAL_MODEL_FILE}


def body(ctx: JobContext) -> dict[str, Any]:
    """Train the models on the date's examples and commit them with their training facts.

    ``model`` and ``model_noaug`` are fitted on train with early stopping on valid (evaluate judges
    them on test); with ``train.final_fit``, ``model_final`` is then refit on the whole window with
    ``model``'s hyperparameters and best epoch count, for serving (:mod:`recsys.models.training`).
    """
    assert ctx.ds is not None
    started = time.perf_counter()
    config = {**ctx.config["train"], "seed": int(ctx.config["seed"])}
    matrices = load_matrices(ctx.lake, ctx.ds)
    examples = read_examples(ctx.lake, ctx.ds)

    # TensorFlow is imported only once the inputs are known to be there
    from recsys.models.recommender import save_recommender
    from recsys.models.runtime import configure_runtime
    from recsys.models.training import train_models

    configure_runtime(config["seed"])
    trained = train_models(examples, matrices, config)
    facts = {**trained.facts, "ds": ctx.ds, "n_users": matrices.n_users, "n_items": matrices.n_items,
             "config": config, "seconds": round(time.perf_counter() - started, 2)}
    with ctx.lake.writing("models", ctx.ds) as staged:
        for name, model in trained.models.items():
            save_recommender(model, staged / MODEL_FILES[name])
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
        "seconds": facts["seconds"],
    }


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Command line: ``python -m jobs.train --ds YYYY-MM-DD [--set train.epochs=5]``."""
    return run_job(job_parser("Train the recommender, its no-augmentation ablation and its final fit."), body, argv)


if __name__ == "__main__":
    main()
