"""Which items are new, for ``recs_new/`` and the pyfunc's ``new_only``: one rule, defined once.

An item is new on date ``ds`` when it has fewer than ``publish.new_item_max_interactions`` interactions
(of any label) in the date's window, which includes every catalogue item nobody has interacted with yet,
or when its first positive interaction in the window's tables lies within ``publish.new_item_days`` days
up to the end of ``ds``. The first-seen half sees the training window only, so it applies only when the
window reaches further back than ``new_item_days`` (a first positive in a shorter window says nothing
about the item's age); run-on imports use the whole history as the window.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq

from recsys.core.columns import ITEM_IDX, TS
from recsys.core.lake import INTERACTIONS_DIR, Lake
from recsys.core.matrices import Matrices

NEVER = np.iinfo(np.int64).min  # first-seen time of an item without a positive in the window


def first_seen(lake: Lake, ds: str, n_items: int) -> np.ndarray:
    """Per item index, the time (µs since the epoch) of its first positive in the date's tables; ``NEVER``
    for none."""
    table = pq.read_table(lake.require("tables", ds) / INTERACTIONS_DIR, columns=[ITEM_IDX, TS])
    firsts = table.group_by(ITEM_IDX).aggregate([(TS, "min")])
    out = np.full(n_items, NEVER, np.int64)
    out[firsts.column(ITEM_IDX).to_numpy()] = pc.cast(firsts.column(f"{TS}_min"), "int64").to_numpy()
    return out


def new_item_mask(m: Matrices, first_seen_us: np.ndarray, ds: str, config: Mapping[str, Any]) -> np.ndarray:
    """Bool per item index: new on ``ds`` by the module's rule (``config``: ``window_days`` and the ``publish``
    section's ``new_item_days`` and ``new_item_max_interactions``)."""
    settings = config["publish"]
    few = np.diff(m.seen.tocsc().indptr) < int(settings["new_item_max_interactions"])
    days = int(settings["new_item_days"])
    if int(config["window_days"]) <= days:
        return few
    day_end = dt.datetime.fromisoformat(ds).replace(tzinfo=dt.UTC) + dt.timedelta(days=1)
    since = int((day_end - dt.timedelta(days=days)).timestamp() * 1_000_000)
    return few | (first_seen_us >= since)


def read_new_items(lake: Lake, ds: str, m: Matrices, config: Mapping[str, Any]) -> np.ndarray:
    """:func:`new_item_mask` of the date's tables."""
    return new_item_mask(m, first_seen(lake, ds, m.n_items), ds, config)
