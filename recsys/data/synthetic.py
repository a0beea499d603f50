"""Synthetic raw interaction logs with planted taste structure, cold start and realistic dirt.

The built-in default source of the pipeline (it never downloads data). Everything is drawn from one
seeded NumPy generator, so a seed gives the same rows byte for byte. Vectorised NumPy and pyarrow:
10M events (200k users, 50k items, 14 days; 10.4M rows, 100 MB of Parquet) take about 45 s and
3 GB of memory on two shared CPU cores, a fifth of it writing.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recsys.core.columns import RAW_CATALOGUE_COLUMNS, RAW_COLUMNS
from recsys.data.rawzone import SECONDS_PER_DAY, day_number, day_text, iso_utc

log = logging.getLogger(__name__)

SOURCE = "synthetic"
EVENT_KINDS = ("view", "click", "cart", "purchase", "rating")
RATINGS = pa.array([f"{half / 2:.1f}" for half in range(1, 11)])  # "0.5" .. "5.0" in halves
# rating ~ Normal(mean, sd) before rounding to halves: users like items of their taste group
IN_TASTE_RATING = (4.1, 0.7)
OFF_TASTE_RATING = (2.6, 1.0)
BOT_KINDS = (0.8, 0.2, 0.0, 0.0, 0.0)  # the bot views and clicks, it never buys or rates
DIRT_KINDS = (
    "null_user", "null_item", "bad_user", "bad_item", "bad_ts", "future_ts", "bad_rating", "unknown_event",
)
# ids are kept exactly as they came, only trimmed, so their variants are padded with spaces; a case variant
# would be another id. Event kinds are trimmed and lowercased, so theirs also change case
VARIANT_KINDS = ("user_padded", "item_padded", "event_case")
# malformed ids, in turn: a control character (a NUL byte of a broken log line) and a blob longer than any
# id (over recsys.data.ids.MAX_ID_LENGTH, 256 characters)
CONTROL_SUFFIX = "\x00"
OVERLONG_ID = "x" * 300
# spellings of each event kind that trim + lowercase back to it: index kind * 3 + style
EVENT_VARIANTS = pa.array([s for k in EVENT_KINDS for s in (k.upper(), " " + k.capitalize(), k.capitalize() + " ")])


@dataclasses.dataclass(frozen=True)
class SyntheticSpec:
    """What to generate; the fields mirror the ``generate`` config section plus the seed."""

    end_date: str
    days: int
    users: int
    items: int
    events: int
    new_user_share: float
    new_item_share: float
    tastes: int
    taste_strength: float
    popularity_exponent: float
    event_mix: Mapping[str, float]
    dirt_share: float
    variant_share: float
    duplicate_share: float
    bot_events_per_day: int
    catalogue_only_share: float
    seed: int

    def __post_init__(self) -> None:
        day_number(self.end_date)  # raises on a malformed date
        for name in ("days", "users", "items", "tastes"):
            if getattr(self, name) < 1:
                raise ValueError(f"generate.{name} must be at least 1, got {getattr(self, name)}")
        for name in ("events", "bot_events_per_day"):
            if getattr(self, name) < 0:
                raise ValueError(f"generate.{name} must not be negative, got {getattr(self, name)}")
        for name in ("new_user_share", "new_item_share"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"generate.{name} must be in [0, 1), got {getattr(self, name)}")
        for name in ("taste_strength", "dirt_share", "variant_share", "duplicate_share", "catalogue_only_share"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"generate.{name} must be in [0, 1], got {getattr(self, name)}")
        unknown = set(self.event_mix) - set(EVENT_KINDS)
        if unknown or sum(self.event_mix.values()) <= 0 or min(self.event_mix.values()) < 0:
            raise ValueError(
                f"generate.event_mix needs non-negative shares of {', '.join(EVENT_KINDS)} with a positive sum, "
                f"got {dict(self.event_mix)}"
            )

    @classmethod
    def from_config(cls, section: Mapping[str, Any], seed: int, **overrides: Any) -> SyntheticSpec:
        """Build from the ``generate`` config section; ``overrides`` that are not None win."""
        values = {**section, "seed": seed, **{k: v for k, v in overrides.items() if v is not None}}
        return cls(**values)


def _arrivals(rng: np.random.Generator, start: int, new_share: float, days: int) -> np.ndarray:
    """Arrival day (0-based) of every user or item, oldest first: ``start`` on day 0, the rest later."""
    new = round(start * new_share / (1.0 - new_share)) if days > 1 else 0
    return np.sort(np.concatenate([np.zeros(start, np.int64), rng.integers(1, days, new)]))


def _draw(rng: np.random.Generator, pool: np.ndarray, weight: np.ndarray, size: int) -> np.ndarray:
    """``size`` draws from ``pool`` with probability proportional to ``weight[pool]``."""
    if size == 0:
        return np.empty(0, np.int64)
    w = weight[pool]
    return rng.choice(pool, size=size, p=w / w.sum())


def _ids(prefix: str, n: int) -> pa.Array:
    """``prefix0`` .. ``prefix{n-1}``: the valid ids of users or items."""
    return pa.array(np.char.add(prefix, np.arange(n).astype(str)))


def _patch(column: pa.Array, rows: np.ndarray, values: pa.Array) -> pa.Array:
    """``column`` with ``values[j]`` at row ``rows[j]`` (rows distinct)."""
    if len(rows) == 0:
        return column
    mask = np.zeros(len(column), bool)
    mask[rows] = True
    return pc.replace_with_mask(column, pa.array(mask), values.take(pa.array(np.argsort(rows))))


def _alternate(rows: np.ndarray, even: pa.Array | str, odd: pa.Array | str) -> pa.Array:
    """Per row, ``even`` at even positions of ``rows`` and ``odd`` at odd ones (arrays align with rows)."""
    return pc.if_else(pa.array(np.arange(len(rows)) % 2 == 0), even, odd)


@dataclasses.dataclass(frozen=True)
class _World:
    """Who and what exists: arrival days, taste groups, activity and popularity (``n_users`` + the bot)."""

    user_arrival: np.ndarray
    item_arrival: np.ndarray
    user_group: np.ndarray
    item_group: np.ndarray
    activity: np.ndarray
    popularity: np.ndarray
    kind_share: np.ndarray  # event kinds' shares, in EVENT_KINDS order
    per_day: np.ndarray  # clean events of each day

    @property
    def bot(self) -> int:
        """The bot's user number: the next one, valid-looking; only its volume gives it away."""
        return len(self.user_arrival)


