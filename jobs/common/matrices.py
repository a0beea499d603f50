"""Load the compact CSR export of the interaction tables that the TensorFlow jobs read."""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from jobs.common.columns import ITEM_ID, ITEM_IDX, SPLITS, USER_ID, USER_IDX
from jobs.common.lake import Lake

MATRICES_FILE = "matrices.npz"


@dataclass
class Matrices:
    """One date's interactions as users x items CSR matrices of weights, one per split."""

    train: sp.csr_matrix
    valid: sp.csr_matrix
    test: sp.csr_matrix
    user_ids: np.ndarray  # user_ids[user_idx] = original id as a string ("" for unused rows)
    item_ids: np.ndarray  # item_ids[item_idx] = original id as a string

    @property
    def n_users(self) -> int:
        return self.train.shape[0]

    @property
    def n_items(self) -> int:
        return self.train.shape[1]

    def window(self) -> sp.csr_matrix:
        """Every interaction of the training window (train + valid + test), users x items."""
        return (self.train + self.valid + self.test).tocsr()


def save_matrices(path: Path, splits: dict[str, sp.csr_matrix]) -> None:
    """Write the per-split CSR matrices to ``path`` (an .npz), with their shared shape."""
    arrays: dict[str, np.ndarray] = {}
    shape = None
    for name in SPLITS:
        m = splits[name].tocsr()
        shape = m.shape if shape is None else shape
        if m.shape != shape:
            raise ValueError(f"split {name} has shape {m.shape}, expected {shape}")
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
        splits = {
            name: sp.csr_matrix((z[f"{name}_data"], z[f"{name}_indices"], z[f"{name}_indptr"]), shape=shape)
            for name in SPLITS
        }
    return Matrices(
        **splits,
        user_ids=_ids(base / "users.parquet", USER_ID, USER_IDX, shape[0]),
        item_ids=_ids(base / "items.parquet", ITEM_ID, ITEM_IDX, shape[1]),
    )
