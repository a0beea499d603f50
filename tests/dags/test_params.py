"""Trigger-form params: the JSON schema refuses bad values, agrees with the typed config, and filled params
become the right config keys."""

from __future__ import annotations

import pytest
from airflow.sdk.definitions.param import ParamsDict
from airflow.sdk.exceptions import ParamValidationError

from recsys.core.config import config_schema, load_config
from recsys_airflow.params import (
    OVERRIDES_PARAM,
    PARAM_KEYS,
    SOURCES_KEY,
    SOURCES_PARAM,
    dag_params,
    overrides_from_params,
)

DEFAULTS = {name: param.value for name, param in dag_params().items()}
CONFIG_SCHEMA = config_schema()  # the JSON Schema of recsys.core.config.RecsysConfig (pydantic)
# what a value may be; titles, descriptions and defaults are the form's own
CONSTRAINTS = ("type", "enum", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "pattern",
               "additionalProperties", "required")


def _resolve(schema: dict) -> dict:
    if "$ref" in schema:
        return CONFIG_SCHEMA["$defs"][schema["$ref"].rsplit("/", 1)[-1]]
    return schema


def _key_schema(dotted: str) -> dict:
    """The config schema of one ``section.key``."""
    node = CONFIG_SCHEMA
    for part in dotted.split("."):
        node = _resolve(node["properties"][part])
    return node


def _constraints(schema: dict) -> dict:
    """The constraints of a schema, recursively through ``properties``; a nullable type without its null."""
    out = {key: schema[key] for key in CONSTRAINTS if key in schema}
    if isinstance(out.get("type"), list):
        [out["type"]] = [kind for kind in out["type"] if kind != "null"]
    if "properties" in schema:
        out["properties"] = {name: _constraints(_resolve(sub)) for name, sub in schema["properties"].items()}
    return out


def test_defaults_validate_and_add_no_override() -> None:
    assert ParamsDict(dag_params()).validate() == DEFAULTS
    assert all(value is None for name, value in DEFAULTS.items() if name != "overrides")
    assert overrides_from_params(DEFAULTS) == []


def test_every_param_is_a_config_key_with_the_config_schema() -> None:
    params = dag_params()
    assert set(params) == {*PARAM_KEYS, SOURCES_PARAM, OVERRIDES_PARAM}
    keys = {**PARAM_KEYS, SOURCES_PARAM: SOURCES_KEY}
    for name, key in keys.items():
        form, config = _constraints(params[name].schema), _constraints(_key_schema(key))
        if name == SOURCES_PARAM:  # the form takes any subset of the switches; the rest keep the config
            assert form.pop("required", None) is None and config.pop("required")
        assert form == config, f"param {name} != config {key}"


def test_the_comparison_sees_a_bound_that_differs() -> None:
    form = _constraints(dag_params()["gan_epochs"].schema)
    assert form == {"type": "integer", "minimum": 1, "maximum": 1000}  # written out in params.py
    assert _constraints(_key_schema("augment.epochs")) == form
    assert _constraints(_key_schema("train.epochs")) != form  # no maximum: a different key compares unequal


def test_filled_params_map_to_their_config_keys_in_order() -> None:
    params = {
        **DEFAULTS, "window_days": 60, "augment": False, "sources": {"gan_pos": False, "cooc_pos": True},
        "gan_epochs": 5, "negatives_per_positive": 2,
        "negative_mix": {"neg_uniform": 0.2, "neg_pop": 0.3, "neg_hard": 0.5}, "promote": False,
        "force_register": True, "overrides": {"train.epochs": 3, "window_days": 10},
    }
    assert overrides_from_params(params) == [
        "--set=train.epochs=3", "--set=window_days=10",  # free-form first: named params win
        "--set=augment.enabled=false", "--set=augment.epochs=5",
        '--set=expand.negative_mix={"neg_uniform": 0.2, "neg_pop": 0.3, "neg_hard": 0.5}',
        "--set=expand.negatives_per_positive=2", "--set=expand.sources.cooc_pos=true",
        "--set=expand.sources.gan_pos=false", "--set=register.force=true", "--set=register.promote=false",
        "--set=window_days=60",
    ]


def test_flags_reach_the_config_the_jobs_load() -> None:
    flags = overrides_from_params({
        **DEFAULTS, "window_days": 60, "augment": False, "sources": {"gan_pos": False}, "gan_epochs": 5,
        "negatives_per_positive": 2, "negative_mix": {"neg_uniform": 0.2, "neg_pop": 0.3, "neg_hard": 0.5},
        "promote": False, "force_register": True, "overrides": {"window_days": 10},
    })
    config = load_config([flag.removeprefix("--set=") for flag in flags], environ={})
    defaults = load_config([], environ={})
    assert config["window_days"] == 60
    assert config["augment"]["enabled"] is False and config["augment"]["epochs"] == 5
    assert config["expand"]["sources"] == {**defaults["expand"]["sources"], "gan_pos": False}
    assert config["expand"]["negatives_per_positive"] == 2
    assert config["expand"]["negative_mix"] == {"neg_uniform": 0.2, "neg_pop": 0.3, "neg_hard": 0.5}
    assert config["register"]["promote"] is False and config["register"]["force"] is True


@pytest.mark.parametrize(("name", "value"), [
    ("window_days", 0), ("window_days", "30"), ("window_days", 1.5), ("augment", "no"), ("gan_epochs", -1),
    ("negatives_per_positive", 101), ("sources", {"no_such_source": True}), ("sources", {"gan_pos": "off"}),
    ("negative_mix", {"neg_uniform": 0.5, "neg_pop": 0.5}), ("negative_mix", {"neg_uniform": 1.5, "neg_pop": 0,
                                                                               "neg_hard": 0}),
    ("promote", 1), ("force_register", "true"), ("overrides", ["window_days=3"]),
])
def test_schema_refuses_invalid_values(name: str, value: object) -> None:
    with pytest.raises(ParamValidationError):
        dag_params()[name].resolve(value)


@pytest.mark.parametrize(("name", "value"), [
    ("window_days", 7), ("augment", True), ("sources", {"neg_hard": True}), ("gan_epochs", None),
    ("negative_mix", {"neg_uniform": 0.0, "neg_pop": 1.0, "neg_hard": 0.0}),
])
def test_schema_accepts_valid_values(name: str, value: object) -> None:
    assert dag_params()[name].resolve(value) == value
