"""The one place a Spark session is built: master, time zone and memory from the environment."""

from __future__ import annotations

import os

from pyspark.sql import SparkSession

from recsys.core.spark_progress import StageProgress


def spark_session(app_name: str) -> SparkSession:
    """Get or create the job's Spark session.

    ``SPARK_MASTER`` picks the master (``local[*]`` by default); ``SPARK_DRIVER_MEMORY`` the driver's
    memory. The driver listens on loopback only (its RPC and block manager ports; the web UI is off), so
    nothing is reachable from other machines: on a cluster, set ``SPARK_DRIVER_HOST`` to the address the
    executors reach the driver at (and ``SPARK_DRIVER_BIND_ADDRESS`` to the local address to listen on,
    by default the driver host). Timestamps are always handled in UTC. Running stages are logged every
    ``SPARK_PROGRESS_SECONDS`` (15 by default), with a line when each ends.
    """
    master = os.environ.get("SPARK_MASTER", "local[*]")
    driver_host = os.environ.get("SPARK_DRIVER_HOST", "127.0.0.1")
    builder = (
        SparkSession.builder.appName(app_name)
        .master(master)
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.driver.memory", os.environ.get("SPARK_DRIVER_MEMORY", "4g"))
        .config("spark.sql.shuffle.partitions", os.environ.get("SPARK_SHUFFLE_PARTITIONS", "8"))
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        # the block manager binds where the driver does
        .config("spark.driver.host", driver_host)
        .config("spark.driver.bindAddress", os.environ.get("SPARK_DRIVER_BIND_ADDRESS", driver_host))
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")  # carriage-return bars garble task logs; see StageProgress
        .config("spark.sql.sources.partitionOverwriteMode", "dynamic")
        # INT96 is legacy; microsecond UTC timestamps read back the same in pyarrow, pandas and polars
        .config("spark.sql.parquet.outputTimestampType", "TIMESTAMP_MICROS")
        # listing thousands of ds= folders (a MovieLens history has 4110) as 10000 tasks costs more
        # than the listing itself; a few tasks each listing many folders is fast locally and on a cluster
        .config("spark.sql.sources.parallelPartitionDiscovery.parallelism", "8")
    )
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(os.environ.get("SPARK_LOG_LEVEL", "WARN"))
    context = spark.sparkContext
    if not hasattr(context, "recsys_progress"):  # getOrCreate may hand back a session that has one
        context.recsys_progress = StageProgress(spark, float(os.environ.get("SPARK_PROGRESS_SECONDS", "15"))).start()
    return spark
