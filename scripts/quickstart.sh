#!/usr/bin/env bash
# README quickstart command 1: set up (idempotent), run the whole DVC pipeline (prepare -> train -> variants
# -> evaluate -> benchmark -> profile -> manifest) and print the per-variant summary from the manifest.
# Extra arguments go to `dvc repro` (e.g. `--force`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. scripts/env.sh
dvc repro "$@"
infopt pipeline summary
