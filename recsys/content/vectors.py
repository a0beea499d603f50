"""The catalogue's text embeddings as the later stages read them: one row per item index.

``jobs.embed`` writes ``embed/ds=D/embeddings.parquet`` keyed by item id (columns
``recsys.core.columns.EMBEDDING_COLUMNS``); the augment, expand, evaluate and publish stages work on item
indexes, so :func:`item_vectors` lines the vectors up with the date's item index.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from recsys.core.columns import EMBEDDING, EMBEDDING_COLUMNS, ITEM_ID, require_columns
from recsys.core.lake import EMBEDDINGS_FILE, Lake


def item_vectors(embeddings: pa.Table, item_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The embeddings lined up with an item index.

    Args:
        embeddings: a table with ``item_id`` and ``embedding`` (a list of floats per row, one length).
        item_ids: the item index's ids; position = item_idx.

    Returns:
        ``(vectors, has)``: float32 ``len(item_ids) x dim`` (rows of items without an embedding are 0) and
        a bool mask of the items that have one. With no embeddings at all, ``dim`` is 0.
    """
    require_columns(embeddings.column_names, (ITEM_ID, EMBEDDING), "embeddings")
    n = len(item_ids)
    if embeddings.num_rows == 0:
        return np.zeros((n, 0), np.float32), np.zeros(n, bool)
    flat = pc.list_flatten(embeddings.column(EMBEDDING)).to_numpy(zero_copy_only=False).astype(np.float32)
    dim = flat.size // embeddings.num_rows
    if dim * embeddings.num_rows != flat.size:
        raise ValueError("embeddings: rows of different lengths")
    position = pc.index_in(pa.array(item_ids, pa.string()), value_set=embeddings.column(ITEM_ID).cast(pa.string()))
    position = position.to_numpy(zero_copy_only=False)
    has = ~np.isnan(position.astype(np.float64))
    vectors = np.zeros((n, dim), np.float32)
    vectors[has] = flat.reshape(-1, dim)[position[has].astype(np.int64)]
    return vectors, has


def read_item_vectors(lake: Lake, ds: str, item_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`item_vectors` of the date's ``embed`` partition; none (dim 0, nothing has one) without it."""
    path = lake.path("embed", ds) / EMBEDDINGS_FILE
    if not path.exists():
        return item_vectors(pa.table({c: pa.array([], pa.string()) for c in EMBEDDING_COLUMNS[:2]}
                                     | {EMBEDDING: pa.array([], pa.list_(pa.float32()))}), item_ids)
    return item_vectors(pq.read_table(path), item_ids)
