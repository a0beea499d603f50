"""Embeddings cached in the lake by content hash, one file per encoder, so a night encodes only new texts.

``embed/_cache/<encoder name>.parquet`` holds ``content_hash, embedding`` (``CACHE_COLUMNS``) for every
text that encoder has encoded, across dates. It is replaced whole, by a rename, under a lock: two runs
(a backfill and tonight's) each add their texts and neither loses the other's.
"""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from recsys.core.columns import CACHE_COLUMNS, CONTENT_HASH, EMBEDDING, require_columns
from recsys.core.lake import EMBED_CACHE_DIR, Lake, write_parquet


def cache_path(lake: Lake, encoder_name: str) -> Path:
    """``<lake>/embed/_cache/<encoder_name>.parquet``."""
    return lake.path("embed") / EMBED_CACHE_DIR / f"{encoder_name}.parquet"


def vector_column(vectors: np.ndarray) -> pa.ListArray:
    """A ``list<float32>`` column of a float32 ``n x dim`` array's rows."""
    n, dim = vectors.shape
    offsets = pa.array(np.arange(n + 1, dtype=np.int32) * dim, pa.int32())
    return pa.ListArray.from_arrays(offsets, pa.array(np.ascontiguousarray(vectors, np.float32).ravel()))


def column_vectors(column: pa.ChunkedArray | pa.Array, dim: int | None = None) -> np.ndarray:
    """The float32 ``n x dim`` array of a ``list<float>`` column whose rows have one length."""
    n = len(column)
    flat = pc.list_flatten(column).to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    if n == 0:
        return np.zeros((0, dim or 0), np.float32)
    if flat.size % n:
        raise ValueError("embeddings: rows of different lengths")
    return flat.reshape(n, flat.size // n)


class EmbeddingCache:
    """Vectors by content hash: ``hashes`` (strings, unique) and their rows of ``vectors``."""

    def __init__(self, hashes: pa.Array, vectors: np.ndarray) -> None:
        if len(hashes) != len(vectors):
            raise ValueError(f"cache: {len(hashes)} hashes for {len(vectors)} vectors")
        self.hashes = hashes.cast(pa.string())
        self.vectors = np.asarray(vectors, np.float32)

    def __len__(self) -> int:
        return len(self.hashes)

    @property
    def dim(self) -> int | None:
        return self.vectors.shape[1] if len(self) else None

    @classmethod
    def read(cls, path: Path) -> EmbeddingCache:
        """The cache at ``path``; an empty one when there is no file yet."""
        if not path.exists():
            return cls(pa.array([], pa.string()), np.zeros((0, 0), np.float32))
        table = pq.read_table(path)
        require_columns(table.column_names, CACHE_COLUMNS, f"embedding cache {path}")
        return cls(table.column(CONTENT_HASH).combine_chunks(), column_vectors(table.column(EMBEDDING)))

    def lookup(self, hashes: pa.Array) -> tuple[np.ndarray, np.ndarray]:
        """The cached rows of ``hashes``: ``(positions, found)``, positions into :attr:`vectors` (-1: none)."""
        position = pc.index_in(hashes.cast(pa.string()), value_set=self.hashes)
        found = position.is_valid().to_numpy(zero_copy_only=False)
        return position.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64), found

    def with_entries(self, hashes: pa.Array, vectors: np.ndarray) -> EmbeddingCache:
        """This cache plus ``hashes -> vectors`` (hashes already here keep their vector)."""
        vectors = np.asarray(vectors, np.float32)
        if len(self) and len(hashes) and vectors.shape[1] != self.vectors.shape[1]:
            raise ValueError(f"cache: adding {vectors.shape[1]}-dim vectors to a {self.vectors.shape[1]}-dim cache")
        new = ~pc.is_in(hashes.cast(pa.string()), value_set=self.hashes).to_numpy(zero_copy_only=False)
        if not new.any():
            return self
        kept = self.vectors if len(self) else np.zeros((0, vectors.shape[1]), np.float32)
        return EmbeddingCache(pa.concat_arrays([self.hashes, hashes.cast(pa.string()).filter(pa.array(new))]),
                              np.concatenate([kept, vectors[new]]))

    def write(self, path: Path) -> None:
        """Replace the file at ``path`` with this cache (written aside, then renamed into place)."""
        write_parquet(pa.table({CONTENT_HASH: self.hashes, EMBEDDING: vector_column(self.vectors)}), path)


@contextlib.contextmanager
def cache_lock(path: Path) -> Iterator[None]:
    """Hold the lock of one cache file, so concurrent runs merge their additions instead of racing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(f".{path.name}.lock"), "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def add_to_cache(path: Path, hashes: pa.Array, vectors: np.ndarray) -> int:
    """Merge ``hashes -> vectors`` into the cache file at ``path`` (re-read under the lock); its new size."""
    with cache_lock(path):
        cache = EmbeddingCache.read(path)
        merged = cache.with_entries(hashes, vectors)
        if merged is not cache:
            merged.write(path)
        return len(merged)
