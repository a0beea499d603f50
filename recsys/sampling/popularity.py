"""Popularity-weighted negatives: item i drawn with probability proportional to count_i ** alpha."""

from __future__ import annotations

import numpy as np

from recsys.sampling.seen import SeenItems, draw_unseen

# Guide-table buckets per item: with 16x more buckets than items at most 1/16 of the buckets hold a
# CDF step, so ~94% of draws resolve with one table look-up and the rest with a binary search.
_BUCKETS_PER_ITEM = 16


def popularity_weights(counts: np.ndarray, alpha: float) -> np.ndarray:
    """Unnormalised draw weights ``count ** alpha``; items with a zero count weigh 0.

    Raises:
        ValueError: counts are negative or all zero, or alpha is negative.
    """
    counts = np.asarray(counts, dtype=np.float64)
    if alpha < 0 or (counts < 0).any() or not (counts > 0).any():
        raise ValueError("popularity counts must be >= 0 with some > 0, and alpha >= 0")
    return np.where(counts > 0, counts ** alpha, 0.0)


class PopularitySampler:
    """Draws items with p ~ count ** alpha, excluding each user's seen items.

    Items with a zero count are never drawn (uniform negatives cover them). Draws use inverse-CDF
    sampling with a guide table (Chen & Asau): the unit interval is cut into 2**k equal buckets; a
    uniform number whose bucket lies inside one item's CDF step is that item, otherwise it is searched
    in the CDF. The result is exactly the inverse CDF, at close to the speed of a table look-up.
    """

    def __init__(self, seen: SeenItems, counts: np.ndarray, alpha: float) -> None:
        """Build the sampler.

        Args:
            seen: the items to avoid, per user.
            counts: per item, how often it occurs (e.g. train interactions); length ``seen.n_items``.
            alpha: exponent; 0 is uniform over the items with a count, 1 is proportional to counts.

        Raises:
            ValueError: counts have the wrong length, are negative or all zero, or alpha is negative.
        """
        counts = np.asarray(counts, dtype=np.float64)
        if counts.shape != (seen.n_items,):
            raise ValueError(f"popularity counts have shape {counts.shape}, expected ({seen.n_items},)")
        self.seen = seen
        self.weights = popularity_weights(counts, alpha)
        cdf = np.cumsum(self.weights)
        self._cdf = cdf / cdf[-1]  # the last entries are exactly 1.0, so a draw < 1 never passes them
        n_buckets = 1 << int(np.ceil(np.log2(_BUCKETS_PER_ITEM * seen.n_items)))
        edges = np.arange(n_buckets + 1, dtype=np.float64) / n_buckets
        self._guide = np.searchsorted(self._cdf, edges, side="right").astype(np.int32)
        self._n_buckets = n_buckets

    def _draw(self, n: int, rng: np.random.Generator) -> np.ndarray:
        u = rng.random(n)
        bucket = (u * self._n_buckets).astype(np.int64)  # exact: the bucket count is a power of two
        items = self._guide[bucket]
        split = np.flatnonzero(items != self._guide[bucket + 1])
        items[split] = np.searchsorted(self._cdf, u[split], side="right")
        return items

    def sample(self, users: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One unseen int32 item per entry of ``users``, popularity-weighted."""
        return draw_unseen(users, self._draw, self.seen, rng, self.weights)
