"""Uniform negatives: any item of the catalogue the user has not seen, with equal probability."""

from __future__ import annotations

import numpy as np

from recsys.sampling.seen import SeenItems, draw_unseen


class UniformSampler:
    """Draws items uniformly from the catalogue, excluding each user's seen items."""

    def __init__(self, seen: SeenItems) -> None:
        self.seen = seen

    def sample(self, users: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One unseen int32 item per entry of ``users``."""
        n_items = self.seen.n_items
        return draw_unseen(users, lambda n, g: g.integers(0, n_items, n, dtype=np.int32), self.seen, rng)
