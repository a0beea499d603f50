"""bin/recsys, the one command line for what data engineers do by hand: run-on, demo, rerun, status, report.

The programs it runs (``jobs.*``, ``recsys.data.replace``, ``airflow``) run as subprocesses: this package
never imports jobs/ or Airflow. ``$PYTHON`` and ``$AIRFLOW_BIN`` name other interpreters for them (the
tests put recording stubs there); by default this interpreter and the ``airflow`` beside it.

Why ``rerun`` goes through ``airflow dags test`` (also for one task): a rerun stays a DAG run of the date in
the metadata DB, with the earlier run's conf, the launcher (spark-submit for the Spark stages, the params'
overrides, the alert callback) and a state that ``airflow dags state`` reports. The tasks not asked for are
marked success with ``--mark-success-pattern`` (Airflow's own switch for this) and read what the lake holds.
``airflow tasks test`` records no state and ``python -m jobs.T`` skips the launcher and the run's conf.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recsys.core.cli import RESULT_MARKER, iso_date
from recsys.core.config import REPO_ROOT
from recsys.core.lake import (
    METRICS_FILE,
    RECS_SUMMARY_FILE,
    REGISTRATION_FILE,
    REPORT_FILE,
    Lake,
    read_json,
    recsys_home,
)

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_NO_DATE = 0, 1, 2, 3
EXIT_CODES = f"""exit codes:
  {EXIT_OK}  done
  {EXIT_FAILED}  a run failed: the import, a DAG run that did not end in success, the opener
  {EXIT_USAGE}  usage: a bad or missing argument, a SRC that is no file, a bad NAME or WINDOW_DAYS
  {EXIT_NO_DATE}  no such date: the lake holds no partition (or file) the command needs for the date"""
DAG_ID = "recsys_nightly"
DEMO_DATE = "2026-01-31"
HEADLINE_METRIC = "ndcg@10"  # the gate's metric (conf/recsys.yaml register.gate_metric)
NAME_RULE = re.compile(r"[A-Za-z0-9_.-]+")
WINDOW_RULE = re.compile(r"[1-9][0-9]{0,5}")
FORMATS = "movielens-100k|movielens-1m|movielens-latest|csv"
# run-on's optional ingest flags, in the order they reach jobs.ingest; an empty value counts as unset
INGEST_FLAGS = ("--mapping", "--sep", "--encoding", "--items", "--item-mapping")


@dataclass(frozen=True)
class Stage:
    """A task of the DAG, the lake zone it commits for the date and the tasks it waits for."""

    task: str
    zone: str
    upstream: tuple[str, ...] = ()


# recsys_nightly's tasks in a topological order (tests/test_frontdoor.py checks them against dags/)
STAGES: tuple[Stage, ...] = (
    Stage("clean", "clean"),
    Stage("catalogue", "catalogue"),
    Stage("tables", "tables", ("clean", "catalogue")),
    Stage("embed", "embed", ("tables",)),
    Stage("augment", "augment", ("embed",)),
    Stage("expand", "examples", ("augment",)),
    Stage("train", "models", ("expand",)),
    Stage("evaluate", "eval", ("train",)),
    Stage("register", "registry", ("evaluate",)),
    Stage("publish", "recs", ("register",)),
    Stage("report", "reports", ("publish",)),
)
IMPORT = Stage("import", "raw")  # the raw zone, filled by jobs.ingest or jobs.generate before any run
TASKS = {stage.task: stage for stage in STAGES}


class FrontDoorError(Exception):
    """A failure the front door reports in one line and turns into its exit code."""

    code = EXIT_FAILED


class UsageError(FrontDoorError):
    code = EXIT_USAGE


class NoSuchDate(FrontDoorError):
    code = EXIT_NO_DATE


# ---------------------------------------------------------------------------------------------- environment

def environment(base: Mapping[str, str]) -> dict[str, str]:
    """The children's environment: ``base`` with the Makefile's defaults for what it leaves unset.

    So ``bin/recsys`` by hand finds the same state as ``make``: ``$RECSYS_HOME`` (default ``.recsys``), its
    lake, Airflow home and MLflow store, the DAGs and plugins of this checkout, the checkout on PYTHONPATH and
    this interpreter's scripts first on PATH.
    """
    env = dict(base)
    home = env.setdefault("RECSYS_HOME", str(REPO_ROOT / ".recsys"))
    env.setdefault("RECSYS_LAKE", f"{home}/lake")
    airflow_home = env.setdefault("AIRFLOW_HOME", f"{home}/airflow")
    env.setdefault("AIRFLOW__CORE__DAGS_FOLDER", str(REPO_ROOT / "dags"))
    env.setdefault("AIRFLOW__CORE__PLUGINS_FOLDER", str(REPO_ROOT / "plugins"))
    env.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    env.setdefault("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", f"sqlite:///{airflow_home}/airflow.db")
    env.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{home}/mlflow/mlflow.db")
    env.setdefault("RECSYS_MLFLOW_ARTIFACTS", f"{home}/mlflow/artifacts")
    paths = [str(REPO_ROOT), str(REPO_ROOT / "plugins"), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    # the venv's console scripts first, as make puts them (uvicorn for `mlflow models serve`)
    scripts = [str(Path(sys.executable).parent), *filter(None, env.get("PATH", "").split(os.pathsep))]
    env["PATH"] = os.pathsep.join(dict.fromkeys(scripts))
    return env


def python_bin(env: Mapping[str, str]) -> str:
    return env.get("PYTHON") or sys.executable


def airflow_bin(env: Mapping[str, str]) -> str:
    return env.get("AIRFLOW_BIN") or str(Path(sys.executable).with_name("airflow"))


def dataset_lake(name: str, home: Path | None = None) -> Path:
    """The lake of a ``run-on`` dataset: ``$RECSYS_HOME/datasets/<name>/lake``."""
    return (home or recsys_home()) / "datasets" / name / "lake"


def model_name(name: str) -> str:
    """The registered model of a ``run-on`` dataset."""
    return f"recsys-augment-{name}"


def dataset_name(fmt: str, src: str, name: str | None = None) -> str:
    """``name`` when given (checked), else ``<format>-<file stem>-<8 hex of sha256(resolved path)>``.

    The hash keeps two files of the same name in different folders apart; the stem is the file name without
    its last suffix, every byte outside ``A-Za-z0-9_.-`` replaced by ``-`` (as bin/run-on named datasets before it was folded in here).

    Raises:
        UsageError: ``name`` holds other characters or is ``.`` or ``..``.
    """
    if name:
        return checked_name(name)
    real = os.fsencode(Path(src).resolve())
    stem = os.path.basename(real).rsplit(b".", 1)[0]
    safe = re.sub(rb"[^A-Za-z0-9_.-]", b"-", os.fsencode(fmt) + b"-" + stem).decode("ascii")
    return f"{safe}-{hashlib.sha256(real).hexdigest()[:8]}"


def checked_name(name: str) -> str:
    """``name`` if it can name a dataset's folder: letters, digits, ``_``, ``.``, ``-``, not ``.`` or ``..``.

    Raises:
        UsageError: it cannot.
    """
    if not NAME_RULE.fullmatch(name) or name in (".", ".."):
        raise UsageError(f"NAME may hold only letters, digits, '_', '.' and '-' (and is not . or ..), got: {name}")
    return name


def selected_lake(args: argparse.Namespace, env: dict[str, str]) -> Lake:
    """The lake of ``--lake`` or ``--dataset`` (exported to ``env`` for the children), else ``$RECSYS_LAKE``."""
    if args.dataset:
        name = checked_name(args.dataset)
        root = dataset_lake(name, Path(env["RECSYS_HOME"]))
        if not root.is_dir():
            known = sorted(p.name for p in root.parents[1].iterdir()) if root.parents[1].is_dir() else []
            raise NoSuchDate(f"no dataset {name!r}: {root} is missing (datasets: {', '.join(known) or 'none'})")
        env["RECSYS__REGISTER__MODEL_NAME"] = env.get("RECSYS__REGISTER__MODEL_NAME") or model_name(name)
    else:
        root = Path(args.lake or env["RECSYS_LAKE"])
    env["RECSYS_LAKE"] = str(root.resolve())
    return Lake(root.resolve())


# ---------------------------------------------------------------------------------------------- subprocesses

def run(cmd: Sequence[str], env: Mapping[str, str], what: str) -> None:
    """Run ``cmd`` with its output on the terminal; a non-zero exit is a failed run."""
    code = subprocess.run(list(cmd), env=dict(env)).returncode
    if code != 0:
        raise FrontDoorError(f"{what} failed (exit {code}; see its log above)")


def dag_run_state(airflow: str, ds: str, env: Mapping[str, str]) -> tuple[str, dict[str, Any] | None]:
    """The state and conf of the date's DAG run, as ``airflow dags state`` prints them (``None``: no run).

    Raises:
        FrontDoorError: ``airflow dags state`` failed (no metadata DB, the DAG never parsed).
    """
    done = subprocess.run([airflow, "dags", "state", DAG_ID, ds], env=dict(env), capture_output=True, text=True)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        raise FrontDoorError(f"could not read the state of the DAG run for {ds}: {done.stderr.strip()[-500:]}")
    state, _, conf = lines[-1].partition(", ")  # "success, {conf}" or "success" or "None"
    return state, json.loads(conf) if conf else None


def dag_test_argv(airflow: str, ds: str, conf: Mapping[str, Any] | None = None,
                  tasks: Sequence[str] | None = None) -> list[str]:
    """``airflow dags test`` of the date: the whole DAG, or only ``tasks`` (the others marked success)."""
    argv = [airflow, "dags", "test", DAG_ID, ds]
    if conf:
        argv += ["-c", json.dumps(conf)]
    if tasks:
        argv += ["--mark-success-pattern", mark_success_pattern(tasks)]
    return argv


def mark_success_pattern(tasks: Sequence[str]) -> str:
    """A regex that Airflow fullmatches against every task id: it matches all ids but ``tasks``."""
    return "(?!(?:" + "|".join(re.escape(task) for task in tasks) + ")$).*"


def run_dag(ds: str, env: Mapping[str, str], conf: Mapping[str, Any] | None = None,
            tasks: Sequence[str] | None = None) -> None:
    """Run the DAG for ``ds`` embedded and insist that the run ends in success.

    ``dags test`` exits 1 when the run ends failed but 0 in any other state, so the run's state is asked
    for afterwards (the latest run of the date, the one just made).
    """
    airflow = airflow_bin(env)
    if subprocess.run(dag_test_argv(airflow, ds, conf, tasks), env=dict(env)).returncode != 0:
        raise FrontDoorError(f"the DAG run for {ds} failed (see the task logs above)")
    state, _ = dag_run_state(airflow, ds, env)
    if state != "success":
        raise FrontDoorError(f"the DAG run for {ds} ended '{state}', not success")


# ---------------------------------------------------------------------------------------------- commands

def cmd_run_on(args: argparse.Namespace, env: dict[str, str]) -> int:
    """Import a file into the dataset's own lake and run the DAG for the last date in it."""
    if not args.format or not args.src:
        raise UsageError("--format and --src need a value")
    if not Path(args.src).is_file():
        raise UsageError(f"no such file: {args.src}")
    if args.window_days and not WINDOW_RULE.fullmatch(args.window_days):
        raise UsageError(f"WINDOW_DAYS must be a whole number of days, got: {args.window_days}")
    name = dataset_name(args.format, args.src, args.name)
    py = python_bin(env)
    env["RECSYS_LAKE"] = str(dataset_lake(name, Path(env["RECSYS_HOME"])))
    env["RECSYS__REGISTER__MODEL_NAME"] = env.get("RECSYS__REGISTER__MODEL_NAME") or model_name(name)
    if args.replace:
        # --replace of another source empties the lake; the registered model's aliases go too, before the
        # import so that a retry after a crash still finds the old source (recsys.data.replace)
        run([py, "-m", "recsys.data.replace", f"--lake={env['RECSYS_LAKE']}", f"--source={args.format}",
             f"--src={args.src}", f"--model={env['RECSYS__REGISTER__MODEL_NAME']}"], env, "releasing the old model")
    ingest = [py, "-m", "jobs.ingest", f"--format={args.format}", f"--src={args.src}",
              *(["--replace"] if args.replace else []),
              *(f"{flag}={value}" for flag in INGEST_FLAGS if (value := getattr(args, flag[2:].replace("-", "_"))))]
    done = subprocess.run(ingest, env=env, stdout=subprocess.PIPE, text=True)
    if done.returncode != 0:
        raise FrontDoorError(f"the import of {args.src} failed (exit {done.returncode}; see its log above)")
    result = import_result(done.stdout)
    ds, window = result["last_date"], int(args.window_days or result["window_days"])
    print(f"recsys run-on: {name}: imported {imported_text(result)}")
    print(f"recsys run-on: {name}: {result['window_days']} days of data up to {ds}; training window {window} days; "
          f"lake {env['RECSYS_LAKE']}", flush=True)
    run_dag(ds, env, {"overrides": {"window_days": window}})
    run([py, "-m", "jobs.summary", "--ds", ds, "--set", f"window_days={window}"], env, "the summary")
    return EXIT_OK


