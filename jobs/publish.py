"""Publish every known user's top-K from the date's champion model to ``recs/ds=<ds>/`` (the output contract).

Columns: ``user_id`` and ``item_id`` (the original ids, in their input type), ``rank`` (1..K) and
``score``. Users are those with any interaction in the date's training window, of any label and
whether or not they passed the k-core; items they already interacted with are never recommended.
Scores come from the champion applied to today's histories (stable indexes keep its item columns
aligned with today's tables); a user whose history holds nothing the model reads gets the most
popular items. The date's champion is the version the date's registration names
(``registry/ds=<ds>/registration.json``): in a nightly run the `champion` alias itself; in a rerun of
an earlier date, the champion that date had, so its output comes out the same.

Before committing, :func:`check_contract` verifies the output: every user of the window served (and
nobody else), K rows per user (fewer only when fewer unseen items remain, none for a user who already
had every item), ranks 1..n without gaps,
scores non-increasing with rank, no pair from the user's window, no repeated item, item ids from the
catalogue, ids of the input's type. A violation raises :class:`ContractError` and commits nothing.
``_summary.json`` beside the recommendations records users served / users in the window.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recsys.core.cli import JobContext, job_parser, run_job
from recsys.core.columns import ITEM_ID, RANK, SCORE, USER_ID
from recsys.core.lake import RECS_FILE, RECS_SUMMARY_FILE, REGISTRATION_FILE, read_json, write_json
from recsys.core.matrices import load_matrices
from recsys.core.tracking import setup_mlflow
from recsys.serving.recs import recs_frame, typed_ids

log = logging.getLogger(__name__)
EXAMPLES_SHOWN = 3  # offending rows quoted per violation


class ContractError(ValueError):
    """The recommendations about to be published break the output contract; nothing was committed."""


def _examples(frame: pd.DataFrame, mask: np.ndarray | pd.Series) -> str:
    rows = frame[np.asarray(mask)].head(EXAMPLES_SHOWN)
    return "; ".join(f"user {r[USER_ID]!r} rank {r[RANK]} item {r[ITEM_ID]!r} score {r[SCORE]}"
                     for r in rows.to_dict("records"))


def _id_type_ok(values: pd.Series, id_type: str) -> bool:
    if id_type == "int64":
        return values.dtype == np.int64
    return pd.api.types.is_string_dtype(values) and values.map(lambda v: isinstance(v, str)).all()


def check_contract(frame: pd.DataFrame, *, user_ids: np.ndarray, item_ids: np.ndarray, seen: sp.csr_matrix,
                   expected_rows: np.ndarray, user_id_type: str, item_id_type: str) -> list[str]:
    """Every way ``frame`` breaks the output contract, one sentence each (an empty list: it holds).

    Args:
        frame: the recommendations, columns ``user_id, item_id, rank, score``.
        user_ids: the served users' ids, as published (typed), row i of ``seen`` and ``expected_rows``.
        item_ids: the catalogue's ids, as published, by item index (the columns of ``seen``).
        seen: served users x items, every interaction of each user's window (values ignored).
        expected_rows: per served user, how many rows they must get: K, or fewer unseen items.
        user_id_type, item_id_type: ``int64`` or ``string``, the input's id types.
    """
    problems = []
    for column, id_type in ((USER_ID, user_id_type), (ITEM_ID, item_id_type)):
        if not _id_type_ok(frame[column], id_type):
            problems.append(f"{column} is {frame[column].dtype}, the input's ids are {id_type}")
    user_pos = pd.Index(user_ids).get_indexer(frame[USER_ID])
    item_pos = pd.Index(item_ids).get_indexer(frame[ITEM_ID])
    if (user_pos < 0).any():
        problems.append(f"users outside the window: {_examples(frame, user_pos < 0)}")
    if (item_pos < 0).any():
        problems.append(f"items outside the catalogue: {_examples(frame, item_pos < 0)}")
    counts = np.bincount(user_pos[user_pos >= 0], minlength=len(user_ids))
    # a user who already had every item the model can rank is served by an empty list
    missing = np.flatnonzero((counts == 0) & (expected_rows > 0))
    if len(missing):
        problems.append(f"{len(missing)} of {len(user_ids)} users in the window not served, e.g. "
                        f"{', '.join(map(repr, user_ids[missing[:EXAMPLES_SHOWN]]))}")
    wrong = np.flatnonzero((counts != expected_rows) & (counts > 0))
    if len(wrong):
        shown = ", ".join(f"{user_ids[u]!r}: {counts[u]} rows, expected {expected_rows[u]}"
                          for u in wrong[:EXAMPLES_SHOWN])
        problems.append(f"{len(wrong)} users with the wrong number of rows ({shown})")
    known = (user_pos >= 0) & (item_pos >= 0)
    codes = user_pos[known].astype(np.int64) * seen.shape[1] + item_pos[known]
    seen_rows = np.repeat(np.arange(seen.shape[0], dtype=np.int64), np.diff(seen.indptr))
    was_seen = np.zeros(len(frame), dtype=bool)
    was_seen[known] = np.isin(codes, seen_rows * seen.shape[1] + seen.indices)
    if was_seen.any():
        problems.append(f"{int(was_seen.sum())} recommendations of items the user already interacted with: "
                        f"{_examples(frame, was_seen)}")
    repeated = frame.duplicated([USER_ID, ITEM_ID]).to_numpy()
    if repeated.any():
        problems.append(f"{int(repeated.sum())} repeated (user, item) pairs: {_examples(frame, repeated)}")
    ordered = frame.sort_values([USER_ID, RANK], kind="stable")
    position = ordered.groupby(USER_ID, sort=False).cumcount().to_numpy() + 1
    gaps = ordered[RANK].to_numpy() != position
    if gaps.any():
        problems.append(f"ranks not 1..n without gaps: {_examples(ordered, gaps)}")
    same_user = ordered[USER_ID].to_numpy()[1:] == ordered[USER_ID].to_numpy()[:-1]
    rising = np.r_[False, same_user & (np.diff(ordered[SCORE].to_numpy()) > 0)]
    if rising.any() or not np.isfinite(frame[SCORE]).all():
        problems.append(f"scores not finite and non-increasing with rank: {_examples(ordered, rising)}")
    return problems


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
