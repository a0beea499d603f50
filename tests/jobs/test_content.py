"""The content generator (recsys.augmentation.content) on planted data where content determines taste."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import scipy.sparse as sp

from jobs import augment as augment_job
from jobs import expand as expand_job
from recsys.augmentation import content
from recsys.augmentation.schemas import CONTENT_POS_SCHEMA
from recsys.core.columns import CONFIDENCE, CONTENT_HASH, EMBEDDING, ITEM_ID, ITEM_IDX, USER_IDX
from recsys.core.config import config_hash, load_config
from recsys.core.lake import CONTENT_POS_FILE, EMBEDDINGS_FILE, EXAMPLES_FILE, QUALITY_FILE, Lake, read_json
from tests.support import write_tables

# two groups of 8 warm items each, users 0-9 like group A (items 0-7), users 10-19 group B (items 8-15);
# item 16 is cold with a group-A embedding, item 17 cold with a group-B one, item 18 cold without one
GROUP, USERS = 8, 10
N_ITEMS = 2 * GROUP + 3
COLD_A, COLD_B, COLD_NONE = 16, 17, 18


def planted() -> tuple[sp.csr_matrix, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    dense = np.zeros((2 * USERS, N_ITEMS), np.float32)
    for u in range(2 * USERS):
        group = np.arange(GROUP) + (0 if u < USERS else GROUP)
        dense[u, rng.choice(group, size=5, replace=False)] = 1.0
    base = np.zeros((2, 16), np.float32)
    base[0, 0], base[1, 1] = 1.0, 1.0
    vectors = np.zeros((N_ITEMS, 16), np.float32)
    labels = np.r_[np.zeros(GROUP, int), np.ones(GROUP, int), 0, 1]
    vectors[: N_ITEMS - 1] = base[labels] + 0.2 * rng.standard_normal((N_ITEMS - 1, 16)).astype(np.float32)
    vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    has = np.ones(N_ITEMS, bool)
    has[COLD_NONE] = False
    return sp.csr_matrix(dense), vectors, has


METHODS = ("ridge", "neighbours")


def config(**changes: Any) -> dict[str, Any]:
    section = dict(load_config()["content"])
    section.update(method="neighbours", neighbours=4, per_item_cap=100, confidence_threshold=0.0, sharpness=1.0,
                   ridge_lambda=1.0)
    section.update(changes)
    return section


TARGETS = np.array([COLD_A, COLD_B, COLD_NONE])


def users_of(frame: pd.DataFrame, item: int) -> set[int]:
    return set(frame.loc[frame[ITEM_IDX] == item, USER_IDX].tolist())


@pytest.mark.parametrize("method", METHODS)
def test_a_cold_item_gets_the_users_of_its_content_group(method: str) -> None:
    train, vectors, has = planted()
    got = content.content_positives(train, vectors, has, TARGETS, config(method=method, confidence_threshold=0.05))
    assert list(got.columns) == [USER_IDX, ITEM_IDX, CONFIDENCE]
    assert [str(t) for t in got.dtypes] == ["int32", "int32", "float32"]
    assert users_of(got, COLD_A) and users_of(got, COLD_A) <= set(range(USERS))
    assert users_of(got, COLD_B) and users_of(got, COLD_B) <= set(range(USERS, 2 * USERS))
    assert not users_of(got, COLD_NONE)  # no embedding, no rows
    assert ((got[CONFIDENCE] > 0) & (got[CONFIDENCE] <= 1)).all()
    assert got.equals(got.sort_values([USER_IDX, ITEM_IDX]).reset_index(drop=True))


@pytest.mark.parametrize("method", METHODS)
def test_it_fails_when_content_is_ignored(method: str) -> None:
    # the same data with the cold items' vectors swapped: content decides, so the users swap too
    train, vectors, has = planted()
    vectors[[COLD_A, COLD_B]] = vectors[[COLD_B, COLD_A]]
    got = content.content_positives(train, vectors, has, TARGETS, config(method=method, confidence_threshold=0.05))
    assert users_of(got, COLD_A) and users_of(got, COLD_B)
    assert users_of(got, COLD_A) <= set(range(USERS, 2 * USERS))
    assert users_of(got, COLD_B) <= set(range(USERS))


def test_confidence_is_the_weighted_share_of_neighbours_a_user_has() -> None:
    # one cold item (2) whose two neighbours are items 0 (sim 1.0) and 1 (sim 0.6)
    train = sp.csr_matrix(np.array([[1, 1, 0], [1, 0, 0], [0, 1, 0], [0, 0, 0]], np.float32))
    vectors = np.array([[1.0, 0.0], [0.6, 0.8], [1.0, 0.0]], np.float32)
    got = content.content_positives(train, vectors, np.ones(3, bool), np.array([2]), config(neighbours=2))
    assert got[USER_IDX].tolist() == [0, 1, 2]
    np.testing.assert_allclose(got[CONFIDENCE], [1.0, 1.0 / 1.6, 0.6 / 1.6], rtol=1e-6)
    sharp = content.content_positives(train, vectors, np.ones(3, bool), np.array([2]),
                                      config(neighbours=2, sharpness=2.0))
    np.testing.assert_allclose(sharp[CONFIDENCE], [1.0, 1.0 / 1.36, 0.36 / 1.36], rtol=1e-6)


def test_ridge_confidence_by_hand() -> None:
    # 1-dim embeddings: warm items 0 and 1 at [1], the cold item 2 at [1] too; user 0 has 0 and 1, user 1 has 0.
    # V'V + lambda = 2 + 1, V'X' = [2, 1, 0] per user: W = [2/3, 1/3, 0]; the cold item scores v W
    train = sp.csr_matrix(np.array([[1, 1, 0], [1, 0, 0], [0, 0, 0]], np.float32))
    vectors = np.ones((3, 1), np.float32)
    got = content.content_positives(train, vectors, np.ones(3, bool), np.array([2]), config(method="ridge"))
    assert got[USER_IDX].tolist() == [0, 1] and got[ITEM_IDX].tolist() == [2, 2]  # user 2's 0.0 is no pair
    np.testing.assert_allclose(got[CONFIDENCE], [2 / 3, 1 / 3], rtol=1e-6)
    # a cold item pointing the other way predicts below 0: clipped, so nobody
    vectors[2] = -1.0
    assert content.content_positives(train, vectors, np.ones(3, bool), np.array([2]), config(method="ridge")).empty


def test_threshold_and_cap() -> None:
    train = sp.csr_matrix(np.array([[1, 1, 0], [1, 0, 0], [0, 1, 0], [0, 0, 0]], np.float32))
    vectors = np.array([[1.0, 0.0], [0.6, 0.8], [1.0, 0.0]], np.float32)
    args = (train, vectors, np.ones(3, bool), np.array([2]))
    above = content.content_positives(*args, config(neighbours=2, confidence_threshold=0.5))
    assert above[USER_IDX].tolist() == [0, 1]  # 0.375 < 0.5 dropped
    capped = content.content_positives(*args, config(neighbours=2, per_item_cap=1))
    assert capped[USER_IDX].tolist() == [0]  # the most confident
    assert content.content_positives(*args, config(per_item_cap=0)).empty


@pytest.mark.parametrize("method", METHODS)
def test_nothing_without_embeddings_and_never_a_train_pair(method: str) -> None:
    train, vectors, has = planted()
    none = content.content_positives(train, np.zeros((N_ITEMS, 0), np.float32), np.zeros(N_ITEMS, bool), TARGETS,
                                     config(method=method))
    assert none.empty and [str(t) for t in none.dtypes] == ["int32", "int32", "float32"]
    # a target with train interactions of its own (few, but some): its users are not synthesised again
    train = train.tolil()
    train[0, COLD_A] = 1.0
    got = content.content_positives(train.tocsr(), vectors, has, TARGETS, config(method=method))
    assert 0 not in users_of(got, COLD_A) and users_of(got, COLD_A)


@pytest.mark.parametrize("method", METHODS)
def test_blocks_give_the_same_rows(monkeypatch: pytest.MonkeyPatch, method: str) -> None:
    train, vectors, has = planted()
    whole = content.content_positives(train, vectors, has, TARGETS, config(method=method))
    monkeypatch.setattr(content, "_BLOCK_CELLS", 1)  # one cold item per block
    pd.testing.assert_frame_equal(content.content_positives(train, vectors, has, TARGETS, config(method=method)), whole)


def test_pair_precision_by_hand() -> None:
    train = sp.csr_matrix(np.array([[1, 0, 1], [0, 1, 1], [1, 0, 0]], np.float32))
    pairs = pd.DataFrame({USER_IDX: [0, 1, 2, 2], ITEM_IDX: [2, 2, 2, 1]})
    got = content.pair_precision(train, pairs, np.array([1, 2]))
    # hits: (0,2) (1,2); misses: (2,2) (2,1). real interactions of items 1 and 2: 3
    assert got == {"pairs": 4, "hits": 2, "real_interactions": 3, "precision": 0.5, "recall": 2 / 3}


@pytest.mark.parametrize("method", METHODS)
def test_report_on_planted_data_beats_the_active_user_baseline(method: str) -> None:
    train, vectors, has = planted()
    got = content.content_positives(train, vectors, has, TARGETS, config(method=method, confidence_threshold=0.05))
    report = content.content_report(train, vectors, has, TARGETS, got,
                                    config(method=method, confidence_threshold=0.05, validation_share=0.25), seed=1)
    assert report["targets"] == 3 and report["targets_with_embedding"] == 2 and report["items_with_rows"] == 2
    assert report["rows"] == len(got) and 0 < report["confidence"]["min"] <= report["confidence"]["max"] <= 1
    validation = report["validation"]
    assert validation["held_out_items"] == 4  # a quarter of the 16 warm items
    # every pair goes to a user of the held-out item's group, who has 5 of its 8 items
    assert validation["precision"] > validation["baseline_active_users"]["precision"]
    assert validation["precision"] > 0.5
    assert report["method"] == method
    again = content.content_report(train, vectors, has, TARGETS, got,
                                   config(method=method, confidence_threshold=0.05, validation_share=0.25), seed=1)
    assert again == report


def test_generate_content_targets_the_cold_items_and_reports() -> None:
    train, vectors, has = planted()
    # item 15 has a single train interaction left: with max_interactions 2 it is a target too
    dense = train.toarray()
    dense[:, 15] = 0.0
    dense[USERS, 15] = 1.0
    positives, report = content.generate_content(sp.csr_matrix(dense), vectors, has,
                                                 config(max_interactions=2, validation_share=0.25), seed=0)
    assert set(positives[ITEM_IDX]) <= {15, COLD_A, COLD_B} and report["targets"] == 3
    assert users_of(positives, 15) <= set(range(USERS, 2 * USERS))
    assert report["enabled"] is True and report["items_with_rows"] == positives[ITEM_IDX].nunique()
    off, report = content.generate_content(train, vectors, has, config(enabled=False), seed=0)
    assert off.empty and report == {"enabled": False}
    none, report = content.generate_content(train, np.zeros((N_ITEMS, 0), np.float32), np.zeros(N_ITEMS, bool),
                                            config(), seed=0)
    assert none.empty and report["reason"] == "no item embeddings"


DS = "2026-01-31"


def write_embeddings(lake: Lake, vectors: np.ndarray, has: np.ndarray) -> None:
    items = np.flatnonzero(has)
    out = lake.path("embed", DS)
    out.mkdir(parents=True)
    pq.write_table(pa.table({ITEM_ID: [f"i{i}" for i in items], CONTENT_HASH: [f"h{i}" for i in items],
                             EMBEDDING: pa.array(list(vectors[items]), pa.list_(pa.float32()))}), out / EMBEDDINGS_FILE)


def test_augment_job_writes_content_positives_even_with_the_gan_off(lake: Lake) -> None:
    train, vectors, has = planted()
    write_tables(lake, DS, train)
    write_embeddings(lake, vectors, has)
    facts = augment_job.main(["--ds", DS, "--set", "augment.enabled=false", "--set", "content.max_interactions=1"])
    out = lake.path("augment", DS)
    table = pq.read_table(out / CONTENT_POS_FILE)
    assert table.schema.remove_metadata() == CONTENT_POS_SCHEMA and facts["content_pos_rows"] == table.num_rows > 0
    got = table.to_pandas()
    assert users_of(got, COLD_A) <= set(range(USERS)) and users_of(got, COLD_B) <= set(range(USERS, 2 * USERS))
    quality = read_json(out / QUALITY_FILE)["content"]
    config = load_config(["content.max_interactions=1"])
    assert quality["lineage"] == {"ds": DS, "config_hash": config_hash(config["content"]), "seed": config["seed"],
                                  "embeddings": str(lake.path("embed", DS) / EMBEDDINGS_FILE)}
    assert quality["targets"] == 2 and quality["rows"] == table.num_rows  # the cold items with an embedding

    # expand: content_pos rows, weighted synthetic_weight x confidence, gone with the switch and nothing else
    expand_job.main(["--ds", DS])
    examples = pd.read_parquet(lake.path("examples", DS) / EXAMPLES_FILE)
    rows = examples[examples["source"] == "content_pos"]
    merged = rows.merge(got, on=[USER_IDX, ITEM_IDX])
    assert len(merged) == len(rows) == len(got)
    np.testing.assert_allclose(merged["weight"], config["expand"]["synthetic_weight"] * merged[CONFIDENCE], rtol=1e-6)
    expand_job.main(["--ds", DS, "--set", "expand.sources.content_pos=false"])
    without = pd.read_parquet(lake.path("examples", DS) / EXAMPLES_FILE)
    pd.testing.assert_frame_equal(examples[examples["source"] != "content_pos"].reset_index(drop=True), without)


def test_augment_job_without_embeddings_writes_no_content_rows(lake: Lake) -> None:
    train, _, _ = planted()
    write_tables(lake, DS, train)
    augment_job.main(["--ds", DS, "--set", "augment.enabled=false"])
    out = lake.path("augment", DS)
    assert pq.read_table(out / CONTENT_POS_FILE).num_rows == 0
    quality = read_json(out / QUALITY_FILE)["content"]
    assert quality["reason"] == "no item embeddings" and quality["lineage"]["embeddings"] is None
