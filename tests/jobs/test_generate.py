"""Tests of the synthetic log generator: determinism, counts, dirt, cold start, planted structure."""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
import unicodedata

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs import generate
from recsys.core.columns import RAW_COLUMNS
from recsys.core.config import load_config
from recsys.core.lake import Lake, read_json, write_json
from recsys.data.rawzone import day_number, day_text
from recsys.data.synthetic import THEMES, SyntheticSpec, synthesize, synthetic_catalogue

KINDS = {"view", "click", "cart", "purchase", "rating"}
ISO = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")


def _spec(**changes: object) -> SyntheticSpec:
    base = SyntheticSpec.from_config(load_config()["generate"], seed=7)
    small = dict(end_date="2026-01-31", days=4, users=120, items=80, events=8000, tastes=4, bot_events_per_day=300)
    return dataclasses.replace(base, **{**small, **changes})


def _frame(spec: SyntheticSpec) -> pd.DataFrame:
    table, day = synthesize(spec)
    frame = table.to_pandas()
    frame["ds"] = [day_text(d) for d in day]
    return frame


def _trim(values: pd.Series) -> pd.Series:
    """The clean job's id normalisation, written independently: trim spaces, nothing else."""
    return values.str.strip(" ")


def _norm(values: pd.Series) -> pd.Series:
    """The clean job's event-kind normalisation, written independently: trim + lowercase."""
    return values.str.strip(" ").str.lower()


def _bad_id(value: str) -> bool:
    """The clean job's bad_id rule, written independently: a control character, or over 256 characters."""
    return len(value) > 256 or any(unicodedata.category(c) == "Cc" for c in value)


def test_same_seed_same_rows_and_another_seed_differs() -> None:
    spec = _spec(events=3000)
    first, first_day = synthesize(spec)
    again, again_day = synthesize(spec)
    other, _ = synthesize(dataclasses.replace(spec, seed=8))
    assert first.equals(again) and np.array_equal(first_day, again_day)
    assert not first.equals(other)


def test_schema_and_row_count() -> None:
    spec = _spec()
    table, day = synthesize(spec)
    assert table.schema == pa.schema([(c, pa.string()) for c in RAW_COLUMNS])
    bot_rows = spec.bot_events_per_day * spec.days
    n_dirt = round(spec.dirt_share * spec.events)
    n_dup = round(spec.duplicate_share * (spec.events + bot_rows + n_dirt))
    assert table.num_rows == len(day) == spec.events + bot_rows + n_dirt + n_dup
    assert sorted({day_text(d) for d in day}) == ["2026-01-28", "2026-01-29", "2026-01-30", "2026-01-31"]


def test_duplicates_are_exact_copies() -> None:
    spec = _spec(duplicate_share=0.05, dirt_share=0.0, variant_share=0.0, bot_events_per_day=0)
    frame = _frame(spec)
    # clean events draw a second for every event, so accidental repeats are rare; planted ones are exact
    repeated = frame.duplicated(keep="first").sum()
    assert round(0.05 * spec.events) <= repeated <= round(0.05 * spec.events) + 5


def test_dirt_and_variants_in_configured_shares() -> None:
    spec = _spec(dirt_share=0.08, variant_share=0.06, duplicate_share=0.0)
    frame = _frame(spec)
    per_kind = round(0.08 * spec.events) // 8  # eight kinds of dirt in equal shares
    per_variant = round(0.06 * spec.events) // 3
    assert frame.user_id.isna().sum() == per_kind
    assert frame.item_id.isna().sum() == per_kind
    for col, prefix in (("user_id", "u"), ("item_id", "i")):
        ids = frame[col].dropna()
        trimmed = _trim(ids)
        bad = trimmed.map(_bad_id)
        assert bad.sum() == per_kind, col
        assert ((ids != trimmed) & trimmed.str.fullmatch(prefix + r"\d+")).sum() == per_variant, col
        # every other id is a generated one exactly as written: no case variants, which would be other ids
        assert trimmed[~bad].str.fullmatch(prefix + r"\d+").all(), col
    assert (frame.event == "hover").sum() == per_kind
    assert ((frame.event != _norm(frame.event)) & _norm(frame.event).isin(KINDS)).sum() == per_variant
    assert frame.value.isin(["9.5", "-1"]).sum() == per_kind
    assert (frame.ts == "not-a-time").sum() + frame.ts.str.contains("-13-45T").sum() == per_kind
    parsed = pd.to_datetime(frame.ts, format="%Y-%m-%dT%H:%M:%SZ", errors="coerce")
    stamps = frame.ts[parsed.notna()]
    assert stamps.str.fullmatch(ISO.pattern).all() and len(stamps) == len(frame) - per_kind
    assert (stamps.str[:10] > frame.ds[stamps.index]).sum() == per_kind  # in the future of their partition
    assert (stamps.str[:10] < frame.ds[stamps.index]).sum() == 0


