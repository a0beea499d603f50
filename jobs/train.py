"""Train the recommender on the expanded examples, and its no-augmentation ablation, for one date."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import pandas as pd

from jobs.common.cli import JobContext, job_parser, run_job
from jobs.common.columns import SOURCE, SOURCES
from jobs.common.lake import Lake, write_json
from jobs.common.matrices import load_matrices

log = logging.getLogger(__name__)

EXAMPLES_FILE = "examples.parquet"
MODEL_FILE = "model.keras"
NOAUG_MODEL_FILE = "model_noaug.keras"
TRAIN_FACTS_FILE = "train.json"
# the ablation keeps real positives and sampled negatives: everything but generated or mined positives
NOAUG_SOURCES = ("real_pos", "neg_uniform", "neg_pop", "neg_hard")


def read_examples(lake: Lake, ds: str) -> pd.DataFrame:
    """The expanded training examples of ``ds``.

    Raises:
        FileNotFoundError: the examples partition is missing.
        ValueError: a row has a source outside ``jobs.common.columns.SOURCES``.
    """
    path = lake.require("examples", ds) / EXAMPLES_FILE
    if not path.exists():
        raise FileNotFoundError(f"examples file {path} is missing; run the expand stage for {ds} first")
    examples = pd.read_parquet(path)
    if SOURCE not in examples.columns:
        raise ValueError(f"{path}: missing column {SOURCE}")
    unknown = sorted(set(examples[SOURCE].astype(str).unique()) - set(SOURCES))
    if unknown:
        raise ValueError(f"{path}: column {SOURCE} has unknown value(s) {', '.join(unknown)}")
    return examples


def without_augmentation(examples: pd.DataFrame) -> pd.DataFrame:
    """The ablation's examples: real positives and negatives only."""
    return examples[examples[SOURCE].isin(NOAUG_SOURCES)].reset_index(drop=True)


def counts_by_source(examples: pd.DataFrame) -> dict[str, int]:
    """Examples per source, every known source listed (0 when absent)."""
    counts = examples[SOURCE].value_counts()
    return {source: int(counts.get(source, 0)) for source in SOURCES}


def body(ctx: JobContext) -> dict[str, Any]:
    """Train both models on the date's examples and commit them with their training facts."""
    assert ctx.ds is not None
    started = time.perf_counter()
    config = {**ctx.config["train"], "seed": int(ctx.config["seed"])}
    matrices = load_matrices(ctx.lake, ctx.ds)
    examples = read_examples(ctx.lake, ctx.ds)
    ablation = without_augmentation(examples)

    # TensorFlow is imported only once the inputs are known to be there
    from jobs.models.recommender import fit_recommender, save_recommender
    from jobs.models.runtime import configure_runtime

    configure_runtime(config["seed"])
    log.info("training on %d examples (%d without augmentation), %d users x %d items",
             len(examples), len(ablation), matrices.n_users, matrices.n_items)

    facts: dict[str, Any] = {"examples_by_source": counts_by_source(examples), "models": {}}
    models = {}
    for name, frame in (("model", examples), ("model_noaug", ablation)):
        model, history = fit_recommender(frame, matrices, config)
        models[name] = model
        facts["models"][name] = {**history, "examples": int(len(frame))}
        log.info("%s: %d epochs, best validation ndcg@10 %.4f at epoch %d",
                 name, history["epochs"], history["best_valid_ndcg@10"], history["best_epoch"])

    facts.update({
        "ds": ctx.ds, "n_users": matrices.n_users, "n_items": matrices.n_items, "config": config,
        "seconds": round(time.perf_counter() - started, 2),
    })
    with ctx.lake.writing("models", ctx.ds) as staged:
        save_recommender(models["model"], staged / MODEL_FILE)
        save_recommender(models["model_noaug"], staged / NOAUG_MODEL_FILE)
        write_json(staged / TRAIN_FACTS_FILE, facts)
    out = ctx.lake.path("models", ctx.ds)
    return {
        "models_path": str(out),
        "model": str(out / MODEL_FILE),
        "model_noaug": str(out / NOAUG_MODEL_FILE),
        "epochs": facts["models"]["model"]["epochs"],
        "valid_ndcg@10": facts["models"]["model"]["best_valid_ndcg@10"],
        "valid_ndcg@10_noaug": facts["models"]["model_noaug"]["best_valid_ndcg@10"],
        "examples": int(len(examples)),
        "examples_noaug": int(len(ablation)),
        "seconds": facts["seconds"],
    }


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Command line: ``python -m jobs.train --ds YYYY-MM-DD [--set train.epochs=5]``."""
    return run_job(job_parser("Train the recommender and its no-augmentation ablation."), body, argv)


if __name__ == "__main__":
    main()
