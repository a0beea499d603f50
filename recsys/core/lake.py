"""The lake's layout in one place, and the write-aside-then-commit rule that keeps dates atomic.

Layout under the lake root (``$RECSYS_LAKE``, by default ``$RECSYS_HOME/lake``)::

    raw/ds=YYYY-MM-DD/          raw event logs, all columns strings (jobs.generate, jobs.ingest)
    raw/_source.json            how the raw zone was filled, and the original id types
    raw_catalogue/ds=.../       the item catalogue as imported, all columns strings (jobs.ingest)
    catalogue/ds=.../           the clean catalogue, its quarantine and _reconciliation.json (jobs.catalogue)
    clean/ds=.../               typed, valid, deduplicated events with label and weight,
                                and _reconciliation.json (counts by outcome and reason)
    quarantine/ds=.../          rejected raw rows with a reason code
    index/{users,items}.parquet stable id -> index tables (append only)
    tables/ds=.../              COO interactions with split, matrices.npz (CSR per split),
                                users.parquet/items.parquet (index snapshot), _stats.json
    embed/ds=.../               each catalogue item's text embedding (jobs.embed); embed/_cache/ by text hash
    augment/ds=.../             GAN and content-generator outputs and quality.json
    examples/ds=.../            expanded training examples with their source, _summary.json
    models/ds=.../              trained recommenders (.keras) and training facts
    eval/ds=.../                metrics.json: model, ablation and baselines on held-out data
    registry/ds=.../            registration.json: MLflow run, version, gate decision
    reports/ds=.../             report.html, the run at a glance
    recs/ds=.../                published top-K recommendations (the output contract)
    recs_new/ds=.../            the same among the new items only

Files whose names start with ``_`` sit beside Parquet parts; Spark and pyarrow skip them.

A partition directory appears only by an atomic rename of a complete staging directory, so
readers never see half a date.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

from recsys.core.columns import (
    CACHE_COLUMNS,
    CATALOGUE_COLUMNS,
    CATALOGUE_QUARANTINE_COLUMNS,
    CLEAN_COLUMNS,
    CONFIDENCE,
    EMBEDDING_COLUMNS,
    EXAMPLE_COLUMNS,
    INTERACTION_COLUMNS,
    ITEM_ID,
    ITEM_IDX,
    QUARANTINE_COLUMNS,
    RAW_CATALOGUE_COLUMNS,
    RAW_COLUMNS,
    RECS_COLUMNS,
    SCORE,
    SYN_USER,
    USER_ID,
    USER_IDX,
)
from recsys.core.config import REPO_ROOT

if TYPE_CHECKING:
    import pandas as pd

ZONES = (
    "raw", "raw_catalogue", "clean", "catalogue", "quarantine", "tables", "embed", "augment", "examples", "models",
    "eval", "registry", "reports", "recs", "recs_new",
)

# Every file name of the lake, defined once; CONTRACT below says which zone holds it and what it holds.
PART_FILE = "part-00000.parquet"  # the one Parquet part a pyarrow-written partition holds
SOURCE_FILE = "_source.json"  # raw/: how the raw zone was filled, and the original id types
DIGEST_FILE = "_digests.json"  # raw/: sha256 of each raw date, to reclean the dates a re-import changed
RECONCILIATION_FILE = "_reconciliation.json"  # clean/ds=D: counts by outcome and reason
REJECTED_DIR = "_rejected"  # quarantine/_rejected/ds=D: the reconciliation of a run the quality gate stopped
USERS_FILE = "users.parquet"  # index/ and tables/ds=D: user_id -> user_idx
ITEMS_FILE = "items.parquet"  # index/ and tables/ds=D: item_id -> item_idx
INTERACTIONS_DIR = "interactions"  # tables/ds=D: the COO interactions with their split
MATRICES_FILE = "matrices.npz"  # tables/ds=D: CSR per split plus the window's history and seen pairs
STATS_FILE = "_stats.json"  # tables/ds=D: sizes, density and quantiles of the window
CATALOGUE_FILE = "catalogue.parquet"  # catalogue/ds=D: the clean item catalogue (id, title, text, hash)
CATALOGUE_QUARANTINE_FILE = "quarantine.parquet"  # catalogue/ds=D: rejected catalogue rows with the reason
EMBEDDINGS_FILE = "embeddings.parquet"  # embed/ds=D: each catalogue item's text embedding
EMBED_CACHE_DIR = "_cache"  # embed/_cache/<encoder>.parquet: embeddings by content hash, across dates
EMBED_SUMMARY_FILE = "_summary.json"  # embed/ds=D: the encoder, items encoded vs taken from the cache, speed
CONTENT_POS_FILE = "content_pos.parquet"  # augment/ds=D: content-generated positives of cold items
GAN_POS_FILE = "gan_pos.parquet"  # augment/ds=D: GAN positives of sparse users
SYN_USERS_FILE = "syn_users.parquet"  # augment/ds=D: synthetic users' items
CANDIDATES_FILE = "candidates.parquet"  # augment/ds=D: hard-negative candidates
GENERATOR_FILE = "generator.keras"  # augment/ds=D: the trained generator
QUALITY_FILE = "quality.json"  # augment/ds=D: how the synthetic data compare with the real
POPULARITY_PLOT = "quality_item_popularity.png"  # augment/ds=D: item popularity, real vs synthetic
LENGTH_PLOT = "quality_user_length.png"  # augment/ds=D: user history lengths, real vs synthetic
EXAMPLES_FILE = "examples.parquet"  # examples/ds=D: training examples with their source
EXAMPLES_SUMMARY_FILE = "_summary.json"  # examples/ds=D: examples by source and the samplers' facts
MODEL_FILE = "model.keras"  # models/ds=D: the recommender trained on the augmented examples
NOAUG_MODEL_FILE = "model_noaug.keras"  # models/ds=D: the same without augmentation (the ablation)
FINAL_MODEL_FILE = "model_final.keras"  # models/ds=D: refit on train + valid + test; served when present
COLD_MODEL_FILE = "model_cold.keras"  # models/ds=D: fitted without the cold items, with content_pos for them
COLD_NOCONTENT_MODEL_FILE = "model_cold_nocontent.keras"  # models/ds=D: the same without content_pos
COLD_ITEMS_FILE = "cold_items.parquet"  # models/ds=D: the items held out as simulated new items
TRAIN_FACTS_FILE = "train.json"  # models/ds=D: epochs, validation curve, alpha, EASE lambda
METRICS_FILE = "metrics.json"  # eval/ds=D: model, ablation and baselines on held-out data
REGISTRATION_FILE = "registration.json"  # registry/ds=D: the version, its gate decision, the date's champion
REPORT_FILE = "report.html"  # reports/ds=D: the run at a glance
RECS_FILE = "recs.parquet"  # recs/ds=D: the published top-K (the output contract)
RECS_SUMMARY_FILE = "_summary.json"  # recs/ds=D: users served / users in the window, rows, model version


@dataclass(frozen=True)
class LakeFile:
    """One file (or folder) of the lake: where it lives, what it holds, its columns or keys."""

    zone: str
    name: str
    holds: str
    columns: tuple[str, ...] = ()
    dated: bool = True  # under <zone>/ds=D/ (False: directly under <zone>/)


CONTRACT: tuple[LakeFile, ...] = (
    LakeFile("raw", PART_FILE, "raw event logs as they arrived, every column a string", RAW_COLUMNS),
    LakeFile("raw", SOURCE_FILE, "how the raw zone was filled (format, source, id types, ts unit, value kind)",
             dated=False),
    LakeFile("raw", DIGEST_FILE, "sha256 of each raw date; a re-import recleans the dates it changed", dated=False),
    LakeFile("raw_catalogue", PART_FILE, "the item catalogue as it was imported, every column a string",
             RAW_CATALOGUE_COLUMNS),
    LakeFile("catalogue", CATALOGUE_FILE, "the clean item catalogue: one row per item, its text and text hash",
             CATALOGUE_COLUMNS),
    LakeFile("catalogue", CATALOGUE_QUARANTINE_FILE, "rejected catalogue rows with the reason code",
             CATALOGUE_QUARANTINE_COLUMNS),
    LakeFile("catalogue", RECONCILIATION_FILE, "catalogue rows in = clean + duplicates + quarantined, by reason"),
    LakeFile("embed", EMBEDDINGS_FILE, "each catalogue item's text embedding (L2-normalised)", EMBEDDING_COLUMNS),
    LakeFile("embed", EMBED_SUMMARY_FILE, "the encoder, items encoded and taken from the cache, items a second"),
    LakeFile("embed", f"{EMBED_CACHE_DIR}/<encoder>.parquet", "embeddings by content hash, reused across dates",
             CACHE_COLUMNS, dated=False),
    LakeFile("clean", "part-*.parquet", "typed, valid, deduplicated events with label and weight", CLEAN_COLUMNS),
    LakeFile("clean", RECONCILIATION_FILE, "rows in = clean + duplicates + quarantined, by reason"),
    LakeFile("quarantine", "part-*.parquet", "rejected raw rows with the reason code", QUARANTINE_COLUMNS),
    LakeFile("quarantine", f"{REJECTED_DIR}/ds=D/{RECONCILIATION_FILE}",
             "the reconciliation of a date the quality gate stopped", dated=False),
    LakeFile("index", USERS_FILE, "stable user_id -> user_idx (append only)", (USER_ID, USER_IDX), dated=False),
    LakeFile("index", ITEMS_FILE, "stable item_id -> item_idx (append only)", (ITEM_ID, ITEM_IDX), dated=False),
    LakeFile("tables", f"{INTERACTIONS_DIR}/{PART_FILE}", "the window's COO interactions with their split",
             INTERACTION_COLUMNS),
    LakeFile("tables", MATRICES_FILE, "CSR matrices users x items: train, valid, test, history, seen"),
    LakeFile("tables", USERS_FILE, "snapshot of the user index the matrices use", (USER_ID, USER_IDX)),
    LakeFile("tables", ITEMS_FILE, "snapshot of the item index the matrices use", (ITEM_ID, ITEM_IDX)),
    LakeFile("tables", STATS_FILE, "sizes, density and quantiles of the window"),
    LakeFile("augment", GAN_POS_FILE, "GAN positives of sparse users", (USER_IDX, ITEM_IDX, CONFIDENCE)),
    LakeFile("augment", CONTENT_POS_FILE, "content-generated positives of cold items",
             (USER_IDX, ITEM_IDX, CONFIDENCE)),
    LakeFile("augment", SYN_USERS_FILE, "synthetic users' items", (SYN_USER, ITEM_IDX, CONFIDENCE)),
    LakeFile("augment", CANDIDATES_FILE, "hard-negative candidates scored by the generator",
             (USER_IDX, ITEM_IDX, SCORE)),
    LakeFile("augment", GENERATOR_FILE, "the trained generator (Keras 3)"),
    LakeFile("augment", QUALITY_FILE, "synthetic vs real: divergences, TSTR, privacy, the filters' counts"),
    LakeFile("augment", POPULARITY_PLOT, "item popularity, real vs synthetic"),
    LakeFile("augment", LENGTH_PLOT, "user history lengths, real vs synthetic"),
    LakeFile("examples", EXAMPLES_FILE, "training examples with their source", EXAMPLE_COLUMNS),
    LakeFile("examples", EXAMPLES_SUMMARY_FILE, "examples by source and the samplers' facts"),
    LakeFile("models", MODEL_FILE, "the recommender trained on the augmented examples"),
    LakeFile("models", NOAUG_MODEL_FILE, "the same recommender without augmentation (the ablation)"),
    LakeFile("models", FINAL_MODEL_FILE, "refit on train + valid + test, served when present"),
    LakeFile("models", COLD_MODEL_FILE, "fitted without the cold items' interactions, with content_pos for them"),
    LakeFile("models", COLD_NOCONTENT_MODEL_FILE, "the same cold-start fit without content_pos (its ablation)"),
    LakeFile("models", COLD_ITEMS_FILE, "the items the cold-start fits held out as simulated new items",
             (ITEM_IDX, ITEM_ID)),
    LakeFile("models", TRAIN_FACTS_FILE, "epochs, validation curve, alpha and EASE lambda chosen"),
    LakeFile("eval", METRICS_FILE, "model, ablation and baselines on held-out data, by segment, with lifts"),
    LakeFile("registry", REGISTRATION_FILE, "MLflow run and version, the gate decision, the date's champion"),
    LakeFile("reports", REPORT_FILE, "the run at a glance (HTML)"),
    LakeFile("recs", RECS_FILE, "each served user's top-K unseen items (the output contract)", RECS_COLUMNS),
    LakeFile("recs_new", RECS_FILE, "each served user's top-K among the new items (same columns as recs/)",
             RECS_COLUMNS),
    LakeFile("recs", RECS_SUMMARY_FILE, "users served / users in the window, rows, model version"),
)


def recsys_home() -> Path:
    """The folder holding all local state: ``$RECSYS_HOME`` or ``<repo>/.recsys``."""
    return Path(os.environ.get("RECSYS_HOME") or REPO_ROOT / ".recsys").resolve()


def lake_root() -> Path:
    """The lake root: ``$RECSYS_LAKE`` or ``$RECSYS_HOME/lake``."""
    return Path(os.environ.get("RECSYS_LAKE") or recsys_home() / "lake").resolve()


class Lake:
    """Paths of the lake and atomic commits of date partitions."""

    def __init__(self, root: Path | str | None = None) -> None:
        self.root = Path(root) if root is not None else lake_root()

    def path(self, zone: str, ds: str | None = None) -> Path:
        """``<root>/<zone>`` or, with a date, ``<root>/<zone>/ds=<ds>``."""
        if zone not in ZONES and zone != "index":
            raise ValueError(f"unknown lake zone {zone!r}; known: {', '.join(ZONES)}, index")
        base = self.root / zone
        return base / f"ds={ds}" if ds else base

    def dates(self, zone: str) -> list[str]:
        """The committed dates of a zone, oldest first."""
        base = self.path(zone)
        if not base.is_dir():
            return []
        return sorted(p.name[3:] for p in base.iterdir() if p.is_dir() and p.name.startswith("ds="))

    def staging_dir(self, label: str) -> Path:
        """A fresh private directory on the lake's file system to write aside in.

        Folders of the same label left behind by a run that died mid-write (its process is gone) are
        removed first, so the retry or the next run of a job and date cleans up after the one it replaces.
        """
        base = self.root / "_staging"
        remove_stale_staging(base, label)
        path = base / f"{label}-{os.getpid()}-{uuid.uuid4().hex[:12]}"
        path.mkdir(parents=True)
        return path

    def commit(self, staged: Path, final: Path) -> None:
        """Move a complete staged directory to ``final``, replacing what was there.

        The new directory appears by a single rename; a previous version is renamed aside first
        and removed after, so a reader sees the old complete partition, none, or the new one.
        """
        final.parent.mkdir(parents=True, exist_ok=True)
        old = None
        if final.exists():
            old = final.with_name(f".{final.name}.old-{uuid.uuid4().hex[:8]}")
            os.rename(final, old)
        os.rename(staged, final)
        if old is not None:
            shutil.rmtree(old)

    @contextlib.contextmanager
    def writing(self, zone: str, ds: str) -> Iterator[Path]:
        """Write a date partition aside and commit it only if the block completes."""
        staged = self.staging_dir(f"{zone}-{ds}")
        try:
            yield staged
        except BaseException:
            shutil.rmtree(staged, ignore_errors=True)
            raise
        self.commit(staged, self.path(zone, ds))

    def source(self) -> dict[str, Any]:
        """What ``raw/_source.json`` says about how the raw zone was filled; ``{}`` when it is missing."""
        path = self.path("raw") / SOURCE_FILE
        return read_json(path) if path.is_file() else {}

    def require(self, zone: str, ds: str) -> Path:
        """The committed partition of a date, or a clear error naming what is missing."""
        path = self.path(zone, ds)
        if not path.is_dir():
            raise FileNotFoundError(
                f"{zone} partition for {ds} is missing at {path}; run the upstream stage for {ds} first"
            )
        return path


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def remove_stale_staging(base: Path, label: str) -> list[Path]:
    """Remove the staging folders of ``label`` under ``base`` whose writing process no longer runs.

    A folder is named ``<label>-<pid>-<12 hex>`` (older ones ``<label>-<12 hex>``, always stale). The
    pid is checked on this host: the lake is written by one machine's jobs at a time.

    Returns:
        The folders removed.
    """
    pattern = re.compile(rf"{re.escape(label)}-(?:(\d+)-)?[0-9a-f]{{12}}")
    removed = []
    for path in sorted(base.iterdir()) if base.is_dir() else []:
        match = pattern.fullmatch(path.name)
        if match and not (match.group(1) and _process_alive(int(match.group(1)))):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def window_start(ds: str, days: int) -> str:
    """The first date of the ``days``-day window that ends on ``ds`` (inclusive), as YYYY-MM-DD."""
    if days < 1:
        raise ValueError(f"a window needs at least one day, got {days}")
    return (dt.date.fromisoformat(ds) - dt.timedelta(days=days - 1)).isoformat()


def write_parquet(data: pa.Table | pd.DataFrame, path: Path, schema: pa.Schema | None = None) -> None:
    """Write one Parquet file: beside its final place first, then swapped in with one rename.

    Args:
        data: a table, or a DataFrame converted with ``schema`` (its index dropped).
        path: the file to write; a reader sees the old file or the new one, never half of one.
        schema: the Arrow schema to convert a DataFrame with (required for one, ignored for a table).
    """
    table = data if isinstance(data, pa.Table) else pa.Table.from_pandas(data, schema=schema, preserve_index=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}")
    pq.write_table(table, temporary)
    os.replace(temporary, path)


def write_json(path: Path, payload: Any) -> None:
    """Write JSON with sorted keys so reruns give identical bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")


def read_json(path: Path) -> Any:
    """The JSON document at ``path``."""
    return json.loads(Path(path).read_text())
