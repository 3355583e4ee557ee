#!/usr/bin/env bash
# Creates .venv with the pinned CPU stack (constraints/cpu.txt: torch==2.13.0+cpu, never a CUDA build)
# and the Debian packages that hold the datasets. Idempotent: a second run is quick.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}

# Debian packages of the default datasets: wordnet-base (the WordNet supersense task) and fortunes (a second
# source, used by tests). apt waits for another apt process's lock instead of failing at once.
missing=()
[ -f /usr/share/wordnet/data.noun ] || missing+=(wordnet-base)
[ -d /usr/share/games/fortunes ] || missing+=(fortunes)
if [ "${#missing[@]}" -gt 0 ] && [ -z "${INFOPT_SKIP_APT:-}" ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "setup: installing Debian packages ${missing[*]} (the default datasets)"
    apt-get -o DPkg::Lock::Timeout=600 update -qq
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "setup: the default datasets need Debian's ${missing[*]}: sudo apt-get install ${missing[*]}" >&2
    exit 1
  fi
fi

if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.infopt-installed
want="$(sha256sum constraints/cpu.txt pyproject.toml | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  # .venv takes about 3 GiB; pip unpacks the wheels under TMPDIR first
  bash scripts/need_disk.sh setup 5 . "${TMPDIR:-/tmp}"
  echo "setup: installing Python dependencies into .venv (pinned by constraints/cpu.txt; about 2 minutes)"
  .venv/bin/python -m pip install -q --upgrade "pip>=24"
  # One line per package ("Collecting ...") so a log shows progress; pip's own failure fails the script.
  .venv/bin/python -m pip install --progress-bar off -c constraints/cpu.txt -e ".[dev]" 2>&1 \
    | { grep -E "^(Collecting|Installing|Successfully|ERROR)" || true; }
  echo "$want" > "$stamp"
fi

# DVC and MLflow work offline; keep their caches inside the project.
export DVC_NO_ANALYTICS=1
.venv/bin/dvc config --local core.analytics false >/dev/null 2>&1 || true
.venv/bin/dvc config --local core.check_update false >/dev/null 2>&1 || true
# absolute: `dvc exp run --temp` (the agent's experiments) runs in a copy under .dvc/tmp, where a relative
# site cache dir names a folder that does not exist ("unable to open database file")
.venv/bin/dvc config --local core.site_cache_dir "$PWD/.dvc/site" >/dev/null 2>&1 || true