@dataclasses.dataclass
class _Events:
    """Events as integer codes: user, item, kind and rating (index into RATINGS, -1 for none), ts and day."""

    user: np.ndarray
    item: np.ndarray
    kind: np.ndarray
    rating: np.ndarray
    ts: np.ndarray
    day: np.ndarray

    def take(self, rows: np.ndarray) -> _Events:
        return _Events(*(getattr(self, f.name)[rows] for f in dataclasses.fields(self)))


def _world(rng: np.random.Generator, spec: SyntheticSpec) -> _World:
    user_arrival = _arrivals(rng, spec.users, spec.new_user_share, spec.days)
    item_arrival = _arrivals(rng, spec.items, spec.new_item_share, spec.days)
    user_group = rng.integers(spec.tastes, size=len(user_arrival))
    item_group = rng.integers(spec.tastes, size=len(item_arrival))
    activity = rng.lognormal(0.0, 1.0, len(user_arrival))
    popularity = (rng.permutation(len(item_arrival)) + 1.0) ** -spec.popularity_exponent
    mix = np.array([spec.event_mix.get(kind, 0.0) for kind in EVENT_KINDS], float)
    per_day = rng.multinomial(spec.events, np.full(spec.days, 1.0 / spec.days))
    return _World(user_arrival, item_arrival, user_group, item_group, activity, popularity, mix / mix.sum(), per_day)


