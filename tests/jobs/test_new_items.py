"""The new-item rule of recs_new/ and the pyfunc's new_only (recsys.serving.new_items), by hand."""

from __future__ import annotations

import datetime as dt

import numpy as np
import scipy.sparse as sp

from recsys.core.lake import Lake
from recsys.core.matrices import load_matrices
from recsys.serving.new_items import NEVER, first_seen, new_item_mask
from tests.support import write_tables

DS = "2026-03-10"
CONFIG = {"window_days": 30, "publish": {"new_item_days": 7, "new_item_max_interactions": 2}}


def _us(text: str) -> int:
    return int(dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC).timestamp() * 1_000_000)


def test_few_interactions_or_a_recent_first_positive_make_an_item_new(tmp_path) -> None:
    # items: 0 three users (old), 1 one user (few), 2 nobody (a catalogue item), 3 three users, first
    # positive 2026-03-04 (within 7 days up to the end of 03-10), 4 three users, first 2026-03-03 (just before)
    train = sp.csr_matrix(np.array([[1, 1, 0, 1, 1], [1, 0, 0, 1, 1], [1, 0, 0, 1, 1]], np.float32))
    lake = Lake(tmp_path)
    write_tables(lake, DS, train)
    m = load_matrices(lake, DS)
    firsts = np.array([_us("2025-01-01"), _us("2025-01-01"), NEVER, _us("2026-03-04"), _us("2026-03-03T23:59:59")])
    assert new_item_mask(m, firsts, DS, CONFIG).tolist() == [False, True, True, True, False]
    # a window no longer than new_item_days says nothing about an item's age: only the count decides
    assert new_item_mask(m, firsts, DS, {**CONFIG, "window_days": 7}).tolist() == [False, True, True, False, False]
    # nothing is new with a threshold of 0 interactions and first positives long ago
    old = np.full(5, _us("2025-01-01"))
    none_few = {"window_days": 30, "publish": {"new_item_days": 7, "new_item_max_interactions": 0}}
    assert not new_item_mask(m, old, DS, none_few).any()


def test_first_seen_is_each_items_earliest_positive_in_the_tables(tmp_path) -> None:
    lake = Lake(tmp_path)
    train = sp.csr_matrix(np.array([[1, 0, 0], [1, 1, 0]], np.float32))
    write_tables(lake, DS, train, ts=dt.datetime(2026, 3, 1, tzinfo=dt.UTC))
    assert first_seen(lake, DS, 3).tolist() == [_us("2026-03-01"), _us("2026-03-01"), NEVER]
