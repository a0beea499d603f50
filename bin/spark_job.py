"""spark-submit's entry point for the Spark jobs: ``spark-submit bin/spark_job.py <job> --ds D ...``.

Runs ``jobs.<job>`` as its main module with the remaining arguments. The driver imports ``recsys`` and
``jobs`` from the checkout this file lives in, put first on ``sys.path``: spark-submit puts its
``--py-files`` (the launcher's archive of the same packages, which is what the executors import) ahead of
PYTHONPATH, and code imported from a zip would not find the checkout's ``conf/recsys.yaml``. A file of its
own, outside jobs/, so that the job modules are imported as ``jobs.*`` and none of them shadows a top-level
package (jobs/tables.py and PyTables' ``tables``).
"""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    job = sys.argv.pop(1)
    runpy.run_module(f"jobs.{job}", run_name="__main__", alter_sys=True)
