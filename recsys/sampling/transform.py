"""Transformations of real histories (source ``transform_pos``): pseudo-users, each a perturbed copy of a real user.

Every real user with at least ``transform.min_history`` train items gets ``transform.copies_per_user`` copies of
their train history, each

1. cropped: a random contiguous run of ``transform.crop_share`` of the history, in item-index order (the order
   in which the items first appeared in the data: the index rule gives new items the next indexes);
2. masked: every item of the run dropped with probability ``transform.mask_share``;
3. substituted: every item left replaced, with probability ``transform.substitute_share``, by its content-nearest
   item (:func:`content_nearest`; only where embeddings exist), at a confidence equal to their cosine similarity.

A copy is a new pseudo-user, not more positives of the real user: the recommender reads a history and predicts
its items, so a copy only teaches it something as a history of its own (the perturbed input), and the real
user's row stays exactly theirs. Its rows are both its history and its positives, like a synthetic user's.
Kept items have confidence 1.0; no item the user has not got appears except a substitute. Copies get no
negatives (under the default multinomial loss negatives carry no gradient).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import scipy.sparse as sp

from recsys.sampling.augment_outputs import Triples

# similarities held at once: a block of items x the candidate items (float32), about 128 MB
_BLOCK_CELLS = 1 << 25


def content_nearest(vectors: np.ndarray, items: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each of ``items``' nearest other item of ``items`` by cosine similarity (the vectors are L2-normalised).

    Returns:
        ``(nearest, similarity)`` over the whole catalogue (``len(vectors)``): the nearest item's index, -1 for
        items outside ``items`` or when ``items`` has fewer than two; its similarity (0.0 where none).
    """
    n_items = len(vectors)
    nearest, similarity = np.full(n_items, -1, np.int64), np.zeros(n_items, np.float32)
    items = np.asarray(items, np.int64)
    if len(items) < 2 or np.asarray(vectors).shape[1] == 0:
        return nearest, similarity
    candidates = np.asarray(vectors, np.float32)[items]
    block = max(1, _BLOCK_CELLS // len(items))
    for start in range(0, len(items), block):
        sims = candidates[start:start + block] @ candidates.T
        sims[np.arange(len(sims)), np.arange(start, start + len(sims))] = -np.inf  # not itself
        best = sims.argmax(axis=1)
        nearest[items[start:start + len(sims)]] = items[best]
        similarity[items[start:start + len(sims)]] = sims[np.arange(len(sims)), best]
    return nearest, similarity


def transformed_histories(
    train: sp.csr_matrix,
    nearest: np.ndarray,
    similarity: np.ndarray,
    config: Mapping[str, Any],
    rng: np.random.Generator,
) -> tuple[Triples, np.ndarray]:
    """The pseudo-users' items (pure: arrays in, arrays out).

    Args:
        train: users x items CSR of train positives, indices sorted.
        nearest: per item, its content-nearest item (-1: none; see :func:`content_nearest`).
        similarity: per item, the similarity to that item.
        config: the ``transform`` config section.
        rng: random generator; the same state gives the same copies.

    Returns:
        ``(rows, origin)``: ``rows`` (pseudo_user from 0, item_idx, confidence), ordered by pseudo-user then item,
        a repeated item kept once at its highest confidence; ``origin[p]``: the real user pseudo-user ``p`` copies.
    """
    copies = int(config["copies_per_user"])
    lengths = np.diff(train.indptr)
    users = np.flatnonzero(lengths >= int(config["min_history"]))
    if copies == 0 or len(users) == 0:
        return Triples.empty(), np.zeros(0, np.int64)
    # one block of entries per (user, copy): copy c of user u is copy number u_rank * copies + c
    copy_user = np.repeat(users, copies)
    copy_len = lengths[copy_user]
    entry_copy = np.repeat(np.arange(len(copy_user)), copy_len)
    offsets = np.repeat(np.cumsum(copy_len) - copy_len, copy_len)
    rank = np.arange(len(entry_copy)) - offsets
    items = train.indices[train.indptr[copy_user][entry_copy] + rank].astype(np.int64)

    window = np.maximum(1, np.ceil(float(config["crop_share"]) * copy_len).astype(np.int64))
    start = rng.integers(0, copy_len - window + 1)
    keep = (rank >= start[entry_copy]) & (rank < (start + window)[entry_copy])
    keep &= rng.random(len(items)) >= float(config["mask_share"])
    substitute = (rng.random(len(items)) < float(config["substitute_share"])) & (nearest[items] >= 0)
    confidence = np.where(substitute, similarity[items], 1.0).astype(np.float32)
    items = np.where(substitute, nearest[items], items)
    entry_copy, items, confidence = entry_copy[keep], items[keep], confidence[keep]

    # a substitute that is already in the copy: the pair once, at its highest confidence
    order = np.lexsort((-confidence, items, entry_copy))
    entry_copy, items, confidence = entry_copy[order], items[order], confidence[order]
    first = np.r_[True, (entry_copy[1:] != entry_copy[:-1]) | (items[1:] != items[:-1])] if len(items) else \
        np.zeros(0, bool)
    entry_copy, items, confidence = entry_copy[first], items[first], confidence[first]
    kept_copies, pseudo = np.unique(entry_copy, return_inverse=True)  # copies left empty by the mask vanish
    return Triples(pseudo.astype(np.int64), items.astype(np.int32), confidence), copy_user[kept_copies]
