#!/usr/bin/env bash
# Creates MLflow's own role and database beside Airflow's on the first start of an empty data volume
# (the postgres image runs /docker-entrypoint-initdb.d/*.sh once, as the superuser, with its environment).
# The password comes from $MLFLOW_DB_PASSWORD and reaches SQL as a psql variable, quoted by psql.
set -euo pipefail
: "${MLFLOW_DB_PASSWORD:?MLFLOW_DB_PASSWORD must be set (docker/.env)}"
psql -v ON_ERROR_STOP=1 --username "${POSTGRES_USER:-postgres}" --dbname "${POSTGRES_DB:-postgres}" \
  -v mlflow_password="$MLFLOW_DB_PASSWORD" <<'SQL'
CREATE ROLE mlflow LOGIN PASSWORD :'mlflow_password';
CREATE DATABASE mlflow OWNER mlflow;
SQL
