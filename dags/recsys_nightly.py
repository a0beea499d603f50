"""
### recsys_nightly

Retrains the recommender every night with GAN-based data augmentation and sample expansion.

clean → tables → augment → expand → train → evaluate → register → publish

Each task launches one program of `jobs/` in its own process for the run's date (the logical date;
runs without one process the day before `run_after`), reads its inputs from the lake partitions of
that date and replaces its own partition atomically, so a retry, a rerun or a backfill redoes exactly
that day. XCom carries only the small facts each job returns.

Params: `overrides`, a mapping `{"section.key": value}` of `conf/recsys.yaml` values for this run,
e.g. `{"tables.window_days": 60, "augment.enabled": false}`.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import Param, dag, get_current_context, task
from recsys_airflow.launch import launch_job


def _run(module: str) -> dict:
    return launch_job(module, get_current_context())


@task(doc_md="Clean the day's raw logs with Spark: valid rows to `clean/`, the rest to `quarantine/`.")
def clean() -> dict:
    return _run("clean")


@task(doc_md="Build stable indexes, the windowed interaction tables, the split and the CSR export (Spark).")
def tables() -> dict:
    return _run("tables")


@task(doc_md="Train the conditional GAN; expanded positives, synthetic users, quality report (TensorFlow).")
def augment() -> dict:
    return _run("augment")


@task(doc_md="Expand samples: negatives, GAN and co-occurrence positives, weights, every row tagged by source.")
def expand() -> dict:
    return _run("expand")


@task(doc_md="Train the recommender on the expanded examples, and the no-augmentation ablation (TensorFlow).")
def train() -> dict:
    return _run("train")


@task(doc_md="Evaluate on real held-out test interactions against popularity, ItemKNN, EASE and the ablation.")
def evaluate() -> dict:
    return _run("evaluate")


@task(doc_md="Log the run to MLflow, register a version as `challenger`, move `champion` if the gate passes.")
def register() -> dict:
    return _run("register")


@task(doc_md="Write every known user's top-K from the `champion` model to `recs/`, and the run report.")
def publish() -> dict:
    return _run("publish")


@dag(
    dag_id="recsys_nightly",
    schedule="0 3 * * *",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    tags=["recsys"],
    default_args={"retries": 0},
    params={
        "overrides": Param(
            {}, type="object", description="conf/recsys.yaml values for this run, as {\"section.key\": value}"
        ),
    },
)
def recsys_nightly() -> None:
    clean() >> tables() >> augment() >> expand() >> train() >> evaluate() >> register() >> publish()


recsys_nightly()
