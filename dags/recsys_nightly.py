"""
### recsys_nightly

Retrains the recommender every night with GAN-based and content-based data augmentation and sample expansion.

clean → tables → embed → augment → expand → train → evaluate → register → publish → report

`catalogue` (the item catalogue) runs beside `clean`; `tables` waits for both.

Each task launches one program of `jobs/` in its own process for the run's date (the Spark jobs with
`spark-submit` to the master of the `spark_default` connection, `local[*]` without one), reads its inputs from
the lake partitions of that date and replaces its own partition atomically, so a retry, a rerun (clear)
or a backfill redoes exactly that day. XCom carries only the small facts each job returns.

**Date rule.** A run processes the date of its logical date (scheduled runs, backfills, `dags test`).
The schedule is a daily data interval (`RECSYS_NIGHTLY_CRON`, default `0 3 * * *` UTC): the run at
03:00 on day D+1 has logical date D and processes day D, which is complete by then. Runs without a
logical date (manual or asset-triggered) process the day before their `run_after`: the same day.

**Trigger form.** Every param left empty means "use conf/recsys.yaml"; filled ones override that key for
this run only: window days, augmentation on/off and sample sources, GAN epochs, negatives per positive,
negative sampler mix, promote, force re-registration, plus free-form `overrides` (`{"section.key": v}`).

**Failures.** Transient failures are retried with exponential backoff; a failed data-quality gate
(exit 65) or a refused config (exit 78) fails at once. Every failed try alerts: a try that will be retried
writes a `RECSYS ALERT task_retry` line (with its `try_number`), the last one a `RECSYS ALERT task_failed`
line; each is posted to the `recsys_alerts` webhook connection when it exists, then handed to the notifiers
listed in `RECSYS_NOTIFIERS` (JSON, e.g. Airflow's SMTP or Slack notifiers; a bad list fails this DAG's import).

**Output.** `publish` updates the asset `recsys://lake/recs` (extra: `ds`), for DAGs scheduled on it;
`report` then renders the run at a glance to `reports/ds=D/report.html` and logs it to the date's MLflow run.
"""

from __future__ import annotations

import datetime as dt
import os

import pendulum
from airflow.sdk import Asset, CronDataIntervalTimetable, dag, get_current_context, task, task_group

from recsys_airflow.alerts import TASK_FAILED, TASK_RETRY, alert_callbacks
from recsys_airflow.launch import embedding_endpoint_env, launch_job, run_date
from recsys_airflow.params import dag_params

NIGHTLY_CRON = os.environ.get("RECSYS_NIGHTLY_CRON", "0 3 * * *")  # UTC; see the DAG docs above
RECS = Asset(name="recsys_recs", uri="recsys://lake/recs", group="recsys")
RETRIES = {"retries": 2, "retry_delay": dt.timedelta(minutes=2), "retry_exponential_backoff": 2.0,
           "max_retry_delay": dt.timedelta(minutes=30)}
SPARK = {"pool": "spark"}
GPU = {"pool": "gpu", "queue": "gpu"}  # one slot: the text encoder or the GAN gets the accelerator to itself


def _run(module: str, spark: bool = False) -> dict:
    return launch_job(module, get_current_context(), spark=spark)


@task(**SPARK, execution_timeout=dt.timedelta(hours=1),
      doc_md="Clean the day's raw logs with Spark: valid rows to `clean/`, the rest to `quarantine/`.")
def clean() -> dict:
    return _run("clean", spark=True)


@task(**SPARK, execution_timeout=dt.timedelta(hours=1),
      doc_md="Clean the item catalogue with Spark: one row per item with its text to `catalogue/`, the rest quarantined.")
def catalogue() -> dict:
    return _run("catalogue", spark=True)


@task(**SPARK, execution_timeout=dt.timedelta(hours=1),
      doc_md="Build stable indexes, the windowed interaction tables, the split and the CSR export (Spark).")
def tables() -> dict:
    return _run("tables", spark=True)


@task(**GPU, execution_timeout=dt.timedelta(hours=2),
      doc_md="Encode the catalogue's new or changed item texts with the pretrained text model (cached by text hash).")
def embed() -> dict:
    # the endpoint backend's URL and key from the connection recsys_embeddings, when it exists
    return launch_job("embed", get_current_context(), env=embedding_endpoint_env())


@task(**GPU, execution_timeout=dt.timedelta(hours=2),
      doc_md="Train the conditional GAN; expanded positives, synthetic users, quality report (TensorFlow).")
def augment() -> dict:
    return _run("augment")


@task(execution_timeout=dt.timedelta(hours=1),
      doc_md="Expand samples: negatives, GAN and co-occurrence positives, weights, every row tagged by source.")
def expand() -> dict:
    return _run("expand")


@task(execution_timeout=dt.timedelta(hours=3),
      doc_md="Train the recommender on the expanded examples, and the no-augmentation ablation (TensorFlow).")
def train() -> dict:
    return _run("train")


@task(execution_timeout=dt.timedelta(hours=1),
      doc_md="Evaluate on real held-out test interactions against popularity, ItemKNN, EASE and the ablation.")
def evaluate() -> dict:
    return _run("evaluate")


@task(execution_timeout=dt.timedelta(minutes=30),
      doc_md="Log the run to MLflow, register a version as `challenger`, move `champion` if the gate passes.")
def register() -> dict:
    return _run("register")


@task(outlets=[RECS], execution_timeout=dt.timedelta(hours=1),
      doc_md="Write every known user's top-K from the `champion` model to `recs/`, checked against the contract.")
def publish() -> dict:
    context = get_current_context()
    result = _run("publish")
    context["outlet_events"][RECS].extra = {"ds": run_date(context)}
    return result


@task(execution_timeout=dt.timedelta(minutes=30),
      doc_md="Render the run report (`reports/report.html`: gate, lifts, metrics, recs, quality) and log it to MLflow.")
def report() -> dict:
    return _run("report")


@task_group(prefix_group_id=False, tooltip="Spark: raw logs and the catalogue to clean data to windowed tables")
def prepare() -> None:
    [clean(), catalogue()] >> tables()


@task_group(prefix_group_id=False, tooltip="Text embeddings, GAN and content augmentation, sample expansion")
def augmentation() -> None:
    embed() >> augment() >> expand()


@task_group(prefix_group_id=False, tooltip="Recommender training and offline evaluation")
def modelling() -> None:
    train() >> evaluate()


@task_group(prefix_group_id=False, tooltip="MLflow registration, promotion gate, recommendations, run report")
def release() -> None:
    register() >> publish() >> report()


@dag(
    dag_id="recsys_nightly",
    schedule=CronDataIntervalTimetable(NIGHTLY_CRON, timezone="UTC"),
    # early enough for any imported history (MovieLens starts in 1995): with catchup off it only bounds
    # the dates a backfill or `dags test` may process; tasks never run for dates before it
    start_date=pendulum.datetime(1990, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,  # runs share the model registry and the champion alias
    doc_md=__doc__,
    tags=["recsys"],
    default_args={**RETRIES, "on_failure_callback": alert_callbacks(TASK_FAILED),
                  "on_retry_callback": alert_callbacks(TASK_RETRY)},
    params=dag_params(),
)
def recsys_nightly() -> None:
    prepare() >> augmentation() >> modelling() >> release()


recsys_nightly()
