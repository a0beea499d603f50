"""Benchmark: the augmentation lift over several training seeds, pooled per user, with its bootstrap interval.

Each ``--lake`` holds the same date's tables with ``augment``, ``expand``, ``train`` and ``evaluate`` run under
a different ``seed`` (e.g. hard-linked copies of one lake, those jobs rerun with ``--set seed=S``). For each
lake, the model and its no-augmentation ablation (``model.keras``, ``model_noaug.keras``) are scored on the
date's test users as ``jobs.evaluate`` scores them; each user's NDCG@10 is then averaged over the seeds, and
the lift (mean augmented / mean ablation) gets the same paired bootstrap interval as a night's
(``recsys.evaluation.lift``), in both segments. Refuses lakes whose tables differ: the seeds must see the same
data. Prints each seed's lifts and the pooled ones; the last line is one JSON object.
Run: ``python -m bench.seed_lift --ds 2018-09-24 --lake L42 --lake L7 --lake L13``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Any

import numpy as np

from recsys.core.config import load_config
from recsys.core.lake import MODEL_FILE, NOAUG_MODEL_FILE, Lake
from recsys.core.matrices import load_matrices
from recsys.evaluation.lift import lift_interval
from recsys.evaluation.protocol import HeldOut, recommender_scorer, sparse_segment

log = logging.getLogger("bench.seed_lift")
METRIC = "ndcg@10"


def per_user(lake: Lake, ds: str, share: float, max_users: int,
             seed: int) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Each test user's NDCG@10 of the model and the ablation; the test users and the sparse positions."""
    from recsys.models.recommender import load_recommender

    matrices = load_matrices(lake, ds)
    held = HeldOut.of(matrices, max_users, seed)  # evaluate's users
    sparse = sparse_segment(matrices.train, held.users, share)
    values = {}
    for name, file in (("model", MODEL_FILE), ("model_noaug", NOAUG_MODEL_FILE)):
        scorer = recommender_scorer(load_recommender(lake.require("models", ds) / file), matrices.n_items)
        values[name] = held.score(scorer, [10]).values[METRIC]
    return values, held.users, sparse


def lifts(augmented: np.ndarray, ablation: np.ndarray, sparse: np.ndarray, seed: int) -> dict[str, Any]:
    """Point lift and 95% interval in both segments."""
    out = {}
    for segment, rows in (("all", slice(None)), ("sparse", sparse)):
        a, n = augmented[rows], ablation[rows]
        interval = lift_interval(a, n, seed)
        out[segment] = {
            "lift": round(float(a.mean() / n.mean()), 4) if n.mean() > 0 else None,
            "low": round(interval[0], 4) if interval else None, "high": round(interval[1], 4) if interval else None,
            "model": round(float(a.mean()), 4), "model_noaug": round(float(n.mean()), 4),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ds", required=True, help="the date the lakes were trained for")
    parser.add_argument("--lake", action="append", required=True, help="a lake trained with one seed (repeat)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = load_config()
    share, seed = float(config["evaluate"]["sparse_share"]), int(config["seed"])
    max_users = int(config["evaluate"]["max_users"])
    runs = [per_user(Lake(path), args.ds, share, max_users, seed) for path in args.lake]
    users, sparse = runs[0][1], runs[0][2]
    for path, (_, other_users, other_sparse) in zip(args.lake, runs, strict=True):
        if not (np.array_equal(other_users, users) and np.array_equal(other_sparse, sparse)):
            raise SystemExit(f"{path}: its test users differ from {args.lake[0]}'s: the lakes must hold the same tables")
    per_seed = {path: lifts(v["model"], v["model_noaug"], sparse, seed) for path, (v, _, _) in zip(args.lake, runs,
                                                                                                    strict=True)}
    for path, figures in per_seed.items():
        log.info("%s: %s", path, figures)
    pooled = lifts(np.mean([v["model"] for v, _, _ in runs], axis=0),
                   np.mean([v["model_noaug"] for v, _, _ in runs], axis=0), sparse, seed)
    print(json.dumps({"ds": args.ds, "metric": METRIC, "seeds": len(runs), "users": int(len(users)),
                      "sparse_users": int(len(sparse)), "per_seed": per_seed, "pooled": pooled}), flush=True)


if __name__ == "__main__":
    main()
