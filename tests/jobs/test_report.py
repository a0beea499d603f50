"""The run report: SVG chart geometry by hand, the trend over a tmp lake's nights, the verdict words, the page."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recsys.core.lake import Lake, write_json
from tests.support import Listener, gauges_of

SVG = "{http://www.w3.org/2000/svg}"
VOID = {"meta", "br", "img", "hr", "input", "link"}


def _svg(text: str) -> ET.Element:
    """The chart as XML: it must be well formed to parse at all."""
    return ET.fromstring(text)


def _floats(element: ET.Element, *names: str) -> tuple[float, ...]:
    return tuple(float(element.get(name)) for name in names)


def test_bar_chart_geometry_by_hand() -> None:
    from recsys.report.svg import bar_chart

    svg = _svg(bar_chart("t", [("all users", [("model", 0.2), ("ease", 0.1)]), ("sparse", [("model", 0.05)])],
                         highlight="model"))
    rects = svg.findall(f"{SVG}rect")
    # scale [0, 0.2] -> [160, 560]: 400 px for 0.2; rows: heading at 30 + 10, bars 20 px each
    # group 1: heading 40..60, model 60..80 (rect y 62), ease 80..100 (y 82); group 2: heading 110..130, bar y 132
    assert [_floats(r, "x", "y", "width", "height") for r in rects] == [
        (160, 62, 400, 16), (160, 82, 200, 16), (160, 132, 100, 16)]
    assert [r.get("fill") for r in rects] == ["#1f77b4", "#9fb3c8", "#1f77b4"]
    assert svg.get("class") == "chart" and svg.find(f"{SVG}title").text == "t"
    assert float(svg.get("height")) == 160  # last row ends at 150, 10 px margin
    assert bar_chart("t", [("all users", [("model", None)])]) == ""


def test_interval_chart_geometry_by_hand() -> None:
    from recsys.report.svg import interval_chart

    svg = _svg(interval_chart("lift", [("all users", 1.1, 1.05, 1.2), ("sparse", None, None, None)]))
    # values 1 (reference), 1.1, 1.05, 1.2: domain [1, 1.2] widened by 0.01 -> [0.99, 1.21] onto [160, 490]
    def x(v: float) -> float:
        return 160 + (v - 0.99) / 0.22 * 330

    (rect,) = svg.findall(f"{SVG}rect")
    assert _floats(rect, "x", "width") == pytest.approx((x(1.05), x(1.2) - x(1.05)), abs=0.01)
    assert float(rect.get("y")) == 38  # row 30..50, centre 40, 4 px high
    (circle,) = svg.findall(f"{SVG}circle")
    assert _floats(circle, "cx", "cy") == pytest.approx((325, 40), abs=0.01)
    line = svg.find(f"{SVG}line")
    assert float(line.get("x1")) == pytest.approx(x(1.0), abs=0.01)


def test_line_chart_geometry_by_hand_and_gaps() -> None:
    from recsys.report.svg import line_chart

    svg = _svg(line_chart("curves", ["1", "2", "3"], {"model": [0.1, 0.3, 0.2], "model_noaug": [0.1, None, 0.2]}))
    # x: 160, 360, 560; y: [0.1, 0.3] -> [190, 30]
    (polyline,) = svg.findall(f"{SVG}polyline")  # the ablation's gap leaves two single points, no line
    assert polyline.get("points") == "160,190 360,30 560,110"
    circles = [_floats(c, "cx", "cy") for c in svg.findall(f"{SVG}circle")]
    assert circles == [(160, 190), (360, 30), (560, 110), (160, 190), (560, 110)]
    single = _svg(line_chart("one night", ["2026-01-01"], {"x": [5]}))
    assert _floats(single.find(f"{SVG}circle"), "cx", "cy") == (360, 110)  # both axes' middle
    with pytest.raises(ValueError, match="2 values for 3 x labels"):
        line_chart("bad", ["1", "2", "3"], {"s": [1, 2]})
    assert line_chart("empty", ["1"], {"s": [None]}) == ""


@pytest.mark.parametrize(
    ("intervals", "expected", "helped"),
    [
        ({"all": (1.003, 1.013), "sparse": (1.05, 1.4)},
         "Augmentation helped on all users (1.008×, 95% interval 1.003–1.013×, above 1) and on the sparse segment "
         "(1.200×, 95% interval 1.050–1.400×, above 1).", True),
        # the demo's night: a lift above 1 beyond the noise on all users, a lower sparse figure within it
        ({"all": (1.003, 1.013), "sparse": (0.85, 1.1)},
         "Augmentation helped on all users (1.008×, 95% interval 1.003–1.013×, above 1) and made no clear "
         "difference on the sparse segment (1.200×, 95% interval 0.850–1.100×, contains 1: within the noise).", True),
        ({"all": (0.97, 1.04), "sparse": (0.8, 0.95)},
         "Augmentation made no clear difference on all users (1.008×, 95% interval 0.970–1.040×, contains 1: "
         "within the noise) and hurt on the sparse segment (1.200×, 95% interval 0.800–0.950×, below 1).", False),
    ],
)
def test_verdict_follows_the_interval_of_each_segment(intervals: dict, expected: str, helped: bool) -> None:
    from recsys.evaluation.lift import augmentation_verdict

    # point lifts 1.008 (all) and 1.2 (sparse): the words must follow the intervals, not these
    got = augmentation_verdict({"all": {"ndcg@10": 0.1008}, "sparse": {"ndcg@10": 0.06}},
                               {"all": {"ndcg@10": 0.1}, "sparse": {"ndcg@10": 0.05}}, "ndcg@10", intervals)
    assert got["verdict"].startswith(expected)
    assert got["helped"] is helped
    assert got["lift_all"] == pytest.approx(1.008) and got["lift_sparse_low"] == intervals["sparse"][0]


def _night(lake: Lake, ds: str, ndcg: float, *, registry: bool = True, clean: tuple[int, int] | None = None,
           total: int | None = None, champion: str = "1") -> None:
    write_json(lake.path("eval", ds) / "metrics.json", {
        "models": {"model": {"all": {"ndcg@10": ndcg}}},
        "augmentation": {"metric": "ndcg@10", "lift_all": 1.0 + ndcg, "lift_sparse": 0.9}})
    if registry:
        write_json(lake.path("registry", ds) / "registration.json",
                   {"champion": champion, "gate": {"promoted": champion == "2"}})
    if clean:
        rows, quarantined = clean
        write_json(lake.path("clean", ds) / "_reconciliation.json",
                   {"input": rows + quarantined, "clean": rows, "duplicates": 0, "quarantined": quarantined,
                    "by_reason": {"bad_id": quarantined}})
    if total is not None:
        write_json(lake.path("tables", ds) / "_stats.json", {"interactions": {"total": total}, "users": total // 10})


def test_trend_reads_earlier_nights_in_date_order_and_skips_missing_ones(lake: Lake) -> None:
    from recsys.report.history import previous_stats, trend

    _night(lake, "2026-01-04", 0.30, clean=(95, 5), total=1000, champion="2")
    _night(lake, "2026-01-01", 0.10, total=800)
    _night(lake, "2026-01-02", 0.20, registry=False)
    _night(lake, "2026-01-06", 0.90)  # after the report's date
    write_json(lake.path("clean", "2026-01-03") / "_reconciliation.json", {"input": 1, "clean": 1})  # no night
    nights = trend(lake, "2026-01-04")
    assert [n["ds"] for n in nights] == ["2026-01-01", "2026-01-02", "2026-01-04"]
    assert [n["ndcg@10"] for n in nights] == [0.10, 0.20, 0.30]
    assert [n["champion"] for n in nights] == ["1", None, "2"]
    assert [n["clean_rows"] for n in nights] == [None, None, 95]
    assert nights[2]["quarantine_share"] == pytest.approx(5 / 100) and nights[0]["quarantine_share"] is None
    assert [n["interactions"] for n in nights] == [800, None, 1000]
    assert [n["ds"] for n in trend(lake, "2026-01-04", nights=2)] == ["2026-01-02", "2026-01-04"]
    assert previous_stats(lake, "2026-01-04") == ("2026-01-01", {"interactions": {"total": 800}, "users": 80})
    assert previous_stats(lake, "2026-01-01") == (None, {})


class _Page(HTMLParser):
    """Checks the page's elements nest and close, and keeps the headline span's text."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.headline: str | None = None
        self.in_headline = False

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag not in VOID:
            self.stack.append(tag)
        self.in_headline = dict(attrs).get("id") == "headline-ndcg10"

    def handle_startendtag(self, tag: str, attrs: list) -> None:
        pass

    def handle_endtag(self, tag: str) -> None:
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes <{self.stack[-1] if self.stack else None}>"
        self.stack.pop()
        self.in_headline = False

    def handle_data(self, data: str) -> None:
        if self.in_headline:
            self.headline = data


