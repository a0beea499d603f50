"""Check published recommendations against the input file, the way a user would; and derive test inputs.

``derive --out DIR`` writes three real-world layouts of ``../shared/data/ml-latest-small/ratings.csv``
(the same interactions, other spellings), for ``make run-on``:

* ``ml-100k/u.data``: MovieLens 100K's layout (tab-separated, headerless: user, item, rating, seconds);
* ``plays.tsv``: a listening log with a header, play counts as the value, millisecond timestamps and
  string ids that differ only by leading zeros (``0007`` and ``7``) or by case (``a0bcd`` and ``A0BCD``);
* ``amazon.csv``: a headerless Amazon ratings CSV (item, user, rating, seconds) with ASIN-like ids.

``check --src FILE --recs PARQUET [--sep S] [--columns user,item] [--header|--no-header] [--k K]`` reads
the input with pandas, independently of the pipeline, and checks the published ``recs.parquet``: every
user of the input is there, with exactly K rows (fewer only when fewer unseen items exist), none of them
a pair the user had in the input, every id spelled exactly as in the input and of the input's type.
Prints one JSON line last; exits 1 when a check fails.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from recsys.data.ids import ID_PAD

ML_SMALL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ml-latest-small" / "ratings.csv"


def _letters(n: int, width: int) -> str:
    return "".join(chr(ord("a") + int(d)) for d in f"{n:0{width}d}")


def derive(out: Path) -> dict[str, str]:
    """Write the three layouts under ``out``; returns their paths."""
    ratings = pd.read_csv(ML_SMALL)
    out.mkdir(parents=True, exist_ok=True)
    (out / "ml-100k").mkdir(exist_ok=True)
    paths = {"movielens-100k": out / "ml-100k" / "u.data", "plays": out / "plays.tsv", "amazon": out / "amazon.csv"}
    ratings.to_csv(paths["movielens-100k"], sep="\t", header=False, index=False)
    # odd users get a zero-padded spelling of half their number, even users the plain one: "0007" and "7"
    # (four digits always start with a zero here: 610 users, so no padded id equals a plain one)
    half = ratings["userId"] // 2
    users = np.where(ratings["userId"] % 2 == 1, half.map(lambda u: f"{u:04d}"), half.astype(str)).astype(object)
    # items 2k and 2k+1 share letters and differ in case only: "a0bcd" and "A0BCD"
    items = [_letters(m // 2, 5) for m in ratings["movieId"]]
    items = [f"a0{s}" if m % 2 == 0 else f"A0{s.upper()}" for s, m in zip(items, ratings["movieId"], strict=True)]
    plays = np.round(np.expm1(ratings["rating"].to_numpy() * 1.2)).astype(int)
    pd.DataFrame({"listener": users, "artist": items, "plays": plays,
                  "time_ms": ratings["timestamp"] * 1000}).to_csv(paths["plays"], sep="\t", index=False)
    asins = [f"B00{_letters(m, 7).upper()}" for m in ratings["movieId"]]
    reviewers = [f"A{_letters(u, 4).upper()}x{u}" for u in ratings["userId"]]
    pd.DataFrame({"item": asins, "user": reviewers, "rating": ratings["rating"],
                  "ts": ratings["timestamp"]}).to_csv(paths["amazon"], header=False, index=False)
    return {name: str(path) for name, path in paths.items()}


def check(src: Path, recs_path: Path, *, sep: str, user_col: str | int, item_col: str | int, header: bool,
          k: int) -> dict:
    """The contract figures of ``recs_path`` against the interactions of ``src``."""
    raw = pd.read_csv(src, sep=sep, header=0 if header else None, dtype=str, keep_default_na=False)
    users, items = raw[user_col].str.strip(ID_PAD), raw[item_col].str.strip(ID_PAD)
    recs = pd.read_parquet(recs_path)
    integer = users.str.fullmatch(r"0|-?[1-9][0-9]{0,17}").all(), items.str.fullmatch(r"0|-?[1-9][0-9]{0,17}").all()
    problems = []
    for column, want_int in (("user_id", integer[0]), ("item_id", integer[1])):
        is_int = recs[column].dtype == np.int64
        if is_int != bool(want_int):
            problems.append(f"{column} is {recs[column].dtype}; the input's ids are {'int64' if want_int else 'strings'}")
    rec_users, rec_items = recs["user_id"].astype(str), recs["item_id"].astype(str)
    missing = sorted(set(users) - set(rec_users))
    extra = sorted(set(rec_users) - set(users))
    unknown_items = sorted(set(rec_items) - set(items))
    seen = set(zip(users, items, strict=True))
    seen_slots = sum(pair in seen for pair in zip(rec_users, rec_items, strict=True))
    catalogue = items.nunique()
    seen_per_user = pd.Series(list(seen)).map(lambda p: p[0]).value_counts()
    expected = np.minimum(k, catalogue - seen_per_user.reindex(rec_users.unique()).fillna(0).to_numpy())
    counts = rec_users.value_counts().reindex(rec_users.unique()).to_numpy()
    wrong_counts = int((counts != expected).sum())
    if missing:
        problems.append(f"{len(missing)} input users not served, e.g. {missing[:3]}")
    if extra:
        problems.append(f"{len(extra)} users not in the input, e.g. {extra[:3]}")
    if unknown_items:
        problems.append(f"{len(unknown_items)} items not in the input, e.g. {unknown_items[:3]}")
    if seen_slots:
        problems.append(f"{seen_slots} recommendations of pairs the user had")
    if wrong_counts:
        problems.append(f"{wrong_counts} users without K rows (or all unseen items)")
    return {"src": str(src), "input_users": int(users.nunique()), "served_users": int(rec_users.nunique()),
            "rows": int(len(recs)), "seen_pairs_recommended": int(seen_slots), "missing_users": len(missing),
            "ids_changed": len(extra) + len(unknown_items), "user_id_type": str(recs["user_id"].dtype),
            "item_id_type": str(recs["item_id"].dtype), "problems": problems, "ok": not problems}


def _column(text: str) -> str | int:
    return int(text) if text.isdigit() else text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    d = sub.add_parser("derive")
    d.add_argument("--out", type=Path, required=True)
    c = sub.add_parser("check")
    c.add_argument("--src", type=Path, required=True)
    c.add_argument("--recs", type=Path, required=True)
    c.add_argument("--sep", default=",")
    c.add_argument("--columns", default="user,item", help="user and item column: names, or 0-based positions")
    c.add_argument("--header", action=argparse.BooleanOptionalAction, default=True)
    c.add_argument("--k", type=int, default=20)
    args = parser.parse_args(argv)
    if args.command == "derive":
        print(json.dumps({"bench": "recs_contract", "derived": derive(args.out)}))
        return 0
    user_col, item_col = (_column(c) for c in args.columns.split(","))
    sep = "\t" if args.sep in ("tab", "\\t") else args.sep
    result = check(args.src, args.recs, sep=sep, user_col=user_col, item_col=item_col, header=args.header, k=args.k)
    print(json.dumps({"bench": "recs_contract", **result}))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
