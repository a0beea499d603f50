"""publish.check_contract: a clean frame passes, and each planted violation is named."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from recsys.serving.contract import check_contract

USERS = np.array(["007", "7", "B00ABCDxyz"], dtype=object)  # string ids as they came
ITEMS = np.array([10, 20, 30, 40], dtype=np.int64)
# 007 saw item 10; 7 saw nothing; B00ABCDxyz saw 10, 20 and 30 (one unseen item left)
SEEN = sp.csr_matrix(np.array([[1, 0, 0, 0], [0, 0, 0, 0], [1, 1, 1, 0]], dtype=np.float32))
EXPECTED = np.array([2, 2, 1])  # K = 2, fewer only when fewer unseen items remain


def good() -> pd.DataFrame:
    return pd.DataFrame({
        "user_id": np.array(["007", "007", "7", "7", "B00ABCDxyz"], dtype=object),
        "item_id": np.array([20, 30, 10, 40, 40], dtype=np.int64),
        "rank": np.array([1, 2, 1, 2, 1], dtype=np.int32),
        "score": np.array([0.9, 0.5, 3.0, 2.0, 0.1], dtype=np.float32),
    })


def problems(frame: pd.DataFrame, user_type: str = "string", item_type: str = "int64") -> list[str]:
    return check_contract(frame, user_ids=USERS, item_ids=ITEMS, seen=SEEN, expected_rows=EXPECTED,
                          user_id_type=user_type, item_id_type=item_type)


def test_a_frame_that_keeps_the_contract_passes() -> None:
    assert problems(good()) == []


def _with(**changes: object) -> pd.DataFrame:
    frame = good()
    for cell, value in changes.items():
        column, row = cell.rsplit("_", 1)
        frame.loc[int(row), column] = value
    return frame


@pytest.mark.parametrize(("frame", "message"), [
    (_with(item_id_0=10), "already interacted with: user '007' rank 1 item 10"),  # a seen pair
    (good().drop(index=4), "1 of 3 users in the window not served, e.g. 'B00ABCDxyz'"),
    (good().drop(index=1), "users with the wrong number of rows ('007': 1 rows, expected 2)"),
    (_with(rank_1=3), "ranks not 1..n without gaps: user '007' rank 3"),
    (_with(score_1=0.95), "scores not finite and non-increasing with rank: user '007' rank 2"),
    (_with(item_id_3=99), "items outside the catalogue: user '7' rank 2 item 99"),
    (_with(user_id_4="b00abcdxyz"), "users outside the window: user 'b00abcdxyz'"),
    (_with(item_id_1=20), "repeated (user, item) pairs: user '007' rank 2 item 20"),
])
def test_each_planted_violation_is_named(frame: pd.DataFrame, message: str) -> None:
    found = problems(frame.reset_index(drop=True))
    assert any(message in p for p in found), found


def test_ids_of_another_type_are_a_violation() -> None:
    frame = good()
    frame["user_id"] = [7, 7, 7, 7, 8]  # "007" published as an integer: two users' lists under one id
    assert any("user_id is int64, the input's ids are string" in p for p in problems(frame))
    assert any("item_id is int64, the input's ids are string" in p for p in problems(good(), item_type="string"))


def test_a_user_who_had_every_item_is_served_by_an_empty_list() -> None:
    seen = sp.csr_matrix(np.array([[1, 0, 0, 0], [0, 0, 0, 0], [1, 1, 1, 1]], dtype=np.float32))
    frame = good().drop(index=4).reset_index(drop=True)  # B00ABCDxyz had all four items: nothing to recommend
    assert check_contract(frame, user_ids=USERS, item_ids=ITEMS, seen=seen, expected_rows=np.array([2, 2, 0]),
                          user_id_type="string", item_id_type="int64") == []
    # but a user with unseen items left and no rows is not served
    found = check_contract(frame.drop(index=[2, 3]).reset_index(drop=True), user_ids=USERS, item_ids=ITEMS,
                           seen=seen, expected_rows=np.array([2, 2, 0]), user_id_type="string", item_id_type="int64")
    assert any("1 of 3 users in the window not served, e.g. '7'" in p for p in found), found
