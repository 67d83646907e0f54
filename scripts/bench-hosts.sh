#!/usr/bin/env bash
# Benchmark of deploying to fresh servers (the README quotes its numbers): the two test hosts of
# scripts/testhosts.sh recreated from nothing, then per host the cold Docker install and the cold
# stack deploy (app host offline, images from the bundle), then a second run of the whole deploy.
set -euo pipefail

usage() {
  cat <<'USAGE'
Usage: scripts/bench-hosts.sh [--keep]

Recreates the test hosts (scripts/testhosts.sh down + up), runs make bundle and the deploy of
inventory/test-hosts step by step, and prints seconds per step and the bundle's size.
Needs the virtualenv (make venv). Takes about 10 minutes.
  --keep      leave the test hosts running afterwards (default: remove them)
USAGE
}

keep=false
while [[ $# -gt 0 ]]; do
  case "$1" in
    --keep) keep=true; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "FAIL: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
inventory=inventory/test-hosts
[[ -x .venv/bin/ansible-playbook ]] || { echo "FAIL: no virtualenv: run make venv first" >&2; exit 1; }
export ANSIBLE_CONFIG=$repo/ansible.cfg PATH=$repo/.venv/bin:$PATH
log=$(mktemp /tmp/labelstack-bench-hosts.XXXXXX.log)
results=()

# step NAME COMMAND...: run it with its output in the log, record its wall time.
step() {
  local name=$1 start
  shift
  start=$(date +%s.%N)
  "$@" >>"$log" 2>&1 || { echo "FAIL: step '$name' failed; see $log" >&2; exit 1; }
  results+=("$(printf '%-44s %7.1f s' "$name" "$(echo "$(date +%s.%N) - $start" | bc)")")
}

playbook() { ansible-playbook -i "$inventory" "$@"; }

$keep || trap 'scripts/testhosts.sh down >>"$log" 2>&1' EXIT
scripts/testhosts.sh down >>"$log" 2>&1
step "test hosts up (image cached)" scripts/testhosts.sh up
step "make bundle (images already built)" playbook ansible/bundle.yml
step "db: Docker engine install, cold" playbook ansible/site.yml --tags docker_engine --limit db
step "app: Docker engine install, cold" playbook ansible/site.yml --tags docker_engine --limit app
step "app: outbound network blocked" scripts/testhosts.sh offline app
step "db: PostgreSQL from the bundle, cold" playbook ansible/site.yml --limit db
step "app: Label Studio + ML backend from the bundle, cold" playbook ansible/site.yml --limit app
step "both: second run" playbook ansible/site.yml
if tail -n 4 "$log" | grep -q 'changed=[1-9]'; then
  echo "FAIL: the second run changed something; see $log" >&2
  exit 1
fi

# The folder inventory/test-hosts names in labelstack_image_bundle.
bundle=bundles/test-hosts
printf '%s\n' "${results[@]}"
echo "bundle $bundle:"
(cd "$bundle" && du -b -- *.tar.gz | awk '{ printf "  %-60s %7.0f MB\n", $2, $1 / 1e6; total += $1 }
  END { printf "  %-60s %7.0f MB\n", "total", total / 1e6 }')
echo "log: $log"
