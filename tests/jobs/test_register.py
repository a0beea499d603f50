"""The promotion gate, the MLflow-safe flattening, the epoch curves, the version description and the
partition digests, as pure functions."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import pytest

from jobs.summary import render_summary
from recsys.core.tracking import artifact_root, partition_digest
from recsys.evaluation.gate import gate_decision
from recsys.report.html import render_report
from recsys.serving.registry import epoch_metrics, flatten, version_description


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


def test_epoch_metrics_are_one_stepped_point_per_epoch_under_mlflow_safe_names() -> None:
    facts = {"models": {
        "model": {"loss": [0.9, 0.7, 0.6], "valid_ndcg@10": [0.1, 0.3, 0.2], "epochs": 3,
                  "valid_ndcg@10_by_alpha": {"0.0": 0.3}},
        "model_final": {"loss": [0.8, float("nan")], "valid_ndcg@10": [], "epochs": 2},
    }}
    gan = {"epochs": 2, "final_losses": {"d_loss": 0.5}, "losses": {"d_loss": [0.7, 0.5], "g_loss": [1.2, math.inf]}}
    points = {(m.key, m.step, m.value, m.timestamp) for m in epoch_metrics(facts, gan, timestamp=7)}
    assert points == {
        ("augment.gan.d_loss", 0, 0.7, 7), ("augment.gan.d_loss", 1, 0.5, 7), ("augment.gan.g_loss", 0, 1.2, 7),
        ("train.model.loss", 0, 0.9, 7), ("train.model.loss", 1, 0.7, 7), ("train.model.loss", 2, 0.6, 7),
        ("train.model.valid_ndcg_at_10", 0, 0.1, 7), ("train.model.valid_ndcg_at_10", 1, 0.3, 7),
        ("train.model.valid_ndcg_at_10", 2, 0.2, 7),
        ("train.model_final.loss", 0, 0.8, 7),  # the NaN of step 1 is left out; no validation curve
    }


def test_version_description_gives_the_headline_and_the_gates_reason() -> None:
    metrics = {"models": {"model": {"all": {"ndcg@10": 0.3}}, "ease": {"all": {"ndcg@10": 0.25}}},
               "augmentation": {"metric": "ndcg@10", "lift_all": 1.02, "lift_all_low": 0.97, "lift_all_high": 1.08,
                                "lift_sparse": 1.15}}
    gate = {"promoted": False, "reason": "challenger 0.3000 < champion 0.4000", "metric": "ndcg@10",
            "challenger": 0.3, "champion_before": 0.4, "champion_version_before": "4"}
    text = version_description("2026-01-31", metrics, gate)
    assert "2026-01-31" in text
    assert "model 0.3000; EASE 0.2500 (model 1.200x); champion (version 4) 0.4000 (model 0.750x)" in text
    assert "all users 1.020x (95% interval 0.970-1.080x), sparse segment 1.150x." in text
    assert "not promoted, stays challenger. challenger 0.3000 < champion 0.4000" in text
    first = version_description("2026-01-31", {"models": {}}, {**gate, "promoted": True, "champion_before": None,
                                                               "champion_version_before": None, "challenger": None})
    assert "model n/a; EASE n/a; no champion before." in first and "promoted to champion." in first


def test_partition_digest_follows_the_bytes_of_every_file(tmp_path: Path) -> None:
    part = tmp_path / "tables" / "ds=2026-01-31"
    (part / "interactions").mkdir(parents=True)
    (part / "matrices.npz").write_bytes(b"abc")
    (part / "interactions" / "part-0.parquet").write_bytes(b"defg")
    # independently: sha256 over "path NUL size NUL sha256(bytes)" lines of the files in path order
    lines = "".join(f"{name}\0{len(data)}\0{hashlib.sha256(data).hexdigest()}\n"
                    for name, data in (("interactions/part-0.parquet", b"defg"), ("matrices.npz", b"abc")))
    first = partition_digest(part)
    assert first == hashlib.sha256(lines.encode()).hexdigest()[:16]
    (part / "matrices.npz").write_bytes(b"abc")
    assert partition_digest(part) == first  # rewritten with the same bytes: the same digest
    (part / "matrices.npz").write_bytes(b"abd")
    assert partition_digest(part) != first


@pytest.mark.parametrize(("env", "expected"), [
    ({}, "file://{home}/mlflow/artifacts"),  # embedded: a folder under $RECSYS_HOME
    ({"MLFLOW_TRACKING_URI": "http://127.0.0.1:5000"}, None),  # a server: its own proxied artifact store
    ({"RECSYS_MLFLOW_ARTIFACTS": "mlflow-artifacts:/recsys"}, "mlflow-artifacts:/recsys"),  # a URI stays a URI
    ({"RECSYS_MLFLOW_ARTIFACTS": "s3://bucket/recsys", "MLFLOW_TRACKING_URI": "http://h:5000"}, "s3://bucket/recsys"),
    ({"RECSYS_MLFLOW_ARTIFACTS": "rel/arts"}, "file://{cwd}/rel/arts"),  # a path is made absolute
])
def test_artifact_root_by_store(env: dict, expected: str | None, tmp_path: Path,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECSYS_HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    for name in ("MLFLOW_TRACKING_URI", "RECSYS_MLFLOW_ARTIFACTS"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    want = None if expected is None else expected.format(home=tmp_path, cwd=tmp_path)
    assert artifact_root() == want
