"""The augment stage without I/O: segment the users, train the GAN, derive every output and quality figure."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np
import pandas as pd
import scipy.sparse as sp

from recsys.augmentation.decoding import top_unobserved
from recsys.augmentation.filters import filter_synthetic
from recsys.augmentation.plots import plot_series
from recsys.augmentation.quality import profile_noise_jaccard, quality_report, real_users
from recsys.augmentation.schemas import CANDIDATES_SCHEMA, GAN_POS_SCHEMA, SYN_USERS_SCHEMA, frame
from recsys.augmentation.segments import kmeans_segments, sparse_users
from recsys.augmentation.synthesis import Synthetic, sample_synthetic, score_user_batches
from recsys.core.columns import USER_IDX
from recsys.core.lake import CANDIDATES_FILE, GAN_POS_FILE, SYN_USERS_FILE
from recsys.core.matrices import binary
from recsys.models.gan import ConditionalGAN, build_gan, build_generator, training_dataset
from recsys.models.runtime import configure_runtime

log = logging.getLogger(__name__)

@dataclass
class Augmentation:
    """Everything the augment stage produces, before it is written."""

    gan_pos: pd.DataFrame
    syn_users: pd.DataFrame
    candidates: pd.DataFrame
    quality: dict[str, Any]
    generator: Any
    plots: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)

    def frames(self) -> dict[str, pd.DataFrame]:
        """The Parquet outputs by lake file name (their schemas: ``schemas.SCHEMAS``)."""
        return {GAN_POS_FILE: self.gan_pos, SYN_USERS_FILE: self.syn_users, CANDIDATES_FILE: self.candidates}


@dataclass(frozen=True)
class Segments:
    """The users the GAN trains on and the segments that condition it."""

    active: np.ndarray     # users with at least one train item
    labels: np.ndarray     # segment of every user (-1 for users without train items)
    centroids: np.ndarray  # segments x items
    sizes: np.ndarray      # active users per segment
    lengths: list[np.ndarray]  # per segment, the history lengths of its active users


def training_schedule(n_users: int, config: dict[str, Any]) -> tuple[int, int]:
    """``(epochs, batches per epoch)`` of the GAN fit.

    ``augment.epochs``, raised so that training takes at least ``augment.min_steps`` batches: a few hundred
    users make a few batches per epoch, and without a floor the GAN stops after too few steps to move away
    from its initial scores. ``augment.max_steps`` (0 = none) then caps the batches: whole epochs while one
    fits, else one epoch of that many batches (a benchmark's capped run on a large catalogue).
    """
    batches = -(-n_users // int(config["batch_size"]))
    epochs = max(int(config["epochs"]), -(-int(config["min_steps"]) // batches))
    cap = int(config.get("max_steps", 0))
    if cap and epochs * batches > cap:
        return (cap // batches, batches) if cap >= batches else (1, cap)
    return epochs, batches


def segment_users(train: sp.csr_matrix, k: int, seed: int) -> Segments:
    """Segment the users of a 0/1 train matrix (``kmeans_segments``) and summarise each segment.

    Raises:
        ValueError: when fewer than two users have train items.
    """
    lengths = np.diff(train.indptr)
    active = np.flatnonzero(lengths > 0)
    if len(active) < 2:
        raise ValueError(f"augment needs at least two users with train interactions, got {len(active)}")
    labels, centroids = kmeans_segments(train, k, seed)
    n_segments = len(centroids)
    sizes = np.bincount(labels[active], minlength=n_segments).astype(np.float64)
    per_segment = [lengths[active][labels[active] == s] for s in range(n_segments)]
    log.info("augment: %d users (%d active) x %d items, %d segments", train.shape[0], len(active), train.shape[1],
             n_segments)
    return Segments(active, labels, centroids, sizes, per_segment)


def train_gan(
    train: sp.csr_matrix, segments: Segments, config: dict[str, Any], seed: int, started: float
) -> tuple[ConditionalGAN, keras.Model, dict[str, Any]]:
    """Build the GAN, keep a copy of its initial generator, and fit it on the active users.

    Args:
        train: users x items, 0/1.
        segments: the users to train on and their segments.
        config: the ``augment`` config section.
        seed: the run's seed.
        started: when the stage started (``time.perf_counter``), for the setup time.

    Returns:
        ``(gan, untrained, training)``: the trained GAN, the untrained generator and the facts of the fit.
    """
    strategy = configure_runtime(seed)
    n_items, n_segments = train.shape[1], len(segments.centroids)
    with strategy.scope():
        gan = build_gan(n_items, n_segments, config, seed)
        untrained = build_generator(n_items, n_segments, int(config["hidden"]), int(config["noise_dim"]))
    untrained.set_weights(gan.generator.get_weights())
    batch_size = int(config["batch_size"])
    epochs, batches = training_schedule(len(segments.active), config)
    dataset = training_dataset(train, np.maximum(segments.labels, 0), segments.active, batch_size, seed, batches)
    fit_started = time.perf_counter()
    progress = keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: log.info(
        "augment: epoch %d/%d: %s", epoch + 1, epochs, ", ".join(f"{k} {v:.4f}" for k, v in sorted(logs.items()))))
    # the dataset shuffles; the task log gets one line per epoch with its losses
    history = gan.fit(dataset, epochs=epochs, verbose=0, shuffle=False, callbacks=[progress])
    losses = {name: float(values[-1]) for name, values in history.history.items()}
    fit_seconds = time.perf_counter() - fit_started
    log.info("augment: GAN trained in %.1fs, final losses %s", fit_seconds, losses)
    training = {
        "epochs": epochs, "steps": epochs * batches, "users": len(segments.active),
        "final_losses": losses,
        "losses": {name: [float(v) for v in values] for name, values in history.history.items()},  # per epoch
        "seconds": round(fit_seconds, 2),  # fit only (first epoch includes tracing)
        "setup_seconds": round(fit_started - started, 2),  # binarize, k-means, model build
    }
    return gan, untrained, training


def real_user_outputs(
    generator: keras.Model, train: sp.csr_matrix, segments: Segments, config: dict[str, Any], seed: int
) -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray]:
    """Hard-negative candidates for every active user, and expanded positives for the sparse ones.

    The users are scored a batch at a time (:func:`score_user_batches`), with a log line per batch.

    Returns:
        ``(candidates, gan_pos, sparse)``: the two frames and the sparse users.
    """
    active = segments.active
    sparse = sparse_users(train, float(config["sparse_user_quantile"]))
    in_sparse = np.isin(active, sparse)
    candidates, gan_pos = [], []  # per batch: (user, item, score) arrays; segment_users ensures a batch
    started = time.perf_counter()
    for rows, scores in score_user_batches(generator, train, active, segments.labels, int(config["score_draws"]),
                                           seed):
        users = active[rows]
        r, items, values = top_unobserved(scores, train[users], int(config["candidates_per_user"]))
        candidates.append((users[r], items, values))
        sparse_rows = np.flatnonzero(in_sparse[rows])
        r, items, values = top_unobserved(scores[sparse_rows], train[users[sparse_rows]],
                                          int(config["expand_per_user"]), float(config["confidence_threshold"]))
        gan_pos.append((users[sparse_rows][r], items, values))
        log.info("augment: scored %d of %d real users (%.0f users/s)", rows[-1] + 1, len(active),
                 (rows[-1] + 1) / (time.perf_counter() - started))
    return (frame(CANDIDATES_SCHEMA, *map(np.concatenate, zip(*candidates, strict=True))),
            frame(GAN_POS_SCHEMA, *map(np.concatenate, zip(*gan_pos, strict=True))), sparse)


def draw_synthetic(
    generators: tuple[keras.Model, keras.Model], segments: Segments, config: dict[str, Any], seed: int
) -> tuple[Synthetic, Synthetic]:
    """The same draw of ``augment.synthetic_users`` from the trained and the untrained generator."""
    draw = (int(config["synthetic_users"]), segments.sizes, segments.lengths, segments.centroids, seed,
            str(config["synthetic_length"]))
    trained, untrained = (sample_synthetic(generator, *draw) for generator in generators)
    return trained, untrained


def _output_counts(
    train: sp.csr_matrix, segments: Segments, sparse: np.ndarray, gan_pos: pd.DataFrame, written: sp.csr_matrix,
    syn_users: pd.DataFrame, candidates: pd.DataFrame,
) -> dict[str, int]:
    """The ``outputs`` section of the quality report: how much of each output the stage writes."""
    lengths = np.diff(train.indptr)
    return {
        "segments": len(segments.centroids),
        "sparse_users": len(sparse),
        "sparse_length_max": int(lengths[sparse].max()) if len(sparse) else 0,
        "gan_pos_rows": len(gan_pos),
        "gan_pos_users": int(gan_pos[USER_IDX].nunique()),
        "syn_users": int(written.shape[0]),
        "syn_rows": len(syn_users),
        "candidate_rows": len(candidates),
    }


def augment(
    train: sp.csr_matrix, valid: sp.csr_matrix, config: dict[str, Any], seed: int
) -> Augmentation:
    """Train the GAN on ``train`` and derive every output and quality figure (no I/O).

    Args:
        train: users x items train interactions (weights; any stored positive counts).
        valid: users x items validation interactions, used only for train-on-synthetic-test-on-real.
        config: the ``augment`` config section.
        seed: the run's seed.
    """
    started = time.perf_counter()
    train, valid = binary(train), binary(valid)
    segments = segment_users(train, int(config["segments"]), seed)
    gan, untrained, training = train_gan(train, segments, config, seed, started)

    # real users: candidates for hard negatives and expanded positives for the sparse ones
    candidates, gan_pos, sparse = real_user_outputs(gan.generator, train, segments, config, seed)

    # synthetic users, from the trained and (for comparison) the untrained generator, then filtered
    trained_syn, untrained_syn = draw_synthetic((gan.generator, untrained), segments, config, seed + 1)
    real = real_users(train[segments.active], trained_syn.items.shape[0], int(config["quality_max_users"]),
                      float(config["memorisation_quantile"]), seed + 2)
    reference_segments = segments.labels[segments.active][real.reference]
    kept, filters = filter_synthetic(gan.discriminator, trained_syn, real, reference_segments,
                                     float(config["discriminator_quantile"]))
    written = trained_syn.items[kept]
    confidence = trained_syn.confidence[kept].tocoo()
    syn_users = frame(SYN_USERS_SCHEMA, confidence.row, confidence.col, confidence.data)

    probe = segments.active[real.reference[:200]]
    profile_jaccard = {
        name: profile_noise_jaccard(generator, train, probe, segments.labels, seed + 3)
        for name, generator in (("trained", gan.generator), ("untrained", untrained))
    }
    outputs = _output_counts(train, segments, sparse, gan_pos, written, syn_users, candidates)
    quality = quality_report(real, train, valid, trained_syn, untrained_syn, written, profile_jaccard, filters,
                             outputs, training, int(config["quality_max_users"]), seed + 4)
    plots = plot_series(real, trained_syn.items, untrained_syn.items)
    return Augmentation(gan_pos, syn_users, candidates, quality, gan.generator, plots)