METRICS = {
    "models": {name: {"all": {"ndcg@10": a}, "sparse": {"ndcg@10": s}} for name, a, s in (
        ("model", 0.123456, 0.06), ("model_noaug", 0.12, 0.07), ("popularity", 0.05, 0.03), ("ease", 0.13, 0.05))},
    "augmentation": {"metric": "ndcg@10", "lift_all": 0.123456 / 0.12, "lift_sparse": 0.06 / 0.07,
                     "lift_all_low": 1.01, "lift_all_high": 1.04, "lift_sparse_low": 0.7, "lift_sparse_high": 1.1,
                     "verdict": "Augmentation did not help"},
    "cold_start": {"metric": "ndcg@10", "models": {
        "model_cold": {"among_cold": {"ndcg@10": 0.3}, "full_catalogue": {"ndcg@10": 0.02}},
        "tfidf": {"among_cold": {"ndcg@10": 0.2}, "full_catalogue": {"ndcg@10": 0.01}}}, "verdict": "met"},
}
GATE = {"promoted": True, "reason": "better", "metric": "ndcg@10", "challenger": 0.123456, "champion_before": 0.1,
        "champion_version_before": "3"}
TRAINING = {"models": {"model": {"valid_ndcg@10": [0.05, 0.08, 0.09]}, "model_noaug": {"valid_ndcg@10": [0.04, 0.07]}}}
RECONCILIATION = {"input": 100, "clean": 90, "duplicates": 4, "quarantined": 6,
                  "by_reason": {"bad_id": 2, "out_of_range": 4, "bot": 0}}


