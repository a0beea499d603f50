"""Split a request for negatives among the negative samplers by share, with exact counts."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Protocol

import numpy as np

from recsys.core.columns import SOURCES
from recsys.sampling.hard import MISSING

log = logging.getLogger(__name__)

NEGATIVE_SOURCES = tuple(s for s in SOURCES if s.startswith("neg_"))
_GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0


class NegativeSampler(Protocol):
    def sample(self, users: np.ndarray, rng: np.random.Generator) -> np.ndarray: ...


def allot(n: int, shares: np.ndarray) -> np.ndarray:
    """The kind (index into ``shares``) of each of ``n`` rows.

    Counts are exact by the largest-remainder rule (each kind gets floor or ceil of ``share * n``,
    ties to the earlier kind). Kinds are spread evenly over the rows by a Weyl sequence: row i takes
    position ``i * g mod n`` with g coprime to n near ``0.618 n``, a permutation of the rows, so any
    run of consecutive rows (one user's block) gets close to the shares.
    """
    shares = np.asarray(shares, dtype=np.float64)
    exact = shares * n
    counts = np.floor(exact).astype(np.int64)
    short = n - int(counts.sum())
    counts[np.argsort(-(exact - counts), kind="stable")[:short]] += 1
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    step = max(1, round(n * _GOLDEN))
    while math.gcd(step, n) != 1:
        step += 1
    position = (np.arange(n, dtype=np.int64) * step) % n
    return np.searchsorted(np.cumsum(counts), position, side="right")


class NegativeMixer:
    """Draws negatives for a batch of rows in fixed shares, from one sampler per kind.

    A kind whose sampler is ``None`` (switched off) still gets its share of the rows, which are then
    dropped: switching a kind off removes exactly its rows. Each kind draws from its own child of the
    generator, so the other kinds' rows do not change either.
    """

    def __init__(self, samplers: Mapping[str, NegativeSampler | None], shares: Mapping[str, float]) -> None:
        """Build the mixer.

        Args:
            samplers: negative source name (``neg_*``) -> sampler, or ``None`` when switched off.
            shares: source name -> share of the rows; non-negative, summing to 1, same keys as samplers.

        Raises:
            ValueError: unknown source names, keys that differ, or shares that are negative or do
                not sum to 1.
        """
        unknown = sorted(set(shares) - set(NEGATIVE_SOURCES))
        if unknown:
            raise ValueError(f"negative mix names unknown kind(s) {unknown}; known: {list(NEGATIVE_SOURCES)}")
        if set(samplers) != set(shares):
            raise ValueError(f"negative samplers {sorted(samplers)} and shares {sorted(shares)} name different kinds")
        values = np.array([shares[k] for k in shares], dtype=np.float64)
        if (values < 0).any() or not math.isclose(values.sum(), 1.0, abs_tol=1e-9):
            raise ValueError(f"negative mix shares must be >= 0 and sum to 1, got {dict(shares)}")
        self.kinds = tuple(shares)
        self.shares = values
        self.samplers = dict(samplers)

    def sample(self, users: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One negative per entry of ``users``, of the kind the shares allot it.

        Rows of switched-off kinds are dropped, as are rows a sampler cannot serve (a hard-negative
        row whose user has no eligible candidate); the latter are logged.

        Returns:
            ``(users, items, source_codes)`` of the kept rows, in input order; source codes are
            int8 indexes into ``recsys.core.columns.SOURCES``.
        """
        users = np.asarray(users)
        kind = allot(users.size, self.shares)
        items = np.full(users.size, MISSING, dtype=np.int32)
        codes = np.zeros(users.size, dtype=np.int8)
        for k, (name, child) in enumerate(zip(self.kinds, rng.spawn(len(self.kinds)), strict=True)):
            sampler = self.samplers[name]
            rows = np.flatnonzero(kind == k)
            if sampler is None or rows.size == 0:
                continue
            items[rows] = sampler.sample(users[rows], child)
            codes[rows] = SOURCES.index(name)
            unserved = int((items[rows] == MISSING).sum())
            if unserved:
                log.warning("%s: %d of %d rows had no eligible candidate and were dropped", name, unserved, rows.size)
        keep = items != MISSING
        return users[keep], items[keep], codes[keep]
