"""Validation study: which ``tables.nonpositive_weight`` should low ratings have in the history a model reads?

Reads a date's tables and trained held-out model (``models/ds=D/model.keras``) from a lake that a run
with the default ``tables.nonpositive_weight`` (0) produced, so ``history`` holds the positives and
``seen`` every pair. For each candidate weight w, every user with validation items is scored from their
train positives plus w x their interactions without a positive label, with everything they interacted
with other than the validation and test positives removed from the ranking, and NDCG@10 on the
validation split is measured (the test split is never read). Prints one JSON line last.
Run: ``python -m bench.nonpositive_weight --lake <lake> --ds YYYY-MM-DD [--weights 0 0.1 0.25 0.5 1]``.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np

from recsys.core.lake import Lake
from recsys.core.matrices import binary, load_matrices, without
from recsys.evaluation.metrics import user_metrics

log = logging.getLogger("bench.nonpositive_weight")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lake", required=True, type=Path)
    parser.add_argument("--ds", required=True)
    parser.add_argument("--weights", nargs="+", type=float, default=[0.0, 0.1, 0.25, 0.5, 1.0])
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from recsys.models.recommender import load_recommender, score_histories

    lake = Lake(args.lake)
    m = load_matrices(lake, args.ds)
    model = load_recommender(lake.path("models", args.ds) / "model.keras")
    users = np.flatnonzero(np.diff(m.valid.indptr) > 0)
    nonpositive = without(m.seen, binary(m.history))
    exclude = without(m.seen, binary(m.valid + m.test))[users]
    train = m.train[users]
    figures = {}
    for weight in args.weights:
        inputs = (train + weight * nonpositive[users]).tocsr()
        value = user_metrics(score_histories(model, inputs), exclude, m.valid[users], [10]).summary()["ndcg@10"]
        figures[str(weight)] = round(float(value), 5)
        log.info("nonpositive_weight %s: valid ndcg@10 %.5f", weight, value)
    best = max(figures, key=lambda w: (figures[w], -float(w)))
    print(json.dumps({"bench": "nonpositive_weight", "ds": args.ds, "valid_users": int(len(users)),
                      "users_with_nonpositives": int((np.diff(nonpositive[users].indptr) > 0).sum()),
                      "valid_ndcg@10": figures, "best_weight": float(best)}))


if __name__ == "__main__":
    main()
