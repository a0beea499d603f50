"""Replacing a lake's source: the registered model's aliases go with the old source.

An import with ``--replace`` of another source empties the lake (:func:`recsys.data.rawzone.claim_raw_zone`).
A ``champion`` or ``challenger`` of the old source would then be judged, kept and served on the new
source's ids, so both aliases are removed, before the import: a retry after a crash still finds the
old source claimed and removes them again.

Command line (bin/recsys run-on): ``python -m recsys.data.replace --lake DIR --source FORMAT --src FILE --model NAME``;
it does nothing when the lake holds no other source or the model is not registered.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

from recsys.core.lake import Lake
from recsys.data.rawzone import holds_other_source

log = logging.getLogger(__name__)

ALIASES = ("champion", "challenger")  # the aliases that point at a model of the lake's source


def release_aliases(lake: Lake, source: str, src: str, model: str) -> list[str]:
    """Remove the ``model``'s aliases when landing ``source``/``src`` would replace another source.

    Args:
        lake: the lake about to take the import.
        source: the format of the import (``csv``, ``movielens-1m``, ...).
        src: the file to import; resolved as the import resolves it.
        model: the registered model's name (``register.model_name``).

    Returns:
        The aliases removed, sorted.
    """
    if not holds_other_source(lake, source, str(Path(src).resolve())):
        return []
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from recsys.core.tracking import tracking_uri

    client = MlflowClient(tracking_uri(), registry_uri=tracking_uri())  # the registry the jobs use
    try:
        aliases = client.get_registered_model(model).aliases
    except MlflowException as err:
        if err.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        return []
    removed = sorted(set(ALIASES) & set(aliases))
    for alias in removed:
        client.delete_registered_model_alias(model, alias)
        log.info("replacing another source: alias %s of %s removed", alias, model)
    return removed


def main(argv: Sequence[str] | None = None) -> list[str]:
    """Command line: remove the model's aliases before an import replaces the lake's source."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lake", required=True, type=Path, help="the lake root")
    parser.add_argument("--source", required=True, help="the format of the import")
    parser.add_argument("--src", required=True, help="the file to import")
    parser.add_argument("--model", required=True, help="the registered model's name")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    return release_aliases(Lake(args.lake), args.source, args.src, args.model)


if __name__ == "__main__":
    main()
