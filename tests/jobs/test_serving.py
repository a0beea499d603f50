"""recsys.serving.recs.recommend when the model and today's catalogue differ in size (backfills, reruns, new items)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from recsys.core.config import load_config

pytestmark = pytest.mark.tf


def _model(n_items: int):
    from recsys.models.recommender import build_recommender

    return build_recommender(n_items, {**load_config()["train"], "seed": 3})


def test_a_model_that_knows_more_items_only_recommends_todays_catalogue() -> None:
    from recsys.serving.recs import recommend

    # the champion was trained on a later date with 6 items; today (an earlier date) has 4
    histories = sp.csr_matrix(np.array([[1, 0, 0, 0], [0, 1, 1, 0], [0, 0, 0, 0]], dtype=np.float32))
    popularity = np.array([5, 1, 9, 3, 50, 40], dtype=np.float64)
    idx, scores = recommend(_model(6), histories, histories, popularity, k=4)
    assert idx.shape == (3, 4) and idx.max() < 4
    finite = np.isfinite(scores)
    assert sorted(idx[0][finite[0]]) == [1, 2, 3] and sorted(idx[1][finite[1]]) == [0, 3]  # seen removed
    assert list(idx[2]) == [2, 0, 3, 1]  # the cold user: today's items by popularity, not items 4 and 5


def test_items_newer_than_the_model_are_never_recommended() -> None:
    from recsys.serving.recs import recommend

    histories = sp.csr_matrix(np.array([[1, 0, 0, 0, 0], [0, 0, 0, 0, 0]], dtype=np.float32))
    popularity = np.array([2, 7, 1], dtype=np.float64)  # the model knows 3 items, today has 5
    idx, scores = recommend(_model(3), histories, histories, popularity, k=5)
    assert set(idx[0][np.isfinite(scores[0])]) == {1, 2}
    assert list(idx[1][np.isfinite(scores[1])]) == [1, 0, 2]


def test_seen_items_are_removed_whatever_their_value_and_an_empty_history_gets_popularity() -> None:
    from recsys.serving.recs import recommend

    # user 0 read item 0 (weight 1) and rated item 2 low (seen, value 0: not in the model's input)
    histories = sp.csr_matrix(np.array([[1, 0, 0, 0], [0, 0, 0, 0]], dtype=np.float32))
    seen = sp.csr_matrix((np.array([1, 0, 0], np.float32), np.array([0, 2, 3]), np.array([0, 2, 3])), shape=(2, 4))
    popularity = np.array([4, 3, 2, 1], dtype=np.float64)
    idx, scores = recommend(_model(4), histories, seen, popularity, k=4)
    finite = np.isfinite(scores)
    assert sorted(idx[0][finite[0]]) == [1, 3]
    # user 1 only ever rated item 3 low: nothing the model reads, so popularity without item 3
    assert list(idx[1][finite[1]]) == [0, 1, 2]


def test_candidates_limit_the_ranking_to_the_new_items_also_for_a_cold_user() -> None:
    from recsys.serving.recs import recommend

    histories = sp.csr_matrix(np.array([[1, 0, 0, 0, 0], [0, 0, 0, 0, 0]], dtype=np.float32))
    popularity = np.array([9, 8, 1, 3, 2], dtype=np.float64)
    new = np.array([True, False, True, False, True])
    idx, scores = recommend(_model(5), histories, histories, popularity, k=3, candidates=new)
    finite = np.isfinite(scores)
    assert sorted(idx[0][finite[0]]) == [2, 4]  # item 0 is new but seen
    assert list(idx[1][finite[1]]) == [0, 4, 2]  # the cold user: the new items by popularity
    with pytest.raises(ValueError, match="candidates cover 4 items"):
        recommend(_model(5), histories, histories, popularity, k=3, candidates=new[:4])


def test_several_lists_from_one_scoring_pass_equal_each_list_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    from recsys.models import recommender
    from recsys.serving.recs import recommend, recommend_lists

    model = _model(6)
    histories = sp.csr_matrix(np.array([[1, 0, 0, 0, 1, 0], [0, 0, 0, 0, 0, 0], [0, 1, 1, 0, 0, 0]], np.float32))
    popularity = np.array([9, 8, 1, 3, 2, 5], dtype=np.float64)
    new = np.array([True, False, True, False, True, True])
    alone = [recommend(model, histories, histories, popularity, 3, candidates) for candidates in (None, new)]
    passes = []
    score = recommender.score_histories
    monkeypatch.setattr(recommender, "score_histories", lambda m, h: passes.append(h.shape[0]) or score(m, h))
    lists = recommend_lists(model, histories, histories, popularity, 3, [None, new])
    assert passes == [3]  # one scoring pass for both lists
    for (idx, scores), (alone_idx, alone_scores) in zip(lists, alone, strict=True):
        assert idx.tolist() == alone_idx.tolist() and scores.tolist() == alone_scores.tolist()
    assert set(lists[1][0][1]) <= set(np.flatnonzero(new))  # the cold user's new list holds new items only


def test_a_batch_job_logs_its_progress_per_batch(monkeypatch: pytest.MonkeyPatch,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    from recsys.serving import recs

    monkeypatch.setattr(recs, "SCORE_BATCH", 2)
    histories = sp.csr_matrix(np.eye(3, 4, dtype=np.float32))
    with caplog.at_level("INFO", logger="recsys.serving.recs"):
        recs.recommend_lists(_model(4), histories, histories, np.ones(4), 2, [None])
    assert [m.split(" (")[0] for m in caplog.messages] == ["ranked 2 of 3 users", "ranked 3 of 3 users"]
