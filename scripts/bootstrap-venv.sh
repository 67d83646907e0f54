#!/usr/bin/env bash
# Create (or refresh) the controller virtualenv in .venv from requirements.lock.
# The venv is rebuilt only when the lock file changes, so repeated `make` calls are instant.
set -euo pipefail

usage() {
  cat <<'USAGE'
Usage: scripts/bootstrap-venv.sh [--help]

Creates .venv with the pinned controller tooling (ansible, ansible-lint, yamllint,
ruff, label-studio-sdk, pytest, pytest-testinfra) from requirements.lock.
Environment: PYTHON (default python3), VENV (default .venv).
USAGE
}
[[ "${1:-}" == "--help" || "${1:-}" == "-h" ]] && { usage; exit 0; }
[[ $# -eq 0 ]] || { echo "FAIL: unknown argument '$1' (see --help)" >&2; exit 2; }

cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
venv=${VENV:-.venv}
lock=requirements.lock
stamp="$venv/.lock.sha256"

command -v "$python" >/dev/null || { echo "FAIL: '$python' not found; install python3" >&2; exit 1; }
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || { echo "FAIL: $python is older than 3.11 (ansible 12 needs >= 3.11)" >&2; exit 1; }

want=$(sha256sum "$lock" | cut -d' ' -f1)
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
  exit 0
fi

if ! "$python" -m venv --help >/dev/null 2>&1 || ! "$python" -c 'import ensurepip' 2>/dev/null; then
  echo "FAIL: python venv module missing; on Debian: apt-get install python3-venv" >&2
  exit 1
fi
echo "Creating $venv from $lock ..."
"$python" -m venv "$venv"
"$venv/bin/pip" install --quiet --upgrade pip
"$venv/bin/pip" install --quiet --requirement "$lock"
echo "$want" > "$stamp"
