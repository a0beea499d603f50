"""Publish every known user's top-K from the date's champion model to ``recs/ds=<ds>/`` (the output contract).

Columns: ``user_id`` and ``item_id`` (the original ids, in their input type), ``rank`` (1..K) and
``score``. Users are those with any interaction in the date's training window; items they already
interacted with are never recommended. Scores come from the champion applied to today's histories
(stable indexes keep its item columns aligned with today's tables). The date's champion is the version
the date's registration names (``registry/ds=<ds>/registration.json``): in a nightly run the `champion`
alias itself; in a rerun of an earlier date, the champion that date had, so its output comes out the same.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from jobs.common.cli import JobContext, job_parser, run_job
from jobs.common.lake import REGISTRATION_FILE, read_json
from jobs.common.matrices import load_matrices
from jobs.common.tracking import setup_mlflow
from jobs.serving import recs_frame

log = logging.getLogger(__name__)
RECS_FILE = "recs.parquet"


def body(ctx: JobContext) -> dict[str, Any]:
    import mlflow

    ds, lake = ctx.ds, ctx.lake
    k = int(ctx.config["publish"]["k"])
    registration = read_json(lake.require("registry", ds) / REGISTRATION_FILE)
    name, version = registration["model_name"], registration["champion"]
    if version is None:
        raise RuntimeError(f"model {name!r} had no champion for {ds} (gate: {registration['gate']['reason']}); "
                           "nothing to publish")
    setup_mlflow()
    model = mlflow.pyfunc.load_model(f"models:/{name}/{version}").unwrap_python_model()
    m = load_matrices(lake, ds)
    histories = m.window()
    known = np.flatnonzero(np.diff(histories.indptr) > 0)
    log.info("scoring %d users with %s version %s", len(known), name, version)
    idx, scores = model.recommend_histories(histories[known], k)
    source = lake.source()
    frame = recs_frame(m.user_ids[known], idx, scores, m.item_ids,
                       source.get("user_id_type", "string"), source.get("item_id_type", "string"))
    with lake.writing("recs", ds) as out:
        frame.to_parquet(out / RECS_FILE, index=False)
    path = lake.path("recs", ds)
    log.info("published %d recommendations for %d users to %s", len(frame), len(known), path)
    return {"path": str(path), "users": int(len(known)), "rows": int(len(frame)), "model_version": str(version)}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = job_parser("Publish the date's champion's top-K recommendations for every known user.")
    return run_job(parser, body, argv)


if __name__ == "__main__":
    main()
