"""The typed config: layering order, refusals naming the key, unchanged values and hashes, the job's exit code."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml

from recsys.core.cli import CONFIG_EXIT, JobContext, job_parser, run_job
from recsys.core.config import DEFAULT_CONFIG, REPO_ROOT, ConfigError, RecsysConfig, config_hash, load_config

RAW = yaml.safe_load(DEFAULT_CONFIG.read_text())  # the committed file, read without the loader


def _types(tree: Any) -> Any:
    """The same tree with every leaf replaced by its type's name (bool, int and float told apart)."""
    if isinstance(tree, dict):
        return {key: _types(value) for key, value in tree.items()}
    if isinstance(tree, list):
        return [_types(value) for value in tree]
    return type(tree).__name__


def test_validation_keeps_the_committed_values_types_and_hashes() -> None:
    config = load_config([], environ={})
    assert config == RAW
    assert _types(config) == _types(RAW)  # ints stay ints, floats floats, lists lists (== has 1 == 1.0 == True)
    assert json.dumps(config, sort_keys=True) == json.dumps(RAW, sort_keys=True)
    for section in RAW:  # outputs record these: an unchanged config must keep its fingerprints
        assert config_hash(config[section]) == config_hash(RAW[section]), section
    assert config_hash(config) == config_hash(RAW)


def test_the_schema_covers_every_section_and_key_of_the_yaml() -> None:
    schema = RecsysConfig.model_json_schema()
    assert list(schema["properties"]) == list(RAW)
    for section, values in RAW.items():
        if isinstance(values, dict):
            ref = schema["properties"][section]["$ref"].rsplit("/", 1)[-1]
            assert list(schema["$defs"][ref]["properties"]) == list(values), section


def test_every_bound_reaches_the_json_schema() -> None:
    text = json.dumps(RecsysConfig.model_json_schema())
    assert '"ge"' not in text and '"le"' not in text and '"gt"' not in text and '"lt"' not in text
    assert RecsysConfig.model_json_schema()["$defs"]["Train"]["properties"]["dropout"] == {
        "type": "number", "minimum": 0, "exclusiveMaximum": 1, "title": "Dropout"}


def test_layers_apply_in_order(tmp_path: Path) -> None:
    file = tmp_path / "site.yaml"
    file.write_text("train: {epochs: 7, patience: 4}\nwindow_days: 11\n")
    env = {"RECSYS_CONFIG": str(file), "RECSYS__TRAIN__EPOCHS": "8", "RECSYS__TRAIN__HIDDEN": "16"}

    def train(overrides: list[str], environ: dict[str, str]) -> tuple[Any, ...]:
        config = load_config(overrides, environ=environ)
        return (config["train"]["epochs"], config["train"]["patience"], config["train"]["hidden"],
                config["window_days"])

    defaults = (RAW["train"]["epochs"], RAW["train"]["patience"], RAW["train"]["hidden"],
                RAW["window_days"])
    assert defaults == (100, 10, 200, 30)  # the committed values the layers below replace
    assert train([], {}) == defaults
    assert train([], {"RECSYS_CONFIG": str(file)}) == (7, 4, 200, 11)  # file over the defaults
    assert train([], env) == (8, 4, 16, 11)  # environment over the file
    assert train(["train.epochs=9"], env) == (9, 4, 16, 11)  # --set over the environment
    assert train(["train.epochs=9", "train.epochs=3"], env) == (3, 4, 16, 11)  # the last --set wins


def test_numbers_are_read_as_the_schema_types() -> None:
    config = load_config(["train.learning_rate=1e-3", "train.dropout=0", "generate.end_date=2026-02-01",
                          "expand.pos_neg_weight_ratio=2"], environ={})
    assert config["train"]["learning_rate"] == 0.001  # YAML 1.1 reads 1e-3 as a string
    assert type(config["train"]["dropout"]) is float and config["train"]["dropout"] == 0.0
    assert config["generate"]["end_date"] == "2026-02-01"  # YAML reads an unquoted date as a date
    assert config["expand"]["pos_neg_weight_ratio"] == 2.0
    assert load_config(["expand.pos_neg_weight_ratio=null"], environ={})["expand"]["pos_neg_weight_ratio"] is None


