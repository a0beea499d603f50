"""Embed a catalogue: vectors from the cache where the text is known, the encoder for the rest.

:func:`embed_catalogue` is the body of ``jobs.embed`` without the lake's partitions: it takes the
catalogue's rows, encodes each distinct uncached text once, in batches, logging progress, and returns the
``embeddings`` table (``EMBEDDING_COLUMNS``), the new cache entries and the night's facts.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recsys.content.cache import EmbeddingCache, vector_column
from recsys.content.encoder import Encoder
from recsys.core.columns import CONTENT_HASH, EMBEDDING, ITEM_ID, TEXT, require_columns

log = logging.getLogger(__name__)


@dataclass
class Embedded:
    """What :func:`embed_catalogue` produced."""

    embeddings: pa.Table  # item_id, content_hash, embedding: one row per catalogue row, in its order
    new_hashes: pa.Array  # the texts encoded this time, by hash, to add to the cache
    new_vectors: np.ndarray  # their vectors, row for row
    facts: dict[str, Any] = field(default_factory=dict)


def empty_embeddings(item_id_type: pa.DataType | None = None) -> pa.Table:
    """An embeddings table without rows (item ids of ``item_id_type``, default string)."""
    return pa.table({ITEM_ID: pa.array([], item_id_type or pa.string()), CONTENT_HASH: pa.array([], pa.string()),
                     EMBEDDING: pa.array([], pa.list_(pa.float32()))})


def embed_catalogue(catalogue: pa.Table, encoder: Encoder, cache: EmbeddingCache, *, batch_size: int = 64,
                    progress_every: int = 10) -> Embedded:
    """Every catalogue item's vector, encoding only the texts the cache does not hold.

    Args:
        catalogue: ``item_id``, ``text`` and ``content_hash`` (the cache's key) per item.
        encoder: encodes the uncached texts; called once per batch of ``batch_size`` distinct texts.
        cache: the encoder's cache (vectors by content hash).
        batch_size: texts per encoder call.
        progress_every: log done/total and items a second every this many batches (and after the last).

    Returns:
        The embeddings in catalogue order, the newly encoded texts' hashes and vectors, and the facts:
        ``items``, ``texts`` (distinct), ``from_cache`` (items whose vector came from the cache),
        ``encoded`` (texts encoded), ``encode_seconds``, ``items_per_s`` (texts encoded a second).
    """
    require_columns(catalogue.column_names, (ITEM_ID, TEXT, CONTENT_HASH), "catalogue")
    hashes = catalogue.column(CONTENT_HASH).combine_chunks().cast(pa.string())
    if hashes.null_count:
        raise ValueError(f"catalogue: {hashes.null_count} row(s) without a {CONTENT_HASH}")
    position, found = cache.lookup(hashes)
    # distinct uncached texts, each encoded once however many items share it
    missing = np.flatnonzero(~found)
    missing_hashes = hashes.take(pa.array(missing, pa.int64()))
    unique = pc.unique(missing_hashes)
    first = pc.index_in(unique, value_set=missing_hashes).to_numpy(zero_copy_only=False)
    texts = catalogue.column(TEXT).take(pa.array(missing[first], pa.int64())).to_pylist()
    texts = ["" if t is None else t for t in texts]
    new_vectors, seconds = _encode_in_batches(encoder, texts, batch_size, progress_every)

    dim = new_vectors.shape[1] if len(texts) else (cache.dim or encoder.dim or 0)
    vectors = np.zeros((catalogue.num_rows, dim), np.float32)
    if found.any():
        vectors[found] = cache.vectors[position[found]]
    if len(texts):
        vectors[missing] = new_vectors[pc.index_in(missing_hashes, value_set=unique).to_numpy(
            zero_copy_only=False)]
    table = pa.table({ITEM_ID: catalogue.column(ITEM_ID), CONTENT_HASH: hashes, EMBEDDING: vector_column(vectors)})
    facts = {"items": catalogue.num_rows, "texts": len(pc.unique(hashes)), "from_cache": int(found.sum()),
             "encoded": len(texts), "encode_seconds": round(seconds, 3),
             "items_per_s": round(len(texts) / seconds, 2) if texts and seconds > 0 else None, "dim": dim}
    return Embedded(table, unique, new_vectors, facts)


def _encode_in_batches(encoder: Encoder, texts: list[str], batch_size: int,
                       progress_every: int) -> tuple[np.ndarray, float]:
    """``encoder.encode`` over ``texts`` in batches, logging progress; the vectors and the seconds taken."""
    parts, started = [], time.perf_counter()
    n_batches = -(-len(texts) // batch_size)
    for b, i in enumerate(range(0, len(texts), batch_size), start=1):
        batch = texts[i:i + batch_size]
        vectors = encoder.encode(batch)
        if vectors.shape[0] != len(batch):
            raise RuntimeError(f"encoder {encoder.name} returned {vectors.shape[0]} vectors for {len(batch)} texts")
        parts.append(vectors)
        if b % progress_every == 0 or b == n_batches:
            elapsed = time.perf_counter() - started
            done = i + len(batch)
            log.info("encoded %d/%d texts (batch %d/%d), %.1f items/s", done, len(texts), b, n_batches,
                     done / elapsed if elapsed > 0 else float("nan"))
    seconds = time.perf_counter() - started
    if not parts:
        return np.zeros((0, encoder.dim or 0), np.float32), seconds
    return np.concatenate(parts).astype(np.float32, copy=False), seconds
