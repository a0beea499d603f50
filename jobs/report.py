"""The run report: one HTML page that says whether tonight's model is better and whether augmentation helped."""

from __future__ import annotations

import html
from collections.abc import Mapping
from typing import Any

HEADLINE = ("ndcg@10", "recall@10", "ndcg@20", "recall@20", "precision@10", "map@10", "hitrate@10", "coverage")


def _table(models: Mapping[str, Any], segment: str) -> str:
    head = "".join(f"<th>{html.escape(m)}</th>" for m in HEADLINE)
    rows = []
    for name, result in models.items():
        values = result.get(segment, {})
        cells = "".join(
            f"<td>{values[m]:.4f}</td>" if isinstance(values.get(m), (int, float)) else "<td>–</td>" for m in HEADLINE
        )
        rows.append(f"<tr><th>{html.escape(name)}</th>{cells}</tr>")
    return f"<table><tr><th>model</th>{head}</tr>{''.join(rows)}</table>"


def render_report(ds: str, metrics: Mapping[str, Any], gate: Mapping[str, Any], quality: Mapping[str, Any],
                  stats: Mapping[str, Any]) -> str:
    """Render the run report as a self-contained HTML page.

    Args:
        ds: the run's date.
        metrics: eval/metrics.json (models, augmentation verdict).
        gate: the registry decision (promoted, reason, metric values).
        quality: augment/quality.json.
        stats: tables/_stats.json.
    """
    aug = metrics.get("augmentation", {})
    verdict = html.escape(str(aug.get("verdict", "no augmentation verdict")))
    decision = "PROMOTED to champion" if gate.get("promoted") else "NOT promoted"
    quality_rows = "".join(
        f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>"
        for k, v in sorted(quality.items()) if not isinstance(v, (dict, list))
    )
    stats_rows = "".join(
        f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>"
        for k, v in sorted(stats.items()) if not isinstance(v, (dict, list))
    )
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>recsys-augment {ds}</title>
<style>body{{font-family:sans-serif;margin:2em}} table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}} .big{{font-size:1.4em}}</style></head>
<body><h1>recsys-augment, run of {ds}</h1>
<p class="big">Tonight's model: <b>{decision}</b> — {html.escape(str(gate.get("reason", "")))}</p>
<p class="big">Augmentation: {verdict}</p>
<h2>All test users</h2>{_table(metrics.get("models", {}), "all")}
<h2>Sparse segment (shortest histories)</h2>{_table(metrics.get("models", {}), "sparse")}
<h2>Augmentation quality</h2><table>{quality_rows}</table>
<h2>Interaction tables</h2><table>{stats_rows}</table>
</body></html>
"""
