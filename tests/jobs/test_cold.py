"""The cold-start evaluation: the cold choice, the two rankings, the content baselines and the jobs' cold fits."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import scipy.sparse as sp

from recsys.core.lake import Lake
from recsys.core.matrices import Matrices
from recsys.evaluation.cold import (
    EmbeddingProfile,
    TfidfProfile,
    catalogue_texts,
    choose_cold_items,
    cold_targets,
    cold_views,
    skip_reason,
    tokens,
    without_items,
)
from recsys.evaluation.protocol import HeldOut
from tests.support import planted_blocks, write_matrices

DS = "2026-01-31"
FAST = ["--set", "train.epochs=3", "--set", "train.patience=2", "--set", "train.hidden=16",
        "--set", "train.batch_size=64", "--set", "train.learning_rate=0.01", "--set", "train.final_fit=false",
        "--set", "train.ease_lambdas=[200.0]", "--set", "train.item_item_alphas=[0.0]"]


def csr(rows: list[list[float]]) -> sp.csr_matrix:
    return sp.csr_matrix(np.array(rows, dtype=np.float32))


def tiny_held_out() -> HeldOut:
    """3 users x 5 items; items 3 and 4 will be cold.

    u0 read 0, 1 and 3 (3 is cold: gone from what a model reads, still never ranked), test 4;
    u1 read 1 and 2, test 4; u2 read 0, test 2 (no cold target: not evaluated).
    """
    history = csr([[1, 1, 0, 1, 0], [0, 1, 1, 0, 0], [1, 0, 0, 0, 0]])
    test = csr([[0, 0, 0, 0, 1], [0, 0, 0, 0, 1], [0, 0, 1, 0, 0]])
    return HeldOut(np.array([0, 1, 2]), history, history.copy(), test)


SCORES = np.array([[0.9, 0.1, 0.8, 0.7, 0.2], [0.5, 0.4, 0.3, 0.6, 0.1], [0.1, 0.2, 0.3, 0.4, 0.5]], np.float32)


def test_cold_metrics_match_hand_computed_values() -> None:
    read = []

    def scorer(histories: sp.csr_matrix) -> np.ndarray:
        read.append(histories.toarray())
        return SCORES[: histories.shape[0]]

    views = cold_views(tiny_held_out(), np.array([4, 3]))
    among = views.among_cold.score(lambda h: scorer(h)[:, views.items], [1, 2])
    full = views.full_catalogue.score(scorer, [1, 2])
    # only u0 and u1 have a test interaction on a cold item; neither's history shows a cold item
    assert list(views.full_catalogue.users) == [0, 1]
    assert not read[0][:, [3, 4]].any() and read[0][0].tolist() == [1, 1, 0, 0, 0]
    # among cold: u0 has seen 3, so 4 is its only candidate, a hit at rank 1 (ndcg 1); u1 ranks 3 (0.6) before
    # its target 4 (0.1): a hit at rank 2, ndcg@2 = 1 / log2(3)
    hand_ndcg2 = (1.0 + 1.0 / math.log2(3)) / 2
    assert among.summary()["ndcg@2"] == pytest.approx(hand_ndcg2)
    assert among.summary()["ndcg@1"] == pytest.approx(0.5)
    assert among.summary()["recall@2"] == pytest.approx(1.0)
    assert among.summary()["precision@2"] == pytest.approx(0.5)
    assert among.summary()["precision@1"] == pytest.approx(0.5)
    # full catalogue: u0 may rank 2 (0.8) and 4 (0.2): hit at rank 2; u1 may rank 0, 3, 4 -> 3, 0, 4: no hit in 2
    assert full.summary()["ndcg@2"] == pytest.approx((1.0 / math.log2(3) + 0.0) / 2)
    assert full.summary()["recall@2"] == pytest.approx(0.5)
    assert full.summary()["precision@2"] == pytest.approx(0.25)
    assert full.summary()["ndcg@1"] == 0.0


def test_tfidf_ranks_the_item_sharing_words_first_with_the_hand_cosine() -> None:
    texts = ["Toy Story (1995). Animation, Comedy", "Heat (1995). Action, Crime", "Cars. Animation, Comedy"]
    baseline = TfidfProfile(texts)
    scores = baseline.scores(csr([[1, 0, 0]]))  # a user who read Toy Story
    # hand: N = 3 items; idf = ln(4 / (1 + df)) + 1; Toy Story = toy, story, 1995 (df 2), animation, comedy (df 2)
    rare, common = math.log(4 / 2) + 1, math.log(4 / 3) + 1
    toy = {"toy": rare, "story": rare, "1995": common, "animation": common, "comedy": common}
    cars = {"cars": rare, "animation": common, "comedy": common}
    heat = {"heat": rare, "1995": common, "action": rare, "crime": rare}

    def cosine(a: dict[str, float], b: dict[str, float]) -> float:
        dot = sum(v * b.get(w, 0.0) for w, v in a.items())
        return dot / math.sqrt(sum(v * v for v in a.values())) / math.sqrt(sum(v * v for v in b.values()))

    assert scores[0, 2] == pytest.approx(cosine(toy, cars), rel=1e-5)
    assert scores[0, 1] == pytest.approx(cosine(toy, heat), rel=1e-5)
    assert scores[0, 2] > scores[0, 1]
    cold = np.array([1, 2])
    assert cold[np.argmax(scores[0, cold])] == 2


def test_tokens_are_lowercase_words_and_cjk_characters() -> None:
    assert tokens("Toy Story (1995). Animation, Comedy. Tags: pixar, fun") == [
        "toy", "story", "1995", "animation", "comedy", "tags", "pixar", "fun"]
    assert tokens("玩具总动员 Toy") == ["玩", "具", "总", "动", "员", "toy"]


def test_catalogue_texts_line_up_with_the_item_index() -> None:
    catalogue = pd.DataFrame({"item_id": ["7", "3"], "text": ["Seven", None]}).astype("string")
    assert catalogue_texts(catalogue, np.array(["3", "5", "7"], dtype=object)) == ["", "", "Seven"]


def test_embedding_profile_is_the_cosine_to_the_mean_of_the_history() -> None:
    vectors = np.array([[1, 0], [0, 2], [1, 1], [5, 5]], np.float32)
    has = np.array([True, True, True, False])
    scores = EmbeddingProfile(vectors, has).scores(csr([[1, 1, 0, 0], [0, 0, 0, 0]]))
    assert scores[0, 2] == pytest.approx(1.0)  # profile (1, 1) / sqrt(2) is item 2's direction
    assert scores[0, 0] == pytest.approx(1 / math.sqrt(2))
    assert scores[0, 3] == 0.0 and not scores[1].any()  # no embedding / no profile: 0


def test_cold_choice_is_seeded_and_removes_every_train_and_valid_interaction() -> None:
    m, _ = planted_blocks()
    first = choose_cold_items(m.test, 0.2, seed=42)
    assert np.array_equal(first, choose_cold_items(m.test, 0.2, seed=42))
    with_test = np.flatnonzero(np.asarray((m.test > 0).sum(axis=0)).ravel() > 0)
    assert len(first) == round(0.2 * len(with_test)) and np.isin(first, with_test).all()
    assert choose_cold_items(m.test, 0.0, seed=42).size == 0
    cold = without_items(m, first)
    for name in ("train", "valid", "history"):
        assert getattr(cold, name)[:, first].nnz == 0
        kept = np.setdiff1d(np.arange(m.n_items), first)
        assert (getattr(cold, name)[:, kept] != getattr(m, name)[:, kept]).nnz == 0
    assert (cold.test != m.test).nnz == 0  # what is evaluated stays


def test_skip_reasons() -> None:
    assert "cold_item_share is 0" in skip_reason(0.0, np.ones(3, bool))
    assert "no text embeddings" in skip_reason(0.2, np.zeros(3, bool))
    assert "no text embeddings" in skip_reason(0.2, None)
    assert skip_reason(0.2, np.array([False, True])) is None


def test_targets_as_data() -> None:
    results = {"model_cold": {"among_cold": {"ndcg@10": 0.26}}, "tfidf": {"among_cold": {"ndcg@10": 0.2}},
               "embedding_knn": {"among_cold": {"ndcg@10": 0.25}}}
    targets = cold_targets(results, "ndcg@10")
    assert targets["model_vs_tfidf"]["ratio"] == pytest.approx(1.3) and targets["model_vs_tfidf"]["met"]
    assert targets["model_above_embedding_knn"]["met"] and targets["met"]
    results["embedding_knn"]["among_cold"]["ndcg@10"] = 0.3
    assert not cold_targets(results, "ndcg@10")["met"]


def write_content(lake: Lake, m: Matrices) -> None:
    """A catalogue whose words and embeddings name each item's block (4 blocks of 10 items)."""
    blocks = np.arange(m.n_items) // 10
    genres = ["Comedy", "Drama", "Horror", "Western"]
    texts = [f"Film {i} (1990). {genres[b]}. Tags: block{b}" for i, b in enumerate(blocks)]
    with lake.writing("catalogue", DS) as staged:
        pd.DataFrame({"item_id": m.item_ids.astype(str), "title": texts, "text": texts,
                      "content_hash": [str(i) for i in range(m.n_items)]}).to_parquet(staged / "catalogue.parquet")
    rng = np.random.default_rng(0)
    vectors = np.eye(4, 8, dtype=np.float32)[blocks] + 0.05 * rng.standard_normal((m.n_items, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    with lake.writing("embed", DS) as staged:
        pq.write_table(pa.table({"item_id": pa.array(m.item_ids.astype(str), pa.string()),
                                 "content_hash": pa.array([str(i) for i in range(m.n_items)], pa.string()),
                                 "embedding": pa.array(list(vectors), pa.list_(pa.float32()))}),
                       staged / "embeddings.parquet")


@pytest.fixture
def planted_lake(lake: Lake) -> tuple[Lake, Matrices]:
    m, examples = planted_blocks()
    write_matrices(lake, DS, m)
    with lake.writing("examples", DS) as staged:
        examples.to_parquet(staged / "examples.parquet", index=False)
    return lake, m


@pytest.mark.tf
def test_no_embeddings_skips_the_cold_fits_and_says_why(planted_lake: tuple[Lake, Matrices]) -> None:
    from jobs.evaluate import main as evaluate
    from jobs.train import main as train

    lake, _ = planted_lake
    result = train(["--ds", DS, "--lake", str(lake.root), *FAST])
    assert result["cold_items"] == 0 and result["model_cold"] is None
    out = lake.path("models", DS)
    assert not (out / "model_cold.keras").exists() and not (out / "cold_items.parquet").exists()
    facts = json.loads((out / "train.json").read_text())
    assert "no text embeddings" in facts["cold_start"]["skipped"]
    evaluate(["--ds", DS, "--lake", str(lake.root)])
    metrics = json.loads((lake.path("eval", DS) / "metrics.json").read_text())
    assert metrics["cold_start"] == {"skipped": facts["cold_start"]["skipped"]}


@pytest.mark.tf
def test_cold_fits_and_their_evaluation_end_to_end(planted_lake: tuple[Lake, Matrices]) -> None:
    from jobs.evaluate import main as evaluate
    from jobs.train import main as train

    lake, m = planted_lake
    write_content(lake, m)
    # the one blend weight on offer is taken, so the cold fits get the EASE path too
    result = train(["--ds", DS, "--lake", str(lake.root), *FAST, "--set", "train.item_item_alphas=[0.5]"])
    out = lake.path("models", DS)
    cold = pd.read_parquet(out / "cold_items.parquet")
    assert np.array_equal(cold["item_idx"].to_numpy(), choose_cold_items(m.test, 0.2, seed=42))
    assert cold["item_id"].tolist() == [f"i{i}" for i in cold["item_idx"]]
    facts = json.loads((out / "train.json").read_text())
    runs = facts["models"]
    assert result["cold_items"] == facts["cold_start"]["items"] == 8  # 20% of the 40 items, all with tests
    assert facts["cold_start"]["content_pos"] > 0
    # both cold fits: the model's best epoch, no rows of a cold item but the content positives
    examples = pd.read_parquet(lake.path("examples", DS) / "examples.parquet")
    n_cold_rows = int(examples["item_idx"].isin(cold["item_idx"]).sum())
    assert runs["model_cold_nocontent"]["examples"] == len(examples) - n_cold_rows
    assert runs["model_cold"]["examples"] == len(examples) - n_cold_rows + facts["cold_start"]["content_pos"]
    for name in ("model_cold", "model_cold_nocontent"):
        assert runs[name]["epochs"] == runs["model"]["best_epoch"] and runs[name]["item_item_alpha"] == 0.5

    evaluate(["--ds", DS, "--lake", str(lake.root)])
    section = json.loads((lake.path("eval", DS) / "metrics.json").read_text())["cold_start"]
    assert section["items"] == 8 and section["users"] > 0
    assert set(section["models"]) == {"model_cold", "model_cold_nocontent", "tfidf", "embedding_knn", "random"}
    for result in section["models"].values():
        assert set(result) == {"among_cold", "full_catalogue"}
        assert {"ndcg@10", "recall@10", "precision@10", "ndcg@20", "recall@20", "precision@20"} <= set(
            result["among_cold"])
    # the planted content names each item's block, and users like one block: content beats random
    assert section["models"]["tfidf"]["among_cold"]["ndcg@10"] > section["models"]["random"]["among_cold"]["ndcg@10"]
    lift = section["lifts"]["among_cold"]["vs_tfidf"]
    assert lift["low"] <= lift["high"] and set(section["lifts"]) == {"among_cold", "full_catalogue"}
    assert isinstance(section["targets"]["met"], bool) and section["verdict"].startswith("Cold-start targets")


SECTION = {
    "share": 0.2, "items": 8, "users": 60, "metric": "ndcg@10",
    "models": {"model_cold": {"among_cold": {"ndcg@10": 0.3125}, "full_catalogue": {"ndcg@10": 0.0625}},
               "tfidf": {"among_cold": {"ndcg@10": 0.25}, "full_catalogue": {"ndcg@10": 0.03125}}},
    "lifts": {"among_cold": {"vs_tfidf": {"lift": 1.25, "low": 0.9, "high": 1.6}},
              "full_catalogue": {"vs_tfidf": {"lift": 2.0, "low": None, "high": None}}},
    "targets": {"model_vs_tfidf": {"metric": "ndcg@10", "target": 1.3, "met": False},
                "model_above_embedding_knn": {"met": True}, "met": False},
    "verdict": "Cold-start targets NOT met on 8 cold items",
}


def test_report_register_and_mlflow_show_the_cold_start_figures() -> None:
    from jobs.register import cold_start_tags
    from recsys.report.html import render_report
    from recsys.serving.registry import run_metrics

    page = render_report("2026-01-31", {"models": {}, "cold_start": SECTION}, {"promoted": True}, {}, {})
    assert "Cold start: Cold-start targets NOT met on 8 cold items" in page
    assert "<th>model_cold</th><td>0.3125</td>" in page and "<th>tfidf</th><td>0.2500</td>" in page
    assert "<th>model_cold vs_tfidf</th><td>1.250× (95% interval 0.900–1.600×)</td><td>2.000×</td>" in page
    assert "TF-IDF\n<b>NOT met</b>" in page
    skipped = render_report("2026-01-31", {"models": {}, "cold_start": {"skipped": "no text embeddings"}},
                            {"promoted": True}, {}, {})
    assert "Cold-start evaluation skipped: no text embeddings." in skipped
    assert cold_start_tags({"cold_start": SECTION}) == {
        "cold_start": SECTION["verdict"], "cold_start_targets_met": "false"}
    assert cold_start_tags({"cold_start": {"skipped": "off"}}) == {
        "cold_start": "skipped: off", "cold_start_targets_met": "n/a"}
    logged = run_metrics({"cold_start": SECTION}, {})
    assert logged["cold_start.models.model_cold.among_cold.ndcg_at_10"] == 0.3125
    assert logged["cold_start.lifts.among_cold.vs_tfidf.low"] == 0.9
