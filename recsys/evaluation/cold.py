"""Cold-start evaluation: a seeded share of items held out as simulated new items, and how well they are ranked.

The protocol (docs/model.md, "Cold-start evaluation"):

* **Cold items** (:func:`choose_cold_items`): ``evaluate.cold_item_share`` of the items that have at least
  one test interaction, drawn with the config's seed. Only items with a test interaction are drawn because
  only they can be evaluated: a cold item without one would cost training data and measure nothing.
* **Training without them** (:func:`without_items`): every interaction of a cold item leaves the cold fits'
  train and valid matrices and the history their users are read from; train also drops every example row of
  a cold item (any source, :func:`recsys.models.training.without_item_rows`). Their test interactions are what
  is evaluated.
* **Two views** (:func:`cold_views`), both over the users with a test interaction on a cold item, each reading
  the user's history without any cold item (a new item has no interactions yet), with the protocol's
  exclusions (:class:`recsys.evaluation.protocol.HeldOut`):

  - ``among_cold``: only the cold items are candidates (minus what the user has seen); targets are the
    user's test interactions on cold items. This is the question "which new item suits this user?";
  - ``full_catalogue``: every item is a candidate; targets are still the cold items' test interactions. This
    is whether a new item makes it into the list ``publish`` would serve.
* **Baselines** over the same views: :class:`RandomOrder` (seeded), :class:`TfidfProfile` (title, genre and
  tag words) and :class:`EmbeddingProfile` (the text model's space).
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recsys.core.columns import ITEM_ID, TEXT, require_columns
from recsys.core.matrices import Matrices, binary
from recsys.evaluation.lift import lift_interval
from recsys.evaluation.metrics import UserMetrics
from recsys.evaluation.protocol import HeldOut, Scorer

log = logging.getLogger(__name__)

VIEWS = ("among_cold", "full_catalogue")
METRICS = ("ndcg", "recall", "precision")  # what the cold-start section reports at each cut-off
COLD_STREAM = 13  # the cold choice's own random stream beside the config's seed (issue 13)
RANDOM_STREAM = 7  # the random baseline's stream
TFIDF_TARGET = 1.3  # the model's NDCG among cold items must reach this multiple of TF-IDF's
MODEL, NOCONTENT = "model_cold", "model_cold_nocontent"
# what the model is compared with in the lifts: name in the lifts -> the scorer it divides by
LIFT_REFERENCES = {"vs_tfidf": "tfidf", "vs_nocontent": NOCONTENT, "vs_embedding_knn": "embedding_knn"}
# letters and digits in runs; a CJK character (no spaces between words) is a word of its own
TOKEN = re.compile(r"[\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af]|[^\W_\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af]+")


def skip_reason(share: float, has_vectors: np.ndarray | None) -> str | None:
    """Why tonight has no cold-start fits, or ``None`` when it has them.

    Args:
        share: ``evaluate.cold_item_share``.
        has_vectors: the items with a text embedding (:func:`recsys.content.vectors.read_item_vectors`);
            ``None`` when they were not read.
    """
    if share <= 0:
        return "evaluate.cold_item_share is 0 (cold-start evaluation off)"
    if has_vectors is None or not has_vectors.any():
        return "no text embeddings for this date (embed/ds=D/embeddings.parquet missing or empty)"
    return None


def choose_cold_items(test: sp.csr_matrix, share: float, seed: int) -> np.ndarray:
    """The simulated new items: a seeded ``share`` of the items with at least one test interaction.

    ``round(share x candidates)`` items, at least one when there is a candidate and ``share > 0``; the
    same test matrix, share and seed always give the same items.

    Returns:
        Item indices, ascending.
    """
    if not 0 <= share < 1:
        raise ValueError(f"evaluate.cold_item_share must lie in [0, 1), got {share}")
    candidates = np.flatnonzero(np.diff(sp.csc_matrix(test).indptr) > 0)
    if share == 0 or len(candidates) == 0:
        return np.zeros(0, np.int64)
    size = max(1, int(round(share * len(candidates))))
    rng = np.random.default_rng([int(seed), COLD_STREAM])
    return np.sort(rng.choice(candidates, size=size, replace=False)).astype(np.int64)


def drop_columns(matrix: sp.csr_matrix, items: np.ndarray) -> sp.csr_matrix:
    """``matrix`` without any stored entry in the columns ``items`` (same shape)."""
    keep = np.ones(matrix.shape[1], np.float32)
    keep[np.asarray(items, np.int64)] = 0.0
    out = sp.csr_matrix(sp.csr_matrix(matrix, dtype=np.float32) @ sp.diags(keep))
    out.eliminate_zeros()
    return out


def without_items(m: Matrices, items: np.ndarray) -> Matrices:
    """The tables a cold fit trains on: no train, valid or history entry of ``items``.

    ``test`` is kept (the cold items' test interactions are what is evaluated) and so is ``seen`` (what is
    never recommended does not change).
    """
    return Matrices(train=drop_columns(m.train, items), valid=drop_columns(m.valid, items), test=m.test,
                    user_ids=m.user_ids, item_ids=m.item_ids, history=drop_columns(m.history, items), seen=m.seen)


@dataclass(frozen=True)
class ColdViews:
    """The held-out users of the cold items, as the two rankings see them."""

    items: np.ndarray  # the cold items, ascending
    among_cold: HeldOut  # exclude and test hold only the cold columns: a scorer's output is cut to them
    full_catalogue: HeldOut

    def score(self, scorer: Scorer, ks: Sequence[int]) -> dict[str, UserMetrics]:
        """Per-user metrics of one model in both views."""
        items = self.items
        return {"among_cold": self.among_cold.score(lambda h: scorer(h)[:, items], ks),
                "full_catalogue": self.full_catalogue.score(scorer, ks)}


def cold_views(held: HeldOut, items: np.ndarray) -> ColdViews:
    """The users of ``held`` with a test interaction on a cold item, their history without any cold item.

    Args:
        held: the date's held-out users (:meth:`HeldOut.of`).
        items: the cold items.
    """
    items = np.sort(np.asarray(items, np.int64))
    is_cold = np.zeros(held.test.shape[1], np.float32)
    is_cold[items] = 1.0
    targets = sp.csr_matrix(held.test @ sp.diags(is_cold))
    targets.eliminate_zeros()
    rows = np.flatnonzero(np.diff(targets.indptr) > 0)
    history = drop_columns(held.history[rows], items)
    exclude, targets = held.exclude[rows], targets[rows]
    return ColdViews(
        items=items,
        among_cold=HeldOut(held.users[rows], history, exclude[:, items], targets[:, items]),
        full_catalogue=HeldOut(held.users[rows], history, exclude, targets),
    )


def summary(per_user: UserMetrics, ks: Iterable[int]) -> dict[str, float | int]:
    """The cold-start figures of one view: NDCG, recall and precision at each K, coverage and users."""
    full = per_user.summary()
    out = {f"{m}@{k}": full[f"{m}@{k}"] for k in ks for m in METRICS}
    return {**out, "coverage": full["coverage"], "users": full["users"]}


def score_cold(scorers: Mapping[str, Scorer], views: ColdViews,
               ks: Sequence[int]) -> tuple[dict[str, dict[str, dict[str, float | int]]], dict[str, dict[str, UserMetrics]]]:
    """Score every model in both views.

    Returns:
        ``(results, per_user)``: by model name and view, its :func:`summary` and its :class:`UserMetrics`.
    """
    results, per_user = {}, {}
    primary = f"ndcg@{min(ks)}"
    for name, scorer in scorers.items():
        per_user[name] = views.score(scorer, ks)
        results[name] = {view: summary(per_user[name][view], ks) for view in VIEWS}
        log.info("cold start, %s: %s %.4f among cold items, %.4f in the full catalogue", name, primary,
                 results[name]["among_cold"][primary], results[name]["full_catalogue"][primary])
    return results, per_user


# --- baselines -------------------------------------------------------------------------------------------------

class RandomOrder:
    """Every item in a seeded random order (the same scores for the same histories and seed)."""

    def __init__(self, seed: int) -> None:
        self.seed = int(seed)

    def scores(self, histories: sp.csr_matrix) -> np.ndarray:
        return np.random.default_rng([self.seed, RANDOM_STREAM]).random(histories.shape, dtype=np.float32)


def tokens(text: str) -> list[str]:
    """The lowercase words of ``text`` (runs of letters and digits; each CJK character a word)."""
    return TOKEN.findall(text.lower())


def tfidf_matrix(texts: Sequence[str]) -> sp.csr_matrix:
    """Items x vocabulary TF-IDF, each row L2-normalised (a row without words stays 0).

    ``tf`` is the word's count in the item's text, ``idf = ln((1 + N) / (1 + df)) + 1`` with ``N`` the items
    with any word and ``df`` those containing the word (smoothed, so a word every item has still counts).
    """
    vocabulary: dict[str, int] = {}
    rows, cols = [], []
    for row, text in enumerate(texts):
        for word in tokens(text or ""):
            rows.append(row)
            cols.append(vocabulary.setdefault(word, len(vocabulary)))
    counts = sp.csr_matrix((np.ones(len(rows), np.float64), (rows, cols)), shape=(len(texts), len(vocabulary)))
    counts.sum_duplicates()
    n_docs = int((np.diff(counts.indptr) > 0).sum())
    df = np.diff(sp.csc_matrix(counts).indptr)
    idf = np.log((1.0 + n_docs) / (1.0 + df)) + 1.0
    weighted = sp.csr_matrix(counts @ sp.diags(idf))
    return sp.csr_matrix(_unit_rows(weighted), dtype=np.float32)


def _unit_rows(x: sp.csr_matrix) -> sp.csr_matrix:
    norms = np.sqrt(np.asarray(x.multiply(x).sum(axis=1)).ravel())
    return sp.csr_matrix(sp.diags(np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)) @ x)


def catalogue_texts(catalogue: pd.DataFrame, item_ids: np.ndarray) -> list[str]:
    """Each indexed item's catalogue text (title, genres and tags), ``""`` for items not in the catalogue."""
    require_columns(list(catalogue.columns), (ITEM_ID, TEXT), "catalogue")
    ids = catalogue[ITEM_ID].astype("string").fillna("").tolist()
    texts = catalogue[TEXT].astype("string").fillna("").tolist()
    by_id = dict(zip(ids, texts, strict=True))
    return [by_id.get(str(item), "") for item in item_ids]


