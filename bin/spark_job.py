"""spark-submit's entry point for the Spark jobs: ``spark-submit bin/spark_job.py <job> --ds D ...``.

Runs ``jobs.<job>`` as its main module with the remaining arguments (the repository root must be on
PYTHONPATH, as the Airflow launcher sets it). A file of its own, outside jobs/, so that the job
modules are imported as ``jobs.*`` and none of them shadows a top-level package (jobs/tables.py and
PyTables' ``tables``).
"""

from __future__ import annotations

import runpy
import sys

if __name__ == "__main__":
    job = sys.argv.pop(1)
    runpy.run_module(f"jobs.{job}", run_name="__main__", alter_sys=True)
