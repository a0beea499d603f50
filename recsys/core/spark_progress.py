"""Spark stage progress in the job's log (and so in the Airflow task log), from Spark's status tracker."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

log = logging.getLogger("spark.progress")


class StageProgress:
    """Logs each Spark stage while it runs (every ``interval`` seconds) and a summary line when it ends.

    A daemon thread polls ``SparkContext.statusTracker()``; it reads only the tracker's counters, so it
    costs nothing on the executors. Start it once per session; it ends with the process.
    """

    def __init__(self, spark: Any, interval: float) -> None:
        self._tracker = spark.sparkContext.statusTracker()
        self._interval = interval
        self._running: dict[int, str] = {}  # stage id -> name, for the stages seen active
        self._thread = threading.Thread(target=self._loop, name="spark-progress", daemon=True)

    def start(self) -> StageProgress:
        self._thread.start()
        return self

    def _loop(self) -> None:
        while True:
            time.sleep(self._interval)
            try:
                self.poll()
            except Exception as err:  # a session stopping under the thread; progress lines are best effort
                log.debug("spark progress poll failed: %s", err)

    def poll(self) -> None:
        """Log the active stages, and a line for each stage seen before that is no longer active."""
        active = set(self._tracker.getActiveStageIds())
        for stage_id in sorted(set(self._running) - active):
            name = self._running.pop(stage_id)
            info = self._tracker.getStageInfo(stage_id)
            if info is not None:
                log.info("stage %d done (%s): %d tasks, %d failed", stage_id, name, info.numCompletedTasks,
                         info.numFailedTasks)
        for stage_id in sorted(active):
            info = self._tracker.getStageInfo(stage_id)
            if info is None:
                continue
            self._running[stage_id] = info.name
            log.info("stage %d running (%s): %d/%d tasks done, %d running", stage_id, info.name,
                     info.numCompletedTasks, info.numTasks, info.numActiveTasks)
