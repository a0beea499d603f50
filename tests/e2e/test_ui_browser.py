"""The Airflow UI in Debian's headless Chromium: log in, trigger recsys_nightly from its form, read a run report.

A real ``airflow api-server`` (SimpleAuthManager with one user, SQLite, the DAG serialized by ``airflow dags
reserialize``; no scheduler: a triggered run is in the DB as soon as the form is sent) on 127.0.0.1. The browser
fills two params of the trigger form and the REST API must show them in the new run's conf; then the plugin's
pages show a report that ``recsys.report.html.render_report`` rendered from a metrics.json written here. With
``RECSYS_SCREENSHOTS=docs/screenshots`` the test saves the trigger form and the report page there.
"""

from __future__ import annotations

import json
import os
import struct
import urllib.request
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from recsys.core.lake import METRICS_FILE, REGISTRATION_FILE, REPORT_FILE, Lake, write_json
from recsys.report.html import render_report
from tests.support import airflow_cli, airflow_env, free_port, start_airflow, stop_processes, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.browser]
REPO = Path(__file__).resolve().parents[2]
DAG_ID = "recsys_nightly"
DS = "2026-01-31"
USER = "operator"  # an admin of the SimpleAuthManager; its password is generated at the API server's start
WINDOW_DAYS = 21  # the form's value; the param's default is null (the config's 60 days)
WAIT_SECONDS = 60  # for one page element or one API answer
SEGMENTS = ("all", "sparse")
NDCG = {"model": (0.123456, 0.104), "model_noaug": (0.110011, 0.08), "ease": (0.1152, 0.09),  # (all, sparse)
        "popularity": (0.05, 0.04)}
# eval/metrics.json of the report: the model, its ablation and two baselines on both segments, with lifts
METRICS = {
    "models": {name: {segment: {"ndcg@10": value, "recall@10": 2 * value}
                      for segment, value in zip(SEGMENTS, values, strict=True)} for name, values in NDCG.items()},
    "augmentation": {"metric": "ndcg@10", "verdict": "augmentation helped",
                     "lift_all": NDCG["model"][0] / NDCG["model_noaug"][0], "lift_all_low": 1.01,
                     "lift_all_high": 1.24,
                     "lift_sparse": NDCG["model"][1] / NDCG["model_noaug"][1], "lift_sparse_low": 1.05,
                     "lift_sparse_high": 1.6},
}
GATE = {"promoted": True, "reason": "better than the champion", "metric": "ndcg@10", "challenger": NDCG["model"][0],
        "champion_before": 0.1, "champion_version_before": "3"}
TRAINING = {"models": {"model": {"epochs": 3, "best_epoch": 3, "best_valid_ndcg@10": 0.12,
                                  "valid_ndcg@10": [0.08, 0.1, 0.12]},
                       "model_noaug": {"epochs": 3, "best_epoch": 2, "best_valid_ndcg@10": 0.1,
                                       "valid_ndcg@10": [0.07, 0.1, 0.09]}}}
MARKS = "rect, circle, polyline, polygon, line, path"  # an SVG chart's data marks


