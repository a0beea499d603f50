"""The command line every job shares: --ds, --set overrides, logging, and the result line."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from recsys.core.config import ConfigError, load_config
from recsys.core.gauges import HOST_VAR, send_configured
from recsys.core.lake import Lake

# Shared with the Airflow launcher (plugins/recsys_airflow/launch.py keeps its own copies, so Airflow never
# imports this package; tests/dags/test_plugins.py checks that they agree).
RESULT_MARKER = "RECSYS_RESULT "
DATA_QUALITY_EXIT = 65  # EX_DATAERR: the input data is wrong; retrying will not help
CONFIG_EXIT = 78  # EX_CONFIG: the configuration is invalid; retrying will not help


class DataQualityError(Exception):
    """The data failed a quality check; the run must stop before training, without retries."""


log = logging.getLogger("recsys")


def iso_date(value: str) -> str:
    """argparse type for YYYY-MM-DD dates."""
    try:
        return dt.date.fromisoformat(value).isoformat()
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a date YYYY-MM-DD, got {value!r}") from None


def job_parser(description: str, *, needs_ds: bool = True) -> argparse.ArgumentParser:
    """An argument parser with the flags every job takes."""
    parser = argparse.ArgumentParser(description=description)
    if needs_ds:
        parser.add_argument("--ds", type=iso_date, required=True, help="the run's date, YYYY-MM-DD")
    parser.add_argument("--lake", default=None, help="lake root (default $RECSYS_LAKE or $RECSYS_HOME/lake)")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
        help="override a config value (repeatable); values are read as YAML",
    )
    return parser


class JobContext:
    """What a job needs after parsing: arguments, effective config and the lake."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.ds: str | None = getattr(args, "ds", None)
        self.config = load_config(args.overrides)
        self.lake = Lake(args.lake)


def run_job(
    parser: argparse.ArgumentParser, body: Callable[[JobContext], dict[str, Any]], argv: Sequence[str] | None
) -> dict[str, Any]:
    """Parse ``argv``, set up logging, run ``body`` and print its small result as the last line.

    The last stdout line, ``RECSYS_RESULT {json}``, is what the Airflow launcher passes on as XCom. A
    failed data-quality check exits with ``DATA_QUALITY_EXIT`` and an invalid config (checked before
    ``body`` starts) with ``CONFIG_EXIT``, each after one error line; the launcher does not retry either.
    With ``RECSYS_STATSD_HOST`` set, the job's wall time, failed or not, is sent as the StatsD gauge
    ``<prefix>.stage.<job>.seconds`` (:func:`job_name`); a failed send is a warning, never the job's failure.
    """
    start = time.monotonic()
    args = parser.parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
    try:
        result = body(JobContext(args))
    except ConfigError as err:
        log.error("configuration error: %s", err)
        sys.exit(CONFIG_EXIT)
    except DataQualityError as err:
        log.error("data quality check failed: %s", err)
        sys.exit(DATA_QUALITY_EXIT)
    finally:
        if os.environ.get(HOST_VAR, "").strip():
            send_configured({f"stage.{job_name(body)}.seconds": time.monotonic() - start})
    print(RESULT_MARKER + json.dumps(result, sort_keys=True, default=str), flush=True)
    return result


def job_name(body: Callable[..., Any]) -> str:
    """The job a body belongs to: ``clean`` for ``jobs.clean``'s, also when that module runs as ``__main__``.

    ``python -m jobs.clean`` and spark-submit's ``runpy.run_module("jobs.clean", run_name="__main__")`` both
    leave the module's real name in its ``__spec__``.
    """
    spec = getattr(body, "__globals__", {}).get("__spec__")
    module = spec.name if spec is not None else getattr(body, "__module__", None) or "job"
    return module.rsplit(".", 1)[-1]
