"""Layered configuration: conf/recsys.yaml < $RECSYS_CONFIG < RECSYS__* environment < --set flags."""

from __future__ import annotations

import copy
import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CONFIG = REPO_ROOT / "conf" / "recsys.yaml"
ENV_PREFIX = "RECSYS__"


def _merge(base: dict, override: Mapping, where: str) -> dict:
    """Deep-merge ``override`` into a copy of ``base``, refusing keys the defaults do not know."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if key not in out:
            raise ValueError(f"{where}: unknown config key {key!r} (known: {', '.join(sorted(out))})")
        if isinstance(out[key], dict) and isinstance(value, Mapping):
            out[key] = _merge(out[key], value, f"{where}.{key}")
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


def parse_overrides(pairs: list[str]) -> list[tuple[str, Any]]:
    """Parse ``section.key=value`` strings; values are read as YAML (``5``, ``true``, ``[1, 2]``)."""
    out = []
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--set expects section.key=value, got {pair!r}")
        out.append((key.strip(), yaml.safe_load(raw)))
    return out


def load_config(overrides: list[str] | None = None, environ: Mapping[str, str] | None = None) -> dict:
    """Return the effective config.

    Args:
        overrides: ``section.key=value`` strings from the command line or DAG params (highest layer).
        environ: environment to read ``RECSYS_CONFIG`` and ``RECSYS__SECTION__KEY`` from; defaults
            to ``os.environ``.

    Raises:
        ValueError: an override names a key the defaults do not have.
    """
    environ = os.environ if environ is None else environ
    config = yaml.safe_load(DEFAULT_CONFIG.read_text())
    file_override = environ.get("RECSYS_CONFIG")
    if file_override:
        config = _merge(config, yaml.safe_load(Path(file_override).read_text()) or {}, file_override)
    for name, raw in sorted(environ.items()):
        if name.startswith(ENV_PREFIX):
            dotted = name[len(ENV_PREFIX):].lower().replace("__", ".")
            config = _merge(config, _nest(dotted, yaml.safe_load(raw)), name)
    for dotted, value in parse_overrides(overrides or []):
        config = _merge(config, _nest(dotted, value), f"--set {dotted}")
    return config


def config_hash(config: Mapping) -> str:
    """A short stable fingerprint of a config, for lineage."""
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:12]
