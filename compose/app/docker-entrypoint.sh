#!/bin/bash
# Entry point of the build-mode image. Same commands as the official image:
#   label-studio-uwsgi    wait for the database, migrate, create the admin user, serve with uWSGI
#   label-studio-migrate  only run the migrations
#   anything else         exec'd as given (e.g. `label-studio user --username ...`)
set -euo pipefail

data=${LABEL_STUDIO_BASE_DATA_DIR:-/label-studio/data}

check_data_dir() {
  if ! touch "$data/.write-test" 2>/dev/null; then
    echo "FAIL: data directory $data is not writable by uid $(id -u); on the host run: chown -R 1001:0 <data dir> && chmod 0770 <data dir>" >&2
    exit 1
  fi
  rm -f "$data/.write-test"
}

wait_for_db() {
  [[ "${DJANGO_DB:-}" == "default" ]] || return 0
  python3 - <<'PY'
import os, socket, sys, time
host, port = os.environ.get("POSTGRE_HOST", "db"), int(os.environ.get("POSTGRE_PORT", "5432"))
deadline = time.monotonic() + int(os.environ.get("LABELSTACK_DB_WAIT_SECONDS", "120"))
while True:
    try:
        socket.create_connection((host, port), timeout=3).close()
        break
    except OSError as exc:
        if time.monotonic() > deadline:
            sys.exit(f"FAIL: PostgreSQL at {host}:{port} not reachable: {exc}")
        time.sleep(1)
PY
}

migrate() {
  python3 /label-studio/label_studio/manage.py locked_migrate --noinput 2>/dev/null \
    || python3 /label-studio/label_studio/manage.py migrate --noinput
}

case "${1:-}" in
  label-studio-uwsgi)
    check_data_dir
    wait_for_db
    migrate
    label-studio init
    exec uwsgi --ini /label-studio/deploy/uwsgi.ini
    ;;
  label-studio-migrate)
    check_data_dir
    wait_for_db
    migrate
    ;;
  *)
    exec "$@"
    ;;
esac
