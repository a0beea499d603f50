"""The MLflow model registry: log a night's model as a pyfunc version, find the champion, move the aliases.

Promotion is by alias (`challenger` for every version registered, `champion` only after the gate
passes); stages are not used. A version logged here carries the ``recsys`` package as its code, so
``mlflow models serve`` and ``mlflow.pyfunc.load_model`` need nothing else on the path.

With ``train.final_fit`` the registered weights are the refit on the whole window, tagged
``final_fit=true``, and the run keeps the held-out fit as ``heldout/model.keras``: a final fit has
trained on its own test split, which largely is today's, so the gate judges it through that twin.
"""

from __future__ import annotations

import logging
import math
import tempfile
import time
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from recsys.core.lake import FINAL_MODEL_FILE, MODEL_FILE
from recsys.core.matrices import Matrices
from recsys.core.tracking import log_partitions
from recsys.evaluation.gate import gate_decision
from recsys.serving.pyfunc import Profile, RecsysModel
from recsys.serving.recs import DEFAULT_K

if TYPE_CHECKING:
    import keras
    from mlflow.entities import Metric

log = logging.getLogger(__name__)
CHAMPION, CHALLENGER = "champion", "challenger"
HELD_OUT_DIR = "heldout"  # run artifact folder of the held-out fit, beside a registered final fit
SERVING_PACKAGES = ("mlflow", "tensorflow-cpu", "keras", "numpy", "pandas", "scipy", "pyarrow")
PACKAGE_DIR = Path(__file__).resolve().parents[1]  # recsys/: the code a registered model carries


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


def run_metrics(evaluation: Mapping[str, Any], train_facts: Mapping[str, Any]) -> dict[str, float]:
    """What the MLflow run records as metrics: every evaluation figure, each model's training facts
    (epochs, best epoch, validation NDCG, examples, seconds) and the examples per source."""
    training = {name: {k: v for k, v in run.items() if not isinstance(v, list)}
                for name, run in train_facts.get("models", {}).items()}
    tree = {**evaluation, "train": training, "examples": train_facts.get("examples_by_source", {})}
    return {k: float(v) for k, v in flatten(tree).items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}


def epoch_metrics(train_facts: Mapping[str, Any], gan_training: Mapping[str, Any] | None = None,
                  timestamp: int | None = None) -> list[Metric]:
    """Each trained model's per-epoch curves from ``train.json``, and the GAN's, as MLflow metrics with ``step`` = epoch - 1.

    Every list of numbers a model's facts hold (``loss`` and ``valid_ndcg@10``: one value per epoch run) is
    a curve named as :func:`run_metrics` names that model's facts, ``train.<model>.<name>``
    (``train.model.valid_ndcg_at_10``); a fixed-epoch fit has no validation curve. The GAN's per-epoch losses
    (``quality.json``'s ``training.losses``) are ``augment.gan.<loss>``. Non-finite values are left out, as in
    :func:`run_metrics`.

    Args:
        train_facts: the date's ``train.json``.
        gan_training: the ``training`` facts of the date's ``augment/quality.json``, when augmentation ran.
        timestamp: milliseconds since the epoch recorded with every point; now by default.
    """
    from mlflow.entities import Metric

    when = int(time.time() * 1000) if timestamp is None else timestamp
    curves = [(next(iter(flatten({"train": {model: {key: None}}}))), values)
              for model, facts in train_facts.get("models", {}).items() for key, values in facts.items()]
    curves += [(next(iter(flatten({"augment": {"gan": {key: None}}}))), values)
               for key, values in (gan_training or {}).get("losses", {}).items()]
    return [Metric(name, float(v), when, step) for name, values in curves if isinstance(values, list)
            for step, v in enumerate(values)
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)]


def served_model(model_dir: Path) -> tuple[Path, bool]:
    """The recommender to register: the final fit on the whole window when train made one, else the held-out fit."""
    final = model_dir / FINAL_MODEL_FILE
    return (final, True) if final.is_file() else (model_dir / MODEL_FILE, False)


def build_profile(m: Matrices, source: Mapping[str, Any], new_items: np.ndarray) -> Profile:
    """The serving profile of a date: the window's history and seen items, exactly as publish reads them,
    item popularity (users with a positive, over the window's positives) and the date's new items."""
    popularity = np.asarray((m.window() > 0).sum(axis=0)).ravel().astype(np.float32)
    return Profile(m.user_ids, m.item_ids, m.history, m.seen, popularity,
                   source.get("user_id_type", "string"), source.get("item_id_type", "string"), new_items)