def _day(rng: np.random.Generator, spec: SyntheticSpec, world: _World, d: int, first_day: int) -> tuple[np.ndarray, ...]:
    """Day ``d``'s clean events and the bot's, in time order: (user, item, kind, rating, ts)."""
    users_today = np.flatnonzero(world.user_arrival <= d)
    items_today = np.flatnonzero(world.item_arrival <= d)
    n = int(world.per_day[d])
    user = _draw(rng, users_today, world.activity, n)
    item = np.empty(n, np.int64)
    follows = rng.random(n) < spec.taste_strength
    item[~follows] = _draw(rng, items_today, world.popularity, int((~follows).sum()))
    for group in range(spec.tastes):
        rows = np.flatnonzero(follows & (world.user_group[user] == group))
        pool = items_today[world.item_group[items_today] == group]
        item[rows] = _draw(rng, pool if len(pool) else items_today, world.popularity, len(rows))
    kind = rng.choice(len(EVENT_KINDS), size=n, p=world.kind_share)
    in_taste = world.item_group[item] == world.user_group[user]
    mean = np.where(in_taste, IN_TASTE_RATING[0], OFF_TASTE_RATING[0])
    sd = np.where(in_taste, IN_TASTE_RATING[1], OFF_TASTE_RATING[1])
    half = np.clip(np.rint(rng.normal(mean, sd) * 2), 1, 10).astype(np.int64) - 1  # index into RATINGS
    rating = np.where(kind == EVENT_KINDS.index("rating"), half, -1)

    n_bot = spec.bot_events_per_day
    user = np.concatenate([user, np.full(n_bot, world.bot)])
    item = np.concatenate([item, rng.choice(items_today, size=n_bot)])
    kind = np.concatenate([kind, rng.choice(len(EVENT_KINDS), size=n_bot, p=BOT_KINDS)])
    rating = np.concatenate([rating, np.full(n_bot, -1)])
    ts = (first_day + d) * SECONDS_PER_DAY + rng.integers(0, SECONDS_PER_DAY, n + n_bot)
    order = np.argsort(ts, kind="stable")
    return user[order], item[order], kind[order], rating[order], ts[order]


def _with_dirt(rng: np.random.Generator, spec: SyntheticSpec, events: _Events, not_bot: np.ndarray
               ) -> tuple[_Events, np.ndarray, dict[str, np.ndarray]]:
    """Corrupted copies, each placed right after the event it was copied from; kinds in equal shares.

    Returns:
        The events with the copies, the copied-from position of every row, and the rows of each dirt kind.
    """
    n_real = len(events.user)
    n_dirt = min(round(spec.dirt_share * spec.events), len(not_bot))
    source = np.concatenate([np.arange(n_real), rng.choice(not_bot, size=n_dirt, replace=False)])
    events = events.take(source)
    dirt = np.arange(n_dirt) % len(DIRT_KINDS)
    dirty = {name: n_real + np.flatnonzero(dirt == j) for j, name in enumerate(DIRT_KINDS)}
    future = dirty["future_ts"]
    events.ts[future] = (events.day[future] + 1) * SECONDS_PER_DAY + rng.integers(0, 2 * SECONDS_PER_DAY, len(future))
    events.kind[dirty["bad_rating"]] = EVENT_KINDS.index("rating")
    return events, source, dirty


def _variant_rows(rng: np.random.Generator, spec: SyntheticSpec, not_bot: np.ndarray) -> dict[str, np.ndarray]:
    """The rows of each harmless spelling variant (``VARIANT_KINDS``), in equal shares."""
    n_variants = min(round(spec.variant_share * spec.events), len(not_bot))
    varied = rng.choice(not_bot, size=n_variants, replace=False)
    return {name: varied[np.arange(n_variants) % len(VARIANT_KINDS) == j] for j, name in enumerate(VARIANT_KINDS)}


