"""Small inline SVG charts for the run report: bars, intervals and lines, drawn from the data alone.

Every chart is ``<svg class="chart">`` with a ``<title>`` and at least one data mark (``rect``, ``circle``,
``polyline``); a chart without data is not drawn (the caller says so in words). The geometry is plain
arithmetic on the layout constants below, so a test can compute a mark's coordinates by hand.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

WIDTH = 640  # every chart's width in px
LABEL_WIDTH = 160  # left column for the row labels (bars, intervals) or the y axis (lines)
VALUE_WIDTH = 80  # right column for the value printed after a bar or a line's last point
INTERVAL_WIDTH = 150  # right column of an interval chart, for "1.008 (1.003–1.013)"
TOP = 30  # room for the visible caption above the plot
ROW = 20  # height of one bar or interval row (the bar is ROW - 4 high)
GROUP_GAP = 10  # extra space above each group's heading row
PLOT_HEIGHT = 160  # plot height of a line chart
BOTTOM = 30  # room under a line chart for the x labels
LEGEND = 20  # room for a line chart's legend under its x labels
COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#7f7f7f")
HIGHLIGHT = "#1f77b4"  # the model's own bar
MUTED = "#9fb3c8"  # every other bar


@dataclass(frozen=True)
class Scale:
    """A linear map from the data interval ``[lo, hi]`` to the pixel interval ``[start, end]``."""

    lo: float
    hi: float
    start: float
    end: float

    def __call__(self, value: float) -> float:
        span = self.hi - self.lo
        return self.start + (value - self.lo) / span * (self.end - self.start) if span else (self.start + self.end) / 2


def _num(value: float) -> str:
    """A coordinate as SVG text: two decimals, trailing zeros dropped (``12.5``, ``40``)."""
    text = f"{value:.2f}".rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


def _svg(title: str, height: float, body: str) -> str:
    esc = html.escape(title)
    return (f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{_num(height)}" '
            f'viewBox="0 0 {WIDTH} {_num(height)}" role="img"><title>{esc}</title>'
            f'<text x="0" y="16" font-weight="bold" font-size="13">{esc}</text>{body}</svg>')


def _text(x: float, y: float, text: str, anchor: str = "start", size: int = 11) -> str:
    return (f'<text x="{_num(x)}" y="{_num(y)}" text-anchor="{anchor}" font-size="{size}">'
            f"{html.escape(text)}</text>")


def bar_chart(
    title: str,
    groups: Sequence[tuple[str, Sequence[tuple[str, float]]]],
    *,
    highlight: str | None = None,
    digits: int = 4,
) -> str:
    """Horizontal bars, one row per (label, value), in groups that share one scale from 0.

    Geometry: the scale maps ``[0, max value]`` onto ``[LABEL_WIDTH, WIDTH - VALUE_WIDTH]``. Group ``g``'s
    heading row starts ``GROUP_GAP`` below the previous row (the first at ``TOP + GROUP_GAP``); each bar's
    row follows, its rect at ``y = row top + 2`` with height ``ROW - 4``.

    Args:
        title: the chart's title (the ``<title>`` and the visible caption).
        groups: ``(heading, [(label, value), ...])``; a value that is ``None`` or not finite is skipped.
        highlight: the label whose bars are drawn in the highlight colour (the model).
        digits: decimals of the value printed after each bar.

    Returns:
        The ``<svg>`` element, or ``""`` when no group has a value to draw.
    """
    rows = [(heading, [(label, float(v)) for label, v in bars if _finite(v)]) for heading, bars in groups]
    rows = [(heading, bars) for heading, bars in rows if bars]
    if not rows:
        return ""
    top = max(v for _, bars in rows for _, v in bars)
    scale = Scale(0.0, top if top > 0 else 1.0, LABEL_WIDTH, WIDTH - VALUE_WIDTH)
    parts, y = [], float(TOP)
    for heading, bars in rows:
        y += GROUP_GAP
        parts.append(_text(0, y + ROW - 6, heading, size=12))
        y += ROW
        for label, value in bars:
            width = scale(max(value, 0.0)) - LABEL_WIDTH
            colour = HIGHLIGHT if label == highlight else MUTED
            parts.append(_text(LABEL_WIDTH - 6, y + ROW - 6, label, anchor="end"))
            parts.append(f'<rect x="{LABEL_WIDTH}" y="{_num(y + 2)}" width="{_num(width)}" height="{ROW - 4}" '
                         f'fill="{colour}"><title>{html.escape(f"{label}: {value:.{digits}f}")}</title></rect>')
            parts.append(_text(LABEL_WIDTH + width + 4, y + ROW - 6, f"{value:.{digits}f}"))
            y += ROW
    return _svg(title, y + 10, "".join(parts))


def interval_chart(
    title: str,
    rows: Sequence[tuple[str, float, float | None, float | None]],
    *,
    reference: float = 1.0,
) -> str:
    """Point estimates with their intervals, one row each, against a reference line (a lift's 1.0).

    Geometry: the scale's domain is ``[lo, hi]``, the smallest and largest of every point, bound and the
    reference, widened by 5% of its span on both sides; it maps onto ``[LABEL_WIDTH, WIDTH - INTERVAL_WIDTH]``.
    Row ``i``'s top is ``TOP + i * ROW``; its interval is a rect from ``low`` to ``high``, 4 px high,
    centred on the row (``y = top + ROW / 2 - 2``), its point a circle of radius 4 at ``(x(point), top + ROW / 2)``.

    Args:
        rows: ``(label, point, low, high)``; a row without an interval draws the point alone, a row whose
            point is ``None`` is skipped.

    Returns:
        The ``<svg>`` element, or ``""`` when there is no point to draw.
    """
    kept = [(label, float(p), lo, hi) for label, p, lo, hi in rows if _finite(p)]
    if not kept:
        return ""
    values = [reference] + [v for _, p, lo, hi in kept for v in (p, lo, hi) if _finite(v)]
    lo, hi = min(values), max(values)
    pad = 0.05 * (hi - lo)
    scale = Scale(lo - pad, hi + pad, LABEL_WIDTH, WIDTH - INTERVAL_WIDTH)
    height = TOP + len(kept) * ROW
    parts = [f'<line x1="{_num(scale(reference))}" y1="{TOP}" x2="{_num(scale(reference))}" y2="{height}" '
             f'stroke="#444" stroke-dasharray="3,3"/>']
    for i, (label, point, low, high) in enumerate(kept):
        top = TOP + i * ROW
        middle = top + ROW / 2
        parts.append(_text(LABEL_WIDTH - 6, middle + 4, label, anchor="end"))
        text = f"{point:.3f}"
        if _finite(low) and _finite(high):
            x0, x1 = scale(float(low)), scale(float(high))
            parts.append(f'<rect x="{_num(x0)}" y="{_num(middle - 2)}" width="{_num(x1 - x0)}" height="4" '
                         f'fill="{MUTED}"/>')
            text += f" ({float(low):.3f}–{float(high):.3f})"
        parts.append(f'<circle cx="{_num(scale(point))}" cy="{_num(middle)}" r="4" fill="{HIGHLIGHT}">'
                     f"<title>{html.escape(f'{label}: {text}')}</title></circle>")
        parts.append(_text(WIDTH - INTERVAL_WIDTH + 8, middle + 4, text, size=10))
    parts.append(_text(scale(reference), height + 14, f"{reference:g}", anchor="middle", size=10))
    return _svg(title, height + 20, "".join(parts))


def line_chart(
    title: str,
    x_labels: Sequence[str],
    series: Mapping[str, Sequence[float | None]],
    *,
    digits: int = 4,
) -> str:
    """One line per series over shared x positions; a missing value (``None``) breaks the line.

    Geometry: ``n`` x positions spread evenly over ``[LABEL_WIDTH, WIDTH - VALUE_WIDTH]`` (one position sits
    in the middle); the y scale maps ``[min, max]`` of every value onto ``[TOP + PLOT_HEIGHT, TOP]`` (a single
    value, or all equal, sits in the middle). Each run of consecutive values is a ``polyline`` and each value
    a circle of radius 3.

    Args:
        x_labels: the label of each x position (epochs, dates).
        series: values per x position by series name, each as long as ``x_labels``.

    Returns:
        The ``<svg>`` element, or ``""`` when no series has a value.
    """
    for name, values in series.items():
        if len(values) != len(x_labels):
            raise ValueError(f"line_chart: series {name!r} has {len(values)} values for {len(x_labels)} x labels")
    present = [float(v) for values in series.values() for v in values if _finite(v)]
    if not present:
        return ""
    n = len(x_labels)
    xs = Scale(0, n - 1, LABEL_WIDTH, WIDTH - VALUE_WIDTH)
    ys = Scale(min(present), max(present), TOP + PLOT_HEIGHT, TOP)
    bottom = TOP + PLOT_HEIGHT
    parts = [f'<line x1="{LABEL_WIDTH}" y1="{bottom}" x2="{WIDTH - VALUE_WIDTH}" y2="{bottom}" stroke="#999"/>',
             _text(LABEL_WIDTH - 6, bottom + 4, f"{min(present):.{digits}f}", anchor="end", size=10),
             _text(LABEL_WIDTH - 6, TOP + 4, f"{max(present):.{digits}f}", anchor="end", size=10)]
    step = max(1, -(-n // 8))  # at most about eight x labels, so dates do not overlap
    parts += [_text(xs(i), bottom + 16, x_labels[i], anchor="middle", size=10) for i in range(0, n, step)]
    for k, (name, values) in enumerate(series.items()):
        colour = COLOURS[k % len(COLOURS)]
        points = [(xs(i), ys(float(v)), x_labels[i], float(v)) for i, v in enumerate(values) if _finite(v)]
        runs: list[list[str]] = [[]]
        for i, v in enumerate(values):
            if _finite(v):
                runs[-1].append(f"{_num(xs(i))},{_num(ys(float(v)))}")
            elif runs[-1]:
                runs.append([])
        parts += [f'<polyline points="{" ".join(run)}" fill="none" stroke="{colour}" stroke-width="2"/>'
                  for run in runs if len(run) > 1]
        parts += [f'<circle cx="{_num(x)}" cy="{_num(y)}" r="3" fill="{colour}">'
                  f"<title>{html.escape(f'{name} {label}: {v:.{digits}f}')}</title></circle>"
                  for x, y, label, v in points]
        legend_x = LABEL_WIDTH + k * 150
        parts.append(f'<rect x="{legend_x}" y="{bottom + BOTTOM}" width="10" height="10" fill="{colour}"/>')
        parts.append(_text(legend_x + 14, bottom + BOTTOM + 9, name))
    return _svg(title, bottom + BOTTOM + LEGEND, "".join(parts))


def _finite(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value and abs(value) != float("inf")
