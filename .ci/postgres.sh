#!/usr/bin/env bash
# Start a throwaway PostgreSQL + PostGIS cluster on loopback for the review-store tests.
# Idempotent: installs the packages if missing, initialises the cluster once, starts it if it
# is not running, creates the database with PostGIS. Prints the URL (the only stdout line).
# Settings: GEOSCREEN_PG_DIR (data folder), GEOSCREEN_PG_PORT, GEOSCREEN_PG_DB.
set -euo pipefail
PGDIR=${GEOSCREEN_PG_DIR:-/tmp/geoscreen-pg}
PORT=${GEOSCREEN_PG_PORT:-54329}
DB=${GEOSCREEN_PG_DB:-geoscreen_test}
PGVER=15
BIN=/usr/lib/postgresql/$PGVER/bin
EXT=/usr/share/postgresql/$PGVER/extension/postgis.control

if [ ! -x "$BIN/initdb" ] || [ ! -f "$EXT" ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >&2
  apt-get install -y -q --no-install-recommends "postgresql-$PGVER" "postgresql-$PGVER-postgis-3" >&2
fi

# initdb refuses to run as root: the cluster belongs to the postgres user then.
if [ "$(id -u)" = 0 ]; then
  OWNER=postgres
  as_owner() { su "$OWNER" -s /bin/sh -c "$*"; }
else
  OWNER=$(id -un)
  as_owner() { sh -c "$*"; }
fi

if [ ! -f "$PGDIR/PG_VERSION" ]; then
  mkdir -p "$PGDIR"
  chown "$OWNER" "$PGDIR"
  chmod 700 "$PGDIR"
  as_owner "$BIN/initdb -D '$PGDIR' -U postgres -A trust --no-sync -E UTF8 >/dev/null"
fi

if ! as_owner "$BIN/pg_ctl -D '$PGDIR' status >/dev/null 2>&1"; then
  as_owner "$BIN/pg_ctl -D '$PGDIR' -l '$PGDIR/server.log' -w -t 60 \
    -o \"-p $PORT -k /tmp -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200\" \
    start >/dev/null"
fi

PSQL="$BIN/psql -h 127.0.0.1 -p $PORT -U postgres -v ON_ERROR_STOP=1 -qAt"
if [ "$($PSQL -d postgres -c "SELECT 1 FROM pg_database WHERE datname = '$DB'")" != 1 ]; then
  $PSQL -d postgres -c "CREATE DATABASE $DB" >/dev/null
fi
$PSQL -d "$DB" -c "SET client_min_messages = warning; CREATE EXTENSION IF NOT EXISTS postgis" >/dev/null
echo "postgresql://postgres@127.0.0.1:$PORT/$DB"
