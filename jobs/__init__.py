"""The pipeline's work: each module with a main(argv) is a program runnable without Airflow."""
