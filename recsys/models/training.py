"""Training one date's recommenders: the held-out fits, EASE's lambda, the item-item blend and the final refit."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np
import pandas as pd
import scipy.sparse as sp

from recsys.core.columns import CONFIDENCE, ITEM_IDX, LABEL, SOURCE, SOURCES, USER_IDX, WEIGHT, require_columns
from recsys.core.matrices import Matrices
from recsys.evaluation.cold import without_items
from recsys.evaluation.metrics import only_rows, target_users
from recsys.models.ease import DEFAULT_MAX_ITEMS, EASE, choose_ease
from recsys.models.recommender import fit_recommender, validation_ndcg, with_item_item

log = logging.getLogger(__name__)

# the ablation keeps real positives and sampled negatives: everything but generated or mined positives
NOAUG_SOURCES = ("real_pos", "neg_uniform", "neg_pop", "neg_hard")
HELD_OUT_MODELS = ("model", "model_noaug")  # fitted on train, early-stopped on valid, judged on test
FINAL_MODEL = "model_final"  # refit on the whole window for serving
# the cold-start fits: without the cold items, with and without content positives for them (jobs.evaluate)
COLD_MODEL, COLD_NOCONTENT_MODEL = "model_cold", "model_cold_nocontent"


@dataclass
class Trained:
    """The fitted models by name and the facts train.json records about them."""

    models: dict[str, keras.Model] = field(default_factory=dict)
    facts: dict[str, Any] = field(default_factory=lambda: {"models": {}})


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


def ease_max_items(config: Mapping[str, Any]) -> int:
    """``train.ease_max_items``: how many of the most interacted items the EASE path covers."""
    return int(config.get("ease_max_items", DEFAULT_MAX_ITEMS))


def validation_sample(matrices: Matrices, config: Mapping[str, Any]) -> Matrices:
    """``matrices`` with ``valid`` cut to a seeded sample of ``train.valid_max_users`` of its users (0 = all).

    Early stopping, EASE's lambda and the blend weight are chosen on it: on a large night, ranking the whole
    catalogue for every validation user several times a fit would dominate training.
    """
    users = target_users(matrices.valid, int(config.get("valid_max_users", 0)), int(config.get("seed", 0)))
    return dataclasses.replace(matrices, valid=only_rows(matrices.valid, users))


def with_ease(model: keras.Model, ease: EASE, alpha: float) -> keras.Model:
    """``model`` blended with ``ease``'s item-item path over the items it covers."""
    return with_item_item(model, ease.weights, alpha, items=ease.active)


def choose_alpha(model: keras.Model, ease: EASE, matrices: Matrices,
                 alphas: Sequence[float]) -> tuple[float, dict[float, float]]:
    """The item-item blend weight with the best validation NDCG@10 (ties keep the first; 0 = no blend)."""
    users = target_users(matrices.valid)
    tried = {}
    for alpha in alphas:
        blended = with_ease(model, ease, float(alpha)) if alpha > 0 else model
        tried[float(alpha)] = validation_ndcg(blended, matrices.train, matrices.valid, users)
    best = max(tried, key=lambda a: (tried[a], -list(tried).index(a)))
    return best, tried


def fit_held_out(trained: Trained, frames: Mapping[str, pd.DataFrame], matrices: Matrices,
                 config: Mapping[str, Any]) -> None:
    """Fit one model per named frame on train, early-stopped on valid, into ``trained``.

    With the sampled objective, each model is fitted a second time without its sampled negatives
    (each positive against the batch's other positives) and that fit's best validation NDCG@10 is
    recorded as ``negatives_ablation_valid_ndcg@10``: what the negatives contributed. None otherwise.
    """
    for name, frame in frames.items():
        model, history = fit_recommender(frame, matrices, config)
        ablation = None
        if history["objective"] == "sampled":
            ablation = fit_recommender(frame, matrices, config, objective="in_batch")[1]["best_valid_ndcg@10"]
            log.info("%s: without the sampled negatives (in-batch softmax) best validation ndcg@10 %.4f",
                     name, ablation)
        trained.models[name] = model
        trained.facts["models"][name] = {**history, "examples": int(len(frame)),
                                         "negatives_ablation_valid_ndcg@10": ablation}
        log.info("%s: objective %s, %d epochs, best validation ndcg@10 %.4f at epoch %d", name,
                 history["objective"], history["epochs"], history["best_valid_ndcg@10"], history["best_epoch"])