class TfidfProfile:
    """Content baseline: cosine between a user's TF-IDF profile and each item's TF-IDF vector.

    A user's profile is the sum of the TF-IDF vectors of the items in their history (each item once,
    whatever its weight). Items without text, and users without a profile, score 0.
    """

    def __init__(self, texts: Sequence[str]) -> None:
        self.items = tfidf_matrix(texts)

    def scores(self, histories: sp.csr_matrix) -> np.ndarray:
        profiles = _unit_rows(sp.csr_matrix(binary(histories) @ self.items, dtype=np.float64))
        return np.asarray((profiles @ self.items.T).todense(), dtype=np.float32)


class EmbeddingProfile:
    """Text-embedding neighbours: cosine between the mean of a user's items' embeddings and each item's.

    A user's profile is the mean of the unit embeddings of their history's items (each once); items without
    an embedding add nothing to a profile and score 0, as does every item for a user without a profile.
    """

    def __init__(self, vectors: np.ndarray, has: np.ndarray) -> None:
        v = np.where(np.asarray(has, bool)[:, None], np.asarray(vectors, np.float32), 0.0)
        norms = np.linalg.norm(v, axis=1, keepdims=True)
        self.items = np.divide(v, norms, out=np.zeros_like(v), where=norms > 0).astype(np.float32)

    def scores(self, histories: sp.csr_matrix) -> np.ndarray:
        profiles = np.asarray(binary(histories) @ self.items, dtype=np.float32)
        norms = np.linalg.norm(profiles, axis=1, keepdims=True)
        profiles = np.divide(profiles, norms, out=np.zeros_like(profiles), where=norms > 0)
        return profiles @ self.items.T


