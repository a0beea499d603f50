"""The promotion gate and the MLflow-safe flattening, as pure functions."""

from __future__ import annotations

import math

from jobs.summary import render_summary
from recsys.evaluation.gate import gate_decision
from recsys.report.html import render_report
from recsys.serving.registry import flatten


def test_gate_refuses_a_worse_challenger_and_accepts_a_better_one() -> None:
    assert gate_decision(0.30, 0.31, 0.0, True)[0] is False
    assert gate_decision(0.32, 0.31, 0.0, True)[0] is True
    assert gate_decision(0.305, 0.31, 0.02, True)[0] is True  # within 2% tolerance: 0.31 * 0.98 = 0.3038
    assert gate_decision(0.30, 0.31, 0.02, True)[0] is False


def test_gate_never_promotes_without_a_valid_evaluation_or_when_switched_off() -> None:
    assert gate_decision(None, None, 0.0, True)[0] is False
    assert gate_decision(math.nan, 0.1, 0.0, True)[0] is False
    assert gate_decision(0.9, 0.1, 0.0, False)[0] is False
    # the first champion must beat the popularity baseline of its own evaluation
    assert gate_decision(0.1, None, 0.0, True, popularity=0.05) == (
        True, "no champion yet; challenger 0.1000 > popularity baseline 0.0500")
    promoted, reason = gate_decision(0.02, None, 0.0, True, popularity=0.05)
    assert not promoted and "does not beat the popularity baseline 0.0500" in reason
    assert gate_decision(0.1, None, 0.0, True)[0] is False  # nothing to compare with: never promoted


def test_gate_never_replaces_a_champion_trained_for_a_later_date() -> None:
    assert gate_decision(0.9, 0.1, 0.0, True, ds="2026-01-09", champion_ds="2026-01-10")[0] is False
    assert gate_decision(0.9, 0.1, 0.0, True, ds="2026-01-10", champion_ds="2026-01-09")[0] is True
    assert gate_decision(0.9, 0.1, 0.0, True, ds="2026-01-10", champion_ds="2026-01-10")[0] is True


def test_flatten_names_are_mlflow_safe() -> None:
    assert flatten({"model": {"all": {"ndcg@10": 0.5}}, "seed": 1}) == {"model.all.ndcg_at_10": 0.5, "seed": 1}


def test_report_and_summary_show_the_decision_and_the_metrics() -> None:
    metrics = {"models": {"model": {"all": {"ndcg@10": 0.25}, "sparse": {"ndcg@10": 0.125}}},
               "augmentation": {"verdict": "augmentation did not help"}}
    page = render_report("2026-01-31", metrics, {"promoted": False, "reason": "worse"}, {"js": 0.1}, {"users": 3})
    assert "NOT promoted" in page and "0.2500" in page and "0.1250" in page and "did not help" in page
    text = render_summary("2026-01-31", "/lake", {"gate": {"promoted": True}, "version": "3", "champion": "3"},
                          metrics, {"recs": "/lake/recs/ds=2026-01-31"},
                          {"users_served": 610, "users_in_window": 610, "served_share": 1.0, "k": 20, "rows": 12200,
                           "users_from_popularity": 2})
    assert "version 3 (alias challenger, champion)" in text and "ndcg@10 0.2500|0.1250" in text
    assert "recommendations: 610 of 610 users in the window served (100.0%), up to 20 each, 12200 rows; 2 from" in text


def test_report_shows_lifts_examples_quality_figures_plots_and_the_final_fit() -> None:
    metrics = {"models": {}, "augmentation": {"metric": "ndcg@10", "lift_all": 1.02, "lift_sparse": 1.15,
                                              "lift_sparse_low": 0.8712, "lift_sparse_high": 1.4138,
                                              "verdict": "Augmentation helped"}}
    quality = {"fidelity": {"js_item_popularity": {"trained": 0.25}}, "filters": [{"name": "memorisation", "after": 5}]}
    page = render_report(
        "2026-01-31", metrics, {"promoted": True, "reason": "no champion yet", "metric": "ndcg@10"}, quality, {},
        examples={"sources": {"gan_pos": {"rows": 7, "weight_sum": 1.5}}},
        training={"models": {"model": {"epochs": 9, "best_epoch": 4}, "model_final": {"epochs": 4}}},
        plots={"quality_user_length.png": b"\x89PNG"},
    )
    assert "PROMOTED to champion" in page and "1.020×</b>" in page and "1.150× (95% interval 0.871–1.414×)" in page
    assert "<th>gan_pos</th><td>7</td><td>1.5000</td>" in page
    assert "<th>fidelity.js_item_popularity.trained</th><td>0.2500</td>" in page
    assert "<th>filters.memorisation.after</th><td>5</td>" in page
    assert 'src="data:image/png;base64,iVBORw=="' in page  # base64 of the four PNG bytes
    assert "refit on the whole window" in page
