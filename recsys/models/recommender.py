"""Mult-DAE style recommender that scores a user from their history vector, trained on weighted examples."""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pandas as pd
import scipy.sparse as sp
import tensorflow as tf

from recsys.core.columns import ITEM_IDX, LABEL, SOURCE, USER_IDX, WEIGHT, require_columns
from recsys.core.matrices import Matrices
from recsys.evaluation.metrics import scored_metrics, target_users
from recsys.models.sampled import (
    DEFAULT_POPULARITY_ALPHA,
    Loss,
    choose_objective,
    in_batch_softmax,
    popularity_log_q,
    sampled_softmax,
)

log = logging.getLogger(__name__)

EXAMPLE_COLUMNS = (USER_IDX, ITEM_IDX, LABEL, WEIGHT, SOURCE)
SYNTHETIC_USER_SOURCE = "syn_user"
# sources whose users are not real users: their positive rows are their history (synthetic users, pseudo-users)
OWN_HISTORY_SOURCES = (SYNTHETIC_USER_SOURCE, "transform_pos")
VALID_K = 10  # early stopping watches validation NDCG at this cut-off
VALID_METRIC = f"ndcg@{VALID_K}"



def weighted_bce(labels: tf.Tensor, weights: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
    """Binary cross-entropy at the example positions, averaged with the example weights."""
    per_item = tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=logits)
    return tf.reduce_sum(weights * per_item) / tf.maximum(tf.reduce_sum(weights), 1e-9)