def _charts(page: str) -> list[ET.Element]:
    charts, start = [], page.find('<svg class="chart"')
    while start >= 0:
        end = page.index("</svg>", start) + len("</svg>")
        charts.append(_svg(page[start:end]))
        start = page.find('<svg class="chart"', end)
    return charts


def test_page_parses_and_answers_on_its_first_screen() -> None:
    from recsys.report.html import render_report

    nights = [{"ds": "2026-01-01", "ndcg@10": 0.1, "lift_all": 1.01, "lift_sparse": None, "clean_rows": 80,
               "quarantine_share": 0.1, "interactions": 900, "champion": "3", "promoted": True},
              {"ds": "2026-01-02", "ndcg@10": 0.123456, "lift_all": 1.02, "lift_sparse": 0.86, "clean_rows": 90,
               "quarantine_share": 0.06, "interactions": 1000, "champion": "4", "promoted": True}]
    page = render_report("2026-01-02", METRICS, GATE, {}, {"interactions": {"total": 1000}, "users": 50},
                         training=TRAINING, nights=nights, reconciliation=RECONCILIATION,
                         quarantine=[{"user_id": "", "item_id": "i1", "reason": "bad_id"},
                                     {"user_id": "u\x00x", "item_id": "i2", "reason": "bad_id"}],
                         stats_before={"interactions": {"total": 800}, "users": 40}, stats_before_ds="2026-01-01")
    parser = _Page()
    parser.feed(page)
    parser.close()
    assert parser.stack == [] and parser.headline == f"{METRICS['models']['model']['all']['ndcg@10']:.4f}"
    first = page[:page.index("</section>")]
    assert "PROMOTED to champion" in first
    assert "against the champion (version 3) on ndcg@10: 0.1235 vs 0.1000 (<b>+23.5%</b>)" in first
    assert "against EASE on ndcg@10: 0.1235 vs 0.1300 (<b>-5.0%</b>)" in first
    # the page's words follow the intervals, whatever the file's own (older) verdict said
    assert ("Augmentation helped on all users (1.029×, 95% interval 1.010–1.040×, above 1) and made no clear "
            "difference on the sparse segment") in first and "did not help" not in page
    assert "100 rows in, 90 clean, 4 duplicates, 6 quarantined (6.00%: out_of_range 4, bad_id 2)" in first
    assert "1,000 interactions in the window (+25.0% vs the previous night, 2026-01-01)" in first
    charts = _charts(page)
    titles = [c.find(f"{SVG}title").text for c in charts]
    assert len(charts) == 11, titles  # models, lift, curves, 5 trend, 2 cold, reconciliation
    for chart in charts:
        marks = [m for tag in ("rect", "path", "circle", "polyline") for m in chart.iter(f"{SVG}{tag}")]
        assert marks, chart.find(f"{SVG}title").text
    # the models' bars come from the figures: ease, the largest on all users, spans the whole 400 px
    bars = {r.find(f"{SVG}title").text: float(r.get("width")) for r in charts[0].iter(f"{SVG}rect")}
    assert bars["ease: 0.1300"] == 400 and bars["model: 0.1235"] == pytest.approx(0.123456 / 0.13 * 400, abs=0.01)
    assert "<th>users</th><td>50</td><td>40</td><td>+25.0%</td>" in page
    assert "<td>&#x27;&#x27;</td><td>i1</td><td>bad_id</td>" in page  # the empty id shows as such
    assert "<td>u\\x00x</td><td>i2</td>" in page and "\x00" not in page  # a NUL is shown, not written


