#!/usr/bin/env bash
# Install Debian's Chromium and its WebDriver for the browser tier (tests/ui), when either is missing.
# The browser comes from the distribution's packages: nothing is downloaded at test time.
set -euo pipefail

usage() {
  cat <<'USAGE'
Usage: scripts/install-browser.sh [--help]

Installs the Debian packages chromium and chromium-driver (as root, with apt-get) unless
/usr/bin/chromium and /usr/bin/chromedriver are both there already. Refreshes the package
lists first when they do not know the packages, or when an install from them fails.
USAGE
}
[[ "${1:-}" == "--help" || "${1:-}" == "-h" ]] && { usage; exit 0; }
[[ $# -eq 0 ]] || { echo "FAIL: unknown argument '$1' (see --help)" >&2; exit 2; }

[[ -x /usr/bin/chromium && -x /usr/bin/chromedriver ]] && exit 0

[[ $EUID -eq 0 ]] || { echo "FAIL: chromium/chromium-driver missing; as root: scripts/install-browser.sh" >&2; exit 1; }
command -v apt-get >/dev/null || { echo "FAIL: no apt-get: install Chromium and chromedriver by hand" >&2; exit 1; }

packages=(chromium chromium-driver)
install() { DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${packages[@]}"; }
# A fresh machine has empty package lists, an old one stale lists whose versions are gone from the mirror.
if ! apt-cache show "${packages[@]}" >/dev/null 2>&1 || ! install; then
  apt-get update -q
  install
fi
/usr/bin/chromium --version
/usr/bin/chromedriver --version
