"""The job's Spark session exposes nothing: every socket it listens on is on loopback."""

from __future__ import annotations

import psutil
import pytest

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
    assert driver_port in {port for _, _, port in sockets}  # the JVM's sockets are seen, so the check can fail
    exposed = [s for s in sockets if s[1] not in LOOPBACK]
    assert not exposed, f"listening beyond loopback (pid, address, port): {exposed}"