def weighted_multinomial(labels: tf.Tensor, weights: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
    """Mult-DAE's multinomial log-likelihood of the positives, against the whole catalogue.

    Every item competes in the softmax, so items that are not examples act as implicit negatives;
    each positive counts with its weight, and the sum is averaged over the users of the batch.
    """
    log_probs = tf.nn.log_softmax(logits, axis=-1)
    per_user = -tf.reduce_sum(labels * weights * log_probs, axis=-1)
    return tf.reduce_mean(per_user)


def multinomial_and_bce(labels: tf.Tensor, weights: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
    """The multinomial term plus the weighted BCE, so the sampled negatives also push scores down."""
    return weighted_multinomial(labels, weights, logits) + weighted_bce(labels, weights, logits)


LOSSES: dict[str, Loss] = {
    "bce": weighted_bce,
    "multinomial": weighted_multinomial,
    "multinomial+bce": multinomial_and_bce,
}


def resolve_loss(name: str) -> Loss:
    """The loss function named in ``train.loss``."""
    try:
        return LOSSES[name]
    except KeyError:
        raise ValueError(f"train.loss: unknown loss {name!r}; known: {', '.join(LOSSES)}") from None


def objective_loss(objective: str, train: sp.csr_matrix, config: Mapping[str, Any]) -> Loss:
    """The loss of an objective: ``full`` is ``train.loss``; ``sampled`` the log-Q corrected sampled
    softmax against the popularity sampler of ``popularity_alpha``; ``in_batch`` its ablation without
    the sampled negatives (:mod:`recsys.models.sampled`)."""
    if objective == "full":
        return resolve_loss(str(config["loss"]))
    if objective == "sampled":
        return sampled_softmax(popularity_log_q(train, float(config.get("popularity_alpha", DEFAULT_POPULARITY_ALPHA))))
    if objective == "in_batch":
        return in_batch_softmax
    raise ValueError(f"unknown objective {objective!r}; known: full, sampled, in_batch")


def build_recommender(n_items: int, config: Mapping[str, Any]) -> keras.Model:
    """Build the history autoencoder: L2-normalised history -> dropout -> Dense(tanh) -> item logits.

    Args:
        n_items: catalogue size; the input is a users x n_items history (weights, 0 = no interaction).
        config: the ``train`` section (``hidden``, ``dropout``, ``l2``) plus the top-level ``seed``
            under the key ``seed``.

    Returns:
        An uncompiled functional Keras model mapping histories to float32 logits over the items.
    """
    l2 = float(config.get("l2", 0.0))
    regularizer = keras.regularizers.L2(l2) if l2 > 0 else None
    history = keras.Input(shape=(n_items,), name="history")
    x = keras.layers.UnitNormalization(axis=-1, name="normalise")(history)
    x = keras.layers.Dropout(float(config["dropout"]), seed=int(config.get("seed", 0)), name="dropout")(x)
    x = keras.layers.Dense(int(config["hidden"]), activation="tanh", kernel_regularizer=regularizer, name="encoder")(x)
    # float32 logits even under a mixed-precision policy: the softmax and the loss need the range
    logits = keras.layers.Dense(n_items, kernel_regularizer=regularizer, dtype="float32", name="logits")(x)
    return keras.Model(history, logits, name="history_autoencoder")


@dataclass
class TrainingSet:
    """Per-row history, example labels and example weights, all rows x items CSR."""

    histories: sp.csr_matrix
    labels: sp.csr_matrix
    weights: sp.csr_matrix
    rows: np.ndarray  # rows that have a history and at least one positive example, trained on


def training_set(examples: pd.DataFrame, train: sp.csr_matrix) -> TrainingSet:
    """Arrange examples as sparse per-user targets, with each user's history.

    A real user's (``user_idx < train.shape[0]``) history is their train row; a synthetic user's or a
    pseudo-user's (``user_idx`` beyond) is their own ``syn_user`` or ``transform_pos`` positive rows. A (user, item) pair given more
    than once keeps one example: a positive over a negative, then the highest weight.

    Raises:
        ValueError: a column is missing, an index is out of range, a label is not 0/1, a weight is
            negative, or a ``syn_user`` row belongs to a real user.
    """
    require_columns(list(examples.columns), EXAMPLE_COLUMNS, "examples")
    n_users, n_items = train.shape
    users = examples[USER_IDX].to_numpy(np.int64)
    items = examples[ITEM_IDX].to_numpy(np.int64)
    labels = examples[LABEL].to_numpy(np.float32)
    weights = examples[WEIGHT].to_numpy(np.float32)
    if len(examples) and (users.min() < 0 or items.min() < 0 or items.max() >= n_items):
        raise ValueError(f"examples: {USER_IDX}/{ITEM_IDX} out of range (items must lie in [0, {n_items}))")
    if not np.isin(labels, (0.0, 1.0)).all():
        raise ValueError(f"examples: column {LABEL} must be 0 or 1")
    if not (np.isfinite(weights).all() and (weights >= 0).all()):
        raise ValueError(f"examples: column {WEIGHT} must be finite and >= 0")
    synthetic = examples[SOURCE].isin(OWN_HISTORY_SOURCES).to_numpy()
    if (synthetic & (users < n_users)).any():
        source = examples[SOURCE].to_numpy()[synthetic & (users < n_users)][0]
        raise ValueError(f"examples: {SOURCE}={source} rows must have {USER_IDX} >= {n_users}")
    n_rows = max(n_users, int(users.max()) + 1 if len(users) else 0)

    order = np.lexsort((weights, labels, items, users))  # last of each pair: positive, then highest weight
    users, items, labels, weights, synthetic = (a[order] for a in (users, items, labels, weights, synthetic))
    last = np.ones(len(users), dtype=bool)
    last[:-1] = (users[1:] != users[:-1]) | (items[1:] != items[:-1])
    users, items, labels, weights, synthetic = (a[last] for a in (users, items, labels, weights, synthetic))

    shape = (n_rows, n_items)
    syn_history = synthetic & (labels == 1)
    histories = sp.vstack([
        sp.csr_matrix(train, dtype=np.float32),
        sp.csr_matrix((weights[syn_history], (users[syn_history] - n_users, items[syn_history])),
                      shape=(n_rows - n_users, n_items), dtype=np.float32),
    ]).tocsr()
    label_m = sp.csr_matrix((labels, (users, items)), shape=shape, dtype=np.float32)
    weight_m = sp.csr_matrix((weights, (users, items)), shape=shape, dtype=np.float32)
    has_positive = np.bincount(users[labels == 1], minlength=n_rows) > 0
    has_history = np.diff(histories.indptr) > 0
    return TrainingSet(histories, label_m, weight_m, np.flatnonzero(has_positive & has_history))


def score_histories(model: keras.Model, histories: sp.csr_matrix, batch_size: int = 1024) -> np.ndarray:
    """Score every item for each history row, densifying one batch of rows at a time.

    Args:
        model: a model from :func:`build_recommender` (or :func:`load_recommender`).
        histories: rows x items history weights. Columns beyond the model's items (items indexed
            after training) are ignored and score -inf; a narrower matrix is padded with zeros.
        batch_size: rows per forward pass.

    Returns:
        float32 scores, rows x max(history columns, model items).
    """
    n_model = int(model.input_shape[-1])
    histories = sp.csr_matrix(histories, dtype=np.float32)
    n_rows, n_cols = histories.shape
    if n_cols > n_model:
        inputs = histories[:, :n_model]
    else:
        inputs = sp.hstack([histories, sp.csr_matrix((n_rows, n_model - n_cols), dtype=np.float32)]).tocsr()
    out = np.full((n_rows, max(n_cols, n_model)), -np.inf, dtype=np.float32)
    for start in range(0, n_rows, batch_size):
        stop = min(start + batch_size, n_rows)
        out[start:stop, :n_model] = np.asarray(model(inputs[start:stop].toarray(), training=False), dtype=np.float32)
    return out


def _train_step(model: keras.Model, optimizer: keras.optimizers.Optimizer, loss: Loss, n_items: int) -> Callable:
    spec = tf.TensorSpec(shape=(None, n_items), dtype=tf.float32)

    @tf.function(input_signature=[spec, spec, spec], reduce_retracing=True)
    def step(history: tf.Tensor, labels: tf.Tensor, weights: tf.Tensor) -> tf.Tensor:
        with tf.GradientTape() as tape:
            logits = model(history, training=True)
            value = loss(labels, weights, logits)
            total = value + tf.add_n(model.losses) if model.losses else value
        grads = tape.gradient(total, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
        return value

    return step


def validation_ndcg(model: keras.Model, train: sp.csr_matrix, valid: sp.csr_matrix, users: np.ndarray) -> float:
    """NDCG@10 of ``valid`` given ``train`` as history (train items removed from the ranking)."""
    history = train[users]
    scorer = functools.partial(score_histories, model)
    return float(scored_metrics(scorer, history, history, valid[users], [VALID_K]).summary()[VALID_METRIC])


class _Epochs:
    """One pass over the trained rows per call: shuffled by a seeded generator, in batches of users.

    With ``max_steps`` (``train.max_steps``; 0 = none) the fit ends at that many batches in all: the epoch
    that reaches it is cut short, and :attr:`exhausted` tells the fit loops to stop.
    """

    def __init__(self, step: Callable, data: TrainingSet, batch_size: int, seed: int, max_steps: int = 0) -> None:
        self.step, self.data, self.batch_size, self.max_steps = step, data, batch_size, max_steps
        self.rng = np.random.default_rng(seed)
        self.steps = 0
        self.step_seconds = 0.0  # in the training steps alone (batch building included, validation not)

    @property
    def exhausted(self) -> bool:
        return bool(self.max_steps) and self.steps >= self.max_steps

    def run(self) -> float:
        """Train one epoch (or what is left of ``max_steps``); the mean of its batches' losses."""
        data = self.data
        order = data.rows[self.rng.permutation(len(data.rows))]
        losses = []
        started = time.perf_counter()
        for start in range(0, len(order), self.batch_size):
            if self.exhausted:
                break
            batch = np.sort(order[start:start + self.batch_size])
            losses.append(float(self.step(
                data.histories[batch].toarray(), data.labels[batch].toarray(), data.weights[batch].toarray()
            )))
            self.steps += 1
        self.step_seconds += time.perf_counter() - started
        return float(np.mean(losses))


def _fit_early_stopping(model: keras.Model, epochs: _Epochs, matrices: Matrices, max_epochs: int,
                        patience: int) -> dict[str, Any]:
    """Up to ``max_epochs`` epochs, stopping ``patience`` epochs after the best validation NDCG@10; keeps the best weights."""
    valid_users = target_users(matrices.valid)
    history: dict[str, Any] = {"loss": [], f"valid_{VALID_METRIC}": []}
    best, best_epoch, best_weights = -1.0, 0, model.get_weights()
    for epoch in range(1, max_epochs + 1):
        history["loss"].append(epochs.run())
        ndcg = validation_ndcg(model, matrices.train, matrices.valid, valid_users)
        history[f"valid_{VALID_METRIC}"].append(ndcg)
        log.info("epoch %d: loss %.4f, valid %s %.4f", epoch, history["loss"][-1], VALID_METRIC, ndcg)
        if ndcg > best:
            best, best_epoch, best_weights = ndcg, epoch, model.get_weights()
        elif epoch - best_epoch >= patience:
            break
        if epochs.exhausted:
            log.info("train.max_steps: stopped after %d steps", epochs.steps)
            break
    model.set_weights(best_weights)
    history.update({"epochs": len(history["loss"]), "best_epoch": best_epoch, f"best_valid_{VALID_METRIC}": best})
    return history


def _fit_fixed(epochs: _Epochs, n_epochs: int) -> dict[str, Any]:
    """``n_epochs`` epochs (fewer when ``train.max_steps`` ends the fit), the last weights kept, ``valid`` never
    looked at."""
    history: dict[str, Any] = {"loss": [], f"valid_{VALID_METRIC}": []}
    for epoch in range(1, n_epochs + 1):
        history["loss"].append(epochs.run())
        log.info("epoch %d/%d: loss %.4f", epoch, n_epochs, history["loss"][-1])
        if epochs.exhausted:
            log.info("train.max_steps: stopped after %d steps", epochs.steps)
            break
    n_run = len(history["loss"])
    history.update({"epochs": n_run, "best_epoch": n_run, f"best_valid_{VALID_METRIC}": None})
    return history


def fit_recommender(
    examples_df: pd.DataFrame,
    matrices: Matrices,
    config: Mapping[str, Any],
    loss: Loss | None = None,
    *,
    fixed_epochs: int | None = None,
    objective: str | None = None,
) -> tuple[keras.Model, dict[str, Any]]:
    """Train the recommender on examples, early-stopping on validation NDCG@10.

    Each step takes a batch of users, builds their dense history and example batches from the
    CSR rows, computes logits over the whole catalogue and the loss at the example positions.
    After each epoch the model ranks every unseen item for the users with validation items
    (history = train); the weights of the best epoch are kept.

    Args:
        examples_df: columns user_idx, item_idx, label, weight, source (see :func:`training_set`).
        matrices: the date's tables; ``train`` gives real users' histories, ``valid`` the targets of
            early stopping.
        config: the ``train`` section plus ``seed``.
        loss: ``loss(labels, weights, logits)``; default the objective's (:func:`objective_loss`).
        fixed_epochs: train exactly this many epochs and keep the last weights, without looking at
            ``valid`` (the final fit on the whole window, whose epoch count early stopping chose).
        objective: ``full``, ``sampled`` or ``in_batch``; default by the catalogue size
            (:func:`recsys.models.sampled.choose_objective`). Ignored when ``loss`` is given.

    Returns:
        The model with its best weights, and ``{"epochs": run, "best_epoch", "best_valid_ndcg@10",
        "valid_ndcg@10": per epoch, "loss": per epoch, "objective", "users_trained", "steps",
        "steps_per_epoch", "step_seconds" (in the steps alone), "seconds"}``
        (``objective`` is ``given`` for an injected loss).
    """
    started = time.perf_counter()
    seed = int(config.get("seed", 0))
    keras.utils.set_random_seed(seed)
    if loss is None:
        objective = objective or choose_objective(matrices.n_items, config)
        loss = objective_loss(objective, matrices.train, config)
    else:
        objective = "given"
    log.info("objective %s over %d items (train.loss %s)", objective, matrices.n_items, config.get("loss"))
    data = training_set(examples_df, matrices.train)
    if len(data.rows) == 0:
        raise ValueError("examples: no user has both a history and a positive example to train on")
    if fixed_epochs is not None and fixed_epochs < 1:
        raise ValueError(f"fixed_epochs must be at least 1, got {fixed_epochs}")
    model = build_recommender(matrices.n_items, {**config, "seed": seed})
    optimizer = keras.optimizers.Adam(learning_rate=float(config["learning_rate"]))
    epochs = _Epochs(_train_step(model, optimizer, loss, matrices.n_items), data, int(config["batch_size"]), seed,
                     int(config.get("max_steps", 0)))
    if fixed_epochs is None:
        history = _fit_early_stopping(model, epochs, matrices, int(config["epochs"]), int(config["patience"]))
    else:
        history = _fit_fixed(epochs, fixed_epochs)
    history.update({"objective": objective, "users_trained": int(len(data.rows)), "steps": epochs.steps,
                    "steps_per_epoch": -(-len(data.rows) // int(config["batch_size"])),
                    "step_seconds": round(epochs.step_seconds, 2),
                    "seconds": round(time.perf_counter() - started, 2)})
    return model, history


def _standardise(x: tf.Tensor) -> tf.Tensor:
    mean = keras.ops.mean(x, axis=-1, keepdims=True)
    return (x - mean) / (keras.ops.std(x, axis=-1, keepdims=True) + 1e-6)


@keras.saving.register_keras_serializable(package="recsys")
class ItemItemBlend(keras.layers.Layer):
    """Blend the autoencoder's logits with a frozen linear item-item path (EASE's closed form).

    Each row's two score vectors are standardised (zero mean, unit deviation over the items) so
    ``alpha`` weighs rankings rather than scales: ``(1 - alpha) z(logits) + alpha z(history @ B)``.
    With ``n_bound``, ``B`` is only ``n_bound x n_bound`` over the item indices ``items`` (the most
    interacted ones): the path reads and scores those items, every other item's linear score is 0, so
    the saved weights stay bounded however large the catalogue grows and items outside the bound are
    ranked by the autoencoder's logits alone.
    """

    def __init__(self, n_items: int, alpha: float, n_bound: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.n_items, self.alpha = int(n_items), float(alpha)
        self.n_bound = None if n_bound is None else int(n_bound)
        size = self.n_items if self.n_bound is None else self.n_bound
        self.item_item = self.add_weight(shape=(size, size), initializer="zeros", trainable=False, name="item_item")
        if self.n_bound is not None:
            self.items = self.add_weight(shape=(size,), initializer="zeros", dtype="int32", trainable=False,
                                         name="items")

    def call(self, history: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
        if self.n_bound is None:
            linear = keras.ops.matmul(history, self.item_item)
        else:
            items = tf.convert_to_tensor(self.items)
            bounded = tf.matmul(tf.gather(history, items, axis=1), tf.convert_to_tensor(self.item_item))
            # scatter the bounded columns into a full row: items x batch, then back
            linear = tf.transpose(tf.scatter_nd(items[:, None], tf.transpose(bounded),
                                                tf.stack([self.n_items, tf.shape(history)[0]])))
        return (1.0 - self.alpha) * _standardise(logits) + self.alpha * _standardise(linear)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "n_items": self.n_items, "alpha": self.alpha, "n_bound": self.n_bound}


def with_item_item(model: keras.Model, item_item: np.ndarray, alpha: float, items: np.ndarray | None = None) -> keras.Model:
    """``model`` with an :class:`ItemItemBlend` on top, holding the item-item weights ``item_item``.

    Args:
        model: the autoencoder.
        item_item: items x items weights, or with ``items`` the ``len(items) x len(items)`` weights
            among those item indices (EASE's ``weights`` over its ``active`` items).
        alpha: the blend weight of the item-item path.
        items: sorted item indices the weights are over; None for the whole catalogue.

    The blend computes in float32 whatever the global precision policy: the standardisation and the
    sums over thousands of items need the range (see :mod:`recsys.models.runtime`).
    """
    n_items = int(model.input_shape[-1])
    size = n_items if items is None else len(items)
    if item_item.shape != (size, size):
        raise ValueError(f"item-item weights have shape {item_item.shape}, the model scores {n_items} items"
                         + ("" if items is None else f" and the path covers {size}"))
    if items is not None and len(items) and (np.min(items) < 0 or np.max(items) >= n_items):
        raise ValueError(f"item-item path: item indices must lie in [0, {n_items})")
    history = keras.Input(shape=(n_items,), name="history")
    blend = ItemItemBlend(n_items, alpha, None if items is None else size, dtype="float32", name="item_item_blend")
    out = blend(history, model(history))
    blend.item_item.assign(np.asarray(item_item, dtype=np.float32))
    if items is not None:
        blend.items.assign(np.asarray(items, dtype=np.int32))
    return keras.Model(history, out, name="history_autoencoder_item_item")


def save_recommender(model: keras.Model, path: Path | str) -> None:
    """Save as a native ``.keras`` file."""
    model.save(Path(path))


def load_recommender(path: Path | str) -> keras.Model:
    """Load a recommender saved by :func:`save_recommender`, ready for :func:`score_histories`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"recommender model file {path} does not exist")
    return keras.saving.load_model(path, compile=False)
