#!/usr/bin/env bash
# Installs Debian's `prometheus` package: a real Prometheus server for the agent's tests (scraping a real
# gateway, range queries, the prometheus-adapter rule's query). Idempotent: does nothing when the binary is
# there. The tests run the binary directly (127.0.0.1, a temporary TSDB), never the system service.
set -euo pipefail
if command -v prometheus >/dev/null 2>&1 || [ -n "${INFOPT_SKIP_APT:-}" ]; then
  exit 0
fi
if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
echo "setup: installing Debian package 'prometheus' (agent tests: a real Prometheus server)"
# Another apt process (a colleague's setup) may hold the lock: wait for it instead of failing at once.
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq \
  --no-install-recommends prometheus >/dev/null || {
  $SUDO apt-get -o DPkg::Lock::Timeout=600 update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq \
    --no-install-recommends prometheus >/dev/null
}
prometheus --version 2>&1 | head -1
