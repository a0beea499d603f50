"""The augment job: train the GAN on a date's tables, write expanded positives, synthetic users, candidates, quality."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from recsys.augmentation.plots import save_plots
from recsys.augmentation.schemas import SCHEMAS
from recsys.augmentation.stage import augment
from recsys.core.cli import JobContext, job_parser, run_job
from recsys.core.config import config_hash
from recsys.core.lake import GENERATOR_FILE, QUALITY_FILE, write_json, write_parquet
from recsys.core.matrices import load_matrices

log = logging.getLogger(__name__)


def body(ctx: JobContext) -> dict[str, Any]:
    """Read the date's tables, run the GAN stage (or write empty outputs when disabled), commit."""
    config = ctx.config["augment"]
    seed = int(ctx.config["seed"])
    lineage = {"ds": ctx.ds, "config_hash": config_hash(config), "seed": seed}
    # the score that makes a generated item a positive; expand reads it here (not from augment's config) to
    # keep candidates scored above it out of the hard negatives
    threshold = {"confidence_threshold": float(config["confidence_threshold"])}
    facts: dict[str, Any] = {"ds": ctx.ds, "enabled": bool(config["enabled"]), "path": str(ctx.lake.path("augment", ctx.ds))}
    if not config["enabled"]:
        with ctx.lake.writing("augment", ctx.ds) as out:
            for file, schema in SCHEMAS.items():
                write_parquet(schema.empty_table(), out / file)
            write_json(out / QUALITY_FILE, {"enabled": False, "lineage": lineage, **threshold})
        log.info("augment disabled: wrote empty outputs for %s", ctx.ds)
        return facts

    matrices = load_matrices(ctx.lake, ctx.ds)
    result = augment(matrices.train, matrices.valid, config, seed)
    with ctx.lake.writing("augment", ctx.ds) as out:
        for file, frame in result.frames().items():
            write_parquet(frame, out / file, SCHEMAS[file])
        result.generator.save(out / GENERATOR_FILE)
        write_json(out / QUALITY_FILE, {**result.quality, "lineage": lineage, **threshold})
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


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Command line: ``python -m jobs.augment --ds YYYY-MM-DD [--set augment.epochs=5]``."""
    parser = job_parser("Train the augmentation GAN and write expanded positives, synthetic users and candidates.")
    return run_job(parser, body, argv)


if __name__ == "__main__":
    main()
