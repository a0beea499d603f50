"""The one place a Spark session is built: master, time zone, memory, UI and event log from the environment."""

from __future__ import annotations

import os
from pathlib import Path

from pyspark.sql import SparkSession

from recsys.core.spark_progress import StageProgress

TRUE, FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


def under_spark_submit() -> bool:
    """Whether this Python driver was started by spark-submit, whose JVM is already running: pyspark then
    joins that JVM through ``PYSPARK_GATEWAY_PORT`` instead of launching one."""
    return "PYSPARK_GATEWAY_PORT" in os.environ


def env_flag(name: str, default: bool) -> bool:
    """A true/false environment variable; anything else is refused with the variable's name."""
    value = os.environ.get(name, "").strip().lower()
    if not value:
        return default
    if value not in TRUE + FALSE:
        raise ValueError(f"{name}={os.environ[name]!r}: expected true or false")
    return value in TRUE


def spark_session(app_name: str) -> SparkSession:
    """Get or create the job's Spark session.

    Run by hand (``python -m jobs.clean``), ``SPARK_MASTER`` picks the master (``local[*]`` by default) and
    ``SPARK_DRIVER_MEMORY`` the driver's memory (4g). Under spark-submit both come from its command line
    (the launcher passes ``--master`` and ``--driver-memory``; the driver's JVM is running by now, so memory
    set here would be ignored) and are not set here.

    The driver listens on loopback only (its RPC, block manager and web UI), so nothing is reachable from
    other machines: on a cluster, set ``SPARK_DRIVER_HOST`` to the address the executors reach the driver at
    (and ``SPARK_DRIVER_BIND_ADDRESS`` to the local address to listen on, by default the driver host). The
    Spark UI is on (``SPARK_UI_ENABLED``; unset, Spark's default, true, or a spark-defaults.conf decides) at
    ``SPARK_UI_PORT`` (Spark's 4040 by default; Spark takes the next free port when it is taken; 0 picks any
    free port). With ``SPARK_EVENT_LOG_DIR`` set, the event log is written there for a history server.
    Timestamps are always handled in UTC. Running stages are logged every ``SPARK_PROGRESS_SECONDS`` (15 by
    default), with a line when each ends.

    Raises:
        ValueError: ``SPARK_UI_ENABLED`` is neither true nor false.
    """
    driver_host = os.environ.get("SPARK_DRIVER_HOST", "127.0.0.1")
    bind_address = os.environ.get("SPARK_DRIVER_BIND_ADDRESS", driver_host)
    builder = (
        SparkSession.builder.appName(app_name)
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.shuffle.partitions", os.environ.get("SPARK_SHUFFLE_PARTITIONS", "8"))
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        # the block manager binds where the driver does
        .config("spark.driver.host", driver_host)
        .config("spark.driver.bindAddress", bind_address)
        .config("spark.ui.showConsoleProgress", "false")  # carriage-return bars garble task logs; see StageProgress
        .config("spark.sql.sources.partitionOverwriteMode", "dynamic")
        # INT96 is legacy; microsecond UTC timestamps read back the same in pyarrow, pandas and polars
        .config("spark.sql.parquet.outputTimestampType", "TIMESTAMP_MICROS")
        # listing thousands of ds= folders (a MovieLens history has 4110) as 10000 tasks costs more
        # than the listing itself; a few tasks each listing many folders is fast locally and on a cluster
        .config("spark.sql.sources.parallelPartitionDiscovery.parallelism", "8")
    )
    # Set only when asked, so that a spark-defaults.conf (SPARK_CONF_DIR) can still turn the UI off or move it
    if os.environ.get("SPARK_UI_ENABLED", "").strip():
        builder = builder.config("spark.ui.enabled", str(env_flag("SPARK_UI_ENABLED", True)).lower())
    if os.environ.get("SPARK_UI_PORT", "").strip():
        builder = builder.config("spark.ui.port", os.environ["SPARK_UI_PORT"].strip())
    if not under_spark_submit():
        builder = builder.master(os.environ.get("SPARK_MASTER", "local[*]")).config(
            "spark.driver.memory", os.environ.get("SPARK_DRIVER_MEMORY", "4g"))
        # The UI binds to the JVM's SPARK_LOCAL_IP (0.0.0.0 without it), read from the environment the JVM
        # is launched with; under spark-submit the launcher sets it
        os.environ.setdefault("SPARK_LOCAL_IP", bind_address)
    event_dir = os.environ.get("SPARK_EVENT_LOG_DIR")
    if event_dir:
        if "://" not in event_dir or event_dir.startswith("file:"):
            Path(event_dir.removeprefix("file://").removeprefix("file:")).mkdir(parents=True, exist_ok=True)
        builder = builder.config("spark.eventLog.enabled", "true").config("spark.eventLog.dir", event_dir)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(os.environ.get("SPARK_LOG_LEVEL", "WARN"))
    context = spark.sparkContext
    if not hasattr(context, "recsys_progress"):  # getOrCreate may hand back a session that has one
        context.recsys_progress = StageProgress(spark, float(os.environ.get("SPARK_PROGRESS_SECONDS", "15"))).start()
    return spark
