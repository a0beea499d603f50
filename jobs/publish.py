"""Publish every known user's top-K from the date's champion model to ``recs/ds=<ds>/`` (the output contract).

Columns: ``user_id`` and ``item_id`` (the original ids, in their input type), ``rank`` (1..K) and
``score``. Users are those with any interaction in the date's training window, of any label and
whether or not they passed the k-core; items they already interacted with are never recommended.
Scores come from the champion applied to today's histories (stable indexes keep its item columns
aligned with today's tables); a user whose history holds nothing the model reads gets the most
popular items. The date's champion is the version the date's registration names
(``registry/ds=<ds>/registration.json``): in a nightly run the `champion` alias itself; in a rerun of
an earlier date, the champion that date had, so its output comes out the same.

Before committing, :func:`recsys.serving.contract.check_contract` verifies the output contract (every
user of the window served, K rows each, nothing they had, ids as they came); a violation raises
:class:`recsys.serving.contract.ContractError` and commits nothing.
``_summary.json`` beside the recommendations records users served / users in the window.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from recsys.core.cli import JobContext, job_parser, run_job
from recsys.core.columns import USER_ID
from recsys.core.lake import RECS_FILE, RECS_SUMMARY_FILE, REGISTRATION_FILE, read_json, write_json
from recsys.core.matrices import load_matrices
from recsys.core.tracking import setup_mlflow
from recsys.serving.contract import ContractError, check_contract
from recsys.serving.recs import recs_frame, typed_ids

log = logging.getLogger(__name__)


def body(ctx: JobContext) -> dict[str, Any]:
    import mlflow

    ds, lake = ctx.ds, ctx.lake
    k = int(ctx.config["publish"]["k"])
    registration = read_json(lake.require("registry", ds) / REGISTRATION_FILE)
    name, version = registration["model_name"], registration["champion"]
    if version is None:
        raise RuntimeError(f"model {name!r} had no champion for {ds} (gate: {registration['gate']['reason']}); "
                           "nothing to publish")
    setup_mlflow()
    model = mlflow.pyfunc.load_model(f"models:/{name}/{version}").unwrap_python_model()
    m = load_matrices(lake, ds)
    served = m.served_users()
    log.info("scoring %d users (everyone with an interaction in the window) with %s version %s",
             len(served), name, version)
    history, seen = m.history[served], m.seen[served]
    idx, scores = model.recommend_histories(history, seen, k)
    source = lake.source()
    user_type, item_type = source.get("user_id_type", "string"), source.get("item_id_type", "string")
    user_ids = typed_ids(m.user_ids[served], user_type)
    frame = recs_frame(user_ids, idx, scores, m.item_ids, item_type)
    # the items the champion can rank: today's catalogue as far as the champion knows it
    candidates = min(m.n_items, len(model.profile.popularity))
    unseen = candidates - seen[:, :candidates].getnnz(axis=1)
    problems = check_contract(frame, user_ids=user_ids, item_ids=typed_ids(m.item_ids, item_type), seen=seen,
                              expected_rows=np.minimum(k, unseen), user_id_type=user_type, item_id_type=item_type)
    if problems:
        raise ContractError(f"recs {ds} break the output contract; nothing published: " + " | ".join(problems))
    served_users = int(frame[USER_ID].nunique())
    # users who already had every item the champion can rank get no rows and count as served
    nothing_left = int((unseen <= 0).sum())
    summary = {"ds": ds, "k": k, "rows": int(len(frame)), "users_served": served_users + nothing_left,
               "users_with_nothing_unseen": nothing_left, "users_in_window": int(len(served)),
               "served_share": (served_users + nothing_left) / max(len(served), 1),
               "model_name": name, "model_version": str(version),
               "users_from_popularity": int((np.diff(history.indptr) == 0).sum())}
    with lake.writing("recs", ds) as out:
        frame.to_parquet(out / RECS_FILE, index=False)
        write_json(out / RECS_SUMMARY_FILE, summary)
    path = lake.path("recs", ds)
    log.info("published %d recommendations to %s: %d of %d users in the window served (%.1f%%), %d of them "
             "from popularity, %d with nothing left unseen", len(frame), path, summary["users_served"], len(served),
             100 * summary["served_share"], summary["users_from_popularity"], nothing_left)
    return {"path": str(path), "users": summary["users_served"], "users_in_window": int(len(served)),
            "rows": int(len(frame)), "model_version": str(version)}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = job_parser("Publish the date's champion's top-K recommendations for every known user.")
    return run_job(parser, body, argv)


if __name__ == "__main__":
    main()