def choose_ease_lambda(trained: Trained, matrices: Matrices, lambdas: Sequence[float], max_items: int) -> EASE:
    """EASE fitted on train with the lambda of the best validation NDCG, recorded in ``trained``'s facts.

    Chosen here once a night; evaluate's EASE baseline reads it from train.json. EASE covers at most
    ``max_items`` of the most interacted items (``ease_items`` in the facts).
    """
    ease, by_lambda = choose_ease(matrices.train, matrices.valid, lambdas, max_items=max_items)
    trained.facts.update({"ease_lambda": ease.lam, "ease_validation": {str(k): v for k, v in by_lambda.items()},
                          "ease_items": int(len(ease.active)), "ease_max_items": int(max_items)})
    return ease


def blend_item_item(trained: Trained, ease: EASE, matrices: Matrices, alphas: Sequence[float]) -> None:
    """Give each held-out model the item-item path (EASE's weights) with the blend weight valid prefers.

    Nothing changes when no alpha is above 0.
    """
    if not any(a > 0 for a in alphas):
        return
    for name in HELD_OUT_MODELS:
        alpha, tried = choose_alpha(trained.models[name], ease, matrices, alphas)
        trained.facts["models"][name].update({"item_item_alpha": alpha, "item_item_lambda": ease.lam,
                                              "valid_ndcg@10_by_alpha": {str(a): v for a, v in tried.items()}})
        log.info("%s: item-item blend alpha %s (validation ndcg@10 by alpha: %s)", name, alpha, tried)
        if alpha > 0:
            trained.models[name] = with_ease(trained.models[name], ease, alpha)


def refit_whole_window(trained: Trained, examples: pd.DataFrame, matrices: Matrices, config: Mapping[str, Any],
                       lam: float) -> None:
    """Refit ``model`` on the whole window for serving: its hyperparameters, epoch count and blend weight."""
    epochs = trained.facts["models"]["model"]["best_epoch"]
    final_examples, window = whole_window(examples, matrices)
    model, history = fit_recommender(final_examples, window, config, fixed_epochs=epochs)
    alpha = trained.facts["models"]["model"].get("item_item_alpha", 0.0)
    if alpha > 0:
        model = with_ease(model, EASE(window.train, lam, max_items=ease_max_items(config)), alpha)
    trained.models[FINAL_MODEL] = model
    trained.facts["models"][FINAL_MODEL] = {**history, "examples": int(len(final_examples)), "item_item_alpha": alpha}
    log.info("%s: refit on the whole window, %d examples, %d epochs", FINAL_MODEL, len(final_examples), epochs)


def train_models(examples: pd.DataFrame, matrices: Matrices, config: Mapping[str, Any]) -> Trained:
    """Train one date's recommenders (no I/O; TensorFlow's runtime configured beforehand).

    ``model`` (on ``examples``) and ``model_noaug`` (on :func:`without_augmentation` of them) are
    fitted on train with early stopping on valid, and blended with EASE's item-item path where valid
    prefers it (valid: a sample of at most ``train.valid_max_users`` users, :func:`validation_sample`);
    with ``train.final_fit``, ``model_final`` is then refit on the whole window with ``model``'s
    hyperparameters, best epoch count and blend, for serving.

    Args:
        examples: the expanded examples (``recsys.sampling.examples.read_examples``).
        matrices: the date's tables.
        config: the ``train`` section plus ``seed``.

    Returns:
        The models and their facts: ``examples_by_source``, ``valid_users``, ``ease_lambda``,
        ``ease_validation`` and per model its fit history, example count and blend.
    """
    frames = {"model": examples, "model_noaug": without_augmentation(examples)}
    log.info("training on %d examples (%d without augmentation), %d users x %d items",
             len(examples), len(frames["model_noaug"]), matrices.n_users, matrices.n_items)
    trained = Trained()
    trained.facts["examples_by_source"] = counts_by_source(examples)
    held = validation_sample(matrices, config)
    trained.facts["valid_users"] = int(len(target_users(held.valid)))
    log.info("validation ranks %d of the %d users with validation items (train.valid_max_users)",
             trained.facts["valid_users"], len(target_users(matrices.valid)))
    fit_held_out(trained, frames, held, config)
    ease = choose_ease_lambda(trained, held, config["ease_lambdas"], ease_max_items(config))
    blend_item_item(trained, ease, held, [float(a) for a in config["item_item_alphas"]])
    if config["final_fit"]:
        refit_whole_window(trained, examples, matrices, config, ease.lam)
    return trained


