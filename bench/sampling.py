"""Benchmark: negatives per second of the uniform and popularity samplers, accidental hits excluded.

Builds ~10M synthetic interactions (100k users x 50k items, Zipf item popularity), draws 4 negatives
per interaction (40M) with each sampler, checks none is a seen item, and prints one JSON line last.
Run: ``python -m bench.sampling [--interactions N] [--repeats R]``.
"""

from __future__ import annotations

import argparse
import json
import logging
import time

import numpy as np
import scipy.sparse as sp

from recsys.sampling import PopularitySampler, SeenItems, UniformSampler

log = logging.getLogger("bench.sampling")
TARGET = 1e7


def synthetic_interactions(
    n_users: int, n_items: int, n_interactions: int, zipf: float, rng: np.random.Generator
) -> sp.csr_matrix:
    """A users x items CSR of about ``n_interactions`` distinct pairs, item popularity ~ rank^-zipf."""
    cdf = np.cumsum(1.0 / np.arange(1, n_items + 1) ** zipf)
    # draw more than asked (repeats of popular pairs merge), then keep a random subset of the distinct pairs
    n_draw = int(n_interactions * 1.4)
    items = np.searchsorted(cdf / cdf[-1], rng.random(n_draw), side="right")
    keys = np.unique(rng.integers(0, n_users, n_draw, dtype=np.int64) * n_items + items)
    keys = np.sort(rng.choice(keys, min(n_interactions, keys.size), replace=False))
    rows = keys // n_items
    indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=n_users))])
    return sp.csr_matrix((np.ones(keys.size, np.float32), (keys % n_items).astype(np.int32), indptr),
                         shape=(n_users, n_items))


def negatives_per_second(sampler: UniformSampler | PopularitySampler, users: np.ndarray, seen: SeenItems,
                         repeats: int, seed: int) -> float:
    """Best-of-``repeats`` rate of ``sampler.sample`` on ``users``; fails on any accidental hit."""
    best = float("inf")
    for r in range(repeats):
        rng = np.random.default_rng([seed, r])
        start = time.perf_counter()
        items = sampler.sample(users, rng)
        best = min(best, time.perf_counter() - start)
        hits = int(seen.contains(users, items).sum())
        if hits:
            raise AssertionError(f"{type(sampler).__name__} returned {hits} seen items")
    return users.size / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--items", type=int, default=50_000)
    parser.add_argument("--interactions", type=int, default=10_000_000)
    parser.add_argument("--negatives-per-positive", type=int, default=4)
    parser.add_argument("--alpha", type=float, default=0.75)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    rng = np.random.default_rng(args.seed)
    train = synthetic_interactions(args.users, args.items, args.interactions, 1.0, rng)
    seen = SeenItems(train)
    users = np.repeat(np.arange(args.users, dtype=np.int32), np.diff(train.indptr) * args.negatives_per_positive)
    log.info("%d interactions, drawing %d negatives per sampler", train.nnz, users.size)
    counts = np.bincount(train.indices, minlength=args.items)
    uniform = negatives_per_second(UniformSampler(seen), users, seen, args.repeats, args.seed)
    log.info("uniform: %.3g negatives/s", uniform)
    pop = negatives_per_second(PopularitySampler(seen, counts, args.alpha), users, seen, args.repeats, args.seed)
    log.info("popularity: %.3g negatives/s", pop)
    result = {
        "interactions": int(train.nnz),
        "negatives": int(users.size),
        "uniform_negs_per_s": round(uniform),
        "pop_negs_per_s": round(pop),
        "target": TARGET,
    }
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
