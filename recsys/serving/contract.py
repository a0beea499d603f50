"""The output contract of the published recommendations, checked before anything is committed.

Every user of the window served (and nobody else), K rows per user (fewer only when fewer unseen items
remain, none for a user who already had every item), ranks 1..n without gaps, scores non-increasing with
rank, no pair from the user's window, no repeated item, item ids from the catalogue, ids of the input's type.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recsys.core.columns import ITEM_ID, RANK, SCORE, USER_ID

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