def import_result(stdout: str) -> dict[str, Any]:
    """The import's ``RECSYS_RESULT`` (its last stdout line), with a last date checked to be YYYY-MM-DD."""
    lines = stdout.strip().splitlines()
    if not lines or not lines[-1].startswith(RESULT_MARKER):
        raise FrontDoorError(f"the import reported no result: {stdout.strip()[-500:]!r}")
    result = json.loads(lines[-1][len(RESULT_MARKER):])
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", str(result.get("last_date"))):
        raise FrontDoorError(f"the import reported no last date: {result}")
    return result


def imported_text(result: Mapping[str, Any]) -> str:
    """One line on what the import detected in the file."""
    return (f"{result['rows']} rows; timestamps in {result['ts_unit']}; values: {result['value_kind']}; "
            f"{result['future_rows']} rows later than the import (quarantined as future_timestamp); "
            f"{result.get('catalogue_rows', 0)} catalogue items")


def cmd_demo(args: argparse.Namespace, env: dict[str, str]) -> int:
    """Synthetic data up to the date, one DAG run for it, the summary."""
    py = python_bin(env)
    run([py, "-m", "jobs.generate", "--end-date", args.date], env, "generating the synthetic data")
    run_dag(args.date, env)
    run([py, "-m", "jobs.summary", "--ds", args.date], env, "the summary")
    return EXIT_OK


