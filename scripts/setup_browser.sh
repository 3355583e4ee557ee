#!/usr/bin/env bash
# Headless Chromium for the dashboard test (idempotent): Debian's `chromium` package and PyPI's `playwright`
# driving it (tests launch it with executable_path=/usr/bin/chromium; playwright never downloads a browser).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v chromium >/dev/null 2>&1; then
  sudo=""
  if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
  $sudo apt-get -o DPkg::Lock::Timeout=600 install -y --no-install-recommends chromium \
    || { $sudo apt-get -o DPkg::Lock::Timeout=600 update && \
         $sudo apt-get -o DPkg::Lock::Timeout=600 install -y --no-install-recommends chromium; }
fi
if ! .venv/bin/python -c "import playwright" 2>/dev/null; then
  PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 .venv/bin/python -m pip install -q -c constraints/cpu.txt playwright
fi
chromium --version
.venv/bin/python -c "import importlib.metadata as m; print('playwright', m.version('playwright'))"