@pytest.mark.parametrize(("overrides", "environ", "expected"), [
    ([], {"RECSYS__TRAIN__EPOCHS": "five"},
     "train.epochs='five' (RECSYS__TRAIN__EPOCHS): Input should be a valid integer"),
    (["train.epochs=2.5"], {}, "train.epochs=2.5 (--set train.epochs): Input should be a valid integer"),
    (["train.epochs=0"], {}, "train.epochs=0 (--set train.epochs): Input should be greater than or equal to 1"),
    (["augment.enabled=1"], {}, "augment.enabled=1 (--set augment.enabled): Input should be a valid boolean"),
    (["augment.epochs=true"], {}, "augment.epochs=True (--set augment.epochs): Input should be a valid integer"),
    (["augment.epochs=1001"], {}, "augment.epochs=1001 (--set augment.epochs): Input should be less than or equal "
                                  "to 1000"),
    (["tables.split=random"], {}, "tables.split='random' (--set tables.split): Input should be 'ratio' or "
                                  "'leave_last_n'"),
    (["window_days=0"], {}, "window_days=0 (--set window_days): Input should be greater"),
    (["augment.pm_ratio=1.5"], {}, "augment.pm_ratio=1.5 (--set augment.pm_ratio): Input should be less than or "
                                   "equal to 1"),
    (["train.ease_lambdas=[50.0, 0]"], {}, "train.ease_lambdas.1=0 (--set train.ease_lambdas): Input should be "
                                           "greater than 0"),
    (["train.ease_lambdas=[]"], {}, "train.ease_lambdas=[] (--set train.ease_lambdas): List should have at least 1"),
    (["train.loss=hinge"], {}, "train.loss='hinge' (--set train.loss)"),
    (["expand.negative_mix.neg_hard=0.5"], {},
     "expand.negative_mix={'neg_uniform': 0.4, 'neg_pop': 0.4, 'neg_hard': 0.5} (--set expand.negative_mix.neg_hard): "
     "Value error, the shares must sum to 1"),
    (["expand.sources.gan_pos=maybe"], {}, "expand.sources.gan_pos='maybe' (--set expand.sources.gan_pos)"),
    (["expand.sources=5"], {}, "expand.sources=5 (--set expand.sources): Input should be a valid dictionary"),
    (["clean.rating_range=[5.0, 0.5]"], {}, "clean.rating_range=[5.0, 0.5] (--set clean.rating_range): Value error, must be [low, high]"),
    (["register.gate_metric=auc"], {}, "register.gate_metric='auc' (--set register.gate_metric): String should "
                                       "match pattern"),
    (["generate.end_date='2026-02-30'"], {}, "generate.end_date='2026-02-30' (--set generate.end_date)"),
    (["quality.share_reasons=[bot, nope]"], {}, "quality.share_reasons.1='nope' (--set quality.share_reasons)"),
])
def test_bad_values_are_refused_naming_key_value_and_layer(
        overrides: list[str], environ: dict[str, str], expected: str) -> None:
    with pytest.raises(ConfigError) as refused:
        load_config(overrides, environ=environ)
    message = str(refused.value)
    assert expected in message
    assert "\n" not in message


def test_every_bad_key_is_named_at_once_and_a_file_by_its_path(tmp_path: Path) -> None:
    file = tmp_path / "site.yaml"
    file.write_text("train: {dropout: 1.5}\n")
    with pytest.raises(ConfigError) as refused:
        load_config(["publish.k=-1"], environ={"RECSYS_CONFIG": str(file)})
    message = str(refused.value)
    assert f"train.dropout=1.5 ({file}): Input should be less than 1" in message
    assert "publish.k=-1 (--set publish.k): Input should be greater than or equal to 1" in message


