"""Train the recommender on the expanded examples, its no-augmentation ablation and its final fit, for one date."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recsys.core.cli import JobContext, job_parser, run_job
from recsys.core.columns import ITEM_IDX, LABEL, SOURCE, SOURCES, USER_IDX, WEIGHT
from recsys.core.lake import (
    EXAMPLES_FILE,
    FINAL_MODEL_FILE,
    MODEL_FILE,
    NOAUG_MODEL_FILE,
    TRAIN_FACTS_FILE,
    Lake,
    write_json,
)
from recsys.core.matrices import Matrices, load_matrices

log = logging.getLogger(__name__)

# the ablation keeps real positives and sampled negatives: everything but generated or mined positives
NOAUG_SOURCES = ("real_pos", "neg_uniform", "neg_pop", "neg_hard")


def read_examples(lake: Lake, ds: str) -> pd.DataFrame:
    """The expanded training examples of ``ds``.

    Raises:
        FileNotFoundError: the examples partition is missing.
        ValueError: a row has a source outside ``recsys.core.columns.SOURCES``.
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


def whole_window(examples: pd.DataFrame, matrices: Matrices) -> tuple[pd.DataFrame, Matrices]:
    """The final fit's inputs: every interaction of the window is history and a positive.

    The valid and test interactions are added as ``real_pos`` examples of weight 1.0 (as the expand
    stage weighs train positives); a sampled negative that turns out to be one of them loses to the
    positive in :func:`recsys.models.recommender.training_set`. The returned matrices have the whole
    window as ``train`` and empty ``valid``/``test``: nothing is held out any more.
    """
    held_out = sp.coo_matrix(matrices.valid + matrices.test)
    added = pd.DataFrame({
        USER_IDX: held_out.row, ITEM_IDX: held_out.col, LABEL: 1, WEIGHT: 1.0, SOURCE: "real_pos",
    }).astype({c: examples[c].dtype for c in (USER_IDX, ITEM_IDX, LABEL, WEIGHT, SOURCE) if c in examples})
    empty = sp.csr_matrix(matrices.train.shape, dtype=np.float32)
    window = Matrices(train=matrices.window(), valid=empty, test=empty,
                      user_ids=matrices.user_ids, item_ids=matrices.item_ids)
    return pd.concat([examples, added], ignore_index=True), window


def choose_alpha(model: Any, item_item: np.ndarray, matrices: Matrices, alphas: Sequence[float]) -> tuple[float, dict]:
    """The item-item blend weight with the best validation NDCG@10 (ties keep the first; 0 = no blend)."""
    from recsys.models.recommender import validation_ndcg, with_item_item

    users = np.flatnonzero(np.diff(matrices.valid.indptr) > 0)
    tried = {}
    for alpha in alphas:
        blended = with_item_item(model, item_item, float(alpha)) if alpha > 0 else model
        tried[float(alpha)] = validation_ndcg(blended, matrices.train, matrices.valid, users)
    best = max(tried, key=lambda a: (tried[a], -list(tried).index(a)))
    return best, tried


def body(ctx: JobContext) -> dict[str, Any]:
    """Train the models on the date's examples and commit them with their training facts.

    ``model`` and ``model_noaug`` are fitted on train with early stopping on valid (evaluate judges
    them on test); with ``train.final_fit``, ``model_final`` is then refit on the whole window with
    ``model``'s hyperparameters and best epoch count, for serving.
    """
    assert ctx.ds is not None
    started = time.perf_counter()
    config = {**ctx.config["train"], "seed": int(ctx.config["seed"])}
    matrices = load_matrices(ctx.lake, ctx.ds)
    examples = read_examples(ctx.lake, ctx.ds)
    ablation = without_augmentation(examples)

    # TensorFlow is imported only once the inputs are known to be there
    from recsys.models.recommender import fit_recommender, save_recommender
    from recsys.models.runtime import configure_runtime

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
    # EASE's lambda is chosen here, once a night, on valid; evaluate's EASE baseline reads it from train.json
    from recsys.models.ease import EASE, choose_ease
    from recsys.models.recommender import with_item_item

    ease, ease_valid = choose_ease(matrices.train, matrices.valid, config["ease_lambdas"])
    lam = ease.lam
    facts.update({"ease_lambda": lam, "ease_validation": {str(k): v for k, v in ease_valid.items()}})
    alphas = [float(a) for a in config["item_item_alphas"]]
    if any(a > 0 for a in alphas):
        item_item = ease.full_weights()
        for name in ("model", "model_noaug"):
            alpha, tried = choose_alpha(models[name], item_item, matrices, alphas)
            facts["models"][name].update({"item_item_alpha": alpha, "item_item_lambda": lam,
                                          "valid_ndcg@10_by_alpha": {str(a): v for a, v in tried.items()}})
            log.info("%s: item-item blend alpha %s (validation ndcg@10 by alpha: %s)", name, alpha, tried)
            if alpha > 0:
                models[name] = with_item_item(models[name], item_item, alpha)
    if config["final_fit"]:
        # same hyperparameters and the epoch count early stopping chose, on all the window's data
        epochs = facts["models"]["model"]["best_epoch"]
        final_examples, window = whole_window(examples, matrices)
        models["model_final"], history = fit_recommender(final_examples, window, config, fixed_epochs=epochs)
        alpha = facts["models"]["model"].get("item_item_alpha", 0.0)
        if alpha > 0:
            models["model_final"] = with_item_item(models["model_final"], EASE(window.train, lam).full_weights(), alpha)
        facts["models"]["model_final"] = {**history, "examples": int(len(final_examples)), "item_item_alpha": alpha}
        log.info("model_final: refit on the whole window, %d examples, %d epochs", len(final_examples), epochs)

    facts.update({
        "ds": ctx.ds, "n_users": matrices.n_users, "n_items": matrices.n_items, "config": config,
        "seconds": round(time.perf_counter() - started, 2),
    })
    with ctx.lake.writing("models", ctx.ds) as staged:
        save_recommender(models["model"], staged / MODEL_FILE)
        save_recommender(models["model_noaug"], staged / NOAUG_MODEL_FILE)
        if "model_final" in models:
            save_recommender(models["model_final"], staged / FINAL_MODEL_FILE)
        write_json(staged / TRAIN_FACTS_FILE, facts)
    out = ctx.lake.path("models", ctx.ds)
    return {
        "models_path": str(out),
        "model": str(out / MODEL_FILE),
        "model_noaug": str(out / NOAUG_MODEL_FILE),
        "model_final": str(out / FINAL_MODEL_FILE) if "model_final" in models else None,
        "epochs": facts["models"]["model"]["epochs"],
        "valid_ndcg@10": facts["models"]["model"]["best_valid_ndcg@10"],
        "valid_ndcg@10_noaug": facts["models"]["model_noaug"]["best_valid_ndcg@10"],
        "examples": int(len(examples)),
        "examples_noaug": int(len(ablation)),
        "seconds": facts["seconds"],
    }


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Command line: ``python -m jobs.train --ds YYYY-MM-DD [--set train.epochs=5]``."""
    return run_job(job_parser("Train the recommender, its no-augmentation ablation and its final fit."), body, argv)


if __name__ == "__main__":
    main()