def rerun_tasks(task: str, downstream: bool) -> list[str]:
    """``task``, and with ``downstream`` every task after it, in the DAG's order."""
    chosen = {task}
    if downstream:
        for stage in STAGES:
            if chosen & set(stage.upstream):
                chosen.add(stage.task)
    return [stage.task for stage in STAGES if stage.task in chosen]


def missing_inputs(lake: Lake, ds: str, tasks: Sequence[str]) -> list[Path]:
    """The partitions the rerun of ``tasks`` reads but does not write: the raw date and, for tasks the run
    marks success, their committed outputs."""
    needed = [IMPORT.zone] + [TASKS[up].zone for task in tasks for up in TASKS[task].upstream if up not in tasks]
    return [lake.path(zone, ds) for zone in dict.fromkeys(needed) if not lake.path(zone, ds).is_dir()]


def cmd_rerun(args: argparse.Namespace, env: dict[str, str]) -> int:
    """Rerun a date, or one task of it (with ``--downstream``, the tasks after it too), as a DAG run."""
    if args.downstream and not args.task:
        raise UsageError("--downstream needs --task")
    lake = selected_lake(args, env)
    tasks = rerun_tasks(args.task, args.downstream) if args.task else None
    missing = missing_inputs(lake, args.ds, tasks or [])
    if missing and missing[0] == lake.path(IMPORT.zone, args.ds):
        raise NoSuchDate(f"no such date: {missing[0]} is missing ({dates_text(lake, [IMPORT.zone])})")
    if missing:
        raise NoSuchDate(f"cannot rerun {', '.join(tasks or [])} of {args.ds} alone: {', '.join(map(str, missing))} "
                         "missing; rerun the tasks before it (or the whole date) first")
    if args.conf is not None:
        try:
            conf = json.loads(args.conf)
        except ValueError as err:
            raise UsageError(f"--conf is not JSON: {err}") from None
    else:
        conf = previous_conf(args.ds, env)
    print(f"recsys rerun: {args.ds}: {', '.join(tasks) if tasks else 'every task'}; conf {json.dumps(conf)}; "
          f"lake {lake.root}", flush=True)
    run_dag(args.ds, env, conf, tasks)
    print(f"recsys rerun: {args.ds}: the DAG run succeeded; see `bin/recsys status --ds {args.ds}`")
    return EXIT_OK