# --- lifts, targets, the section of metrics.json ---------------------------------------------------------------

def cold_lifts(per_user: Mapping[str, Mapping[str, UserMetrics]], metric: str, seed: int) -> dict[str, Any]:
    """The model's lift over each reference in both views, with the paired bootstrap interval of today's lift.

    Returns:
        ``{view: {"vs_tfidf": {"lift", "low", "high"}, ...}}``; a lift is ``None`` where the reference
        scored 0, an interval ``None`` where it has no users or the reference never scores.
    """
    out: dict[str, Any] = {}
    for view in VIEWS:
        model = per_user[MODEL][view].values[metric]
        out[view] = {}
        for label, reference in LIFT_REFERENCES.items():
            if reference not in per_user:
                continue
            ref = per_user[reference][view].values[metric]
            interval = lift_interval(model, ref, seed)
            mean_ref = float(ref.mean()) if len(ref) else 0.0
            out[view][label] = {"lift": float(model.mean()) / mean_ref if mean_ref > 0 else None,
                                "low": None if interval is None else interval[0],
                                "high": None if interval is None else interval[1]}
    return out


def cold_targets(results: Mapping[str, Mapping[str, Mapping[str, float]]], metric: str) -> dict[str, Any]:
    """Issue 13's cold-start targets as data: the model >= 1.3x TF-IDF and above the embedding neighbours.

    Both on ``metric`` among the cold items; ``met`` says whether both hold.
    """
    model = float(results[MODEL]["among_cold"][metric])
    tfidf = float(results["tfidf"]["among_cold"][metric])
    knn = float(results["embedding_knn"]["among_cold"][metric])
    ratio = model / tfidf if tfidf > 0 else (math.inf if model > 0 else None)
    vs_tfidf = {"metric": metric, "view": "among_cold", "model": model, "tfidf": tfidf,
                "ratio": None if ratio is None or math.isinf(ratio) else ratio, "target": TFIDF_TARGET,
                "met": bool(ratio is not None and ratio >= TFIDF_TARGET)}
    vs_knn = {"metric": metric, "view": "among_cold", "model": model, "embedding_knn": knn, "met": model > knn}
    return {"model_vs_tfidf": vs_tfidf, "model_above_embedding_knn": vs_knn,
            "met": vs_tfidf["met"] and vs_knn["met"]}


