"""Embed the date's catalogue: each item's text as a unit vector, reusing the encoder's cache.

Reads ``catalogue/ds=D/catalogue.parquet``, takes the vectors of known texts from
``embed/_cache/<encoder>.parquet``, encodes the rest (:mod:`recsys.content.embed`), and commits
``embed/ds=D/`` (``embeddings.parquet`` and ``_summary.json``) atomically. Without a catalogue, or with an
empty one, it commits empty outputs without loading the model.
Run: ``python -m jobs.embed --ds YYYY-MM-DD``; the endpoint backend reads ``RECSYS_EMBED_URL`` and
``RECSYS_EMBED_KEY``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import pyarrow.parquet as pq

from recsys.content.cache import EmbeddingCache, add_to_cache, cache_path
from recsys.content.embed import embed_catalogue, empty_embeddings
from recsys.content.encoder import make_encoder
from recsys.core.cli import JobContext, job_parser, run_job
from recsys.core.columns import ITEM_ID
from recsys.core.lake import CATALOGUE_FILE, EMBED_SUMMARY_FILE, EMBEDDINGS_FILE, write_json

log = logging.getLogger(__name__)


def body(ctx: JobContext) -> dict[str, Any]:
    """Embed the catalogue of the run's date and commit its ``embed`` partition; return the facts."""
    cfg, lake, ds = ctx.config["embed"], ctx.lake, ctx.ds
    started = time.perf_counter()
    encoder = make_encoder(cfg)  # loads nothing yet: a bad endpoint config fails here, before any work
    source = lake.path("catalogue", ds) / CATALOGUE_FILE
    catalogue = pq.read_table(source) if source.exists() else None
    facts: dict[str, Any]
    if catalogue is None or catalogue.num_rows == 0:
        why = "no catalogue" if catalogue is None else "an empty catalogue"
        log.info("%s for %s at %s: writing empty embeddings, no model loaded", why, ds, source)
        embeddings = empty_embeddings(catalogue.schema.field(ITEM_ID).type if catalogue is not None else None)
        facts = {"items": 0, "texts": 0, "from_cache": 0, "encoded": 0, "encode_seconds": 0.0, "items_per_s": None,
                 "dim": encoder.dim or 0, "reason": why}
        cache_size = None
    else:
        path = cache_path(lake, encoder.name)
        cache = EmbeddingCache.read(path)
        log.info("embedding %d catalogue items of %s with %s; cache %s holds %d texts", catalogue.num_rows, ds,
                 encoder.name, path, len(cache))
        result = embed_catalogue(catalogue, encoder, cache, batch_size=int(cfg["batch_size"]),
                                 progress_every=int(cfg["progress_every"]))
        # the cache first: a crash between the two costs nothing, the rerun finds every text cached
        cache_size = add_to_cache(path, result.new_hashes, result.new_vectors) if len(result.new_hashes) \
            else len(cache)
        embeddings, facts = result.embeddings, result.facts
    facts = {"ds": ds, "encoder": encoder.name, **facts, "cache_size": cache_size,
             "seconds": round(time.perf_counter() - started, 3)}
    with lake.writing("embed", ds) as out:
        pq.write_table(embeddings, out / EMBEDDINGS_FILE)
        write_json(out / EMBED_SUMMARY_FILE, facts)
    log.info("embed %s: %d items, %d encoded, %d from the cache, %.1f s in all", ds, facts["items"],
             facts["encoded"], facts["from_cache"], facts["seconds"])
    return {"path": str(lake.path("embed", ds)), **{k: facts[k] for k in
            ("encoder", "dim", "items", "encoded", "from_cache", "seconds", "items_per_s")}}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = job_parser("Embed the date's item catalogue with the text encoder, reusing cached vectors.")
    return run_job(parser, body, argv)


if __name__ == "__main__":
    main()