def previous_conf(ds: str, env: Mapping[str, str]) -> dict[str, Any] | None:
    """The conf of the date's earlier run, so a rerun keeps its overrides (``dags test`` replaces the run);
    ``None`` when there is none or Airflow cannot say."""
    try:
        return dag_run_state(airflow_bin(env), ds, env)[1]
    except FrontDoorError:
        return None


@dataclass(frozen=True)
class StageState:
    """Whether a stage's partition of a date exists, and when it was committed."""

    stage: str
    zone: str
    path: Path
    written: dt.datetime | None


def latest_date(lake: Lake, zones: Sequence[str], what: str) -> str:
    """The latest date any of ``zones`` holds.

    Raises:
        NoSuchDate: none of them holds a date (the message says the lake holds no ``what``).
    """
    dates = [d for zone in zones for d in lake.dates(zone)]
    if not dates:
        raise NoSuchDate(f"the lake at {lake.root} holds no {what} yet")
    return max(dates)


def stage_states(lake: Lake, ds: str) -> list[StageState]:
    """The import and every DAG stage: its partition of ``ds`` and the partition's modification time (UTC),
    the moment its complete staging folder was last written before the commit renamed it into place."""
    states = []
    for stage in (IMPORT, *STAGES):
        path = lake.path(stage.zone, ds)
        written = dt.datetime.fromtimestamp(path.stat().st_mtime, dt.UTC) if path.is_dir() else None
        states.append(StageState(stage.task, stage.zone, path, written))
    return states