def existing_version(client: Any, name: str, training_key: str) -> Any | None:
    """The latest version of ``name`` registered for ``training_key`` (same date, data and config), if any."""
    from mlflow.exceptions import MlflowException

    try:
        versions = client.search_model_versions(f"name='{name}'")
    except MlflowException:
        return None
    matches = [v for v in versions if v.tags.get("training_key") == training_key]
    return max(matches, key=lambda v: int(v.version)) if matches else None


def current_champion(client: Any, name: str) -> tuple[Any | None, keras.Model | None]:
    """The champion's model version (with its tags) and the recommender the gate judges it by.

    For a final fit that is its held-out twin (a final fit has trained on a test split that overlaps
    today's); ``(None, None)`` when there is no champion.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        version = client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None, None
    model = mlflow.pyfunc.load_model(f"models:/{name}@{CHAMPION}").unwrap_python_model().model
    if version.tags.get("final_fit") == "true":
        from recsys.models.recommender import load_recommender

        try:
            model = load_recommender(mlflow.artifacts.download_artifacts(
                run_id=version.run_id, artifact_path=f"{HELD_OUT_DIR}/{MODEL_FILE}"))
        except (MlflowException, OSError) as err:
            log.warning("champion version %s has no held-out twin (%s); judging its final fit, an optimistic "
                        "figure", version.version, err)
    return version, model


def log_version(name: str, *, run_name: str, tags: Mapping[str, str], params: Mapping[str, Any],
                metrics: Mapping[str, float], artifacts: Sequence[Path], model_dir: Path,
                profile: Profile, curves: Sequence[Metric] = (),
                partitions: Mapping[str, Sequence[Path]] | None = None,
                partition_tags: Mapping[str, Mapping[str, str]] | None = None) -> tuple[str, str]:
    """Log one MLflow run (params, metrics, curves, input partitions, report artifacts, the pyfunc model) and
    register it as a version.

    Args:
        name: the registered model's name.
        run_name, tags, params, metrics: what the run records (params are cut to MLflow's 6000 characters).
        artifacts: files logged under ``reports/`` (those that exist).
        model_dir: the date's ``models/`` partition; its :func:`served_model` is registered.
        profile: what the model serves from.
        curves: metrics with steps (:func:`epoch_metrics`), logged in batches.
        partitions: the lake partitions the night read, by context, logged as the run's datasets
            (:func:`recsys.core.tracking.log_partitions`).
        partition_tags: extra input tags by dataset name.

    Returns:
        The run id and the new version.
    """
    import mlflow
    from mlflow.models import infer_signature

    model_path, final_fit = served_model(model_dir)
    with mlflow.start_run(run_name=run_name, tags=dict(tags)) as run, tempfile.TemporaryDirectory() as tmp:
        mlflow.log_params({k: str(v)[:6000] for k, v in params.items()})
        mlflow.log_metrics(dict(metrics))
        if curves:
            mlflow.MlflowClient().log_batch(run.info.run_id, metrics=list(curves))
        log_partitions(partitions or {}, partition_tags)
        for path in artifacts:
            if path.exists():
                mlflow.log_artifact(str(path), artifact_path="reports")
        if final_fit:
            mlflow.log_artifact(str(model_dir / MODEL_FILE), artifact_path=HELD_OUT_DIR)
        profile_path = Path(tmp) / "profile.npz"
        profile.save(profile_path)
        known = [u for u in profile.user_ids if u][:3]
        example = pd.DataFrame({"user_id": [int(u) if profile.user_id_type == "int64" else u for u in known]})
        files = {"model": str(model_path), "profile": str(profile_path)}
        preview = RecsysModel()
        preview.load_files(files["model"], files["profile"])
        signature = infer_signature(example, preview.predict(None, example, {"k": 3}), params={"k": DEFAULT_K, "new_only": False})
        info = mlflow.pyfunc.log_model(
            name="model", python_model=RecsysModel(), artifacts=files,
            code_paths=[str(PACKAGE_DIR)], signature=signature, input_example=example,
            pip_requirements=[f"{p}=={metadata.version(p)}" for p in SERVING_PACKAGES],
        )
        version = mlflow.register_model(info.model_uri, name, tags=dict(tags))
        return run.info.run_id, str(version.version)


def _figure(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) and math.isfinite(value) else "n/a"


def _ratio(value: Any, other: Any) -> str:
    finite = all(isinstance(v, (int, float)) and math.isfinite(v) for v in (value, other))
    return f" (model {value / other:.3f}x)" if finite and other > 0 else ""


def _lift(augmentation: Mapping[str, Any], segment: str) -> str:
    lift, low, high = (augmentation.get(f"lift_{segment}{end}") for end in ("", "_low", "_high"))
    text = f"{lift:.3f}x" if isinstance(lift, (int, float)) else "n/a"
    interval = isinstance(low, (int, float)) and isinstance(high, (int, float))
    return f"{text} (95% interval {low:.3f}-{high:.3f}x)" if interval else text


def version_description(ds: str, metrics: Mapping[str, Any], gate: Mapping[str, Any]) -> str:
    """The registered version's description (Markdown): the night's headline and the gate's decision.

    The model's gate metric on the held-out test split beside EASE's and the champion's (re-scored on the
    same split by the gate), the augmentation lift with its bootstrap interval, and the gate's reason.

    Args:
        ds: the night's date.
        metrics: the night's ``metrics.json``.
        gate: the decision :func:`apply_gate` returns.
    """
    metric = gate["metric"]
    model = gate["challenger"]
    ease = metrics["models"].get("ease", {}).get("all", {}).get(metric)
    champion = gate["champion_before"]
    before = gate["champion_version_before"]
    versus_champion = ("no champion before" if before is None
                       else f"champion (version {before}) {_figure(champion)}{_ratio(model, champion)}")
    augmentation = metrics.get("augmentation") or {}
    verdict = "promoted to champion" if gate["promoted"] else "not promoted, stays challenger"
    lines = [
        f"Nightly retrain of {ds}.",
        "",
        f"- Held-out test {metric}: model {_figure(model)}; EASE {_figure(ease)}{_ratio(model, ease)}; "
        f"{versus_champion}.",
        f"- Augmentation lift ({augmentation.get('metric', metric)}, with / without): all users "
        f"{_lift(augmentation, 'all')}, sparse segment {_lift(augmentation, 'sparse')}.",
        f"- Gate ({metric}): {verdict}. {gate['reason']}",
    ]
    return "\n".join(lines)


def apply_gate(client: Any, name: str, version: str, *, existing: Any | None, champion: Any | None,
               champion_value: float | None, metrics: Mapping[str, Any], settings: Mapping[str, Any],
               ds: str) -> dict[str, Any]:
    """Give ``version`` `challenger`, judge it against the champion and move `champion` if the gate passes.

    Args:
        client: an ``MlflowClient``.
        name: the registered model's name.
        version: the night's version (new, or ``existing`` reused).
        existing: the reused version, when the training was registered before.
        champion: the champion's version before the gate (:func:`current_champion`), or None.
        champion_value: the champion's gate metric on today's test split
            (:func:`recsys.evaluation.gate.champion_metric`).
        metrics: the night's ``metrics.json``.
        settings: the ``register`` config section.
        ds: the night's date.

    Returns:
        The gate decision as registration.json records it; the version's description is set to
        :func:`version_description` of it.
    """
    metric = settings["gate_metric"]
    challenger_value = metrics["models"]["model"]["all"].get(metric)
    popularity_value = metrics["models"].get("popularity", {}).get("all", {}).get(metric)
    champion_version = str(champion.version) if champion is not None else None
    if champion_version == version:
        promoted, reason = True, f"version {version} is already the champion"
    else:
        promoted, reason = gate_decision(challenger_value, champion_value, settings["gate_tolerance"],
                                         settings["promote"], ds=ds,
                                         champion_ds=champion.tags.get("ds") if champion else None,
                                         popularity=popularity_value)
    client.set_registered_model_alias(name, CHALLENGER, version)
    # a reused version keeps a "passed" verdict when a rerun's gate keeps it back only for a newer champion
    if promoted or existing is None or "validation_status" not in existing.tags:
        client.set_model_version_tag(name, version, "validation_status", "passed" if promoted else "rejected")
    for key, value in flatten({"test": metrics["models"]["model"]["all"]}).items():
        client.set_model_version_tag(name, version, key, str(value))
    if promoted:
        client.set_registered_model_alias(name, CHAMPION, version)
    decision = {"promoted": promoted, "reason": reason, "metric": metric, "challenger": challenger_value,
                "champion_before": champion_value, "champion_version_before": champion_version}
    client.update_model_version(name, version, description=version_description(ds, metrics, decision))
    return decision
