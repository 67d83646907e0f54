#!/bin/bash
# First start: initdb with the given superuser and password, create POSTGRES_DB. Then run postgres
# listening on all container interfaces. Which sources may connect is not this image's business: the
# compose service passes its own pg_hba.conf (-c hba_file=...), so any image honouring the official
# image's contract keeps the same fence.
set -euo pipefail

if [[ "${1:-}" != "postgres" ]]; then
  exec "$@"
fi

: "${POSTGRES_PASSWORD:?FAIL: POSTGRES_PASSWORD must be set}"
POSTGRES_USER=${POSTGRES_USER:-postgres}
POSTGRES_DB=${POSTGRES_DB:-$POSTGRES_USER}

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

exec postgres -D "$PGDATA" -c listen_addresses='*' "${@:2}"