def headline(lake: Lake, ds: str) -> dict[str, Any]:
    """The date's model NDCG@10, gate decision and users served, from eval/, registry/ and recs/;
    ``None`` values and a ``missing`` list for the files that are not there."""
    files = {"eval": METRICS_FILE, "registry": REGISTRATION_FILE, "recs": RECS_SUMMARY_FILE}
    found = {zone: read_json(p) for zone, name in files.items() if (p := lake.path(zone, ds) / name).is_file()}
    metrics, registration, recs = (found.get(zone, {}) for zone in files)
    gate = registration.get("gate", {})
    return {
        HEADLINE_METRIC: metrics.get("models", {}).get("model", {}).get("all", {}).get(HEADLINE_METRIC),
        "promoted": gate.get("promoted"), "gate": gate.get("reason"), "version": registration.get("version"),
        "champion": registration.get("champion"),
        "users_served": recs.get("users_served"), "users_in_window": recs.get("users_in_window"),
        "missing": [f"{zone}/ds={ds}/{name}" for zone, name in files.items() if zone not in found],
    }


def render_status(ds: str, lake_root: Path, states: Sequence[StageState], head: Mapping[str, Any]) -> str:
    """The status screen of a date (pure, for tests)."""
    lines = [f"recsys status: {ds} in {lake_root}", "", f"  {'stage':<10} {'partition':<12} {'written (UTC)':<20}"]
    for state in states:
        when = state.written.strftime("%Y-%m-%d %H:%M:%S") if state.written else "missing"
        lines.append(f"  {state.stage:<10} {state.zone + '/':<12} {when}")
    ndcg, promoted = head[HEADLINE_METRIC], head["promoted"]
    lines += [
        "",
        f"model {HEADLINE_METRIC}: " + ("-" if ndcg is None else f"{ndcg:.4f}"),
        "promoted: " + ("-" if promoted is None else f"{'yes' if promoted else 'no'} (version {head['version']}; "
                                                       f"champion version {head['champion']}; {head['gate']})"),
        "users served: " + ("-" if head["users_served"] is None
                            else f"{head['users_served']} of {head['users_in_window']} in the window"),
    ]
    if head["missing"]:
        lines.append(f"not in the lake: {', '.join(head['missing'])}")
    return "\n".join(lines) + "\n"


