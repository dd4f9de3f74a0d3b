#!/bin/sh
# Runs once, when the postgres volume is first initialised (docker-entrypoint-initdb.d).
# Creates the `billing` database the gateway guards, a sample table, and the read-only role
# the gateway logs in as (targets.billing.user); its password comes from the environment.
set -eu
: "${BILLING_DB_PASSWORD:?}"
psql -v ON_ERROR_STOP=1 --username postgres --dbname postgres \
  -v pw="$BILLING_DB_PASSWORD" <<'SQL'
CREATE DATABASE billing;
CREATE ROLE billing_ro LOGIN PASSWORD :'pw';
SQL
psql -v ON_ERROR_STOP=1 --username postgres --dbname billing <<'SQL'
CREATE TABLE invoices (
  id       bigint PRIMARY KEY,
  customer text NOT NULL,
  email    text NOT NULL,
  amount   numeric(12, 2) NOT NULL
);
INSERT INTO invoices VALUES
  (1, 'Acme',   'ap@acme.example',   120.00),
  (2, 'Globex', 'billing@globex.example', 940.50);
GRANT CONNECT ON DATABASE billing TO billing_ro;
GRANT USAGE ON SCHEMA public TO billing_ro;
GRANT SELECT ON invoices TO billing_ro;
SQL
