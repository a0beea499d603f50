"""The expanded training examples: their arrays, the Arrow schema of examples.parquet, the summary, reading them back."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from recsys.core.columns import ITEM_IDX, LABEL, SOURCE, SOURCES, USER_IDX, WEIGHT
from recsys.core.lake import EXAMPLES_FILE, Lake

EXAMPLES_SCHEMA = pa.schema([
    (USER_IDX, pa.int32()), (ITEM_IDX, pa.int32()), (LABEL, pa.int8()), (WEIGHT, pa.float32()),
    (SOURCE, pa.string()),
])


@dataclass
class Examples:
    """Expanded examples as aligned arrays; ``codes`` index ``recsys.core.columns.SOURCES``."""

    users: np.ndarray
    items: np.ndarray
    labels: np.ndarray
    weights: np.ndarray
    codes: np.ndarray

    def table(self) -> pa.Table:
        """The examples as an Arrow table of ``EXAMPLES_SCHEMA``."""
        source = pa.DictionaryArray.from_arrays(pa.array(self.codes, pa.int8()), pa.array(SOURCES))
        return pa.Table.from_arrays(
            [pa.array(self.users, pa.int32()), pa.array(self.items, pa.int32()), pa.array(self.labels, pa.int8()),
             pa.array(self.weights, pa.float32()), source.cast(pa.string())],
            schema=EXAMPLES_SCHEMA,
        )


def summarise(examples: Examples) -> dict[str, Any]:
    """Row count and weight sum of every source, and the totals."""
    rows = np.bincount(examples.codes, minlength=len(SOURCES))
    weights = np.bincount(examples.codes, weights=examples.weights.astype(np.float64), minlength=len(SOURCES))
    return {
        "rows": int(examples.codes.size),
        "positives": int((examples.labels == 1).sum()),
        "negatives": int((examples.labels == 0).sum()),
        "sources": {s: {"rows": int(rows[i]), "weight_sum": round(float(weights[i]), 6)}
                    for i, s in enumerate(SOURCES)},
    }


def read_examples(lake: Lake, ds: str) -> pd.DataFrame:
    """The expanded training examples of ``ds``.

    Raises:
        FileNotFoundError: the examples partition is missing.
        ValueError: a row has a source outside ``recsys.core.columns.SOURCES``.
    """
    path = lake.require("examples", ds) / EXAMPLES_FILE
    if not path.exists():
        raise FileNotFoundError(f"examples file {path} is missing; run the expand stage for {ds} first")
    examples = pd.read_parquet(path)
    if SOURCE not in examples.columns:
        raise ValueError(f"{path}: missing column {SOURCE}")
    unknown = sorted(set(examples[SOURCE].astype(str).unique()) - set(SOURCES))
    if unknown:
        raise ValueError(f"{path}: column {SOURCE} has unknown value(s) {', '.join(unknown)}")
    return examples