def cmd_status(args: argparse.Namespace, env: dict[str, str]) -> int:
    """Print, per stage, whether the date's partition exists and when it was written, then the headline."""
    lake = selected_lake(args, env)
    zones = [stage.zone for stage in (IMPORT, *STAGES)]
    ds = args.ds or latest_date(lake, zones, "dated partition")
    states = stage_states(lake, ds)
    if not any(state.written for state in states):
        raise NoSuchDate(f"no partition of {ds} in the lake at {lake.root} ({dates_text(lake, zones)})")
    sys.stdout.write(render_status(ds, lake.root, states, headline(lake, ds)))
    return EXIT_OK


def dates_text(lake: Lake, zones: Sequence[str]) -> str:
    dates = sorted({d for zone in zones for d in lake.dates(zone)})
    return f"its dates: {dates[0]} .. {dates[-1]}, {len(dates)} in all" if dates else "it holds no dates"


def opener() -> str:
    """The platform's program that opens a file in its default application."""
    return "open" if sys.platform == "darwin" else "xdg-open"


def cmd_report(args: argparse.Namespace, env: dict[str, str]) -> int:
    """Print the date's report path, or open it."""
    lake = selected_lake(args, env)
    ds = args.ds or latest_date(lake, ["reports"], "report")
    path = lake.path("reports", ds) / REPORT_FILE
    if not path.is_file():
        raise NoSuchDate(f"no report of {ds}: {path} is missing ({dates_text(lake, ['reports'])})")
    print(path, flush=True)
    if args.open:
        program = shutil.which(opener(), path=env.get("PATH"))
        if program is None:
            raise FrontDoorError(f"{opener()} is not on PATH; open {path} yourself")
        run([program, str(path)], env, opener())
    return EXIT_OK


# ---------------------------------------------------------------------------------------------- parser

