"""Register the night's model in MLflow as `challenger`; move `champion` only when the gate passes.

One MLflow run per DAG run: tags (dag, run, date, git commit, window, dataset fingerprint), the whole
effective config as params, every evaluation figure as metrics, reports and plots as artifacts, and
the model as a pyfunc (recsys.serving.recs.RecsysModel) registered as a new version. Re-registering the same
training (same date, data and config) reuses its version unless ``register.force`` is set.

The gate re-evaluates the current champion on today's test split and promotes the challenger when its
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
import math
import os
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recsys.core.cli import JobContext, job_parser, run_job
from recsys.core.config import REPO_ROOT, config_hash
from recsys.core.lake import (
    EXAMPLES_SUMMARY_FILE,
    FINAL_MODEL_FILE,
    MATRICES_FILE,
    METRICS_FILE,
    MODEL_FILE,
    QUALITY_FILE,
    REGISTRATION_FILE,
    REPORT_FILE,
    STATS_FILE,
    TRAIN_FACTS_FILE,
    read_json,
    window_start,
    write_json,
)
from recsys.core.matrices import Matrices, load_matrices
from recsys.core.tracking import setup_mlflow, tracking_uri
from recsys.report.html import render_report
from recsys.serving.recs import DEFAULT_K, Profile, RecsysModel

log = logging.getLogger(__name__)
CHAMPION, CHALLENGER = "champion", "challenger"
HELD_OUT_DIR = "heldout"  # run artifact folder of the held-out fit, beside a registered final fit
SERVING_PACKAGES = ("mlflow", "tensorflow-cpu", "keras", "numpy", "pandas", "scipy", "pyarrow")


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``, with MLflow-safe names (``@`` becomes ``_at_``)."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}".replace("@", "_at_")
        if isinstance(value, Mapping):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def gate_decision(
    challenger: float | None, champion: float | None, tolerance: float, promote: bool, *,
    ds: str | None = None, champion_ds: str | None = None, popularity: float | None = None,
) -> tuple[bool, str]:
    """Whether the challenger (trained for ``ds``) becomes champion, and why (pure: no registry access).

    Without a champion, the challenger must beat ``popularity`` (the popularity baseline's figure in
    its own evaluation), so a model trained on data that went wrong never becomes the first champion.
    A champion trained for a later date than the challenger's always stays: a backfill or rerun of an
    earlier date never moves production back to older data (nor could the test split of an earlier
    date judge a model that has trained on it fairly).
    """
    if not promote:
        return False, "promotion is switched off (register.promote)"
    if challenger is None or not math.isfinite(challenger):
        return False, "the challenger has no valid evaluation"
    if champion is None:
        if popularity is None or not math.isfinite(popularity):
            return False, "no champion yet, and no popularity baseline to beat in the evaluation"
        if challenger > popularity:
            return True, f"no champion yet; challenger {challenger:.4f} > popularity baseline {popularity:.4f}"
        return False, (f"no champion yet, but the challenger {challenger:.4f} does not beat the popularity baseline "
                       f"{popularity:.4f}: not promoted")
    if ds is not None and champion_ds is not None and champion_ds > ds:
        return False, f"the champion was trained for a later date ({champion_ds} > {ds}) and stays"
    if challenger >= champion * (1.0 - tolerance):
        return True, f"challenger {challenger:.4f} >= champion {champion:.4f} x (1 - {tolerance})"
    return False, f"challenger {challenger:.4f} < champion {champion:.4f} x (1 - {tolerance})"


def _git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _fingerprint(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def build_profile(m: Matrices, source: Mapping[str, Any]) -> Profile:
    """The serving profile of a date: the window's history and seen items, exactly as publish reads them,
    and item popularity (users with a positive, over the window's positives)."""
    popularity = np.asarray((m.window() > 0).sum(axis=0)).ravel().astype(np.float32)
    return Profile(m.user_ids, m.item_ids, m.history, m.seen, popularity,
                   source.get("user_id_type", "string"), source.get("item_id_type", "string"))


def champion_metric(client: Any, name: str, m: Matrices, metric: str) -> tuple[Any | None, float | None]:
    """The current champion (its MLflow model version, with tags) and its ``metric`` re-evaluated on
    today's test split; ``(None, None)`` when there is no champion."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from recsys.evaluation.metrics import user_metrics

    try:
        version = client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None, None
    model = mlflow.pyfunc.load_model(f"models:/{name}@{CHAMPION}").unwrap_python_model()
    if version.tags.get("final_fit") == "true":
        # a final fit has trained on its window's test split, which overlaps today's: judge its held-out twin
        from recsys.models.recommender import load_recommender

        try:
            model.model = load_recommender(mlflow.artifacts.download_artifacts(
                run_id=version.run_id, artifact_path=f"{HELD_OUT_DIR}/{MODEL_FILE}"))
        except (MlflowException, OSError) as err:
            log.warning("champion version %s has no held-out twin (%s); judging its final fit, an optimistic "
                        "figure", version.version, err)
    rows = np.flatnonzero(np.diff(m.test.indptr))  # only users with held-out items are ranked
    inputs, exclude = m.held_out(rows)  # what evaluate reads and removes for the same users
    k = int(metric.split("@")[1])
    idx, _ = model.recommend_histories(inputs, exclude, k)
    # rank-valued scores reproduce the champion's top-k order; the metric only looks at the top k
    scores = np.full(inputs.shape, -np.inf, dtype=np.float32)
    np.put_along_axis(scores, idx, np.arange(idx.shape[1], 0, -1, dtype=np.float32)[None, :], axis=1)
    value = user_metrics(scores, exclude, m.test[rows], [k]).summary()[metric]
    return version, float(value)


def _existing_version(client: Any, name: str, training_key: str) -> Any | None:
    from mlflow.exceptions import MlflowException

    try:
        versions = client.search_model_versions(f"name='{name}'")
    except MlflowException:
        return None
    matches = [v for v in versions if v.tags.get("training_key") == training_key]
    return max(matches, key=lambda v: int(v.version)) if matches else None


def served_model(model_dir: Path) -> tuple[Path, bool]:
    """The recommender to register: the final fit on the whole window when train made one, else the held-out fit."""
    final = model_dir / FINAL_MODEL_FILE
    return (final, True) if final.is_file() else (model_dir / MODEL_FILE, False)


def run_metrics(evaluation: Mapping[str, Any], train_facts: Mapping[str, Any]) -> dict[str, float]:
    """What the MLflow run records as metrics: every evaluation figure, each model's training facts
    (epochs, best epoch, validation NDCG, examples, seconds) and the examples per source."""
    training = {name: {k: v for k, v in run.items() if not isinstance(v, list)}
                for name, run in train_facts.get("models", {}).items()}
    tree = {**evaluation, "train": training, "examples": train_facts.get("examples_by_source", {})}
    return {k: float(v) for k, v in flatten(tree).items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}


def _log_new_version(ctx: JobContext, name: str, m: Matrices, tags: dict[str, str], metrics: Mapping[str, float],
                     artifacts: Sequence[Path]) -> tuple[str, str]:
    import mlflow
    from mlflow.models import infer_signature

    source = ctx.lake.source()
    model_dir = ctx.lake.require("models", ctx.ds)
    model_path, final_fit = served_model(model_dir)
    with mlflow.start_run(run_name=f"recsys-{ctx.ds}", tags=tags) as run, tempfile.TemporaryDirectory() as tmp:
        params = flatten(ctx.config)
        mlflow.log_params({k: str(v)[:6000] for k, v in params.items()})
        mlflow.log_metrics(dict(metrics))
        for path in artifacts:
            if path.exists():
                mlflow.log_artifact(str(path), artifact_path="reports")
        if final_fit:
            mlflow.log_artifact(str(model_dir / MODEL_FILE), artifact_path=HELD_OUT_DIR)
        profile_path = Path(tmp) / "profile.npz"
        profile = build_profile(m, source)
        profile.save(profile_path)
        known = [u for u in profile.user_ids if u][:3]
        example = pd.DataFrame({"user_id": [int(u) if profile.user_id_type == "int64" else u for u in known]})
        files = {"model": str(model_path), "profile": str(profile_path)}
        preview = RecsysModel()
        preview.load_files(files["model"], files["profile"])
        signature = infer_signature(example, preview.predict(None, example, {"k": 3}), params={"k": DEFAULT_K})
        info = mlflow.pyfunc.log_model(
            name="model", python_model=RecsysModel(), artifacts=files,
            code_paths=[str(REPO_ROOT / "jobs")], signature=signature, input_example=example,
            pip_requirements=[f"{p}=={metadata.version(p)}" for p in SERVING_PACKAGES],
        )
        version = mlflow.register_model(info.model_uri, name, tags=tags)
        return run.info.run_id, str(version.version)


def _register_and_gate(ctx: JobContext, client: Any, m: Matrices, existing: Any | None, tags: dict[str, str],
                       metrics: Mapping[str, Any], train_facts: Mapping[str, Any],
                       artifacts: Sequence[Path]) -> tuple[str, str, dict[str, Any]]:
    """Register a new version (or reuse ``existing``), give it `challenger`, run the gate against today's
    champion and move `champion` if it passes. Returns the run id, the version and the gate decision."""
    cfg = ctx.config["register"]
    name = cfg["model_name"]
    challenger_value = metrics["models"]["model"]["all"].get(cfg["gate_metric"])
    popularity_value = metrics["models"].get("popularity", {}).get("all", {}).get(cfg["gate_metric"])
    champion, champion_value = champion_metric(client, name, m, cfg["gate_metric"])
    champion_version = str(champion.version) if champion is not None else None
    if existing is not None:
        run_id, version = existing.run_id, str(existing.version)
        log.info("training %s already registered as %s version %s; reusing it", tags["training_key"], name, version)
    else:
        run_id, version = _log_new_version(ctx, name, m, tags, run_metrics(metrics, train_facts), artifacts)
        log.info("registered %s version %s from run %s", name, version, run_id)
    if champion_version == version:
        promoted, reason = True, f"version {version} is already the champion"
    else:
        promoted, reason = gate_decision(challenger_value, champion_value, cfg["gate_tolerance"], cfg["promote"],
                                         ds=ctx.ds, champion_ds=champion.tags.get("ds") if champion else None,
                                         popularity=popularity_value)
    client.set_registered_model_alias(name, CHALLENGER, version)
    # a reused version keeps a "passed" verdict when a rerun's gate keeps it back only for a newer champion
    if promoted or existing is None or "validation_status" not in existing.tags:
        client.set_model_version_tag(name, version, "validation_status", "passed" if promoted else "rejected")
    for key, value in flatten({"test": metrics["models"]["model"]["all"]}).items():
        client.set_model_version_tag(name, version, key, str(value))
    if promoted:
        client.set_registered_model_alias(name, CHAMPION, version)
    gate = {"promoted": promoted, "reason": reason, "metric": cfg["gate_metric"], "challenger": challenger_value,
            "champion_before": champion_value, "champion_version_before": champion_version}
    return run_id, version, gate


def body(ctx: JobContext) -> dict[str, Any]:
    from mlflow import MlflowClient

    ds, cfg, lake = ctx.ds, ctx.config["register"], ctx.lake
    name = cfg["model_name"]
    metrics = read_json(lake.require("eval", ds) / METRICS_FILE)
    tables = lake.require("tables", ds)
    m = load_matrices(lake, ds)
    experiment_id = setup_mlflow()
    client = MlflowClient()
    dataset_fp = _fingerprint(tables / MATRICES_FILE)
    training_key = hashlib.sha256(f"{ds}|{dataset_fp}|{config_hash(ctx.config)}".encode()).hexdigest()[:16]
    window_days = int(ctx.config["tables"]["window_days"])
    models_dir = lake.require("models", ds)
    train_facts = read_json(models_dir / TRAIN_FACTS_FILE)
    _, final_fit = served_model(models_dir)
    tags = {
        "dag_id": os.environ.get("RECSYS_DAG_ID", "manual"), "dag_run_id": os.environ.get("RECSYS_DAG_RUN_ID", "manual"),
        "ds": ds, "git_commit": _git_commit(), "dataset_fingerprint": dataset_fp, "training_key": training_key,
        "window_days": str(window_days), "data_window": f"{window_start(ds, window_days)}..{ds}",
        "config_hash": config_hash(ctx.config),
        # the served weights are the final fit on train+valid+test; every metric is the held-out fit's
        "final_fit": str(final_fit).lower(), "metrics_from": "held-out fit (model.keras) on the test split",
    }
    augment_dir = lake.path("augment", ds)
    examples_summary = lake.path("examples", ds) / EXAMPLES_SUMMARY_FILE
    artifacts = [lake.path("eval", ds) / METRICS_FILE, models_dir / TRAIN_FACTS_FILE, examples_summary,
                 tables / STATS_FILE, *(sorted(augment_dir.glob("*.json")) + sorted(augment_dir.glob("*.png")))]

    existing = None if cfg["force"] else _existing_version(client, name, training_key)
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
        run_id, version, gate = _register_and_gate(ctx, client, m, existing, tags, metrics, train_facts, artifacts)
        champion = version if gate["promoted"] else gate["champion_version_before"]
        log.info("gate: %s", gate["reason"])
    quality_path = augment_dir / QUALITY_FILE
    quality = read_json(quality_path) if quality_path.exists() else {}
    stats = read_json(tables / STATS_FILE) if (tables / STATS_FILE).exists() else {}
    report = render_report(
        ds, metrics, gate, quality, stats, training=train_facts,
        examples=read_json(examples_summary) if examples_summary.exists() else {},
        plots={path.name: path.read_bytes() for path in sorted(augment_dir.glob("*.png"))},
    )
    with lake.writing("reports", ds) as out:
        (out / REPORT_FILE).write_text(report)
    client.log_text(run_id, report, f"reports/{REPORT_FILE}")
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
