"""Airflow-side helpers of recsys-augment: how jobs are launched from tasks. Standard library only."""