def parser() -> argparse.ArgumentParser:
    """The front door's arguments: one subcommand each, every help ending in the exit codes."""
    fmt = argparse.RawDescriptionHelpFormatter
    top = argparse.ArgumentParser(
        prog="recsys", formatter_class=fmt, epilog=EXIT_CODES,
        description="The command line of recsys-augment: import and run, the demo, reruns, a date's status and "
                    "report. Run from the checkout (make targets call it); state lives under $RECSYS_HOME "
                    "(default .recsys/).")
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    lake_options = argparse.ArgumentParser(add_help=False)
    where = lake_options.add_mutually_exclusive_group()
    where.add_argument("--lake", help="lake root (default $RECSYS_LAKE or $RECSYS_HOME/lake)")
    where.add_argument("--dataset", metavar="NAME",
                       help="the lake of a run-on dataset, $RECSYS_HOME/datasets/NAME/lake (and its model)")

    def command(name: str, summary: str, description: str,
                parents: Sequence[argparse.ArgumentParser] = ()) -> argparse.ArgumentParser:
        return commands.add_parser(name, help=summary, description=description, epilog=EXIT_CODES,
                                   formatter_class=fmt, parents=list(parents))

    run_on = command(
        "run-on", "import a file into its dataset's lake and run the DAG for its last date",
        "Import a dataset into its own lake ($RECSYS_HOME/datasets/<dataset>/lake, registered model "
        "recsys-augment-<dataset>) and run the nightly DAG for the last date in it, then print the summary. "
        "The dataset is NAME, or <format>-<file stem>-<8 hex of sha256(resolved path)>. Every value is passed "
        "on as one argument, never evaluated; an empty value counts as unset.")
    run_on.add_argument("--format", required=True, metavar="FORMAT", help=FORMATS)
    run_on.add_argument("--src", required=True, metavar="FILE", help="the interactions file")
    run_on.add_argument("--mapping", help="csv: user=..,item=..[,value=..,ts=..,event=..]")
    run_on.add_argument("--sep", help="csv: the separator (tab for a tab)")
    run_on.add_argument("--encoding", help="the file's text encoding")
    run_on.add_argument("--items", metavar="FILE", help="an item catalogue file")
    run_on.add_argument("--item-mapping", help="the catalogue's columns: item=..,text=..+..")
    run_on.add_argument("--window-days", metavar="N", help="training window in days (default: the whole history)")
    run_on.add_argument("--name", help="the dataset's name: letters, digits, '_', '.', '-'")
    run_on.add_argument("--replace", action="store_true",
                        help="a different file under an existing NAME replaces the old source (and its models' "
                             "aliases); refused without it")
    run_on.set_defaults(handler=cmd_run_on)

    demo = command("demo", "synthetic data, one DAG run, the summary (make demo)",
                   "Generate synthetic data up to DATE, run the nightly DAG for DATE, print where everything is.")
    demo.add_argument("--date", type=iso_date, default=DEMO_DATE, help=f"the run's date (default {DEMO_DATE})")
    demo.set_defaults(handler=cmd_demo)

    rerun = command(
        "rerun", "rerun a date, or one task of it (and the tasks after it), as a DAG run",
        "Rerun a date through `airflow dags test` in the embedded setup: a DAG run of the date, recorded in the "
        "metadata DB with the earlier run's conf (--conf to change it), each task launched as the DAG launches "
        "it. With --task only that task runs (with --downstream, also every task after it); the others are "
        "marked success (--mark-success-pattern) and their partitions of the date must exist.",
        [lake_options])
    rerun.add_argument("--ds", type=iso_date, required=True, help="the date, YYYY-MM-DD")
    rerun.add_argument("--task", choices=list(TASKS), help="the one task to rerun")
    rerun.add_argument("--downstream", action="store_true", help="with --task: rerun the tasks after it too")
    rerun.add_argument("--conf", help="the run's conf as JSON (default: the earlier run's)")
    rerun.set_defaults(handler=cmd_rerun)

    status = command(
        "status", "per stage: the date's partition and when it was written; NDCG@10, promoted, users served",
        "Per stage of the DAG, whether the date's lake partition exists and when it was written (UTC), then the "
        "headline: the model's NDCG@10 (eval/), whether it was promoted (registry/), users served (recs/). "
        "Reads only the lake. DATE defaults to the latest date of any of these zones.", [lake_options])
    status.add_argument("--ds", type=iso_date, help="the date (default: the latest in the lake)")
    status.set_defaults(handler=cmd_status)

    report = command("report", "print the path of a date's report, or open it",
                     "Print the path of reports/ds=DATE/report.html; --open opens it with the platform's "
                     "opener (xdg-open, open on macOS). DATE defaults to the latest date with a report.",
                     [lake_options])
    report.add_argument("--ds", type=iso_date, help="the date (default: the latest with a report)")
    report.add_argument("--open", action="store_true", help="open the report")
    report.set_defaults(handler=cmd_report)
    return top


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Run one subcommand; the exit code (see :data:`EXIT_CODES`). argparse exits 2 on a usage error."""
    args = parser().parse_args(argv)
    env = environment(os.environ if environ is None else environ)
    try:
        return args.handler(args, env)
    except FrontDoorError as err:
        print(f"recsys {args.command}: {err}", file=sys.stderr)
        return err.code


if __name__ == "__main__":
    sys.exit(main())
