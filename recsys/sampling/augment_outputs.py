"""The augment stage's outputs as expand reads them: checked (user, item, value) triples (GAN and content)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from recsys.core.columns import CONFIDENCE, ITEM_IDX, SCORE, SYN_USER, USER_IDX, require_columns
from recsys.core.lake import (
    CANDIDATES_FILE,
    CONTENT_POS_FILE,
    GAN_POS_FILE,
    QUALITY_FILE,
    SYN_USERS_FILE,
    Lake,
    read_json,
)

log = logging.getLogger(__name__)


@dataclass
class Triples:
    """Three aligned columns of an augment output: (user or syn_user, item, confidence or score)."""

    users: np.ndarray
    items: np.ndarray
    values: np.ndarray

    @classmethod
    def empty(cls) -> Triples:
        return cls(np.zeros(0, np.int64), np.zeros(0, np.int32), np.zeros(0, np.float32))


@dataclass
class AugmentOutputs:
    """One date's augment outputs: GAN positives, synthetic users' items, hard-negative candidates."""

    gan_pos: Triples  # (user_idx, item_idx, confidence) of real users
    syn_users: Triples  # (syn_user, item_idx, confidence)
    candidates: Triples  # (user_idx, item_idx, score) of real users
    # augment's score for a positive (quality.json): candidates scored above it are never hard negatives
    confidence_threshold: float = float("inf")
    content_pos: Triples = field(default_factory=Triples.empty)  # (user_idx, item_idx, confidence) of cold items


def read_triples(path: Path, columns: tuple[str, str, str], n_users: int | None, n_items: int) -> Triples:
    """Read and check one augment output.

    Args:
        path: the Parquet file.
        columns: names of the user, item and value columns.
        n_users: users must lie in [0, n_users); ``None``: only >= 0 (synthetic user ids).
        n_items: items must lie in [0, n_items).

    Raises:
        ValueError: a column is missing, or a row has an index out of range or a non-finite value
            (the message names the file, the column and the first bad row).
    """
    frame = pd.read_parquet(path)
    user_col, item_col, value_col = columns
    require_columns(list(frame.columns), columns, str(path))
    users = frame[user_col].to_numpy(np.int64)
    items = frame[item_col].to_numpy(np.int64)
    values = frame[value_col].to_numpy(np.float32)
    user_limit = n_users if n_users is not None else np.iinfo(np.int32).max
    checks = (
        (user_col, (users < 0) | (users >= user_limit), f"outside [0, {user_limit})"),
        (item_col, (items < 0) | (items >= n_items), f"outside [0, {n_items})"),
        (value_col, ~np.isfinite(values), "not finite"),
    )
    for column, bad, why in checks:
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise ValueError(f"{path}: row {row}: column {column} = {frame[column].iloc[row]} is {why}")
    return Triples(users, items.astype(np.int32), values)


def read_augment_outputs(lake: Lake, ds: str, n_users: int, n_items: int) -> AugmentOutputs:
    """The checked augment outputs of ``ds`` for a train matrix of ``n_users`` x ``n_items``.

    Raises:
        FileNotFoundError: the augment partition of ``ds`` is missing.
        KeyError: its quality.json does not record the confidence threshold (written before it did: rerun augment).
        ValueError: as :func:`read_triples`.
    """
    base = lake.require("augment", ds)
    content = base / CONTENT_POS_FILE
    if content.exists():
        content_pos = read_triples(content, (USER_IDX, ITEM_IDX, CONFIDENCE), n_users, n_items)
    else:  # a partition written before the content generator: no content positives
        log.warning("%s is missing (augment ran before the content generator existed): no content_pos", content)
        content_pos = Triples.empty()
    return AugmentOutputs(
        gan_pos=read_triples(base / GAN_POS_FILE, (USER_IDX, ITEM_IDX, CONFIDENCE), n_users, n_items),
        syn_users=read_triples(base / SYN_USERS_FILE, (SYN_USER, ITEM_IDX, CONFIDENCE), None, n_items),
        candidates=read_triples(base / CANDIDATES_FILE, (USER_IDX, ITEM_IDX, SCORE), n_users, n_items),
        confidence_threshold=float(read_json(base / QUALITY_FILE)["confidence_threshold"]),
        content_pos=content_pos,
    )
