"""The trigger form of recsys_nightly: JSON-schema params and how each maps to a conf/recsys.yaml key.

Every named param defaults to ``null``, meaning "use the config" (conf/recsys.yaml and its layers), so
scheduled runs and backfills run with the config's values; only the params a person fills in become
``--set`` overrides of the jobs. Only ``airflow.sdk`` and the standard library are imported here: the DAG
file imports this module at parse time.

Where the schemas come from: the typed config, ``recsys.core.config.RecsysConfig`` (pydantic), is the
source of every key's type and range. The few keys exposed here are written out as literal JSON-schema
fragments rather than derived at parse time, because deriving them would mean importing pydantic and
recsys/ or reading a generated schema file while the DAG is parsed, both of which the DAG rules forbid.
tests/dags/test_params.py compares each param's type, bounds, properties and ``additionalProperties``
with the pydantic JSON Schema of its key, so the two cannot drift apart silently. What a form cannot
express (negative_mix summing to 1) is checked by the jobs' config validation, whose refusal (exit 78)
fails the run without retries; so are the free-form ``overrides``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from airflow.sdk import Param

# Source switches of the expansion stage (conf/recsys.yaml, expand.sources) and the negative kinds of
# its sampler mix (expand.negative_mix).
SOURCES = ("real_pos", "gan_pos", "cooc_pos", "syn_user", "content_pos", "transform_pos", "neg_uniform", "neg_pop",
           "neg_hard")
NEGATIVE_KINDS = ("neg_uniform", "neg_pop", "neg_hard")

# Scalar params -> the config key they override.
PARAM_KEYS: dict[str, str] = {
    "window_days": "window_days",
    "augment": "augment.enabled",
    "gan_epochs": "augment.epochs",
    "negatives_per_positive": "expand.negatives_per_positive",
    "negative_mix": "expand.negative_mix",
    "promote": "register.promote",
    "force_register": "register.force",
}
SOURCES_PARAM = "sources"  # a mapping {source: bool}; each entry -> expand.sources.<source>
SOURCES_KEY = "expand.sources"
OVERRIDES_PARAM = "overrides"  # free-form {"section.key": value}


def _nullable(type_: str, description: str, **schema: Any) -> Param:
    return Param(None, type=["null", type_], description=description + " Empty: the config's value.", **schema)


def dag_params() -> dict[str, Param]:
    """The DAG's params, in trigger-form order; invalid values are refused by their JSON schema."""
    return {
        "window_days": _nullable("integer", "Training window: the last N days up to the run's date.",
                                 minimum=1, maximum=36500, title="Training window (days)"),
        "augment": _nullable("boolean", "Train the GAN and use its outputs (off: no augmentation).",
                             title="Augmentation on"),
        SOURCES_PARAM: _nullable(
            "object", "Sample sources to switch on (true) or off (false); sources not listed keep the config.",
            title="Sample sources",
            properties={name: {"type": "boolean"} for name in SOURCES},
            additionalProperties=False,
        ),
        "gan_epochs": _nullable("integer", "GAN training epochs.", minimum=1, maximum=1000, title="GAN epochs"),
        "negatives_per_positive": _nullable("integer", "Negatives sampled per positive.", minimum=0, maximum=100,
                                            title="Negatives per positive"),
        "negative_mix": _nullable(
            "object", "Share of each negative sampler; all three, each in [0, 1], summing to 1.",
            title="Negative sampler mix",
            properties={kind: {"type": "number", "minimum": 0, "maximum": 1} for kind in NEGATIVE_KINDS},
            required=list(NEGATIVE_KINDS),
            additionalProperties=False,
        ),
        "promote": _nullable("boolean", "Move the `champion` alias when the gate passes.", title="Promote"),
        "force_register": _nullable("boolean", "Register a new model version even if this training is already "
                                    "registered.", title="Force re-registration"),
        OVERRIDES_PARAM: Param(
            {}, type="object", title="Other config overrides",
            description='Any conf/recsys.yaml values for this run, as {"section.key": value}; the named params '
                        "above win over these.",
        ),
    }


def overrides_from_params(params: Mapping[str, Any]) -> list[str]:
    """Turn a run's params into the jobs' ``--set section.key=value`` flags.

    The free-form ``overrides`` come first, then every named param that is not null, so a named param
    wins over the same key in ``overrides`` (the config loader applies ``--set`` flags in order).
    Values are written as JSON, which the config loader reads as YAML.
    """
    pairs = sorted((params.get(OVERRIDES_PARAM) or {}).items())
    named: list[tuple[str, Any]] = [(key, params[name]) for name, key in PARAM_KEYS.items()
                                    if params.get(name) is not None]
    named += [(f"{SOURCES_KEY}.{source}", on) for source, on in (params.get(SOURCES_PARAM) or {}).items()]
    return [f"--set={key}={json.dumps(value)}" for key, value in pairs + sorted(named)]
