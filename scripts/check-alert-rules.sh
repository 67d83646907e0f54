#!/usr/bin/env bash
# Check the monitoring alert rules with promtool: syntax (check rules) and behaviour (test rules: every alert
# against synthetic series). Part of make lint. promtool comes from Debian, installed when missing.
set -euo pipefail
[[ -n "${DEBUG:-}" ]] && set -x

RULES_DIR="${RULES_DIR:-$(cd "$(dirname "$0")/.." && pwd)/compose/monitoring/prometheus}"

usage() {
  cat <<'USAGE'
Usage: scripts/check-alert-rules.sh [--help]

Runs `promtool check rules` on compose/monitoring/prometheus/rules.yml and `promtool test rules` on
rules.test.yml next to it (RULES_DIR overrides the folder). When promtool is missing it is installed
(as root, with apt-get): Debian's package promtool where the release has one, else prometheus (bookworm),
without recommends and without starting its service.
USAGE
}
[[ "${1:-}" == "--help" || "${1:-}" == "-h" ]] && { usage; exit 0; }
[[ $# -eq 0 ]] || { echo "FAIL: unknown argument '$1' (see --help)" >&2; exit 2; }

install_promtool() {
  [[ $EUID -eq 0 ]] || { echo "FAIL: promtool missing; as root: scripts/check-alert-rules.sh (or apt-get install prometheus)" >&2; exit 1; }
  command -v apt-get >/dev/null || { echo "FAIL: no apt-get: install promtool (Prometheus' tools) by hand" >&2; exit 1; }
  # Only the tool is wanted: a policy-rc.d (when none exists) keeps the package's service from starting.
  local policy=/usr/sbin/policy-rc.d
  if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 0755 "$policy"
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  apt-cache show promtool >/dev/null 2>&1 || apt-get update -q
  local package=prometheus
  apt-cache show promtool >/dev/null 2>&1 && package=promtool
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$package"
}

command -v promtool >/dev/null || install_promtool
[[ -f "$RULES_DIR/rules.yml" ]] || { echo "FAIL: no rules.yml in $RULES_DIR" >&2; exit 1; }
promtool check rules "$RULES_DIR/rules.yml" || { echo "FAIL: promtool check rules: $RULES_DIR/rules.yml" >&2; exit 1; }
(cd "$RULES_DIR" && promtool test rules rules.test.yml) \
  || { echo "FAIL: promtool test rules: an alert of $RULES_DIR/rules.yml does not behave as rules.test.yml expects" >&2; exit 1; }
