"""Hard negatives: the user's highest-scored unobserved items, minus the likely false negatives."""

from __future__ import annotations

import numpy as np

from recsys.sampling.seen import SeenItems

MISSING = -1  # the item of a row whose user has no eligible candidate


class HardNegativeSampler:
    """Serves each user's candidates in descending score, cycling when more rows than candidates.

    Candidates scored above ``max_score`` are skipped: an item the generator is that sure of is more
    likely a positive the user has not met yet (a false negative) than a hard negative; the GAN
    expansion turns exactly those into positives. Candidates the user has seen are skipped too.
    """

    def __init__(
        self,
        users: np.ndarray,
        items: np.ndarray,
        scores: np.ndarray,
        seen: SeenItems,
        max_score: float,
    ) -> None:
        """Build the per-user candidate lists.

        Args:
            users, items, scores: candidate rows (e.g. the generator's top unobserved items per user).
            seen: the items to avoid, per user.
            max_score: the false-negative guard; candidates scoring above it are skipped.
        """
        users = np.asarray(users, dtype=np.int64)
        items = np.asarray(items, dtype=np.int32)
        scores = np.asarray(scores, dtype=np.float64)
        keep = (scores <= max_score) & ~seen.contains(users, items)
        users, items, scores = users[keep], items[keep], scores[keep]
        order = np.lexsort((items, -scores, users))  # by user, best score first, item breaks ties
        self._items = items[order]
        self._users, self._start, self._count = np.unique(users[order], return_index=True, return_counts=True)

    def sample(self, users: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        """The k-th row of a user gets their k-th best candidate (cycling); ``MISSING`` if they have none.

        Deterministic, so ``rng`` is accepted for the common sampler signature and not used.
        """
        users = np.asarray(users, dtype=np.int64)
        out = np.full(users.size, MISSING, dtype=np.int32)
        if users.size == 0 or self._users.size == 0:
            return out
        slot = np.minimum(np.searchsorted(self._users, users), self._users.size - 1)
        has = self._users[slot] == users
        # rank of each row among the rows of the same user, in the given order
        order = np.argsort(users, kind="stable")
        sorted_users = users[order]
        first = np.searchsorted(sorted_users, sorted_users, side="left")
        rank = np.empty(users.size, dtype=np.int64)
        rank[order] = np.arange(users.size) - first
        rows = np.flatnonzero(has)
        s = slot[rows]
        out[rows] = self._items[self._start[s] + rank[rows] % self._count[s]]
        return out
