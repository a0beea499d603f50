"""Arrow schemas of the augment zone's Parquet files, and the DataFrames built to them."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

from recsys.core.columns import CONFIDENCE, ITEM_IDX, SCORE, SYN_USER, USER_IDX
from recsys.core.lake import CANDIDATES_FILE, CONTENT_POS_FILE, GAN_POS_FILE, SYN_USERS_FILE

GAN_POS_SCHEMA = pa.schema([(USER_IDX, pa.int32()), (ITEM_IDX, pa.int32()), (CONFIDENCE, pa.float32())])
SYN_USERS_SCHEMA = pa.schema([(SYN_USER, pa.int32()), (ITEM_IDX, pa.int32()), (CONFIDENCE, pa.float32())])
CANDIDATES_SCHEMA = pa.schema([(USER_IDX, pa.int32()), (ITEM_IDX, pa.int32()), (SCORE, pa.float32())])
# the content generator's positives of cold items (recsys.augmentation.content)
CONTENT_POS_SCHEMA = pa.schema([(USER_IDX, pa.int32()), (ITEM_IDX, pa.int32()), (CONFIDENCE, pa.float32())])
# every Parquet file the augment stage writes, by lake file name
SCHEMAS: dict[str, pa.Schema] = {
    GAN_POS_FILE: GAN_POS_SCHEMA, SYN_USERS_FILE: SYN_USERS_SCHEMA, CANDIDATES_FILE: CANDIDATES_SCHEMA,
    CONTENT_POS_FILE: CONTENT_POS_SCHEMA,
}


def frame(schema: pa.Schema, first: np.ndarray, second: np.ndarray, third: np.ndarray) -> pd.DataFrame:
    """A DataFrame of three columns named and typed as ``schema`` (two int32 ids and a float32 value)."""
    a, b, c = schema.names
    return pd.DataFrame({
        a: np.asarray(first, dtype=np.int32), b: np.asarray(second, dtype=np.int32),
        c: np.asarray(third, dtype=np.float32),
    })
