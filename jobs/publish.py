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

``recs_new/ds=<ds>/`` holds the same for the new items alone (:mod:`recsys.serving.new_items`): each
served user's top-K among the new items they have not had, same columns and contract; both lists are
checked before either is committed.
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
from recsys.serving.new_items import read_new_items
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
    source = lake.source()
    user_type, item_type = source.get("user_id_type", "string"), source.get("item_id_type", "string")
    user_ids = typed_ids(m.user_ids[served], user_type)
    item_ids = typed_ids(m.item_ids, item_type)
    # the items the champion can rank: today's catalogue as far as the champion knows it
    rankable = np.arange(m.n_items) < min(m.n_items, len(model.profile.popularity))
    new = read_new_items(lake, ds, m, ctx.config)
    log.info("%d of %d items are new (recs_new/)", int(new.sum()), m.n_items)
    outputs = {}
    lists = model.recommend_histories(history, seen, k, [None, new])  # one scoring pass for both lists
    for (zone, candidates), (idx, scores) in zip((("recs", None), ("recs_new", new)), lists, strict=True):
        frame = recs_frame(user_ids, idx, scores, m.item_ids, item_type)
        allowed = rankable if candidates is None else rankable & candidates
        unseen = int(allowed.sum()) - seen[:, allowed].getnnz(axis=1)
        # the contract over the allowed items alone: an item outside them counts as outside the catalogue
        problems = check_contract(frame, user_ids=user_ids, item_ids=item_ids[allowed], seen=seen[:, allowed],
                                  expected_rows=np.minimum(k, unseen), user_id_type=user_type,
                                  item_id_type=item_type)
        if problems:
            raise ContractError(f"{zone} {ds} break the output contract; nothing published: " + " | ".join(problems))
        # users who already had every item the champion can rank get no rows and count as served
        nothing_left = int((unseen <= 0).sum())
        served_users = int(frame[USER_ID].nunique()) + nothing_left
        summary = {"ds": ds, "k": k, "rows": int(len(frame)), "items": int(allowed.sum()),
                   "users_served": served_users, "users_with_nothing_unseen": nothing_left,
                   "users_in_window": int(len(served)), "served_share": served_users / max(len(served), 1),
                   "model_name": name, "model_version": str(version),
                   "users_from_popularity": int((np.diff(history.indptr) == 0).sum())}
        outputs[zone] = frame, summary
    # both lists are checked before either is committed; recs/ last, as the asset publish updates
    for zone in ("recs_new", "recs"):
        frame, summary = outputs[zone]
        with lake.writing(zone, ds) as out:
            frame.to_parquet(out / RECS_FILE, index=False)
            write_json(out / RECS_SUMMARY_FILE, summary)
        log.info("published %d recommendations among %d items to %s: %d of %d users in the window served "
                 "(%.1f%%), %d of them from popularity, %d with nothing left unseen", summary["rows"],
                 summary["items"], lake.path(zone, ds), summary["users_served"], len(served),
                 100 * summary["served_share"], summary["users_from_popularity"], summary["users_with_nothing_unseen"])
    frame, summary = outputs["recs"]
    return {"path": str(lake.path("recs", ds)), "users": summary["users_served"], "users_in_window": int(len(served)),
            "rows": int(len(frame)), "model_version": str(version), "new_items": int(new.sum()),
            "new_rows": outputs["recs_new"][1]["rows"]}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = job_parser("Publish the date's champion's top-K recommendations for every known user.")
    return run_job(parser, body, argv)


if __name__ == "__main__":
    main()
