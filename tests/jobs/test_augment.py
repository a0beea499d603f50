"""The augment stage: its NumPy transforms on hand-made matrices, and the GAN on planted block data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import scipy.sparse as sp

from jobs import augment as job
from recsys.augmentation import decoding, filters, quality, schemas, segments, stage
from recsys.core.columns import CONFIDENCE, ITEM_IDX, SCORE, SYN_USER, USER_IDX
from recsys.core.config import ConfigError, config_hash, load_config
from recsys.core.lake import (
    CANDIDATES_FILE,
    GAN_POS_FILE,
    GENERATOR_FILE,
    LENGTH_PLOT,
    POPULARITY_PLOT,
    QUALITY_FILE,
    SYN_USERS_FILE,
    Lake,
    read_json,
)
from tests.support import ML_LATEST_SMALL, write_tables

DS = "2026-01-31"
BLOCKS = 3
ITEMS_PER_BLOCK = 12
USERS_PER_BLOCK = 30
BLOCK_LENGTHS = (3, 6, 10)  # planted: each block has its own history length
# few users means few steps: more epochs and more segment-only rows than the defaults
TINY = {
    "epochs": 60, "profile_drop": 0.5, "batch_size": 16, "hidden": 32, "noise_dim": 8, "segments": BLOCKS, "synthetic_users": 60,
    "candidates_per_user": 5, "expand_per_user": 2, "score_draws": 2, "quality_max_users": 100,
    "learning_rate": 0.003, "min_steps": 0,
}


def _csr(rows: list[list[int]], n_items: int) -> sp.csr_matrix:
    r = [i for i, items in enumerate(rows) for _ in items]
    c = [j for items in rows for j in items]
    return sp.csr_matrix((np.ones(len(r), dtype=np.float32), (r, c)), shape=(len(rows), n_items))


def planted() -> tuple[sp.csr_matrix, sp.csr_matrix, np.ndarray]:
    """Users of three blocks, each drawing from its own 12 items with a skewed popularity.

    Returns train, valid (one more item of the block per user) and each user's block.
    """
    rng = np.random.default_rng(11)
    popularity = 1.0 / np.arange(1, ITEMS_PER_BLOCK + 1)
    popularity /= popularity.sum()
    train, valid, blocks = [], [], []
    for block in range(BLOCKS):
        items = block * ITEMS_PER_BLOCK + np.arange(ITEMS_PER_BLOCK)
        for _ in range(USERS_PER_BLOCK):
            picked = rng.choice(items, size=BLOCK_LENGTHS[block] + 1, replace=False, p=popularity)
            train.append(sorted(picked[:-1].tolist()))
            valid.append([int(picked[-1])])
            blocks.append(block)
    n_items = BLOCKS * ITEMS_PER_BLOCK
    return _csr(train, n_items), _csr(valid, n_items), np.array(blocks)


def _sets(frame: pd.DataFrame, key: str) -> dict[int, set[int]]:
    return {int(k): set(g[ITEM_IDX].tolist()) for k, g in frame.groupby(key)}


# ---------------------------------------------------------------------------------------------------
# NumPy transforms


def test_sparse_users_takes_the_lowest_length_quantile_of_active_users() -> None:
    train = _csr([[], [0], [0, 1], [0, 1, 2], [0, 1, 2, 3, 4], [0, 1, 2, 3, 4, 5, 6, 7]], 8)
    # active lengths 1, 2, 3, 5, 8: the 0.4 quantile ("lower") is 2, so users 1 and 2; user 0 has no items
    np.testing.assert_array_equal(segments.sparse_users(train, 0.4), [1, 2])


def test_top_unobserved_skips_seen_items_and_low_scores() -> None:
    scores = np.array([[0.9, 0.8, 0.1, 0.7], [0.2, 0.6, 0.95, 0.4]], dtype=np.float32)
    seen = _csr([[0], [2]], 4)
    rows, items, values = decoding.top_unobserved(scores, seen, k=2, min_score=0.5)
    assert list(zip(rows.tolist(), items.tolist(), strict=True)) == [(0, 1), (0, 3), (1, 1)]
    np.testing.assert_allclose(values, [0.8, 0.7, 0.6])


def test_decode_top_keeps_each_rows_length() -> None:
    scores = np.array([[0.1, 0.9, 0.5, 0.3], [0.8, 0.2, 0.6, 0.7]], dtype=np.float32)
    decoded = decoding.decode_top(scores, np.array([1, 3]))
    np.testing.assert_array_equal(decoded.toarray(), [[0, 1, 0, 0], [1, 0, 1, 1]])


def test_draw_items_draws_without_replacement_in_proportion_to_scores() -> None:
    rows = 20_000
    scores = np.tile(np.array([0.6, 0.3, 0.1, 0.0], dtype=np.float32), (rows, 1))
    rng = np.random.default_rng(0)
    one = decoding.draw_items(scores, np.ones(rows, dtype=np.int64), rng.random(scores.shape))
    np.testing.assert_allclose(np.asarray(one.sum(axis=0)).ravel() / rows, [0.6, 0.3, 0.1, 0.0], atol=0.015)
    two = decoding.draw_items(scores, np.full(rows, 2), rng.random(scores.shape))
    assert (np.diff(two.indptr) == 2).all() and two[:, 3].nnz == 0
    # item 0 is first, or second after item 1 or item 2 came first: 0.6 + 0.3 * 0.6/0.7 + 0.1 * 0.6/0.9
    assert two[:, 0].nnz / rows == pytest.approx(0.6 + 0.3 * 0.6 / 0.7 + 0.1 * 0.6 / 0.9, abs=0.015)


def test_kmeans_recovers_planted_blocks() -> None:
    train, _, blocks = planted()
    labels, centroids = segments.kmeans_segments(train, BLOCKS, seed=0)
    assert centroids.shape == (BLOCKS, train.shape[1])
    # one label per block and a different one for each block
    assert all(len(set(labels[blocks == b])) == 1 for b in range(BLOCKS))
    assert len({labels[blocks == b][0] for b in range(BLOCKS)}) == BLOCKS
    # a vector on block 2's items is assigned to block 2's segment
    probe = np.zeros((1, train.shape[1]))
    probe[0, 2 * ITEMS_PER_BLOCK:2 * ITEMS_PER_BLOCK + 4] = 1.0
    assert segments.assign_segments(probe, centroids)[0] == labels[blocks == 2][0]


def test_jaccard_js_and_pairwise_against_hand_values() -> None:
    a = _csr([[0, 1], [2]], 4)
    b = _csr([[1, 2], [0, 1], [3]], 4)
    np.testing.assert_allclose(quality.jaccard_distances(a, b), [[1 - 1 / 3, 0.0, 1.0], [0.5, 1.0, 1.0]])
    # pairs of b: {1,2}-{0,1} = 1/3, {1,2}-{3} = 0, {0,1}-{3} = 0
    assert quality.mean_pairwise_jaccard(b) == pytest.approx(1 / 9)
    assert quality.paired_jaccard(_csr([[0, 1], [2]], 4), _csr([[1], [2]], 4)) == pytest.approx((0.5 + 1.0) / 2)
    assert quality.js_distance(np.array([1, 1]), np.array([2, 2])) == pytest.approx(0.0)
    assert quality.js_distance(np.array([1, 0]), np.array([0, 1])) == pytest.approx(1.0)


def test_memorisation_catches_a_planted_copy_of_a_real_user() -> None:
    train, _, _ = planted()
    reference = np.arange(train.shape[0])
    threshold = quality.memorisation_threshold(train, 0.05, reference)
    copy = train[17].indices.tolist()
    # the others mix items of all three blocks: far from every real user
    mixed = [[0, ITEMS_PER_BLOCK + 1, 2 * ITEMS_PER_BLOCK + 2], [3, 4, ITEMS_PER_BLOCK + 5, 2 * ITEMS_PER_BLOCK + 6]]
    syn = _csr([mixed[0], copy, mixed[1]], train.shape[1])
    np.testing.assert_array_equal(quality.memorised(syn, train, threshold), [False, True, False])


def test_duplicate_rows_flags_copies_of_real_and_earlier_synthetic_rows() -> None:
    real = _csr([[0, 1], [2, 3]], 5)
    syn = _csr([[4], [1, 0], [4], [3]], 5)
    np.testing.assert_array_equal(filters.duplicate_rows(syn, real), [False, True, True, False])


def test_itemknn_scores_are_cosine_sums() -> None:
    fit = _csr([[0, 1], [1, 2]], 3)
    # item norms sqrt(1), sqrt(2), sqrt(1): cos(0,1) = cos(1,2) = 1/sqrt(2), cos(0,2) = 0
    scores = quality.itemknn_scores(fit, _csr([[0], [0, 2]], 3))
    np.testing.assert_allclose(scores, [[1.0, 2 ** -0.5, 0.0], [1.0, 2 * 2 ** -0.5, 1.0]], rtol=1e-6)


def test_ndcg_at_k_in_chunks_is_the_mean_over_all_users(monkeypatch: pytest.MonkeyPatch) -> None:
    from recsys.evaluation.metrics import user_metrics

    rng = np.random.default_rng(3)
    train = sp.csr_matrix((rng.random((7, 9)) < 0.3).astype(np.float32))
    held_out = (rng.random((7, 9)) < 0.3) & (train.toarray() == 0)
    held_out[4] = False  # a user without a target is skipped, not counted as 0
    valid = sp.csr_matrix(held_out.astype(np.float32))
    weights = rng.random((9, 9)).astype(np.float32)

    def scorer(history: sp.csr_matrix) -> np.ndarray:
        return np.asarray(history @ weights)

    expected = user_metrics(scorer(train), train, valid, [3]).summary()["ndcg@3"]
    monkeypatch.setattr(quality, "INFERENCE_BATCH", 2)  # uneven chunks, one of them with the skipped user
    got = quality.ndcg_at_k(scorer, train, valid, np.arange(7), k=3)
    assert got == pytest.approx(expected) and 0.0 < got < 1.0
    assert quality.ndcg_at_k(scorer, train, valid, np.array([4]), k=3) == 0.0


def test_config_names_the_bad_augment_key() -> None:
    with pytest.raises(ConfigError, match="augment.pm_ratio"):
        load_config(["augment.pm_ratio=1.5"], environ={})
    with pytest.raises(ConfigError, match="augment.popularity_weight"):
        load_config(["augment.popularity_weight=-1.0"], environ={})


# ---------------------------------------------------------------------------------------------------
# the stage, end to end


def _overrides(extra: dict[str, object] | None = None) -> list[str]:
    out = []
    for key, value in {**TINY, **(extra or {})}.items():
        out += ["--set", f"augment.{key}={value}"]
    return out


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Lake, dict]:
    """One trained run of the job on the planted blocks (shared: training is the slow part)."""
    lake = Lake(tmp_path_factory.mktemp("augment") / "lake")
    train, valid, _ = planted()
    write_tables(lake, DS, train, valid)
    facts = job.main(["--ds", DS, "--lake", str(lake.root), *_overrides()])
    return lake, facts


@pytest.mark.tf
def test_job_writes_outputs_with_their_contract(run: tuple[Lake, dict]) -> None:
    lake, facts = run
    train, _, _ = planted()
    out = lake.path("augment", DS)
    assert facts["enabled"] is True and facts["path"] == str(out)
    for file, schema in ((GAN_POS_FILE, schemas.GAN_POS_SCHEMA), (SYN_USERS_FILE, schemas.SYN_USERS_SCHEMA),
                         (CANDIDATES_FILE, schemas.CANDIDATES_SCHEMA)):
        assert pq.read_schema(out / file).remove_metadata() == schema
    seen = _sets(pd.DataFrame({USER_IDX: train.tocoo().row, ITEM_IDX: train.tocoo().col}), USER_IDX)

    candidates = pd.read_parquet(out / CANDIDATES_FILE)
    assert set(candidates[USER_IDX]) == set(range(train.shape[0]))
    assert candidates.groupby(USER_IDX).size().max() == TINY["candidates_per_user"]
    assert all(not (items & seen[u]) for u, items in _sets(candidates, USER_IDX).items())
    assert candidates[SCORE].between(0, 1).all()

    gan_pos = pd.read_parquet(out / GAN_POS_FILE)
    sparse = set(np.flatnonzero(np.diff(train.indptr) <= BLOCK_LENGTHS[0]).tolist())  # block 0's users
    assert len(gan_pos) > 0 and set(gan_pos[USER_IDX]) <= sparse
    assert gan_pos.groupby(USER_IDX).size().max() <= TINY["expand_per_user"]
    assert (gan_pos[CONFIDENCE] >= load_config()["augment"]["confidence_threshold"]).all()
    assert all(not (items & seen[u]) for u, items in _sets(gan_pos, USER_IDX).items())

    syn = pd.read_parquet(out / SYN_USERS_FILE)
    quality = read_json(out / QUALITY_FILE)
    # recorded for expand, which keeps candidates scored above it out of the hard negatives
    assert quality["confidence_threshold"] == load_config()["augment"]["confidence_threshold"]
    assert sorted(syn[SYN_USER].unique()) == list(range(quality["filters"][-1]["after"]))
    assert facts["syn_users"] == quality["filters"][-1]["after"] > 0
    assert syn[CONFIDENCE].between(0, 1).all()
    # filters chain: each one starts from what the previous kept
    counts = [(f["before"], f["after"]) for f in quality["filters"]]
    assert counts[0][0] == TINY["synthetic_users"]
    # the discriminator filter drops at most its quantile (0.05) of the synthetic users
    assert counts[0][1] >= 0.95 * counts[0][0] - 1
    assert all(after <= before for before, after in counts)
    assert all(counts[i][1] == counts[i + 1][0] for i in range(len(counts) - 1))
    assert quality["memorisation"]["share"]["written"] == 0.0

    config = load_config([f"augment.{k}={v}" for k, v in TINY.items()])
    assert quality["lineage"] == {"ds": DS, "config_hash": config_hash(config["augment"]), "seed": config["seed"]}
    assert quality["tstr"]["users"] == train.shape[0]
    for name in (POPULARITY_PLOT, LENGTH_PLOT):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.tf
def test_training_brings_synthetic_users_closer_to_real_ones(run: tuple[Lake, dict]) -> None:
    lake, facts = run
    quality = read_json(lake.path("augment", DS) / QUALITY_FILE)
    floor = quality["fidelity"]["real_sample"]
    assert floor["users"] == TINY["synthetic_users"]
    for figure in ("js_item_popularity", "js_user_length"):
        values = quality["fidelity"][figure]
        assert values["trained"] < values["untrained"], (figure, values)
        assert 0.0 <= floor[figure] < values["untrained"], (figure, floor[figure])
    assert facts["js_item_popularity_untrained"] == quality["fidelity"]["js_item_popularity"]["untrained"]
    # TSTR: item-item on synthetic users of the planted blocks finds the held-out block items
    tstr = quality["tstr"]
    assert tstr["itemknn_on_synthetic"]["trained"] > tstr["itemknn_on_synthetic"]["untrained"]


@pytest.mark.tf
def test_trained_generator_uses_its_noise(run: tuple[Lake, dict]) -> None:
    import keras

    from recsys.models.gan import NOISE, PROFILE, SEGMENT

    lake, _ = run
    quality = read_json(lake.path("augment", DS) / QUALITY_FILE)
    assert quality["diversity"]["noise_draws_jaccard_segment"]["trained"] < 1.0
    generator = keras.saving.load_model(lake.path("augment", DS) / GENERATOR_FILE)
    rng = np.random.default_rng(0)
    condition = {PROFILE: np.zeros((20, BLOCKS * ITEMS_PER_BLOCK), np.float32), SEGMENT: np.arange(20) % BLOCKS}
    first = np.asarray(generator({**condition, NOISE: rng.standard_normal((20, TINY["noise_dim"]))}))
    second = np.asarray(generator({**condition, NOISE: rng.standard_normal((20, TINY["noise_dim"]))}))
    assert np.mean(np.abs(first - second)) > 0.01


@pytest.mark.tf
def test_same_seed_gives_the_same_outputs_on_cpu(run: tuple[Lake, dict]) -> None:
    lake, _ = run
    train, valid, _ = planted()
    config = load_config([f"augment.{k}={v}" for k, v in TINY.items()])
    again = stage.augment(train, valid, config["augment"], config["seed"])
    out = lake.path("augment", DS)
    pd.testing.assert_frame_equal(pd.read_parquet(out / CANDIDATES_FILE), again.candidates)
    pd.testing.assert_frame_equal(pd.read_parquet(out / SYN_USERS_FILE), again.syn_users)
    pd.testing.assert_frame_equal(pd.read_parquet(out / GAN_POS_FILE), again.gan_pos)


@pytest.mark.tf
def test_disabled_writes_empty_outputs_with_the_schema(lake: Lake) -> None:
    train, valid, _ = planted()
    write_tables(lake, DS, train, valid)
    facts = job.main(["--ds", DS, "--set", "augment.enabled=false"])
    out = lake.path("augment", DS)
    assert facts["enabled"] is False
    for file, schema in ((GAN_POS_FILE, schemas.GAN_POS_SCHEMA), (SYN_USERS_FILE, schemas.SYN_USERS_SCHEMA),
                         (CANDIDATES_FILE, schemas.CANDIDATES_SCHEMA)):
        table = pq.read_table(out / file)
        assert table.num_rows == 0 and table.schema.remove_metadata() == schema
    assert read_json(out / QUALITY_FILE)["enabled"] is False
    assert not (out / GENERATOR_FILE).exists()


ML_LATEST_SMALL_RATINGS = ML_LATEST_SMALL / "ratings.csv"


def ml_latest_small_sample(n_users: int, seed: int) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """Ratings >= 4 of ``n_users`` random ml-latest-small users; each user's latest item is validation."""
    ratings = pd.read_csv(ML_LATEST_SMALL_RATINGS)
    ratings = ratings[ratings["rating"] >= 4.0]
    chosen = np.random.default_rng(seed).choice(ratings["userId"].unique(), n_users, replace=False)
    ratings = ratings[ratings["userId"].isin(chosen)].sort_values(["userId", "timestamp", "movieId"])
    users = ratings["userId"].astype("category").cat.codes.to_numpy()
    items = ratings["movieId"].astype("category").cat.codes.to_numpy()
    latest = np.r_[users[1:] != users[:-1], True]
    shape = (n_users, int(items.max()) + 1)
    def part(mask: np.ndarray) -> sp.csr_matrix:
        return sp.csr_matrix((np.ones(int(mask.sum()), np.float32), (users[mask], items[mask])), shape=shape)
    return part(~latest), part(latest)


