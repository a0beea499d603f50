"""The run reports app of the Airflow plugin: index, date pages, refusals, Airflow's auth, and the "Run report" link.

The app runs under FastAPI's TestClient with Airflow's real SimpleAuthManager checking a real JWT; the lake is a
temporary folder with two dates' reports.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from recsys_airflow.links import run_report_url
from recsys_airflow.reports_view import EXTERNAL_VIEW, URL_PREFIX, create_app

DATES = ["2026-01-30", "2026-01-31"]  # the second has eval and registry facts, the first only its page
NDCG = {"model": 0.123456, "popularity": 0.05}


@pytest.fixture
def reports_lake(tmp_path: Path) -> Path:
    root = tmp_path / "lake"
    for ds in DATES:
        (root / "reports" / f"ds={ds}").mkdir(parents=True)
        (root / "reports" / f"ds={ds}" / "report.html").write_text(f"<html><body>report of {ds}</body></html>")
    (root / "reports" / "ds=2026-01-29").mkdir()  # a partition without its page is not listed
    (root / "eval" / "ds=2026-01-31").mkdir(parents=True)
    (root / "eval" / "ds=2026-01-31" / "metrics.json").write_text(json.dumps(
        {"models": {name: {"all": {"ndcg@10": value}} for name, value in NDCG.items()}}))
    (root / "registry" / "ds=2026-01-31").mkdir(parents=True)
    (root / "registry" / "ds=2026-01-31" / "registration.json").write_text(json.dumps({"gate": {"promoted": True}}))
    (tmp_path / "secret.html").write_text("not a report")  # beside the lake: what a traversal would reach
    return root


@pytest.fixture(scope="module")
def token() -> Iterator[str]:
    """A JWT of a viewer, signed by Airflow's SimpleAuthManager (the auth manager of the API server)."""
    from airflow.api_fastapi.app import create_auth_manager
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

    yield create_auth_manager().generate_jwt(SimpleAuthManagerUser(username="viewer", role="viewer"))


@pytest.fixture
def client(reports_lake: Path, token: str) -> Iterator[TestClient]:
    with TestClient(create_app(lambda: reports_lake), headers={"Authorization": f"Bearer {token}"}) as test_client:
        yield test_client


def test_index_lists_the_dates_with_a_report_newest_first_with_their_figures(client: TestClient) -> None:
    response = client.get("/reports")
    assert response.status_code == 200
    links = re.findall(r'href="([^"]+)"', response.text)
    assert links == ["reports/2026-01-31", "reports/2026-01-30"]
    newest = response.text[response.text.index("2026-01-31</a>"):response.text.index("2026-01-30</a>")]
    assert re.findall(r"<td>([^<]+)</td>", newest) == ["0.1235", "0.0500", "promoted"]


def test_index_without_reports_says_so(tmp_path: Path, token: str) -> None:
    with TestClient(create_app(lambda: tmp_path), headers={"Authorization": f"Bearer {token}"}) as empty:
        response = empty.get("/reports")
    assert response.status_code == 200 and "No report yet" in response.text


def test_a_date_page_serves_that_dates_file(client: TestClient, reports_lake: Path) -> None:
    for ds in DATES:
        response = client.get(f"/reports/{ds}")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/html")
        assert response.content == (reports_lake / "reports" / f"ds={ds}" / "report.html").read_bytes()


def test_a_missing_date_is_a_404_that_says_which(client: TestClient) -> None:
    response = client.get("/reports/2026-01-29")
    assert response.status_code == 404
    assert "no run report for 2026-01-29" in response.json()["detail"]


@pytest.mark.parametrize("ds", ["2026-1-31", "20260131", "2026-02-30", "latest", "2026-01-31x"])
def test_anything_but_a_date_is_refused(client: TestClient, ds: str) -> None:
    response = client.get(f"/reports/{ds}")
    assert response.status_code == 422
    assert "not a YYYY-MM-DD date" in response.json()["detail"] or "month" in response.json()["detail"]


@pytest.mark.parametrize("path", ["/reports/..%2F..%2Fsecret.html", "/reports/%2E%2E%2F%2E%2E%2Fsecret.html",
                                  "/reports/..%2f..%2f..%2fsecret.html", "/reports/..", "/reports/%2e%2e"])
def test_path_traversal_is_refused(client: TestClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code in (404, 422)
    assert "not a report" not in response.text


def test_requests_without_a_valid_token_are_refused(reports_lake: Path) -> None:
    with TestClient(create_app(lambda: reports_lake)) as anonymous:
        assert anonymous.get("/reports").status_code == 401
        assert anonymous.get(f"/reports/{DATES[0]}").status_code == 401
        forged = anonymous.get("/reports", headers={"Authorization": "Bearer not.a.jwt"})
        assert forged.status_code == 403


def test_lake_root_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from recsys_airflow.reports_view import lake_root

    monkeypatch.setenv("RECSYS_LAKE", str(tmp_path / "a"))
    assert lake_root() == tmp_path / "a"
    monkeypatch.delenv("RECSYS_LAKE")
    monkeypatch.setenv("RECSYS_HOME", str(tmp_path / "home"))
    assert lake_root() == tmp_path / "home" / "lake"


def test_run_report_link_opens_the_date_page_of_the_report_tasks_result(client: TestClient) -> None:
    result = {"path": "/lake/reports/ds=2026-01-31/report.html", "run_id": "abc"}
    assert run_report_url(result, "http://airflow:8080/") == "http://airflow:8080/recsys/reports/2026-01-31"
    assert run_report_url(json.dumps(result), "") == "/recsys/reports/2026-01-31"
    assert run_report_url(None, "http://a") == "" and run_report_url({"path": "/x/report.html"}, "http://a") == ""
    # the link's path, less the plugin's mount point, is a page the app serves
    assert client.get(run_report_url(result, "").removeprefix(URL_PREFIX)).text == \
        "<html><body>report of 2026-01-31</body></html>"


def test_plugin_mounts_the_app_and_adds_the_nav_entry() -> None:
    from recsys_plugin import RecsysPlugin

    from recsys_airflow.links import MlflowRunLink, RunReportLink

    assert [(app["url_prefix"], type(app["app"]).__name__) for app in RecsysPlugin.fastapi_apps] == [
        ("/recsys", "FastAPI")]
    assert {type(link) for link in RecsysPlugin.global_operator_extra_links} == {MlflowRunLink, RunReportLink}
    view = RecsysPlugin.external_views[0]
    assert (view["name"], view["destination"], view["href"]) == ("Run reports", "nav", "recsys/reports")
    assert view is EXTERNAL_VIEW and not view["href"].startswith("/")  # relative to the UI's base URL
