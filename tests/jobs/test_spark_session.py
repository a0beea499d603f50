"""The job's Spark session exposes nothing: every socket it listens on, the web UI's included, is on loopback."""

from __future__ import annotations

import psutil
import pytest

from recsys.core.spark import env_flag

pytestmark = pytest.mark.spark
LOOPBACK = {"127.0.0.1", "::1", "::ffff:127.0.0.1"}


def listening(process: psutil.Process) -> list[tuple[int, str, int]]:
    """(pid, address, port) of every TCP socket the process and its children (the JVM, Python workers) listen on."""
    found = []
    for proc in [process, *process.children(recursive=True)]:
        try:
            sockets = proc.net_connections(kind="tcp")
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        found += [(proc.pid, s.laddr.ip, s.laddr.port) for s in sockets if s.status == psutil.CONN_LISTEN]
    return found


def test_spark_listens_on_loopback_only(spark: object) -> None:
    # a shuffle and Python UDF work start the block manager's transfers and the Python workers
    frame = spark.range(200).selectExpr("id % 7 AS k", "id").groupBy("k").count()
    assert frame.rdd.map(lambda row: row["count"]).sum() == 200

    sockets = listening(psutil.Process())
    conf = spark.sparkContext.getConf()
    driver_port = int(conf.get("spark.driver.port"))
    assert conf.get("spark.driver.host") == conf.get("spark.driver.bindAddress") == "127.0.0.1"
    ports = {port for _, _, port in sockets}
    assert driver_port in ports  # the JVM's sockets are seen, so the check can fail
    ui = spark.sparkContext.uiWebUrl
    assert ui is not None, "the UI is on by default (SPARK_UI_ENABLED unset); this test checks where it listens"
    assert ui.startswith("http://127.0.0.1:") and int(ui.rsplit(":", 1)[1]) in ports
    exposed = [s for s in sockets if s[1] not in LOOPBACK]
    assert not exposed, f"listening beyond loopback (pid, address, port): {exposed}"


def test_spark_ui_enabled_is_a_clear_true_or_false(monkeypatch: pytest.MonkeyPatch) -> None:
    for value, expected in {"true": True, "0": False, " OFF ": False, "yes": True, "": True}.items():
        monkeypatch.setenv("SPARK_UI_ENABLED", value)
        assert env_flag("SPARK_UI_ENABLED", True) is expected, value
    monkeypatch.setenv("SPARK_UI_ENABLED", "maybe")
    with pytest.raises(ValueError, match="SPARK_UI_ENABLED='maybe': expected true or false"):
        env_flag("SPARK_UI_ENABLED", True)