@pytest.mark.tf
@pytest.mark.skipif(not ML_LATEST_SMALL_RATINGS.exists(), reason=f"{ML_LATEST_SMALL_RATINGS} is missing")
def test_stage_runs_on_ml_latest_small(lake: Lake) -> None:
    # a wide catalogue: 60 real users over some 2,000 movies
    train, valid = ml_latest_small_sample(60, seed=3)
    write_tables(lake, DS, train, valid)
    settings = {**TINY, "segments": 4, "synthetic_users": 40, "epochs": 5, "min_steps": 80, "quality_max_users": 25}
    facts = job.main(["--ds", DS, *_overrides(settings)])
    out = lake.path("augment", DS)
    quality = read_json(out / QUALITY_FILE)
    for section, keys in {
        "fidelity": ("js_item_popularity", "js_user_length", "segment_agreement"),
        "diversity": ("pairwise_jaccard", "noise_draws_jaccard_segment", "noise_draws_jaccard_profile_top10"),
        "memorisation": ("quantile", "threshold_jaccard_distance", "share"),
        "tstr": ("itemknn_on_synthetic", "itemknn_on_real", "popularity"),
    }.items():
        assert set(keys) <= set(quality[section]), (section, quality[section].keys())
    for figure in ("js_item_popularity", "js_user_length"):
        assert set(quality["fidelity"][figure]) == {"trained", "untrained", "written"}
    # min_steps: 60 users in 16-user batches are 4 batches an epoch, so 20 epochs instead of 5
    assert quality["training"]["epochs"] == 20 and quality["training"]["steps"] == 80
    assert quality["memorisation"]["share"]["written"] == 0.0
    assert (valid.getnnz(axis=1) > 0).sum() > 25 and quality["tstr"]["users"] == 25  # a sample of quality_max_users
    syn = pd.read_parquet(out / SYN_USERS_FILE)
    assert facts["syn_users"] == syn[SYN_USER].nunique() > 0
    assert syn[ITEM_IDX].between(0, train.shape[1] - 1).all()
    candidates = pd.read_parquet(out / CANDIDATES_FILE)
    seen = set(zip(train.tocoo().row.tolist(), train.tocoo().col.tolist(), strict=True))
    assert not seen & set(zip(candidates[USER_IDX].tolist(), candidates[ITEM_IDX].tolist(), strict=True))


def test_missing_tables_partition_is_a_clear_error(lake: Lake) -> None:
    with pytest.raises(FileNotFoundError, match="tables partition for 2026-01-30"):
        job.main(["--ds", "2026-01-30"])


def test_write_tables_fixture_round_trips(lake: Lake) -> None:
    from recsys.core.matrices import load_matrices

    train, valid, _ = planted()
    write_tables(lake, DS, train, valid)
    loaded = load_matrices(lake, DS)
    assert (loaded.train != train).nnz == 0 and (loaded.valid != valid).nnz == 0
    assert loaded.user_ids[5] == "u5" and Path(lake.path("tables", DS)).is_dir()
