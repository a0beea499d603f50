"""Generate synthetic raw interaction logs into the raw zone: the pipeline's built-in default source.

What is drawn, and how, is :mod:`recsys.data.synthetic`; this program takes the ``generate`` config
section (flags win), draws the rows and lands them with :func:`recsys.data.rawzone.write_raw`.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from recsys.core.cli import JobContext, iso_date, job_parser, run_job
from recsys.data.rawzone import write_raw
from recsys.data.synthetic import SOURCE, SyntheticSpec, synthesize


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
    return write_raw(ctx.lake, table, day, source=SOURCE, src=None, has_timestamp=True, replace=args.replace)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the generator from the command line."""
    return run_job(build_parser(), body, argv)


if __name__ == "__main__":
    main()
