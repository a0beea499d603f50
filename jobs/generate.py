"""Generate synthetic raw interaction logs and their item catalogue: the pipeline's built-in default source.

What is drawn, and how, is :mod:`recsys.data.synthetic`; this program takes the ``generate`` config
section (flags win), draws the rows and lands them with :func:`recsys.data.rawzone.write_raw`, and the
catalogue with :func:`recsys.data.catalogue.write_raw_catalogue` on the first day, so every date of the
world has it (items that arrive later are in the catalogue before their first event).
"""

from __future__ import annotations

import argparse
import datetime as dt
from collections.abc import Sequence
from typing import Any

from recsys.core.cli import JobContext, iso_date, job_parser, run_job
from recsys.data.catalogue import write_raw_catalogue
from recsys.data.rawzone import write_raw
from recsys.data.synthetic import SOURCE, SyntheticSpec, synthesize, synthetic_catalogue


def build_parser() -> argparse.ArgumentParser:
    """The command line of the generator; unset flags fall back to the ``generate`` config section."""
    parser = job_parser("Generate synthetic raw interaction logs into the raw zone.", needs_ds=False)
    parser.add_argument("--end-date", type=iso_date, default=None, help="last day generated (YYYY-MM-DD)")
    parser.add_argument("--days", type=int, default=None, help="number of daily partitions")
    parser.add_argument("--users", type=int, default=None, help="users at the start")
    parser.add_argument("--items", type=int, default=None, help="items at the start")
    parser.add_argument("--events", type=int, default=None, help="clean-looking events over all days")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: the config's seed)")
    parser.add_argument("--replace", action="store_true", help="land a source other than the one the lake holds: empties the lake first (raw zone, every derived zone, the index)")
    return parser


def body(ctx: JobContext) -> dict[str, Any]:
    """Synthesise the logs of the configured days and land them in the raw zone."""
    args = ctx.args
    spec = SyntheticSpec.from_config(
        ctx.config["generate"], ctx.config["seed"] if args.seed is None else args.seed,
        end_date=args.end_date, days=args.days, users=args.users, items=args.items, events=args.events,
    )
    table, day = synthesize(spec)
    result = write_raw(ctx.lake, table, day, source=SOURCE, src=None, has_timestamp=True, replace=args.replace)
    first_day = (dt.date.fromisoformat(spec.end_date) - dt.timedelta(days=spec.days - 1)).isoformat()
    result["catalogue_rows"] = write_raw_catalogue(ctx.lake, synthetic_catalogue(spec), first_day)
    return result


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the generator from the command line."""
    return run_job(build_parser(), body, argv)


if __name__ == "__main__":
    main()
