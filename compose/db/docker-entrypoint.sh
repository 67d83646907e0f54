#!/bin/bash
# First start: initdb with the given superuser and password, create POSTGRES_DB.
# Every start: write pg_hba.conf for POSTGRES_CLIENTS (space-separated networks, default: all) and run
# postgres listening on all container interfaces, password (scram) auth.
set -euo pipefail

if [[ "${1:-}" != "postgres" ]]; then
  exec "$@"
fi

: "${POSTGRES_PASSWORD:?FAIL: POSTGRES_PASSWORD must be set}"
POSTGRES_USER=${POSTGRES_USER:-postgres}
POSTGRES_DB=${POSTGRES_DB:-$POSTGRES_USER}
POSTGRES_CLIENTS=${POSTGRES_CLIENTS:-all}

for client in $POSTGRES_CLIENTS; do
  if [[ ! "$client" =~ ^(all|[0-9]{1,3}(\.[0-9]{1,3}){3}(/[0-9]{1,2})?)$ ]]; then
    echo "FAIL: POSTGRES_CLIENTS holds '$client': give IPv4 addresses or networks (10.0.0.5, 10.0.0.0/24) or 'all'" >&2
    exit 1
  fi
done

if [[ ! -w "$PGDATA" ]]; then
  echo "FAIL: $PGDATA is not writable by uid $(id -u); on the host: chown 999:999 <db data dir> && chmod 0700 <db data dir>" >&2
  exit 1
fi

if [[ ! -s "$PGDATA/PG_VERSION" ]]; then
  echo "Initialising database cluster in $PGDATA"
  initdb --pgdata="$PGDATA" --username="$POSTGRES_USER" --encoding=UTF8 --locale=C.UTF-8 \
    --auth-local=trust --auth-host=scram-sha-256 \
    --pwfile=<(printf '%s\n' "$POSTGRES_PASSWORD") >/dev/null
  pg_ctl --pgdata="$PGDATA" --options="-c listen_addresses=''" --wait --silent start
  if [[ "$POSTGRES_DB" != "postgres" ]]; then
    psql --username="$POSTGRES_USER" --dbname=postgres --set=ON_ERROR_STOP=1 --quiet \
      --set=db="$POSTGRES_DB" <<<'CREATE DATABASE :"db";'
  fi
  pg_ctl --pgdata="$PGDATA" --mode=fast --wait --silent stop
fi

# Rewritten on every start, so the clients follow the deploy's variables; on a database host this keeps
# other sources out even when the host firewall's rules are gone (e.g. after a reboot without persistence).
{
  echo "# Written by the container's entrypoint from POSTGRES_CLIENTS on every start: edits are lost."
  echo "local all all trust"
  echo "host all all 127.0.0.1/32 scram-sha-256"
  for client in $POSTGRES_CLIENTS; do
    [[ "$client" == all || "$client" == */* ]] || client="$client/32"
    echo "host all all $client scram-sha-256"
  done
} >"$PGDATA/pg_hba.conf"

exec postgres -D "$PGDATA" -c listen_addresses='*' "${@:2}"
