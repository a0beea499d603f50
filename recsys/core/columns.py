"""Column names and value sets shared by every job; defined once, passed as keyword defaults."""

from __future__ import annotations

# raw zone: every column a string, as the logs arrive
USER_ID = "user_id"
ITEM_ID = "item_id"
EVENT = "event"
VALUE = "value"
TS = "ts"
RAW_COLUMNS = (USER_ID, ITEM_ID, EVENT, VALUE, TS)

# clean and quarantine zones
LABEL = "label"
WEIGHT = "weight"
REASON = "reason"
DS = "ds"
BOT = "bot"  # the quarantine reason of valid rows of a user judged a bot: still that user's interactions
RAW_TS_FORMAT = "yyyy-MM-dd'T'HH:mm:ss'Z'"  # Spark pattern of the raw zone's ts text (ISO-8601 UTC)

# index and tables
USER_IDX = "user_idx"
ITEM_IDX = "item_idx"
SPLIT = "split"
SPLITS = ("train", "valid", "test")

# item catalogue and its text embeddings
TITLE = "title"  # what a person reads (a report, a served list); may be empty
TEXT = "text"  # what the text encoder reads: the item's mapped text columns joined
CONTENT_HASH = "content_hash"  # sha256 hex of TEXT: the embedding cache's key
EMBEDDING = "embedding"  # list<float32>, L2-normalised

# augmentation, examples, recommendations
CONFIDENCE = "confidence"
SYN_USER = "syn_user"  # id of a synthetic user (0..n-1 per date), beside user_idx of real ones
SOURCE = "source"
SOURCES = ("real_pos", "gan_pos", "cooc_pos", "syn_user", "content_pos", "transform_pos", "neg_uniform", "neg_pop",
           "neg_hard")
RANK = "rank"
SCORE = "score"

# the columns of each Parquet file of the lake (recsys.core.lake.CONTRACT says where each lives)
CLEAN_COLUMNS = (USER_ID, ITEM_ID, EVENT, VALUE, TS, LABEL, WEIGHT)
QUARANTINE_COLUMNS = (*RAW_COLUMNS, REASON)
INTERACTION_COLUMNS = (USER_IDX, ITEM_IDX, WEIGHT, TS, SPLIT)
EXAMPLE_COLUMNS = (USER_IDX, ITEM_IDX, LABEL, WEIGHT, SOURCE)
RECS_COLUMNS = (USER_ID, ITEM_ID, RANK, SCORE)
RAW_CATALOGUE_COLUMNS = (ITEM_ID, TITLE, TEXT)  # raw_catalogue/: as landed, every column a string
CATALOGUE_COLUMNS = (ITEM_ID, TITLE, TEXT, CONTENT_HASH)
CATALOGUE_QUARANTINE_COLUMNS = (*RAW_CATALOGUE_COLUMNS, REASON)
EMBEDDING_COLUMNS = (ITEM_ID, CONTENT_HASH, EMBEDDING)
CACHE_COLUMNS = (CONTENT_HASH, EMBEDDING)


def require_columns(columns: list[str] | tuple[str, ...], needed: tuple[str, ...], where: str) -> None:
    """Raise ValueError naming the first column of ``needed`` missing from ``columns``."""
    missing = [c for c in needed if c not in columns]
    if missing:
        raise ValueError(f"{where}: missing column(s) {', '.join(missing)}; has {', '.join(columns)}")
