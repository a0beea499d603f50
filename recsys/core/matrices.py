"""Load the compact CSR export of the interaction tables that the TensorFlow jobs read.

Besides the three splits of the positives (after the k-core), the export holds two matrices over
every user and item with any interaction in the training window, whatever its label:

* ``history``: what a model reads as a user's history when it serves them: each positive with its
  weight (k-core or not), each interaction without a positive label with ``tables.nonpositive_weight``
  (absent when that is 0);
* ``seen``: every (user, item) pair of the window, value 1: what is never recommended to the user.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recsys.core.columns import ITEM_ID, ITEM_IDX, SPLITS, USER_ID, USER_IDX
from recsys.core.lake import ITEMS_FILE, MATRICES_FILE, USERS_FILE, Lake

WINDOW_MATRICES = ("history", "seen")


@dataclass
class Matrices:
    """One date's interactions as users x items CSR matrices of weights, one per split."""

    train: sp.csr_matrix
    valid: sp.csr_matrix
    test: sp.csr_matrix
    user_ids: np.ndarray  # user_ids[user_idx] = original id as a string ("" for unused rows)
    item_ids: np.ndarray  # item_ids[item_idx] = original id as a string
    # every interaction of the window, any label (see the module docstring); default: the splits' positives
    history: sp.csr_matrix | None = field(default=None)
    seen: sp.csr_matrix | None = field(default=None)

    def __post_init__(self) -> None:
        if self.history is None:
            self.history = self.window()
        if self.seen is None:
            self.seen = binary(self.history)

    @property
    def n_users(self) -> int:
        return self.train.shape[0]

    @property
    def n_items(self) -> int:
        return self.train.shape[1]

    def window(self) -> sp.csr_matrix:
        """Every positive of the training window that passed the k-core (train + valid + test), users x items."""
        return (self.train + self.valid + self.test).tocsr()

    def served_users(self) -> np.ndarray:
        """The users with any interaction in the window: everyone ``publish`` serves."""
        return np.flatnonzero(np.diff(self.seen.indptr) > 0)

    def held_out(self, users: np.ndarray) -> tuple[sp.csr_matrix, sp.csr_matrix]:
        """What a model reads and what it must not rank, for ``users`` whose test split is held out.

        Returns:
            ``(inputs, exclude)``: each user's ``history`` and ``seen`` rows without their test pairs, so
            evaluation reads and removes exactly what serving would, the test targets aside.
        """
        test = binary(self.test[users])
        return without(self.history[users], test), without(self.seen[users], test)


def check_items(histories: sp.csr_matrix, n_items: int, name: str) -> None:
    """Raise ValueError unless ``histories`` has the ``n_items`` item columns the scorer ``name`` was fitted on."""
    if histories.shape[1] != n_items:
        raise ValueError(f"{name}: histories have {histories.shape[1]} items, the model was fitted on {n_items}")


def binary(matrix: sp.csr_matrix) -> sp.csr_matrix:
    """The stored pattern of ``matrix`` with every value 1.0 (float32)."""
    out = sp.csr_matrix(matrix, dtype=np.float32, copy=True)
    out.eliminate_zeros()
    out.data[:] = 1.0
    return out


def without(matrix: sp.csr_matrix, pattern: sp.csr_matrix) -> sp.csr_matrix:
    """``matrix`` without the entries where ``pattern`` (binary, same shape) has one."""
    kept = sp.csr_matrix(matrix, dtype=np.float32)
    kept = sp.csr_matrix(kept - kept.multiply(pattern))
    kept.eliminate_zeros()
    return kept


def save_matrices(path: Path, splits: dict[str, sp.csr_matrix], *, history: sp.csr_matrix | None = None,
                  seen: sp.csr_matrix | None = None) -> None:
    """Write the per-split CSR matrices and the window's ``history`` and ``seen`` to ``path`` (an .npz).

    Without ``history`` and ``seen`` (data that holds only positives) both are the splits' sum.
    """
    window = Matrices(**{name: splits[name] for name in SPLITS}, user_ids=np.empty(0), item_ids=np.empty(0),
                      history=history, seen=seen)
    arrays: dict[str, np.ndarray] = {}
    shape = None
    for name in (*SPLITS, *WINDOW_MATRICES):
        m = getattr(window, name).tocsr()
        shape = m.shape if shape is None else shape
        if m.shape != shape:
            raise ValueError(f"matrix {name} has shape {m.shape}, expected {shape}")
        arrays[f"{name}_indptr"] = m.indptr.astype(np.int64)
        arrays[f"{name}_indices"] = m.indices.astype(np.int32)
        arrays[f"{name}_data"] = m.data.astype(np.float32)
    arrays["shape"] = np.asarray(shape, dtype=np.int64)
    # np.savez stamps each member with the current time; a fixed stamp makes reruns byte-identical
    with zipfile.ZipFile(path, "w") as archive:
        for key in sorted(arrays):
            member = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            with archive.open(member, "w", force_zip64=True) as out:
                np.lib.format.write_array(out, arrays[key], allow_pickle=False)


def _ids(path: Path, id_col: str, idx_col: str, n: int) -> np.ndarray:
    frame = pd.read_parquet(path, columns=[id_col, idx_col])
    ids = np.full(n, "", dtype=object)
    ids[frame[idx_col].to_numpy()] = frame[id_col].astype(str).to_numpy()
    return ids


def load_matrices(lake: Lake, ds: str) -> Matrices:
    """Load the tables of ``ds``: CSR per split plus the id of every index."""
    base = lake.require("tables", ds)
    with np.load(base / MATRICES_FILE) as z:
        shape = tuple(int(x) for x in z["shape"])
        missing = [name for name in WINDOW_MATRICES if f"{name}_indptr" not in z.files]
        if missing:
            raise ValueError(f"{base / MATRICES_FILE} has no {' or '.join(missing)} matrix (written by an older "
                             f"version); rerun the tables stage for {ds}")
        splits = {
            name: sp.csr_matrix((z[f"{name}_data"], z[f"{name}_indices"], z[f"{name}_indptr"]), shape=shape)
            for name in (*SPLITS, *WINDOW_MATRICES)
        }
    return Matrices(
        **splits,
        user_ids=_ids(base / USERS_FILE, USER_ID, USER_IDX, shape[0]),
        item_ids=_ids(base / ITEMS_FILE, ITEM_ID, ITEM_IDX, shape[1]),
    )