def test_values_ratings_only() -> None:
    frame = _frame(_spec(dirt_share=0.0, variant_share=0.0))
    ratings = frame.value[frame.event == "rating"].astype(float)
    assert frame.value[frame.event != "rating"].isna().all()
    assert set(ratings) <= {k / 2 for k in range(1, 11)} and ratings.notna().all()
    assert 2.5 < ratings.mean() < 4.5


def test_one_bot_every_day() -> None:
    spec = _spec(duplicate_share=0.0)
    frame = _frame(spec)
    per_user_day = frame.groupby(["user_id", "ds"]).size()
    heavy = per_user_day[per_user_day >= spec.bot_events_per_day]
    assert heavy.index.get_level_values("user_id").nunique() == 1
    assert list(heavy) == [spec.bot_events_per_day] * spec.days
    assert per_user_day.drop(heavy.index.get_level_values("user_id")[0], level="user_id").max() < 100


def test_cold_start_users_and_items_appear_later() -> None:
    spec = _spec(days=6, new_user_share=0.2, new_item_share=0.2)
    frame = _frame(spec)
    frame = frame[frame.user_id.str.fullmatch(r"u\d+", na=False) & frame.item_id.str.fullmatch(r"i\d+", na=False)]
    for col, start in (("user_id", spec.users), ("item_id", spec.items)):
        first_seen = frame.groupby(col).ds.min()
        number = first_seen.index.str[1:].astype(int)
        planted = round(start * 0.2 / 0.8)  # new ones take the numbers after the first day's
        new = first_seen[(number >= start) & (number < start + planted)]
        assert 0.5 * planted <= len(new) <= planted, col
        assert (new > "2026-01-26").all(), col
        assert (first_seen[number < start] == "2026-01-26").mean() > 0.8, col