def test_report_job_renders_from_the_lake_and_logs_to_mlflow(lake: Lake, tmp_path: Path, statsd: Listener,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from mlflow import MlflowClient

    from jobs import report
    from recsys.core.tracking import setup_mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    monkeypatch.setenv("RECSYS_MLFLOW_ARTIFACTS", str(tmp_path / "artifacts"))
    monkeypatch.setenv("RECSYS_STATSD_HOST", "127.0.0.1")
    monkeypatch.setenv("RECSYS_STATSD_PORT", str(statsd.port))
    experiment_id = setup_mlflow()  # before the client, which reads the tracking URI when made
    run_id = MlflowClient().create_run(experiment_id).info.run_id
    ds = "2026-01-03"
    _night(lake, "2026-01-01", 0.1, total=800)
    write_json(lake.path("eval", ds) / "metrics.json", METRICS)
    write_json(lake.path("registry", ds) / "registration.json", {"run_id": run_id, "champion": "4", "gate": GATE})
    write_json(lake.path("clean", ds) / "_reconciliation.json", RECONCILIATION)
    write_json(lake.path("tables", ds) / "_stats.json", {"interactions": {"total": 1000}})
    write_json(lake.path("models", ds) / "train.json", TRAINING)
    reasons = ["bad_id", "bad_id", "bad_id", "out_of_range"]
    quarantine = pa.table({"user_id": ["u1", "u2", "u3", "u4"], "item_id": ["x", "y", "z", "w"],
                           "event": ["view"] * 4, "value": ["1"] * 4, "ts": ["t"] * 4, "reason": reasons})
    lake.path("quarantine", ds).mkdir(parents=True)
    pq.write_table(quarantine, lake.path("quarantine", ds) / "part-00000.parquet")

    result = report.main(["--ds", ds, "--lake", str(lake.root), "--nights", "5"])
    page = (lake.path("reports", ds) / "report.html").read_text()
    assert result["run_id"] == run_id
    assert '<span id="headline-ndcg10">0.1235</span>' in page
    assert "<td>u1</td>" in page and "<td>u2</td>" in page and "<td>u3</td>" not in page  # two per reason
    assert "<td>u4</td>" in page
    assert "<th>2026-01-01</th><td>0.1000</td>" in page and "<th>2026-01-03</th><td>0.1235</td>" in page
    assert "+25.0% vs the previous night, 2026-01-01)" in page  # 2026-01-01's tables, the latest before
    logged = Path(MlflowClient().download_artifacts(run_id, "reports/report.html", str(tmp_path / "dl")))
    assert logged.read_text() == page
    # the night's gauges went out after the page (the report stage's own time comes with them)
    received = gauges_of(statsd.lines(result["gauges"] + 1))
    assert received["recsys.eval.model.ndcg_10"] == pytest.approx(0.123456)
    assert received["recsys.clean.quarantined"] == 6 and "recsys.stage.report.seconds" in received
