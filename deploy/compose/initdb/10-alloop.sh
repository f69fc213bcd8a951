#!/bin/sh
# Runs once, when the PostgreSQL volume is first initialised (docker-entrypoint-initdb.d):
# a role and a database for alloop next to Label Studio's database (POSTGRES_DB).
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  -v alloop_password="$ALLOOP_DB_PASSWORD" <<'SQL'
CREATE ROLE alloop LOGIN PASSWORD :'alloop_password';
CREATE DATABASE alloop OWNER alloop;
SQL
