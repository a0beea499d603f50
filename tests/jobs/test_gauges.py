"""StatsD gauges: a night's figures from hand-written lake files, and each job's wall time, to a real UDP listener."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from recsys.core.cli import DataQualityError, JobContext, job_parser, run_job
from recsys.core.gauges import gauge_lines, night_gauges, send_gauges, send_night_gauges
from recsys.core.lake import Lake
from tests.support import Listener, gauges_of

REPO = Path(__file__).resolve().parents[2]
DS = "2026-03-01"


def _write(lake: Lake, zone: str, name: str, payload: dict) -> None:
    path = lake.path(zone, DS) / name
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(payload))


def _night(lake: Lake) -> None:
    """The four files the gauges read, with the shapes clean, tables, evaluate and register write."""
    _write(lake, "clean", "_reconciliation.json", {
        "input": 1000, "clean": 900, "duplicates": 40, "quarantined": 60,
        "by_reason": {"bad_timestamp": 45, "unknown_event": 15}})
    _write(lake, "tables", "_stats.json", {
        "users": 120, "items": 80, "density": 0.09, "item_gini": 0.4,
        "interactions": {"train": 700, "valid": 100, "test": 90, "total": 890}})
    _write(lake, "eval", "metrics.json", {
        "ds": DS, "ease_lambda": 100.0,
        "models": {"model": {"all": {"ndcg@10": 0.25, "recall@10": 0.4}, "sparse": {"ndcg@10": 0.125}},
                   "ease": {"all": {"ndcg@10": 0.2}, "sparse": {"ndcg@10": 0.1}}},
        "augmentation": {"metric": "ndcg@10", "lift_all": 1.25, "lift_all_low": 1.1, "lift_all_high": 1.4,
                         "lift_sparse": None, "helped": True, "verdict": "Augmentation helped: ..."},
        "cold_start": {"lifts": {"among_cold": {"vs_tfidf": {"lift": 1.5, "low": 1.2, "high": None}}}}})
    _write(lake, "registry", "registration.json", {
        "model_name": "m", "version": "7", "champion": "6", "run_id": "abc", "gate": {"promoted": False}})


# every gauge of _night, by hand: the null lift and bound give none, nor do text and non-headline figures
NIGHT = {
    "clean.input": 1000, "clean.clean": 900, "clean.duplicates": 40, "clean.quarantined": 60,
    "clean.quarantined.bad_timestamp": 45, "clean.quarantined.unknown_event": 15,
    "tables.users": 120, "tables.items": 80, "tables.interactions": 890,
    "tables.interactions.train": 700, "tables.interactions.valid": 100, "tables.interactions.test": 90,
    "eval.model.ndcg_10": 0.25, "eval.model.sparse.ndcg_10": 0.125,
    "eval.ease.ndcg_10": 0.2, "eval.ease.sparse.ndcg_10": 0.1,
    "eval.lift.all": 1.25, "eval.lift.all.low": 1.1, "eval.lift.all.high": 1.4,
    "eval.cold.among_cold.vs_tfidf": 1.5, "eval.cold.among_cold.vs_tfidf.low": 1.2,
    "registry.version": 7, "registry.champion": 6, "registry.promoted": 0,
}


def test_a_nights_gauges_reach_a_udp_listener(lake: Lake, statsd: Listener) -> None:
    _night(lake)
    assert night_gauges(lake, DS) == pytest.approx(NIGHT)
    sent = send_night_gauges(lake, DS, {"RECSYS_STATSD_HOST": "127.0.0.1", "RECSYS_STATSD_PORT": str(statsd.port),
                                        "RECSYS_STATSD_PREFIX": "recsys.prod"})
    assert sent == len(NIGHT)
    received = gauges_of(statsd.lines(len(NIGHT)))
    assert received == pytest.approx({f"recsys.prod.{name}": value for name, value in NIGHT.items()})


def test_missing_files_give_no_gauges(lake: Lake) -> None:
    assert night_gauges(lake, DS) == {}
    _write(lake, "registry", "registration.json", {"version": "3", "champion": None, "gate": {"promoted": True}})
    assert night_gauges(lake, DS) == {"registry.version": 3.0, "registry.promoted": 1.0}


def test_statsd_off_sends_nothing(lake: Lake, statsd: Listener) -> None:
    _night(lake)
    assert send_night_gauges(lake, DS, {"RECSYS_STATSD_PORT": str(statsd.port)}) == 0
    assert statsd.quiet()


def test_many_gauges_are_batched_into_small_datagrams(statsd: Listener) -> None:
    many = {f"g{i:03d}.with_a_long_name_to_fill_packets": i for i in range(100)}
    datagrams = send_gauges(many, "127.0.0.1", statsd.port, "p")
    assert gauges_of(statsd.lines(100)) == {f"p.{name}": float(value) for name, value in many.items()}
    total = sum(len(f"p.{name}:{value}|g") + 1 for name, value in many.items()) - datagrams  # newlines between
    assert len(statsd.sizes) == datagrams and sum(statsd.sizes) == total
    assert max(statsd.sizes) <= 512 and 1 < datagrams < 100  # batched, each datagram within 512 bytes


def test_a_negative_gauge_is_reset_then_changed() -> None:
    # a signed StatsD gauge value is a change: -0.5 alone would lower the previous value instead of setting it
    assert gauge_lines({"lift": -0.5, "nan": float("nan"), "n": 3}, "x") == ["x.lift:0|g", "x.lift:-0.5|g", "x.n:3|g"]
    assert gauges_of(gauge_lines({"lift": -0.5}, "x")) == {"x.lift": -0.5}


def _sleeper(ctx: JobContext) -> dict:
    time.sleep(0.3)
    return {"ok": True}


def _bad_data(ctx: JobContext) -> dict:
    raise DataQualityError("planted")


def test_run_job_sends_the_stage_time(lake: Lake, statsd: Listener, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECSYS_STATSD_HOST", "127.0.0.1")
    monkeypatch.setenv("RECSYS_STATSD_PORT", str(statsd.port))
    monkeypatch.setenv("RECSYS_STATSD_PREFIX", "nightly")
    started = time.monotonic()
    assert run_job(job_parser("sleep"), _sleeper, ["--ds", DS]) == {"ok": True}
    elapsed = time.monotonic() - started
    (name, seconds), = gauges_of(statsd.lines(1)).items()
    assert name == "nightly.stage.test_gauges.seconds"  # the module the body belongs to
    assert 0.3 <= seconds <= elapsed

    with pytest.raises(SystemExit) as stopped:  # a failed job still reports how long it ran
        run_job(job_parser("bad"), _bad_data, ["--ds", DS])
    assert stopped.value.code == 65
    assert list(gauges_of(statsd.lines(1))) == ["nightly.stage.test_gauges.seconds"]


def test_run_job_without_statsd_or_with_a_broken_one_still_succeeds(
        lake: Lake, statsd: Listener, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RECSYS_STATSD_HOST", raising=False)
    monkeypatch.setenv("RECSYS_STATSD_PORT", str(statsd.port))
    assert run_job(job_parser("sleep"), _sleeper, ["--ds", DS]) == {"ok": True}
    assert statsd.quiet()
    monkeypatch.setenv("RECSYS_STATSD_HOST", "127.0.0.1")
    monkeypatch.setenv("RECSYS_STATSD_PORT", "not-a-port")
    assert run_job(job_parser("sleep"), _sleeper, ["--ds", DS]) == {"ok": True}


def test_a_job_run_as_a_program_names_its_stage(lake: Lake, statsd: Listener) -> None:
    """``python -m jobs.summary`` runs as __main__; its stage gauge still says ``summary`` (here it fails: no run)."""
    env = {**os.environ, "RECSYS_STATSD_HOST": "127.0.0.1", "RECSYS_STATSD_PORT": str(statsd.port),
           "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-m", "jobs.summary", "--ds", DS], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 1 and "registry partition for 2026-03-01 is missing" in done.stderr
    assert list(gauges_of(statsd.lines(1))) == ["recsys.stage.summary.seconds"]