def _png(width: int, height: int) -> bytes:
    """A grey RGB PNG, built by hand (no imaging library): the report embeds plots as PNG."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + b"\x80\x80\x80" * width for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def _write_report(lake: Lake) -> None:
    """The date's metrics.json, gate decision and the report.html render_report makes of them, where the jobs
    put them."""
    write_json(lake.path("eval", DS) / METRICS_FILE, METRICS)
    write_json(lake.path("registry", DS) / REGISTRATION_FILE, {"gate": GATE})
    page = render_report(DS, METRICS, GATE, {"gan": {"epochs": 2}}, {"interactions": {"total": 1234}},
                         training=TRAINING, plots={"gan_loss.png": _png(40, 20)})
    lake.path("reports", DS).mkdir(parents=True)
    (lake.path("reports", DS) / REPORT_FILE).write_text(page)


class Api:
    """Airflow's REST API v2 with a token of the test's user."""

    def __init__(self, base: str, password: str) -> None:
        self.base = base
        login = self._call("POST", "/auth/token", {"username": USER, "password": password})
        self.token = login["access_token"]

    def _call(self, method: str, path: str, body: Any = None, token: str | None = None) -> Any:
        headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
        request = urllib.request.Request(self.base + path, method=method, headers=headers,
                                         data=None if body is None else json.dumps(body).encode())
        with urllib.request.urlopen(request, timeout=WAIT_SECONDS) as response:
            return json.loads(response.read() or b"null")

    def get(self, path: str) -> Any:
        return self._call("GET", f"/api/v2{path}", token=self.token)

    def post(self, path: str, body: Any) -> Any:
        return self._call("POST", f"/api/v2{path}", body, token=self.token)

    def run_ids(self) -> set[str]:
        return {run["dag_run_id"] for run in self.get(f"/dags/{DAG_ID}/dagRuns?limit=100")["dag_runs"]}


def _healthy(base: str) -> bool:
    try:
        with urllib.request.urlopen(f"{base}/api/v2/monitor/health", timeout=10) as response:
            return response.status == 200
    except OSError:
        return False


@pytest.fixture(scope="module")
def airflow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """The API server on its own home and lake, with the DAG in its DB; stopped at the end, also on failure."""
    home = tmp_path_factory.mktemp("recsys-ui")
    (home / "airflow").mkdir()
    lake = Lake(home / "lake")
    _write_report(lake)
    port = free_port()
    env = airflow_env(home, port, AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS=f"{USER}:admin")
    airflow_cli(env, "db", "migrate")
    airflow_cli(env, "dags", "reserialize")  # the DAG in the DB without a DAG processor
    procs, logs = start_airflow(
        env, {"api-server": ["api-server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]}, home)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_for(lambda: _healthy(base), 300, "the API server", logs)
        passwords = json.loads((home / "airflow" / "simple_auth_manager_passwords.json.generated").read_text())
        yield {"base": base, "password": passwords[USER], "api": Api(base, passwords[USER]), "lake": lake,
               "logs": logs}
    finally:
        stop_processes(procs)


@pytest.fixture(scope="module")
def browser(airflow: dict) -> Iterator[Any]:
    """Debian's Chromium and chromedriver (nothing downloaded), logged in to Airflow as the test's user."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for argument in ("--headless=new", "--no-sandbox", "--window-size=1400,1000", "--disable-dev-shm-usage"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    try:
        driver.implicitly_wait(WAIT_SECONDS)  # find_element waits for the React pages to draw
        driver.get(f"{airflow['base']}/dags/{DAG_ID}")  # redirects to the login form
        driver.find_element(By.NAME, "username").send_keys(USER)
        driver.find_element(By.NAME, "password").send_keys(airflow["password"])
        driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        driver.find_element(By.CSS_SELECTOR, "[data-testid=trigger-dag-button]")  # back on the DAG's page
        yield driver
    finally:
        driver.quit()


def _screenshot(driver: Any, name: str) -> None:
    """Save the window to $RECSYS_SCREENSHOTS/<name> (relative to the repository) when that is set."""
    folder = os.environ.get("RECSYS_SCREENSHOTS")
    if folder:
        (REPO / folder).mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(REPO / folder / name))


def test_trigger_form_params_reach_the_runs_conf(airflow: dict, browser: Any) -> None:
    from selenium.webdriver.common.by import By

    api: Api = airflow["api"]
    before = api.run_ids()
    browser.get(f"{airflow['base']}/dags/{DAG_ID}")
    browser.find_element(By.CSS_SELECTOR, "[data-testid=trigger-dag-button]").click()
    # the number field of a param is the input its increment button controls
    increment = browser.find_element(By.ID, "number-input:element_window_days:inc")
    window = browser.find_element(By.ID, increment.get_attribute("aria-controls"))
    window.send_keys(str(WINDOW_DAYS))
    augment = browser.find_element(By.NAME, "element_augment")  # the switch's (visually hidden) checkbox
    switch = augment.find_element(By.XPATH, "./ancestor::label[1]")
    switch.click()  # null (the config's value) -> on
    switch.click()  # -> off: an explicit false
    assert not augment.is_selected()
    assert window.get_attribute("value") == str(WINDOW_DAYS)
    _screenshot(browser, "trigger-form.png")
    browser.find_element(By.CSS_SELECTOR, "[data-testid=trigger-dag-submit]").click()

    wait_for(lambda: len(api.run_ids() - before) == 1, WAIT_SECONDS, "the triggered run", airflow["logs"])
    (run_id,) = api.run_ids() - before
    run = api.get(f"/dags/{DAG_ID}/dagRuns/{run_id}")
    assert run["run_type"] == "manual"
    conf = run["conf"]
    assert conf["window_days"] == WINDOW_DAYS
    assert conf["augment"] is False


