"""The expand job: a date's train split and augment outputs in, its weighted, source-tagged examples out.

Reads ``tables/ds=D`` (the train split only), ``augment/ds=D`` and, for transform_pos's substitutions,
``embed/ds=D``; writes ``examples/ds=D/examples.parquet``
(columns and sources: :mod:`recsys.sampling.expansion`) and ``_summary.json`` (rows and weight sum per source).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp

from recsys.content.vectors import read_item_vectors
from recsys.core.cli import JobContext, job_parser, run_job
from recsys.core.lake import EXAMPLES_FILE, EXAMPLES_SUMMARY_FILE, write_json, write_parquet
from recsys.core.matrices import Matrices, load_matrices
from recsys.sampling.augment_outputs import read_augment_outputs
from recsys.sampling.examples import summarise
from recsys.sampling.expansion import expand, expansion_seed, train_positives
from recsys.sampling.transform import content_nearest

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)


def spark_for(interactions: int, threshold: int) -> SparkSession | None:
    """A Spark session when the train split has more than ``threshold`` interactions, else ``None`` (NumPy)."""
    if interactions <= threshold:
        return None
    from recsys.core.spark import spark_session

    log.info("%d train interactions > expand.spark_threshold: uniform and popularity negatives in Spark", interactions)
    return spark_session("recsys-expand")


def content_nearest_items(ctx: JobContext, matrices: Matrices, train: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
    """Each train item's content-nearest train item and their similarity, for transform_pos's substitutions
    (none without embeddings, or when substitution is off)."""
    if float(ctx.config["transform"]["substitute_share"]) == 0.0:
        return content_nearest(np.zeros((matrices.n_items, 0), np.float32), np.zeros(0, np.int64))
    vectors, has = read_item_vectors(ctx.lake, ctx.ds, matrices.item_ids)
    items = np.flatnonzero(has & (np.bincount(train.indices, minlength=matrices.n_items) > 0))
    log.info("transform_pos: content-nearest items among %d train items with an embedding", len(items))
    return content_nearest(vectors, items)


def body(ctx: JobContext) -> dict[str, Any]:
    """Extract the train split and augment outputs, expand, load examples and their summary."""
    assert ctx.ds is not None
    config = ctx.config["expand"]
    matrices = load_matrices(ctx.lake, ctx.ds)
    train = train_positives(matrices.train)
    if train.nnz == 0:
        raise ValueError(f"tables/ds={ctx.ds}: the train split has no positive entries; nothing to expand")
    augment = read_augment_outputs(ctx.lake, ctx.ds, matrices.n_users, matrices.n_items)
    seed = expansion_seed(ctx.config["seed"], ctx.ds)
    spark = spark_for(train.nnz, int(config["spark_threshold"]))
    transform = ctx.config["transform"] if config["sources"]["transform_pos"] else None
    nearest = content_nearest_items(ctx, matrices, train) if transform is not None else None
    examples = expand(train, augment.gan_pos, augment.syn_users, augment.candidates, config,
                      augment.confidence_threshold, np.random.default_rng(seed), spark,
                      content_pos=augment.content_pos, transform=transform, nearest=nearest)
    summary = summarise(examples)
    summary.update(ds=ctx.ds, n_users=matrices.n_users, n_items=matrices.n_items, seed=seed, config=config,
                   engine="spark" if spark is not None else "numpy")
    log.info("%d examples: %s", summary["rows"], {s: v["rows"] for s, v in summary["sources"].items()})
    with ctx.lake.writing("examples", ctx.ds) as out:
        write_parquet(examples.table(), out / EXAMPLES_FILE)
        write_json(out / EXAMPLES_SUMMARY_FILE, summary)
    return {
        "ds": ctx.ds,
        "path": str(ctx.lake.path("examples", ctx.ds) / EXAMPLES_FILE),
        "rows": summary["rows"],
        "sources": {s: v["rows"] for s, v in summary["sources"].items()},
    }


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the expansion for ``--ds`` from the command line."""
    parser = job_parser("Expand the training samples: positives, negatives and weights, tagged by source.")
    return run_job(parser, body, argv)


if __name__ == "__main__":
    main()
