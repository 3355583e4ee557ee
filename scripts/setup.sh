#!/usr/bin/env bash
# Creates .venv with the pinned CPU stack (constraints/cpu.txt: torch==2.13.0+cpu, never a CUDA build)
# and the Debian `fortunes` package that holds the default dataset. Idempotent: a second run is quick.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}

if { [ ! -d /usr/share/games/fortunes ] || [ ! -f /usr/share/wordnet/data.noun ]; } && [ -z "${INFOPT_SKIP_APT:-}" ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "setup: installing Debian packages 'fortunes' and 'wordnet-base' (the default datasets)"
    apt-get -o DPkg::Lock::Timeout=600 update -qq
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq fortunes wordnet-base >/dev/null
  else
    echo "setup: the default datasets need Debian's packages: sudo apt-get install fortunes wordnet-base" >&2
    exit 1
  fi
fi

if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.infopt-installed
want="$(sha256sum constraints/cpu.txt pyproject.toml | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "setup: installing Python dependencies into .venv (pinned by constraints/cpu.txt)"
  .venv/bin/python -m pip install -q --upgrade "pip>=24"
  .venv/bin/python -m pip install -q -c constraints/cpu.txt -e ".[dev]"
  echo "$want" > "$stamp"
fi

# DVC and MLflow work offline; keep their caches inside the project.
export DVC_NO_ANALYTICS=1
.venv/bin/dvc config --local core.analytics false >/dev/null 2>&1 || true
.venv/bin/dvc config --local core.check_update false >/dev/null 2>&1 || true
.venv/bin/dvc config --local core.site_cache_dir .dvc/site >/dev/null 2>&1 || true