def _malformed(ids: pa.Array, rows: np.ndarray) -> pa.Array:
    return _alternate(rows, pc.binary_join_element_wise(ids.take(pa.array(rows)), CONTROL_SUFFIX, ""), OVERLONG_ID)


def _padded(ids: pa.Array, rows: np.ndarray, left: str, right: str) -> pa.Array:
    return pc.binary_join_element_wise(left, ids.take(pa.array(rows)), right, "")


def _ids_column(ids: pa.Array, null: np.ndarray, bad: np.ndarray, padded: np.ndarray, left: str) -> pa.Array:
    """An id column with nulls, malformed ids and padded variants written into their rows."""
    return _patch(ids, np.concatenate([null, bad, padded]), pa.concat_arrays([
        pa.nulls(len(null), pa.string()), _malformed(ids, bad), _padded(ids, padded, left, " "),
    ]))


def _columns(rng: np.random.Generator, events: _Events, n_users: int, n_items: int, dirty: dict[str, np.ndarray],
             variant: dict[str, np.ndarray]) -> list[pa.Array]:
    """The raw string columns (``RAW_COLUMNS`` order) with every dirt kind and variant written in."""
    users = _ids_column(_ids("u", n_users + 1).take(pa.array(events.user)), dirty["null_user"], dirty["bad_user"],
                        variant["user_padded"], " ")
    items = _ids_column(_ids("i", n_items).take(pa.array(events.item)), dirty["null_item"], dirty["bad_item"],
                        variant["item_padded"], "")
    values = RATINGS.take(pa.array(events.rating, mask=events.rating < 0))
    values = _patch(values, dirty["bad_rating"], _alternate(dirty["bad_rating"], "9.5", "-1"))
    bad_ts = dirty["bad_ts"]
    impossible = pa.array([f"{day_text(d)[:4]}-13-45T00:00:00Z" for d in events.day[bad_ts]], pa.string())
    stamps = _patch(iso_utc(events.ts), bad_ts, _alternate(bad_ts, "not-a-time", impossible))
    style = rng.integers(3, size=len(variant["event_case"]))
    events_column = _patch(pa.array(EVENT_KINDS).take(pa.array(events.kind)),
                           np.concatenate([dirty["unknown_event"], variant["event_case"]]), pa.concat_arrays([
                               pa.array(["hover"] * len(dirty["unknown_event"]), pa.string()),
                               EVENT_VARIANTS.take(pa.array(events.kind[variant["event_case"]] * 3 + style)),
                           ]))
    return [users, items, events_column, values, stamps]


def _duplicated_rows(rng: np.random.Generator, spec: SyntheticSpec, source: np.ndarray) -> np.ndarray:
    """Every row once plus exact duplicates right after their original; a stable sort on the copied-from
    position keeps every day in time order with originals first."""
    n_rows = len(source)
    n_dup = min(round(spec.duplicate_share * n_rows), n_rows)
    rows = np.concatenate([np.arange(n_rows), rng.choice(n_rows, size=n_dup, replace=False)])
    return rows[np.argsort(source[rows], kind="stable")]


# one theme per taste group (cycled beyond twelve): an item's text names its group's theme and words, so
# content predicts taste as it does in real catalogues (genres, tags), and a text model can learn it
THEMES = (
    ("Jazz", "saxophone, trumpet, swing, bebop, improvisation"),
    ("Space adventure", "starship, aliens, robots, galaxy, astronauts"),
    ("Cooking", "recipes, kitchen, baking, spices, desserts"),
    ("Football", "goals, league, stadium, striker, penalties"),
    ("Gardening", "flowers, soil, seeds, roses, greenhouse"),
    ("Horror", "ghosts, haunted house, vampires, nightmares, fear"),
    ("Travel", "beaches, islands, passports, hotels, road trips"),
    ("Programming", "python, compilers, databases, algorithms, code"),
    ("Romance", "love story, wedding, first kiss, hearts, letters"),
    ("History", "empires, kings, medieval castles, battles, chronicles"),
    ("Fitness", "running, gym, yoga, muscles, training plans"),
    ("Fairy tales", "princesses, dragons, enchanted forests, wizards, castles"),
)


