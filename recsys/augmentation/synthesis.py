"""Drawing from the trained generator: synthetic users from (segment, noise), and scores of real users."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
import scipy.sparse as sp

from recsys.augmentation.decoding import draw_items
from recsys.augmentation.segments import assign_segments
from recsys.models.gan import NOISE, dense_rows, generate, split_generator

INFERENCE_BATCH = 512  # rows per generator or discriminator call outside training


@dataclass
class Synthetic:
    """Synthetic users drawn from (segment, noise), decoded to item sets."""

    items: sp.csr_matrix          # synthetic users x items, 0/1
    confidence: sp.csr_matrix     # same pattern, the generator score of each item
    requested: np.ndarray         # the segment asked for
    landed: np.ndarray            # the segment the generated vector is nearest to
    second_draw: sp.csr_matrix    # the same conditions, lengths and decoding draw with fresh noise


def _generate_batches(generator: Any, segment: np.ndarray, noise: np.ndarray) -> np.ndarray:
    """Generator scores of empty profiles (synthetic users) for many rows, a batch at a time."""
    n_items = int(generator.output.shape[-1])
    out = np.empty((len(segment), n_items), dtype=np.float32)
    for start in range(0, len(segment), INFERENCE_BATCH):
        stop = min(start + INFERENCE_BATCH, len(segment))
        block = np.zeros((stop - start, n_items), dtype=np.float32)
        out[start:stop] = generate(generator, block, segment[start:stop], noise[start:stop])
    return out


def sample_synthetic(
    generator: Any,
    n: int,
    segment_sizes: np.ndarray,
    segment_lengths: list[np.ndarray],
    centroids: np.ndarray,
    seed: int,
    length_from: str = "segment",
) -> Synthetic:
    """Draw ``n`` users from (segment, noise) with the profile zeroed.

    Segments are drawn in proportion to the real segment sizes. A user's items are ``length`` items
    drawn from its scores (``draw_items``). With ``length_from="segment"`` the length is drawn from
    the real lengths of the segment the generated vector lands in (nearest centroid), so a generator
    that ignores the segment also gets the length mix wrong; with ``"generated"`` it is the expected
    size of a 0/1 draw from the scores (their sum, at least 1), so the length distribution is learnt,
    not copied. The second draw uses fresh generator noise but the same lengths and decoding
    randomness, so the two differ only through the noise.
    """
    rng = np.random.default_rng(seed)
    noise_dim = int(generator.input[NOISE].shape[-1])
    requested = rng.choice(len(segment_sizes), size=n, p=segment_sizes / segment_sizes.sum())
    noise_a = rng.standard_normal((n, noise_dim)).astype(np.float32)
    noise_b = rng.standard_normal((n, noise_dim)).astype(np.float32)
    scores = _generate_batches(generator, requested, noise_a)
    landed = assign_segments(scores, centroids)
    if length_from == "generated":
        lengths = np.maximum(np.rint(scores.sum(axis=1)), 1).astype(np.int64)
    elif length_from == "segment":
        lengths = np.array([rng.choice(segment_lengths[s]) for s in landed], dtype=np.int64)
    else:
        raise ValueError(f"length_from must be 'segment' or 'generated', got {length_from!r}")
    uniforms = rng.random(scores.shape)
    items = draw_items(scores, lengths, uniforms)
    confidence = items.multiply(scores).tocsr()
    second = draw_items(_generate_batches(generator, requested, noise_b), lengths, uniforms)
    return Synthetic(items, confidence, requested, landed, second)


def score_users(
    generator: Any, train: sp.csr_matrix, users: np.ndarray, segments: np.ndarray, draws: int, seed: int
) -> np.ndarray:
    """Mean generator score over ``draws`` noise draws for each of ``users``, conditioned on their profile."""
    return np.concatenate([scores for _, scores in score_user_batches(generator, train, users, segments, draws, seed,
                                                                      max(len(users), 1))]
                          or [np.zeros((0, train.shape[1]), np.float32)])


def score_user_batches(
    generator: Any, train: sp.csr_matrix, users: np.ndarray, segments: np.ndarray, draws: int, seed: int,
    batch_users: int = 1024,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """:func:`score_users` ``batch_users`` users at a time: ``(positions in users, their scores)`` per batch.

    Only one batch's users x items scores exist at once (every real user of a 200,000-item catalogue would
    be hundreds of GB); the noise is drawn for all users up front, so the scores do not depend on the batch.
    """
    rng = np.random.default_rng(seed)
    noise_dim = int(generator.input[NOISE].shape[-1])
    noise = [rng.standard_normal((len(users), noise_dim)).astype(np.float32) for _ in range(draws)]
    condition, rest = split_generator(generator)  # the profile's layer once per user, not once per draw
    for start in range(0, len(users), batch_users):
        rows = np.arange(start, min(start + batch_users, len(users)))
        total = np.zeros((len(rows), train.shape[1]), dtype=np.float32)
        for part in range(0, len(rows), INFERENCE_BATCH):
            chunk = rows[part:part + INFERENCE_BATCH]
            conditioned = condition([dense_rows(train, users[chunk]), segments[users[chunk]].astype(np.int32)],
                                    training=False)
            for draw in noise:
                scores = rest([conditioned, keras.ops.convert_to_tensor(draw[chunk])], training=False)
                total[part:part + len(chunk)] += keras.ops.convert_to_numpy(scores)
        yield rows, total / draws
