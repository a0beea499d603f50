"""The augment job: the GAN and the content generator on a date's tables; their positives, synthetic users,
candidates and quality."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recsys.augmentation.content import generate_content
from recsys.augmentation.plots import save_plots
from recsys.augmentation.schemas import SCHEMAS
from recsys.augmentation.stage import augment
from recsys.content.vectors import read_item_vectors
from recsys.core.cli import JobContext, job_parser, run_job
from recsys.core.config import config_hash
from recsys.core.lake import CONTENT_POS_FILE, EMBEDDINGS_FILE, GENERATOR_FILE, QUALITY_FILE, write_json, write_parquet
from recsys.core.matrices import Matrices, binary, load_matrices

log = logging.getLogger(__name__)


def body(ctx: JobContext) -> dict[str, Any]:
    """Read the date's tables, run the GAN stage (or write empty outputs when disabled), then the content
    generator (its own switch, ``content.enabled``), commit both together."""
    config = ctx.config["augment"]
    seed = int(ctx.config["seed"])
    lineage = {"ds": ctx.ds, "config_hash": config_hash(config), "seed": seed}
    # the score that makes a generated item a positive; expand reads it here (not from augment's config) to
    # keep candidates scored above it out of the hard negatives
    threshold = {"confidence_threshold": float(config["confidence_threshold"])}
    facts: dict[str, Any] = {"ds": ctx.ds, "enabled": bool(config["enabled"]), "path": str(ctx.lake.path("augment", ctx.ds))}
    matrices = load_matrices(ctx.lake, ctx.ds) if config["enabled"] or ctx.config["content"]["enabled"] else None
    content_pos, content_quality = content_step(ctx, matrices, seed)
    facts["content_pos_rows"] = len(content_pos)
    if not config["enabled"]:
        with ctx.lake.writing("augment", ctx.ds) as out:
            for file, schema in SCHEMAS.items():
                write_parquet(schema.empty_table() if file != CONTENT_POS_FILE else content_pos, out / file, schema)
            write_json(out / QUALITY_FILE, {"enabled": False, "lineage": lineage, **threshold,
                                            "content": content_quality})
        log.info("augment disabled: wrote empty GAN outputs for %s (%d content positives)", ctx.ds, len(content_pos))
        return facts

    assert matrices is not None
    result = augment(matrices.train, matrices.valid, config, seed)
    with ctx.lake.writing("augment", ctx.ds) as out:
        for file, frame in {**result.frames(), CONTENT_POS_FILE: content_pos}.items():
            write_parquet(frame, out / file, SCHEMAS[file])
        result.generator.save(out / GENERATOR_FILE)
        write_json(out / QUALITY_FILE, {**result.quality, "lineage": lineage, **threshold, "content": content_quality})
        save_plots(result.plots, out)
    fidelity = result.quality["fidelity"]
    facts.update(result.quality["outputs"])
    facts.update({
        "js_item_popularity": fidelity["js_item_popularity"]["written"],
        "js_item_popularity_untrained": fidelity["js_item_popularity"]["untrained"],
        "js_user_length": fidelity["js_user_length"]["written"],
        "js_user_length_untrained": fidelity["js_user_length"]["untrained"],
        "generator": str(ctx.lake.path("augment", ctx.ds) / GENERATOR_FILE),
    })
    log.info("augment %s: %s", ctx.ds, facts)
    return facts


def content_step(ctx: JobContext, matrices: Matrices | None, seed: int) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The content generator on the date's train split and item embeddings, and its report with lineage."""
    config = ctx.config["content"]
    embeddings = ctx.lake.path("embed", ctx.ds) / EMBEDDINGS_FILE
    lineage = {"ds": ctx.ds, "config_hash": config_hash(config), "seed": seed,
               "embeddings": str(embeddings) if embeddings.exists() else None}
    if matrices is None:
        positives, report = generate_content(sp.csr_matrix((0, 0)), np.zeros((0, 0), np.float32), np.zeros(0, bool),
                                             config, seed)
    else:
        vectors, has = read_item_vectors(ctx.lake, ctx.ds, matrices.item_ids)
        positives, report = generate_content(binary(matrices.train), vectors, has, config, seed)
    return positives, {**report, "lineage": lineage}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Command line: ``python -m jobs.augment --ds YYYY-MM-DD [--set augment.epochs=5]``."""
    parser = job_parser("Train the augmentation GAN and write expanded positives, synthetic users and candidates.")
    return run_job(parser, body, argv)


if __name__ == "__main__":
    main()
