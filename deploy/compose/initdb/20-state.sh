#!/bin/sh
# Runs once, when the postgres volume is first initialised (docker-entrypoint-initdb.d).
# Creates the database the gateway replicas share their control state in ([state] backend =
# "postgres": holds and decisions, grants, tool pins) and the role they log in as; its
# password comes from the environment. The gateway makes its tables on first start.
set -eu
: "${STATE_DB_PASSWORD:?}"
psql -v ON_ERROR_STOP=1 --username postgres --dbname postgres \
  -v pw="$STATE_DB_PASSWORD" <<'SQL'
CREATE ROLE portcullis_state LOGIN PASSWORD :'pw';
CREATE DATABASE portcullis_state OWNER portcullis_state;
SQL
