"""The run report: one HTML page that says whether tonight's model is better and whether augmentation helped."""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Mapping, Sequence
from typing import Any

from recsys.evaluation.lift import SEGMENTS, verdict_text
from recsys.report.history import quarantine_share
from recsys.report.svg import bar_chart, interval_chart, line_chart

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


# control characters (a quarantined id may hold a NUL) are shown as \xNN, never written into the page
CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _text(value: Any) -> str:
    return html.escape(CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", str(value)))


def _cell(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"<td>{_text(value)}</td>" if value is not None else "<td>–</td>"
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


def _value(metrics: Mapping[str, Any], model: str, segment: str, metric: str) -> float | None:
    value = metrics.get("models", {}).get(model, {}).get(segment, {}).get(metric)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _change(new: float | None, old: float | None) -> str:
    """``+2.5%`` (relative change of ``new`` over ``old``), or ``–`` when either is missing or ``old`` is 0."""
    return f"{100 * (new / old - 1):+.1f}%" if new is not None and old else "–"


def augmentation_sentence(metrics: Mapping[str, Any]) -> str:
    """The augmentation verdict in words per segment, from the models' figures and the lift intervals.

    Made by :func:`recsys.evaluation.lift.verdict_text` from what metrics.json holds, so an older night's
    file reads in tonight's words; falls back to the file's own verdict when a figure is missing.
    """
    aug = metrics.get("augmentation", {})
    metric = str(aug.get("metric", "ndcg@10"))
    values, intervals = {}, {}
    for segment, _ in SEGMENTS:
        a, n = _value(metrics, "model", segment, metric), _value(metrics, "model_noaug", segment, metric)
        if a is None or n is None:
            return str(aug.get("verdict", "no augmentation verdict"))
        values[segment] = (a, n)
        low, high = aug.get(f"lift_{segment}_low"), aug.get(f"lift_{segment}_high")
        intervals[segment] = (float(low), float(high)) if low is not None and high is not None else None
    return verdict_text(values, intervals)[1]


def better_sentence(metrics: Mapping[str, Any], gate: Mapping[str, Any]) -> str:
    """Is tonight's model better: against the champion on the gate's metric and against EASE on NDCG@10."""
    metric = html.escape(str(gate.get("metric", "ndcg@10")))
    challenger, champion = gate.get("challenger"), gate.get("champion_before")
    if isinstance(challenger, (int, float)) and isinstance(champion, (int, float)):
        version = gate.get("champion_version_before")
        against = (f"against the champion (version {html.escape(str(version))}) on {metric}: "
                   f"{challenger:.4f} vs {champion:.4f} (<b>{_change(challenger, champion)}</b>)")
    else:
        against = "no champion to compare with before tonight"
    model, ease = _value(metrics, "model", "all", "ndcg@10"), _value(metrics, "ease", "all", "ndcg@10")
    if model is not None and ease is not None:
        against += f"; against EASE on ndcg@10: {model:.4f} vs {ease:.4f} (<b>{_change(model, ease)}</b>)"
    return against


def data_sentence(reconciliation: Mapping[str, Any], stats: Mapping[str, Any], before: Mapping[str, Any],
                  before_ds: str | None = None) -> str:
    """Was the data healthy: the clean stage's counts, its quarantine share and reasons, the window's change
    against the tables of ``before_ds``, the latest earlier date that has them."""
    if not reconciliation:
        return "no reconciliation of this date's cleaning was found"
    share = quarantine_share(reconciliation)
    reasons = ", ".join(f"{html.escape(str(r))} {n:,}" for r, n in sorted(
        reconciliation.get("by_reason", {}).items(), key=lambda rn: -rn[1]) if n)
    text = (f"passed the clean stage's quality gate (a night that fails it stops before this report): "
            f"{reconciliation.get('input', 0):,} rows in, {reconciliation.get('clean', 0):,} clean, "
            f"{reconciliation.get('duplicates', 0):,} duplicates, {reconciliation.get('quarantined', 0):,} "
            f"quarantined ({'–' if share is None else f'{100 * share:.2f}%'}{': ' + reasons if reasons else ''})")
    total, old = stats.get("interactions", {}).get("total"), before.get("interactions", {}).get("total")
    if isinstance(total, int):
        since = f", {html.escape(before_ds)}" if before_ds and old is not None else ""
        text += f"; {total:,} interactions in the window ({_change(total, old)} vs the previous night{since})"
    return text


def model_charts(metrics: Mapping[str, Any], training: Mapping[str, Any]) -> str:
    """Charts (a) and (b): every model on both segments with the lift intervals, and the validation curves."""
    aug = metrics.get("augmentation", {})
    metric = str(aug.get("metric", "ndcg@10"))
    models = metrics.get("models", {})
    groups = [(label, [(name, _value(metrics, name, segment, metric)) for name in models])
              for segment, label in SEGMENTS]
    bars = bar_chart(f"{metric} on the test users: the model, its ablation and the baselines", groups,
                     highlight="model")
    lifts = interval_chart(
        f"Augmentation lift on {metric} (model / model_noaug) with its 95% interval",
        [(label, aug.get(f"lift_{segment}"), aug.get(f"lift_{segment}_low"), aug.get(f"lift_{segment}_high"))
         for segment, label in SEGMENTS])
    runs = training.get("models", {})
    curves = {name: list(runs[name].get("valid_ndcg@10") or []) for name in ("model", "model_noaug") if name in runs}
    epochs = max((len(c) for c in curves.values()), default=0)
    curve = line_chart("Validation ndcg@10 per epoch", [str(e + 1) for e in range(epochs)],
                       {name: c + [None] * (epochs - len(c)) for name, c in curves.items()}) if epochs else ""
    return "".join(chart or "" for chart in (bars, lifts)) + (
        curve or "<p>No validation curve in this night's training facts.</p>")


TREND_SERIES = (  # (title, {series name: night key}, decimals)
    ("Model ndcg@10, all test users", {"model": "ndcg@10"}, 4),
    ("Augmentation lift (model / model_noaug)", {"all users": "lift_all", "sparse segment": "lift_sparse"}, 3),
    ("Clean rows of the night's date", {"clean rows": "clean_rows"}, 0),
    ("Quarantine share of the night's date", {"quarantined / input": "quarantine_share"}, 4),
)


def _version(value: Any) -> int | None:
    return int(value) if isinstance(value, (int, str)) and str(value).isdigit() else None


def trend_html(nights: Sequence[Mapping[str, Any]]) -> str:
    """Chart (c): the last nights' headline, lift, clean rows, quarantine share and champion, with their table."""
    if not nights:
        return "<p>No earlier night in the lake.</p>"
    dates = [str(n["ds"]) for n in nights]
    charts = [line_chart(title, dates, {name: [n.get(key) for n in nights] for name, key in series.items()},
                         digits=digits) for title, series, digits in TREND_SERIES]
    charts.append(line_chart("Champion version after the night's gate", dates,
                             {"champion": [_version(n.get("champion")) for n in nights]}, digits=0))
    head = "".join(f"<th>{html.escape(h)}</th>" for h in (
        "ndcg@10", "lift all", "lift sparse", "clean rows", "quarantine share", "interactions", "champion",
        "promoted"))
    rows = "".join(
        f"<tr><th>{html.escape(str(n['ds']))}</th>"
        f"{''.join(_cell(n.get(k)) for k in ('ndcg@10', 'lift_all', 'lift_sparse', 'clean_rows', 'quarantine_share', 'interactions', 'champion', 'promoted'))}</tr>"
        for n in nights)
    return (f"<p>The last {len(nights)} night(s), oldest first; a night without a figure leaves a gap.</p>"
            f"{''.join(c for c in charts if c)}<table><tr><th>night</th>{head}</tr>{rows}</table>")


def cold_charts(cold: Mapping[str, Any]) -> str:
    """Chart (d): each cold-start model's figure among the cold items and in the full catalogue."""
    metric = str(cold.get("metric", "ndcg@10"))
    models = cold.get("models", {})
    return "".join(bar_chart(f"Cold start: {metric} {label}", [(
        label, [(name, result.get(view, {}).get(metric)) for name, result in models.items()])],
        highlight="model_cold") for view, label in COLD_VIEWS)


def quality_html(reconciliation: Mapping[str, Any], quarantine: Sequence[Mapping[str, Any]],
                 stats: Mapping[str, Any], before: Mapping[str, Any], before_ds: str | None) -> str:
    """The data-quality section: reconciliation by outcome and reason, quarantine examples, table stats vs before."""
    parts = []
    if reconciliation:
        total = reconciliation.get("input") or 0
        outcomes = [(k, reconciliation.get(k, 0)) for k in ("clean", "duplicates", "quarantined")]
        reasons = sorted(((r, n) for r, n in reconciliation.get("by_reason", {}).items() if n), key=lambda rn: -rn[1])
        rows = "".join(f"<tr><th>{html.escape(k)}</th>{_cell(n)}{_cell(n / total if total else None)}</tr>"
                       for k, n in [("input", total), *outcomes, *((f"quarantined: {r}", n) for r, n in reasons)])
        parts.append(f"<table><tr><th>outcome / reason</th><th>rows</th><th>share of input</th></tr>{rows}</table>")
        parts.append(bar_chart("Rows of the date by outcome and quarantine reason",
                               [("outcome", outcomes), ("quarantine reason", reasons)], digits=0))
    else:
        parts.append("<p>No reconciliation of this date's cleaning in the lake.</p>")
    if quarantine:
        columns = list(dict.fromkeys(k for row in quarantine for k in row))
        head = "".join(f"<th>{html.escape(str(c))}</th>" for c in columns)
        rows = "".join(f"<tr>{''.join(_raw_cell(row.get(c)) for c in columns)}</tr>" for row in quarantine)
        parts.append(f"<h3>Quarantined rows (a few per reason)</h3><table><tr>{head}</tr>{rows}</table>")
    else:
        parts.append("<p>No quarantined row on this date.</p>")
    now, old = _flat(stats), _flat(before)
    label = html.escape(before_ds or "previous night")
    rows = "".join(
        f"<tr><th>{html.escape(k)}</th>{_cell(v)}{_cell(old.get(k))}"
        f"<td>{_change(float(v), old.get(k)) if _numeric(v) and _numeric(old.get(k)) else '–'}</td></tr>"
        for k, v in sorted(now.items()))
    parts.append(f"<h3>Interaction tables</h3><table><tr><th>statistic</th><th>tonight</th><th>{label}</th>"
                 f"<th>change</th></tr>{rows}</table>")
    return "".join(parts)


def _raw_cell(value: Any) -> str:
    """A raw (string) value as it came: a null and an empty string are often the very reason, so both show."""
    return "<td><i>null</i></td>" if value is None else f"<td>{_text(repr(value) if value == '' else value)}</td>"


def _numeric(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


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
    nights: Sequence[Mapping[str, Any]] = (),
    reconciliation: Mapping[str, Any] | None = None,
    quarantine: Sequence[Mapping[str, Any]] = (),
    stats_before: Mapping[str, Any] | None = None,
    stats_before_ds: str | None = None,
) -> str:
    """Render the run report as one self-contained HTML page (charts inline SVG, plots embedded as base64 PNG).

    The first screen answers in words: was the champion replaced, is the model better (against the champion
    and EASE), did augmentation help on each segment, was the data healthy. The headline figure is
    ``<span id="headline-ndcg10">``, the model's ndcg@10 on all test users with 4 decimals.

    Args:
        ds: the run's date.
        metrics: eval/metrics.json (models, augmentation verdict with its lifts, the cold-start section).
        gate: the registry decision (promoted, reason, metric, challenger and champion values).
        quality: augment/quality.json (nested figures are shown flattened).
        stats: tables/_stats.json.
        examples: examples/_summary.json (rows and weight per source).
        training: models/train.json (per model epochs, the validation curve; whether a final fit was made).
        plots: augmentation plots by file name, as PNG bytes.
        recs: recs/_summary.json (users served, rows, the version served), when publish has run.
        nights: the trend, oldest first (:func:`recsys.report.history.trend`).
        reconciliation: the clean stage's reconciliation of ``ds`` (:func:`recsys.report.history.reconciliation`).
        quarantine: a few quarantined rows of ``ds`` (:func:`recsys.report.history.quarantine_examples`).
        stats_before: the previous night's tables/_stats.json, and ``stats_before_ds`` its date.
    """
    aug = metrics.get("augmentation", {})
    cold = metrics.get("cold_start", {})
    cold_verdict = html.escape(str(cold.get("verdict") or f"skipped: {cold.get('skipped', 'not evaluated')}"))
    metric = html.escape(str(aug.get("metric", "ndcg@10")))
    decision = "PROMOTED to champion" if gate.get("promoted") else "NOT promoted"
    headline = _value(metrics, "model", "all", "ndcg@10")
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
svg.chart{{display:block;margin:1em 0}} figure{{display:inline-block;margin:0 1em 1em 0}} img{{max-width:480px}}</style></head>
<body><h1>recsys-augment, run of {ds}</h1>
<section id="first-screen">
<p class="big">Tonight's model: <b>{decision}</b> — {html.escape(str(gate.get("reason", "")))}</p>
<p class="big">Model ndcg@10 on all test users: <b><span id="headline-ndcg10">{"–" if headline is None else f"{headline:.4f}"}</span></b>;
{better_sentence(metrics, gate)}.</p>
<p class="big">{html.escape(augmentation_sentence(metrics))}</p>
<p class="big">Data: {data_sentence(reconciliation or {}, stats, stats_before or {}, stats_before_ds)}.</p>
<p class="big">Cold start: {cold_verdict}</p>
<p>{served}</p>
<p>Augmentation lift ({metric}, with / without): all users <b>{_lift_text(aug, "all")}</b>,
sparse segment <b>{_lift_text(aug, "sparse")}</b>; an interval over test users resampled that contains 1 means
the difference is within the noise of this test set.</p>
</section>
<h2>Model against the baselines</h2>{model_charts(metrics, training or {})}
<h2>Trend</h2>{trend_html(nights)}
<h2>Promotion gate</h2><table>{gate_rows}</table>
<h2>All test users</h2>{_table(metrics.get("models", {}), "all")}
<h2>Sparse segment (shortest histories)</h2>{_table(metrics.get("models", {}), "sparse")}
<h2>Cold-start items (simulated new items)</h2>{cold_charts(cold) if "models" in cold else ""}{cold_start_html(cold)}
<h2>Data quality</h2>{quality_html(reconciliation or {}, quarantine, stats, stats_before or {}, stats_before_ds)}
<h2>Training</h2><table><tr><th>model</th><th>epochs</th><th>best epoch</th><th>valid ndcg@10</th>
<th>examples</th></tr>{train_rows}</table><p>{final}</p>
<h2>Training examples by source</h2>{_examples_table(examples or {})}
<h2>Augmentation quality</h2><table>{_rows(_flat(quality))}</table>
{_plots(plots or {})}
</body></html>
"""