def _span(lift: Mapping[str, Any]) -> str:
    if lift.get("lift") is None:
        return "–"
    text = f"{lift['lift']:.3f}x"
    if lift.get("low") is not None:
        noise = "within the noise" if lift["low"] <= 1.0 <= lift["high"] else "beyond the noise"
        text += f" (95% {lift['low']:.3f}-{lift['high']:.3f}, {noise})"
    return text


def cold_verdict(section: Mapping[str, Any]) -> str:
    """One line on tonight's cold-start evaluation: the targets and the content generator's lift."""
    targets, lifts = section["targets"], section["lifts"]["among_cold"]
    t, k = targets["model_vs_tfidf"], targets["model_above_embedding_knn"]
    lead = "Cold-start targets met" if targets["met"] else "Cold-start targets NOT met"
    return (f"{lead} on {section['items']} cold items, {section['users']} users: {t['metric']} among cold items "
            f"model {t['model']:.4f} vs TF-IDF {t['tfidf']:.4f} (target >= {t['target']}x: "
            f"{'met' if t['met'] else 'not met'}), vs embedding kNN {k['embedding_knn']:.4f} "
            f"({'above' if k['met'] else 'not above'}); lift over the model without content_pos "
            f"{_span(lifts.get('vs_nocontent', {}))}.")


def cold_start_section(scorers: Mapping[str, Scorer], held: HeldOut, items: np.ndarray, ks: Sequence[int],
                       seed: int, share: float) -> dict[str, Any]:
    """metrics.json's ``cold_start``: every model in both views, the lifts, the targets and the verdict.

    Args:
        scorers: ``model_cold``, ``model_cold_nocontent``, ``tfidf``, ``embedding_knn`` and ``random``.
        held: the date's held-out users (the whole test split).
        items: the cold items train held out (models/ds=D/cold_items.parquet).
        ks: the cut-offs; the targets and lifts are on NDCG at the first.
        seed: the bootstrap's seed.
        share: ``evaluate.cold_item_share``, recorded.
    """
    views = cold_views(held, items)
    metric = f"ndcg@{min(ks)}"
    section: dict[str, Any] = {"share": share, "items": int(len(views.items)),
                               "users": int(len(views.full_catalogue.users)), "metric": metric}
    if section["users"] == 0:
        return {**section, "skipped": "no test user has an interaction with a cold item"}
    results, per_user = score_cold(scorers, views, ks)
    section.update({"models": results, "lifts": cold_lifts(per_user, metric, seed),
                    "targets": cold_targets(results, metric)})
    section["verdict"] = cold_verdict(section)
    return section
