"""The run report: one HTML page that says whether tonight's model is better and whether augmentation helped."""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping
from typing import Any

# the metrics the report shows for every model, most important first; the closing summary shows the first four
HEADLINE = ("ndcg@10", "recall@10", "ndcg@20", "recall@20", "precision@10", "map@10", "hitrate@10", "coverage")
# the cold-start figures of each model, in both rankings (recsys.evaluation.cold)
COLD_HEADLINE = ("ndcg@10", "recall@10", "precision@10", "ndcg@20", "recall@20", "precision@20")
COLD_VIEWS = (("among_cold", "among cold items"), ("full_catalogue", "full catalogue"))


def served_text(recs: Mapping[str, Any]) -> str:
    """One sentence on the published recommendations, from publish's ``recs/ds=D/_summary.json``."""
    return (f"{recs['users_served']} of {recs['users_in_window']} users in the window served "
            f"({100 * recs['served_share']:.1f}%), up to {recs['k']} each, {recs['rows']} rows; "
            f"{recs['users_from_popularity']} from popularity (nothing in their history the model reads)")


def _cell(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"<td>{html.escape(str(value))}</td>" if value is not None else "<td>–</td>"
    return f"<td>{value:.4f}</td>" if isinstance(value, float) else f"<td>{value}</td>"


def _table(models: Mapping[str, Any], segment: str) -> str:
    head = "".join(f"<th>{html.escape(m)}</th>" for m in HEADLINE)
    rows = []
    for name, result in models.items():
        values = result.get(segment, {})
        rows.append(f"<tr><th>{html.escape(name)}</th>{''.join(_cell(values.get(m)) for m in HEADLINE)}</tr>")
    return f"<table><tr><th>model</th>{head}</tr>{''.join(rows)}</table>"


def _flat(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            out.update(_flat(value, f"{prefix}{key}."))
        elif isinstance(value, list):  # named steps (the augmentation filters) are shown by name
            for i, step in enumerate(value):
                if isinstance(step, Mapping):
                    out.update(_flat(step, f"{prefix}{key}.{step.get('name', i)}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _rows(values: Mapping[str, Any]) -> str:
    return "".join(f"<tr><th>{html.escape(str(k))}</th>{_cell(v)}</tr>" for k, v in sorted(values.items()))


def _lift_text(aug: Mapping[str, Any], segment: str) -> str:
    lift, low, high = (aug.get(f"lift_{segment}{end}") for end in ("", "_low", "_high"))
    text = f"{lift:.3f}×" if isinstance(lift, (int, float)) else "–"
    return f"{text} (95% interval {low:.3f}–{high:.3f}×)" if isinstance(low, float) and isinstance(high, float) else text


def _cold_lift_text(lift: Mapping[str, Any] | None) -> str:
    if not lift or not isinstance(lift.get("lift"), (int, float)):
        return "–"
    text = f"{lift['lift']:.3f}×"
    low, high = lift.get("low"), lift.get("high")
    return f"{text} (95% interval {low:.3f}–{high:.3f}×)" if isinstance(low, float) and isinstance(high, float) else text


def cold_start_html(cold: Mapping[str, Any]) -> str:
    """The cold-start section: each model among the cold items and in the full catalogue, lifts and targets.

    Args:
        cold: metrics.json's ``cold_start`` (:func:`recsys.evaluation.cold.cold_start_section`), or
            ``{"skipped": why}``.
    """
    if not cold:
        return "<p>No cold-start evaluation in this run.</p>"
    if "models" not in cold:
        return f"<p>Cold-start evaluation skipped: {html.escape(str(cold.get('skipped', 'no reason given')))}.</p>"
    head = "".join(f"<th>{html.escape(label)}<br>{html.escape(m)}</th>" for _, label in COLD_VIEWS for m in COLD_HEADLINE)
    rows = "".join(
        f"<tr><th>{html.escape(name)}</th>"
        f"{''.join(_cell(result.get(view, {}).get(m)) for view, _ in COLD_VIEWS for m in COLD_HEADLINE)}</tr>"
        for name, result in cold["models"].items()
    )
    lifts = cold.get("lifts", {})
    labels = sorted({label for view, _ in COLD_VIEWS for label in lifts.get(view, {})})
    lift_rows = "".join(
        f"<tr><th>model_cold {html.escape(label)}</th>"
        f"{''.join(f'<td>{_cold_lift_text(lifts.get(view, {}).get(label))}</td>' for view, _ in COLD_VIEWS)}</tr>"
        for label in labels
    )
    targets = cold.get("targets", {})
    tfidf, knn = targets.get("model_vs_tfidf", {}), targets.get("model_above_embedding_knn", {})
    met = {True: "met", False: "NOT met"}
    return f"""<p>{cold.get("items")} items held out as simulated new items (share {cold.get("share")}), their
interactions removed from the cold fits' training; {cold.get("users")} test users with a test interaction on one.</p>
<p>Targets ({html.escape(str(tfidf.get("metric", "")))} among cold items): model ≥ {tfidf.get("target")}× TF-IDF
<b>{met.get(tfidf.get("met"), "–")}</b>; model above the text-embedding neighbours
<b>{met.get(knn.get("met"), "–")}</b>.</p>
<table><tr><th>model</th>{head}</tr>{rows}</table>
<table><tr><th>lift ({html.escape(str(cold.get("metric", "")))})</th><th>among cold items</th>
<th>full catalogue</th></tr>{lift_rows}</table>"""


def _examples_table(summary: Mapping[str, Any]) -> str:
    sources = summary.get("sources", {})
    rows = "".join(
        f"<tr><th>{html.escape(str(s))}</th>{_cell(v.get('rows'))}{_cell(v.get('weight_sum'))}</tr>"
        for s, v in sources.items()
    )
    return f"<table><tr><th>source</th><th>rows</th><th>weight sum</th></tr>{rows}</table>" if rows else "<p>–</p>"


def _plots(plots: Mapping[str, bytes]) -> str:
    return "".join(
        f'<figure><img alt="{html.escape(name)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'
        f"<figcaption>{html.escape(name)}</figcaption></figure>"
        for name, png in sorted(plots.items())
    )


def render_report(
    ds: str,
    metrics: Mapping[str, Any],
    gate: Mapping[str, Any],
    quality: Mapping[str, Any],
    stats: Mapping[str, Any],
    *,
    examples: Mapping[str, Any] | None = None,
    training: Mapping[str, Any] | None = None,
    plots: Mapping[str, bytes] | None = None,
    recs: Mapping[str, Any] | None = None,
) -> str:
    """Render the run report as a self-contained HTML page (plots embedded as base64 PNG).

    Args:
        ds: the run's date.
        metrics: eval/metrics.json (models, augmentation verdict with its lifts, the cold-start section).
        gate: the registry decision (promoted, reason, metric, challenger and champion values).
        quality: augment/quality.json (nested figures are shown flattened).
        stats: tables/_stats.json.
        examples: examples/_summary.json (rows and weight per source).
        training: models/train.json (per model epochs and validation NDCG; whether a final fit was made).
        plots: augmentation plots by file name, as PNG bytes.
        recs: recs/_summary.json (users served, rows, the version served), when publish has run.
    """
    aug = metrics.get("augmentation", {})
    verdict = html.escape(str(aug.get("verdict", "no augmentation verdict")))
    cold = metrics.get("cold_start", {})
    cold_verdict = html.escape(str(cold.get("verdict") or f"skipped: {cold.get('skipped', 'not evaluated')}"))
    metric = html.escape(str(aug.get("metric", "ndcg@10")))
    decision = "PROMOTED to champion" if gate.get("promoted") else "NOT promoted"
    gate_rows = _rows({k: gate.get(k) for k in ("metric", "challenger", "champion_before", "champion_version_before")})
    runs = (training or {}).get("models", {})
    train_rows = "".join(
        f"<tr><th>{html.escape(name)}</th>{_cell(run.get('epochs'))}{_cell(run.get('best_epoch'))}"
        f"{_cell(run.get('best_valid_ndcg@10'))}{_cell(run.get('examples'))}</tr>"
        for name, run in runs.items()
    )
    final = (
        "The served model is <b>refit on the whole window</b> (train, valid and test) with the held-out fit's "
        "hyperparameters and epoch count; every figure above is the held-out fit's."
        if "model_final" in runs else "The served model is the held-out fit (no final refit)."
    )
    served = (f"Recommendations from version {html.escape(str(recs.get('model_version')))}: "
              f"{html.escape(served_text(recs))}." if recs else "No recommendations published for this date.")
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>recsys-augment {ds}</title>
<style>body{{font-family:sans-serif;margin:2em}} table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}} .big{{font-size:1.4em}}
figure{{display:inline-block;margin:0 1em 1em 0}} img{{max-width:480px}}</style></head>
<body><h1>recsys-augment, run of {ds}</h1>
<p class="big">Tonight's model: <b>{decision}</b> — {html.escape(str(gate.get("reason", "")))}</p>
<p class="big">Augmentation: {verdict}</p>
<p class="big">Cold start: {cold_verdict}</p>
<p>{served}</p>
<p>Augmentation lift ({metric}, with / without): all users <b>{_lift_text(aug, "all")}</b>,
sparse segment <b>{_lift_text(aug, "sparse")}</b>; an interval over test users resampled that contains 1 means
the difference is within the noise of this test set.</p>
<h2>Promotion gate</h2><table>{gate_rows}</table>
<h2>All test users</h2>{_table(metrics.get("models", {}), "all")}
<h2>Sparse segment (shortest histories)</h2>{_table(metrics.get("models", {}), "sparse")}
<h2>Cold-start items (simulated new items)</h2>{cold_start_html(cold)}
<h2>Training</h2><table><tr><th>model</th><th>epochs</th><th>best epoch</th><th>valid ndcg@10</th>
<th>examples</th></tr>{train_rows}</table><p>{final}</p>
<h2>Training examples by source</h2>{_examples_table(examples or {})}
<h2>Augmentation quality</h2><table>{_rows(_flat(quality))}</table>
{_plots(plots or {})}
<h2>Interaction tables</h2><table>{_rows(_flat(stats))}</table>
</body></html>
"""