def test_item_popularity_is_long_tailed() -> None:
    frame = _frame(_spec(dirt_share=0.0, variant_share=0.0, bot_events_per_day=0))
    counts = frame.item_id.value_counts()
    top = counts.iloc[: max(1, len(counts) // 10)].sum() / counts.sum()
    assert top > 0.3  # the top 10% of items take over three times their uniform share


def test_personalised_recommender_beats_popularity() -> None:
    """Planted tastes: item co-occurrence predicts a user's last-day items better than popularity."""
    spec = _spec(events=20000, dirt_share=0.0, variant_share=0.0, duplicate_share=0.0, bot_events_per_day=0,
                 new_user_share=0.0, new_item_share=0.0)
    frame = _frame(spec)
    users = {u: k for k, u in enumerate(sorted(frame.user_id.unique()))}
    items = {i: k for k, i in enumerate(sorted(frame.item_id.unique()))}
    train = np.zeros((len(users), len(items)))
    test = np.zeros_like(train)
    last = frame.ds == spec.end_date
    np.add.at(train, (frame.user_id[~last].map(users), frame.item_id[~last].map(items)), 1.0)
    np.add.at(test, (frame.user_id[last].map(users), frame.item_id[last].map(items)), 1.0)
    seen, truth = train > 0, (test > 0) & (train == 0)
    binary = seen.astype(float)
    scores = {"popularity": np.tile(binary.sum(0), (len(users), 1)), "cooccurrence": binary @ (binary.T @ binary)}
    recall = {}
    for name, score in scores.items():
        score = np.where(seen, -np.inf, score)
        top = np.argsort(-score, axis=1)[:, :10]
        hits = np.take_along_axis(truth, top, axis=1).sum(1)
        has = truth.sum(1) > 0
        recall[name] = float((hits[has] / np.minimum(truth.sum(1)[has], 10)).mean())
    assert recall["cooccurrence"] > 1.2 * recall["popularity"], recall


def test_spec_validation() -> None:
    with pytest.raises(ValueError, match="generate.days"):
        _spec(days=0)
    with pytest.raises(ValueError, match="new_user_share"):
        _spec(new_user_share=1.0)
    with pytest.raises(ValueError, match="event_mix"):
        _spec(event_mix={"hover": 1.0})


def _raw_rows(lake: Lake) -> int:
    return sum(pq.read_metadata(p).num_rows for p in lake.path("raw").glob("ds=*/*.parquet"))


def test_main_lands_partitions_and_source(lake: Lake) -> None:
    argv = ["--end-date", "2026-03-02", "--days", "3", "--events", "2000", "--users", "60", "--items", "40",
            "--seed", "3", "--set", "generate.bot_events_per_day=5"]
    facts = generate.main(argv)
    assert facts == {"first_date": "2026-02-28", "last_date": "2026-03-02", "days": 3, "window_days": 3,
                     "rows": _raw_rows(lake), "catalogue_rows": 46}  # 40 + 4 later items, + 5% catalogue-only
    assert lake.dates("raw_catalogue") == ["2026-02-28"]  # the first day: every date has the catalogue
    assert lake.dates("raw") == ["2026-02-28", "2026-03-01", "2026-03-02"]
    source = read_json(lake.path("raw") / "_source.json")
    assert source == {"source": "synthetic", "src": None, "user_id_type": "string", "item_id_type": "string",
                      "has_timestamp": True, "first_date": "2026-02-28", "last_date": "2026-03-02", "dates": 3,
                      "rows": facts["rows"]}
    before = pq.read_table(lake.path("raw", "2026-03-01"))
    assert generate.main(argv) == facts  # a rerun replaces the partitions with the same rows
    assert pq.read_table(lake.path("raw", "2026-03-01")).equals(before)
    assert _raw_rows(lake) == facts["rows"]
    assert day_number("2026-03-02") - day_number("2026-02-28") + 1 == facts["window_days"]
    assert not any(lake.root.joinpath("_staging").iterdir())


def test_main_refuses_a_raw_zone_of_another_source(lake: Lake) -> None:
    write_json(lake.path("raw") / "_source.json", {"source": "movielens-latest", "src": "/data/ratings.csv"})
    argv = ["--days", "2", "--events", "500", "--users", "30", "--items", "20", "--set", "generate.bot_events_per_day=0"]
    with pytest.raises(ValueError, match="movielens-latest.*--replace"):
        generate.main(argv)
    facts = generate.main([*argv, "--replace"])
    assert read_json(lake.path("raw") / "_source.json")["source"] == "synthetic"
    assert lake.dates("raw") == [(dt.date(2026, 1, 30) + dt.timedelta(days=k)).isoformat() for k in range(2)]
    assert facts["rows"] == _raw_rows(lake)


def test_the_catalogue_names_each_items_taste_and_adds_items_without_events() -> None:
    spec = _spec(catalogue_only_share=0.1)
    catalogue = synthetic_catalogue(spec).to_pandas()
    events = _frame(spec)
    items = {i for i in _trim(events["item_id"].dropna()) if not _bad_id(i)}
    # 80 items at the start, 9 arriving later (new_item_share 0.1), and 10% of those 89 in the catalogue only
    assert catalogue["item_id"].tolist() == [f"i{i}" for i in range(98)]
    assert items <= set(catalogue["item_id"]) and not items & {f"i{i}" for i in range(89, 98)}
    # items of one taste share a theme: a user's in-taste items (ratings >= 4 dominate) name one theme most
    theme = catalogue.set_index("item_id")["text"].str.split(".").str[0].str.replace(r" no$", "", regex=True)
    assert set(theme.str.replace(r" no \d+$", "", regex=True)) <= {t for t, _ in THEMES}
    themed = theme.str.replace(r" no \d+$", "", regex=True)
    clean = events[events["item_id"].notna() & events["user_id"].notna()]
    clean = clean.assign(item=_trim(clean["item_id"]), user=_trim(clean["user_id"]))
    clean = clean[clean["item"].isin(themed.index)].assign(theme=lambda f: f["item"].map(themed))
    # each user's taste as the theme most of their events name; their ratings follow it
    taste = clean.groupby("user")["theme"].agg(lambda t: t.value_counts().index[0])
    rated = clean[clean["event"] == "rating"].assign(stars=lambda f: pd.to_numeric(f["value"], errors="coerce"))
    in_taste = rated["theme"].to_numpy() == rated["user"].map(taste).to_numpy()
    assert rated["stars"][in_taste].mean() > rated["stars"][~in_taste].mean() + 1.0  # the text predicts taste
    assert synthetic_catalogue(spec).equals(synthetic_catalogue(spec))  # seeded
