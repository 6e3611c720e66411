#!/bin/bash
# Creates the read-only ClickHouse user that Grafana queries with. The
# ClickHouse image runs this once, when its data volume is new. readonly = 2
# allows the per-query settings the Grafana plugin sends but no writes or DDL.
set -euo pipefail

escaped_password="${GRAFANA_CLICKHOUSE_PASSWORD//\\/\\\\}"
escaped_password="${escaped_password//\'/\\\'}"
clickhouse client --user "$CLICKHOUSE_USER" --password "$CLICKHOUSE_PASSWORD" --multiquery <<SQL
CREATE USER IF NOT EXISTS grafana IDENTIFIED WITH sha256_password BY '${escaped_password}' SETTINGS readonly = 2;
GRANT SELECT ON ${CLICKHOUSE_DB}.* TO grafana;
SQL