def test_run_reports_in_the_navigation_list_the_date(airflow: dict, browser: Any) -> None:
    from selenium.webdriver.common.by import By

    browser.get(f"{airflow['base']}/dags/{DAG_ID}")
    browser.find_element(By.CSS_SELECTOR, "button[aria-label=Browse]").click()
    browser.find_element(By.XPATH, "//*[normalize-space(text())='Run reports']").click()  # the plugin's external view, framed in the UI
    browser.switch_to.frame(browser.find_element(By.TAG_NAME, "iframe"))
    try:
        link = browser.find_element(By.LINK_TEXT, DS)
        row = link.find_element(By.XPATH, "./ancestor::tr[1]").text
        figures = [f"{METRICS['models'][name]['all']['ndcg@10']:.4f}" for name in ("model", "popularity")]
        assert row.split() == [DS, *figures, "promoted"]
        link.click()
        headline = browser.find_element(By.ID, "headline-ndcg10")
        assert headline.text == f"{METRICS['models']['model']['all']['ndcg@10']:.4f}"
    finally:
        browser.switch_to.default_content()


def test_report_page_draws_its_charts_and_headline(airflow: dict, browser: Any) -> None:
    from selenium.webdriver.common.by import By

    browser.get(f"{airflow['base']}/recsys/reports/{DS}")  # where the "Run report" link of the date points
    headline = browser.find_element(By.ID, "headline-ndcg10")
    assert headline.text == f"{METRICS['models']['model']['all']['ndcg@10']:.4f}"
    images = browser.find_elements(By.TAG_NAME, "img")
    assert images, "no plot on the page"
    assert all(browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth", img) > 0
               for img in images), "an image did not load"
    charts = browser.find_elements(By.CSS_SELECTOR, "svg.chart")
    assert charts, "no svg.chart on the page"
    for chart in charts:
        box = browser.execute_script("const r = arguments[0].getBoundingClientRect(); return [r.width, r.height]",
                                     chart)
        title = chart.find_element(By.TAG_NAME, "title").get_attribute("textContent")
        assert min(box) > 0, f"chart {title!r} has an empty box {box}"
        assert chart.find_elements(By.CSS_SELECTOR, MARKS), f"chart {title!r} has no mark"
    height = browser.execute_script("return document.documentElement.scrollHeight")
    browser.set_window_size(1400, min(max(height, 1000), 4000))  # the whole report in one screenshot
    _screenshot(browser, "report.png")
    browser.set_window_size(1400, 1000)


def test_a_missing_date_says_so_in_the_browser(airflow: dict, browser: Any) -> None:
    from selenium.webdriver.common.by import By

    browser.get(f"{airflow['base']}/recsys/reports/2026-01-30")
    assert "no run report for 2026-01-30" in browser.find_element(By.TAG_NAME, "body").text


def test_run_report_link_of_publish_and_report_opens_the_dates_page(airflow: dict, browser: Any) -> None:
    """The links as the API server computes them from the report task's XCom in the metadata DB."""
    from selenium.webdriver.common.by import By

    api: Api = airflow["api"]
    run_id = api.post(f"/dags/{DAG_ID}/dagRuns", {"logical_date": None, "conf": {}})["dag_run_id"]
    links = f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/{{}}/links"
    assert api.get(links.format("report"))["extra_links"]["Run report"] is None  # report has not returned yet
    report_path = airflow["lake"].path("reports", DS) / REPORT_FILE
    api.post(f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/report/xcomEntries",  # what the report task returns
             {"key": "return_value", "value": {"path": str(report_path), "run_id": "0123abcd"}})
    expected = f"{airflow['base']}/recsys/reports/{DS}"  # [api] base_url + the plugin's page of the date
    assert {task: api.get(links.format(task))["extra_links"]["Run report"] for task in ("publish", "report", "train")
            } == {"publish": expected, "report": expected, "train": None}
    browser.get(expected)
    assert browser.find_element(By.ID, "headline-ndcg10").text == f"{NDCG['model'][0]:.4f}"