def synthetic_catalogue(spec: SyntheticSpec) -> pa.Table:
    """The item catalogue of ``spec``'s world: ``item_id, title, text`` (``RAW_CATALOGUE_COLUMNS``).

    Every item of the events has a row whose text carries its taste group's theme and a seeded draw of
    three of its words; ``catalogue_only_share`` more items (a share of the items) exist only in the
    catalogue, with no event at all: the cold start of a brand-new item.
    """
    world = _world(np.random.default_rng(spec.seed), spec)  # the same world synthesize draws first
    rng = np.random.default_rng([spec.seed, 1])
    extra = round(len(world.item_arrival) * spec.catalogue_only_share)
    groups = np.concatenate([world.item_group, rng.integers(spec.tastes, size=extra)])
    titles, texts = [], []
    for item, group in enumerate(groups):
        theme, words = THEMES[group % len(THEMES)]
        picked = rng.choice(words.split(", "), size=3, replace=False)
        edition = f" {group // len(THEMES) + 1}" if group >= len(THEMES) else ""
        titles.append(f"{theme}{edition} no. {item}")
        texts.append(f"{theme}{edition} no. {item}. {theme}{edition}: {', '.join(picked)}.")
    return pa.table(dict(zip(RAW_CATALOGUE_COLUMNS, (_ids("i", len(groups)), pa.array(titles), pa.array(texts)),
                             strict=True)))


def synthesize(spec: SyntheticSpec) -> tuple[pa.Table, np.ndarray]:
    """Draw the raw event log described by ``spec``.

    Clean events: each day, users that have arrived pick items; a ``taste_strength`` share of the picks
    come from the items of the user's taste group, the rest from the whole catalogue, both by Zipf
    popularity; users' activity is log-normal. Ratings are higher for items of the user's group. On
    top come one bot user, corrupted copies of events (``dirt_share``), harmless spelling variants
    (``variant_share``, in place: ids padded with spaces, event kinds re-cased or padded) and exact
    duplicates (``duplicate_share``). One generator draws every step in this order, so a seed gives the
    same rows.

    Returns:
        The raw rows (string columns of ``RAW_COLUMNS``) in time order within each day, and the day
        number (days since 1970-01-01) of the partition each row belongs to.
    """
    rng = np.random.default_rng(spec.seed)
    first_day = day_number(spec.end_date) - spec.days + 1
    world = _world(rng, spec)
    days = [_day(rng, spec, world, d, first_day) for d in range(spec.days)]
    user, item, kind, rating, ts = (np.concatenate(parts) for parts in zip(*days, strict=True))
    events = _Events(user, item, kind, rating, ts, ts // SECONDS_PER_DAY)
    n_real = len(user)
    not_bot = np.flatnonzero(user != world.bot)
    events, source, dirty = _with_dirt(rng, spec, events, not_bot)
    variant = _variant_rows(rng, spec, not_bot)
    columns = _columns(rng, events, world.bot, len(world.item_arrival), dirty, variant)
    rows = _duplicated_rows(rng, spec, source)
    table = pa.table(dict(zip(RAW_COLUMNS, columns, strict=True))).take(pa.array(rows))
    log.info(
        "synthesised %d rows: %d events, %d bot, %d corrupted copies, %d variants, %d duplicates; %d users, %d items",
        len(rows), spec.events, n_real - spec.events, len(source) - n_real, sum(map(len, variant.values())),
        len(rows) - len(source), world.bot, len(world.item_arrival),
    )
    return table, events.day[rows]