def without_item_rows(examples: pd.DataFrame, items: np.ndarray) -> pd.DataFrame:
    """The examples without any row of ``items`` (any source, positive or negative)."""
    return examples[~examples[ITEM_IDX].isin(np.asarray(items))].reset_index(drop=True)


def content_examples(positives: pd.DataFrame, items: np.ndarray, synthetic_weight: float,
                     like: pd.DataFrame) -> pd.DataFrame:
    """The content generator's positives of ``items`` as ``content_pos`` examples.

    Weighted ``synthetic_weight x confidence`` as expand weighs a synthetic positive
    (:mod:`recsys.sampling.expansion`); rows of other items are dropped.

    Args:
        positives: ``user_idx, item_idx, confidence`` (:func:`recsys.augmentation.content.content_positives`).
        items: the items the rows may be for.
        synthetic_weight: ``expand.synthetic_weight``.
        like: examples whose column types the rows take.
    """
    require_columns(list(positives.columns), (USER_IDX, ITEM_IDX, CONFIDENCE), "content positives")
    rows = positives[positives[ITEM_IDX].isin(np.asarray(items))]
    out = pd.DataFrame({
        USER_IDX: rows[USER_IDX].to_numpy(), ITEM_IDX: rows[ITEM_IDX].to_numpy(), LABEL: 1,
        WEIGHT: float(synthetic_weight) * rows[CONFIDENCE].to_numpy(np.float32), SOURCE: "content_pos",
    })
    return out.astype({c: like[c].dtype for c in (USER_IDX, ITEM_IDX, LABEL, WEIGHT, SOURCE) if c in like})


def fit_cold_start(trained: Trained, examples: pd.DataFrame, matrices: Matrices, config: Mapping[str, Any],
                   cold: np.ndarray, content: pd.DataFrame) -> None:
    """The cold-start fits: ``model_cold`` with ``content`` and ``model_cold_nocontent`` without.

    Both train on ``examples`` without any row of a ``cold`` item and on the tables without their train and
    valid interactions (:func:`recsys.evaluation.cold.without_items`), with ``model``'s hyperparameters, its
    best epoch count (no early stopping, as the final fit) and its item-item blend weight, the EASE path
    refit on the same train matrix with tonight's lambda. Run after :func:`train_models`.

    Args:
        trained: what :func:`train_models` returned; the two models and their facts are added.
        examples: the night's expanded examples.
        matrices: the date's tables.
        config: the ``train`` section plus ``seed``.
        cold: the items held out as simulated new items.
        content: ``content_pos`` examples for the cold items (:func:`content_examples`).
    """
    epochs = trained.facts["models"]["model"]["best_epoch"]
    alpha = trained.facts["models"]["model"].get("item_item_alpha", 0.0)
    cold_matrices = without_items(matrices, cold)
    without = without_item_rows(examples, cold)
    frames = {COLD_MODEL: pd.concat([without, content], ignore_index=True), COLD_NOCONTENT_MODEL: without}
    ease = (EASE(cold_matrices.train, float(trained.facts["ease_lambda"]), max_items=ease_max_items(config))
            if alpha > 0 else None)
    for name, frame in frames.items():
        model, history = fit_recommender(frame, cold_matrices, config, fixed_epochs=epochs)
        if ease is not None:
            model = with_ease(model, ease, alpha)
        trained.models[name] = model
        trained.facts["models"][name] = {**history, "examples": int(len(frame)), "item_item_alpha": alpha}
        log.info("%s: %d examples without the %d cold items (%d content_pos), %d epochs", name, len(frame),
                 len(cold), len(frame) - len(without), epochs)
