"""Register the night's model in MLflow as `challenger`; move `champion` only when the gate passes.

One MLflow run per DAG run: tags (dag, run, date, git commit, window, dataset fingerprint), the whole
effective config as params, every evaluation figure as metrics, each trained model's per-epoch loss and
validation curves as stepped metrics, the lake partitions the night read as datasets (with content
digests), reports and plots as artifacts, and the model as a pyfunc (recsys.serving.pyfunc.RecsysModel)
registered as a new version (:mod:`recsys.serving.registry`) whose description carries the night's
headline and the gate's reason. Re-registering the same training (same date, data and config) reuses
its version unless ``register.force`` is set.

The gate (:mod:`recsys.evaluation.gate`) re-evaluates the current champion on today's test split through
the evaluation protocol evaluate scored tonight's model with, and promotes the challenger when its
``register.gate_metric`` reaches ``champion * (1 - gate_tolerance)``; a missing or non-finite metric
never promotes. Without a champion yet, the first model is promoted only when it beats the popularity
baseline of its own evaluation; otherwise it stays `challenger`, with the reason.

With ``train.final_fit`` the registered weights are the refit on the whole window (``model_final.keras``),
tagged ``final_fit=true``, while every metric and the gate use the held-out fit, which the run keeps as
the artifact ``heldout/model.keras``. A final fit has trained on its own test split, which largely is
today's (a user without new events keeps the same latest interactions), so the gate re-evaluates a
final-fit champion through its held-out twin. Caveat: that twin's train split may still hold some of
today's test interactions (events a user had before the champion's date that are among their latest
today), so the champion's figure can be slightly optimistic: the gate errs towards keeping it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from recsys.core.cli import JobContext, job_parser, run_job
from recsys.core.config import REPO_ROOT, config_hash
from recsys.core.lake import (
    EXAMPLES_SUMMARY_FILE,
    MATRICES_FILE,
    METRICS_FILE,
    QUALITY_FILE,
    REGISTRATION_FILE,
    STATS_FILE,
    TRAIN_FACTS_FILE,
    Lake,
    read_json,
    window_start,
    write_json,
)
from recsys.core.matrices import load_matrices
from recsys.core.tracking import setup_mlflow, tracking_uri
from recsys.evaluation.gate import champion_metric
from recsys.evaluation.protocol import HeldOut, cutoffs, recorded_cutoffs
from recsys.serving import registry
from recsys.serving.new_items import read_new_items

log = logging.getLogger(__name__)
TABLES_SPLITS = "train: fit; valid: early stopping and blend; test: evaluation and gate"


def _gan_training(augment_dir: Path) -> dict[str, Any] | None:
    """The GAN fit's facts (per-epoch losses) from the date's quality.json; None when augmentation did not run."""
    path = augment_dir / QUALITY_FILE
    return read_json(path).get("training") if path.is_file() else None


def _git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _fingerprint(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def cold_start_tags(metrics: dict[str, Any]) -> dict[str, str]:
    """The run's tags on the cold-start evaluation: its verdict (or why it was skipped) and whether the targets
    were met; its figures are run metrics (``cold_start.*``) like every other evaluation figure."""
    cold = metrics.get("cold_start") or {}
    verdict = cold.get("verdict") or f"skipped: {cold.get('skipped', 'not evaluated')}"
    met = cold.get("targets", {}).get("met")
    return {"cold_start": verdict[:5000], "cold_start_targets_met": "n/a" if met is None else str(bool(met)).lower()}


def read_partitions(lake: Lake, ds: str) -> dict[str, list[Path]]:
    """The date's lake partitions the night's models were trained from, those that exist, by MLflow context.

    The tables (train, valid and test matrices), the augment outputs, the expanded examples, and the
    catalogue and its embeddings of the content path. The test split the evaluation scores lives in the
    tables partition, logged once (MLflow keeps one input per dataset and run), tagged with its splits.
    """
    zones = ("tables", "augment", "examples", "catalogue", "embed")
    return {"training": [p for p in (lake.path(zone, ds) for zone in zones) if p.is_dir()]}


def body(ctx: JobContext) -> dict[str, Any]:
    from mlflow import MlflowClient

    ds, cfg, lake = ctx.ds, ctx.config["register"], ctx.lake
    assert ds is not None
    name = cfg["model_name"]
    metrics = read_json(lake.require("eval", ds) / METRICS_FILE)
    tables = lake.require("tables", ds)
    m = load_matrices(lake, ds)
    experiment_id = setup_mlflow()
    client = MlflowClient()
    dataset_fp = _fingerprint(tables / MATRICES_FILE)
    training_key = hashlib.sha256(f"{ds}|{dataset_fp}|{config_hash(ctx.config)}".encode()).hexdigest()[:16]
    window_days = int(ctx.config["window_days"])
    models_dir = lake.require("models", ds)
    train_facts = read_json(models_dir / TRAIN_FACTS_FILE)
    _, final_fit = registry.served_model(models_dir)
    tags = {
        "dag_id": os.environ.get("RECSYS_DAG_ID", "manual"), "dag_run_id": os.environ.get("RECSYS_DAG_RUN_ID", "manual"),
        "ds": ds, "git_commit": _git_commit(), "dataset_fingerprint": dataset_fp, "training_key": training_key,
        "window_days": str(window_days), "data_window": f"{window_start(ds, window_days)}..{ds}",
        "config_hash": config_hash(ctx.config),
        # the served weights are the final fit on train+valid+test; every metric is the held-out fit's
        "final_fit": str(final_fit).lower(), "metrics_from": "held-out fit (model.keras) on the test split",
        **cold_start_tags(metrics),
    }
    augment_dir = lake.path("augment", ds)
    artifacts = [lake.path("eval", ds) / METRICS_FILE, models_dir / TRAIN_FACTS_FILE,
                 lake.path("examples", ds) / EXAMPLES_SUMMARY_FILE, tables / STATS_FILE,
                 *(sorted(augment_dir.glob("*.json")) + sorted(augment_dir.glob("*.png")))]

    existing = None if cfg["force"] else registry.existing_version(client, name, training_key)
    recorded = lake.path("registry", ds) / REGISTRATION_FILE
    previous = read_json(recorded) if recorded.is_file() else None
    if existing is not None and previous is not None and previous["version"] == str(existing.version):
        # a rerun of this date with the same training: the date's decision stands and the registry is left
        # as it is, so the date's outputs (publish serves the date's champion) come out the same
        run_id, version = existing.run_id, str(existing.version)
        gate, champion = previous["gate"], previous["champion"]
        log.info("training %s is %s version %s, registered for %s before; its gate decision stands: %s",
                 training_key, name, version, ds, gate["reason"])
    else:
        before, judged = registry.current_champion(client, name)
        metric = cfg["gate_metric"]
        # the users evaluate judged tonight's model on: the same seeded sample of evaluate.max_users
        held = HeldOut.of(m, int(ctx.config["evaluate"]["max_users"]), int(ctx.config["seed"]))
        champion_value = None if judged is None else champion_metric(
            judged, held, metric, cutoffs(recorded_cutoffs(metrics), metric))
        if existing is not None:
            run_id, version = existing.run_id, str(existing.version)
            log.info("training %s already registered as %s version %s; reusing it", training_key, name, version)
        else:
            run_id, version = registry.log_version(
                name, run_name=f"recsys-{ds}", tags=tags, params=registry.flatten(ctx.config),
                metrics=registry.run_metrics(metrics, train_facts), artifacts=artifacts, model_dir=models_dir,
                profile=registry.build_profile(m, lake.source(), read_new_items(lake, ds, m, ctx.config)),
                curves=registry.epoch_metrics(train_facts, _gan_training(augment_dir)), partitions=read_partitions(lake, ds),
                partition_tags={f"tables/ds={ds}": {"splits": TABLES_SPLITS}})
            log.info("registered %s version %s from run %s", name, version, run_id)
        gate = registry.apply_gate(client, name, version, existing=existing, champion=before,
                                   champion_value=champion_value, metrics=metrics, settings=cfg, ds=ds)
        champion = version if gate["promoted"] else gate["champion_version_before"]
        log.info("gate: %s", gate["reason"])
    facts = {"model_name": name, "version": version, "run_id": run_id, "experiment_id": experiment_id,
             "tracking_uri": tracking_uri(), "champion": champion, "gate": gate, "reused": existing is not None}
    with lake.writing("registry", ds) as out:
        write_json(out / REGISTRATION_FILE, facts)
    return {k: facts[k] for k in ("model_name", "version", "run_id", "champion", "reused")}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = job_parser("Register the night's model in MLflow and apply the promotion gate.")
    return run_job(parser, body, argv)


if __name__ == "__main__":
    main()