@pytest.mark.parametrize(("overrides", "environ", "expected"), [
    (["train.epoch=3"], {}, "--set train.epoch: unknown config key train.epoch (known in train: batch_size,"),
    ([], {"RECSYS__TRAIN__EPOCH": "3"}, "RECSYS__TRAIN__EPOCH: unknown config key train.epoch"),
    (["train.epochs"], {}, "--set expects section.key=value, got 'train.epochs'"),
    (["train.ease_lambdas=[1,"], {}, "--set train.ease_lambdas: not a YAML value: '[1,'"),
    (["generate.end_date=2026-02-30"], {}, "--set generate.end_date: not a YAML value: '2026-02-30' (day is out"),
    ([], {"RECSYS_CONFIG": "/nonexistent/recsys.yaml"}, "RECSYS_CONFIG: cannot read the config file"),
])
def test_unknown_keys_and_unreadable_layers_are_config_errors(
        overrides: list[str], environ: dict[str, str], expected: str) -> None:
    with pytest.raises(ConfigError, match="^" + re.escape(expected)):
        load_config(overrides, environ=environ)


def test_schema_choices_match_the_names_the_jobs_use() -> None:
    from recsys.core.columns import SOURCES
    from recsys.data.clean import REASONS
    from recsys.data.tables import SPLIT_METHODS
    from recsys.sampling.mixer import NEGATIVE_SOURCES

    fields = RecsysConfig.model_fields
    expand = fields["expand"].annotation.model_fields
    assert tuple(expand["sources"].annotation.model_fields) == SOURCES
    assert tuple(expand["negative_mix"].annotation.model_fields) == NEGATIVE_SOURCES
    quality = fields["quality"].annotation.model_fields
    assert typing.get_args(typing.get_args(quality["share_reasons"].annotation)[0]) == REASONS
    assert typing.get_args(fields["tables"].annotation.model_fields["split"].annotation) == SPLIT_METHODS
    event_mix = fields["generate"].annotation.model_fields["event_mix"].annotation
    assert list(event_mix.model_fields) == list(RAW["clean"]["events"])  # the kinds generated are the kinds cleaned


def test_run_job_exits_with_the_config_code_before_the_body(
        lake: object, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("RECSYS__TRAIN__EPOCHS", "five")
    called: list[JobContext] = []
    with caplog.at_level(logging.ERROR, logger="recsys"), pytest.raises(SystemExit) as stopped:
        run_job(job_parser("a job"), lambda ctx: called.append(ctx) or {}, ["--ds", "2026-01-31"])
    assert stopped.value.code == CONFIG_EXIT == 78
    assert called == []
    [record] = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert record.getMessage() == ("configuration error: invalid config: train.epochs='five' "
                                   "(RECSYS__TRAIN__EPOCHS): Input should be a valid integer")


def test_the_config_command_prints_the_effective_config_or_refuses_it() -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "RECSYS__TRAIN__EPOCHS": "5"}
    env.pop("RECSYS_CONFIG", None)
    shown = subprocess.run([sys.executable, "-m", "recsys.core.config", "--set", "publish.k=3"], env=env,
                           capture_output=True, text=True, check=True)
    config = yaml.safe_load(shown.stdout)
    assert (config["train"]["epochs"], config["publish"]["k"]) == (5, 3)
    refused = subprocess.run([sys.executable, "-m", "recsys.core.config"], capture_output=True, text=True,
                             env={**env, "RECSYS__TRAIN__EPOCHS": "five"})
    assert refused.returncode == CONFIG_EXIT
    assert refused.stderr.strip().splitlines() == [
        "invalid config: train.epochs='five' (RECSYS__TRAIN__EPOCHS): Input should be a valid integer"]
