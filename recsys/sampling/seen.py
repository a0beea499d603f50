"""What each user has already seen, and the draw-then-redraw-the-hits loop that keeps negatives unseen."""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
import scipy.sparse as sp

log = logging.getLogger(__name__)

# After this many redraw rounds the remaining hits belong to users whose history holds most of the
# sampler's mass; they are drawn exactly from their unseen items instead (a short per-user loop).
MAX_REDRAW_ROUNDS = 32
# Rows per batch: large enough to amortise numpy's per-call cost, small enough to stay in cache.
CHUNK_ROWS = 1 << 20
_FIB_HASH = np.uint32(2654435769)

Draw = Callable[[int, np.random.Generator], np.ndarray]


class SeenItems:
    """Membership of (user, item) pairs in a users x items CSR matrix, for bulk queries.

    Exact answers come from one ``searchsorted`` over global keys ``user * n_items + item`` (sorted,
    since CSR rows are in user order and each row's indices are sorted). A per-user hashed bitmap
    (a one-hash Bloom filter, about 2 bits per item of history) screens the queries first: a user's
    bits lie together, so the queries of one user hit the same cache lines, and only the ~10% of
    queries the bitmap cannot rule out reach the binary search.
    """

    def __init__(self, matrix: sp.csr_matrix) -> None:
        m = sp.csr_matrix(matrix, copy=True)
        m.sum_duplicates()  # also sorts the indices of every row
        self.n_users, self.n_items = m.shape
        self.indptr = m.indptr.astype(np.int64)
        self.indices = m.indices.astype(np.int32)
        lengths = np.diff(self.indptr)
        rows = row_users(m)
        self._keys = rows * self.n_items + self.indices
        # each user's bitmap: a power of two >= 8 bits per history item (so at most 1/8 of bits set)
        log_bits = np.maximum(3, np.ceil(np.log2(np.maximum(lengths, 1) * 8))).astype(np.int64)
        sizes = np.left_shift(1, log_bits)
        self._offset = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        self._shift = (32 - log_bits).astype(np.uint32)
        bits = np.unique(self._bit(rows, self.indices))
        self._bitmap = np.bincount(
            bits >> 3, weights=np.left_shift(1, bits & 7), minlength=int(sizes.sum()) // 8
        ).astype(np.uint8)

    def _bit(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        # multiplicative (Fibonacci) hashing: the top log_bits bits of item * 2^32/phi
        return self._offset[users] + ((items.astype(np.uint32) * _FIB_HASH) >> self._shift[users])

    def contains(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Whether each ``(users[i], items[i])`` is a stored entry; a boolean array.

        ``users`` must be row indexes of the matrix (0 <= user < n_users).
        """
        bits = self._bit(users, items)
        maybe = np.flatnonzero((self._bitmap[bits >> 3] >> (bits & 7).astype(np.uint8)) & 1)
        keys = users[maybe].astype(np.int64) * self.n_items + items[maybe]
        pos = np.minimum(np.searchsorted(self._keys, keys), self._keys.size - 1)
        out = np.zeros(len(users), dtype=bool)
        out[maybe] = self._keys[pos] == keys
        return out


def row_users(matrix: sp.csr_matrix, offset: int = 0) -> np.ndarray:
    """The row (user) of every stored entry of ``matrix``, in storage order, plus ``offset`` (int64)."""
    return offset + np.repeat(np.arange(matrix.shape[0], dtype=np.int64), np.diff(matrix.indptr))


def draw_unseen(
    users: np.ndarray,
    draw: Draw,
    seen: SeenItems,
    rng: np.random.Generator,
    weights: np.ndarray | None = None,
) -> np.ndarray:
    """Draw one item per entry of ``users`` from ``draw``'s distribution, conditioned on being unseen.

    Draws in bulk, then redraws only the rows that hit a seen item (rejection sampling, so every row
    follows the distribution restricted to the user's unseen items). Rows still hitting after
    ``MAX_REDRAW_ROUNDS`` are drawn directly from the user's unseen items.

    Args:
        users: user index of each row.
        draw: ``draw(n, rng)`` returns ``n`` independent items from the sampler's distribution.
        seen: the items to avoid, per user.
        rng: random generator.
        weights: the sampler's unnormalised item weights (``None``: uniform), for the direct draw.

    Returns:
        int32 items, one per row, none of them seen by its user.

    Raises:
        ValueError: a user has seen every item the sampler can draw.
    """
    users = np.asarray(users)
    items = np.empty(users.size, dtype=np.int32)
    for start in range(0, users.size, CHUNK_ROWS):
        chunk = slice(start, start + CHUNK_ROWS)
        items[chunk] = _draw_chunk(users[chunk], draw, seen, rng, weights)
    return items


def _draw_chunk(
    users: np.ndarray, draw: Draw, seen: SeenItems, rng: np.random.Generator, weights: np.ndarray | None
) -> np.ndarray:
    items = draw(users.size, rng)
    hits = np.flatnonzero(seen.contains(users, items))
    for _ in range(MAX_REDRAW_ROUNDS):
        if hits.size == 0:
            return items
        items[hits] = draw(hits.size, rng)
        hits = hits[seen.contains(users[hits], items[hits])]
    for user in np.unique(users[hits]):
        rows = hits[users[hits] == user]
        mask = np.ones(seen.n_items, dtype=bool)
        mask[seen.indices[seen.indptr[user]:seen.indptr[user + 1]]] = False
        p = mask.astype(np.float64) if weights is None else np.where(mask, weights, 0.0)
        if p.sum() <= 0:
            raise ValueError(f"user {user} has seen every item the sampler can draw; no negative exists")
        items[rows] = rng.choice(seen.n_items, size=rows.size, p=p / p.sum())
        log.debug("user %d: %d rows drawn directly from their unseen items", user, rows.size)
    return items
