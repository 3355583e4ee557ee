#!/usr/bin/env bash
# Downloads the wheels of constraints/gpu-carry.txt for the GPU host (CPython 3.12, manylinux x86_64) into .whl/
# (git-ignored; carried by the device call, installed there into /tmp/site by scripts/gpu_pipeline.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .whl
platforms=()
for n in 17 24 27 28 31 34 35; do platforms+=(--platform "manylinux_2_${n}_x86_64"); done
grep -vE '^\s*(#|$)' constraints/gpu-carry.txt | while read -r pin; do
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${platforms[@]}" --platform manylinux2014_x86_64 --platform any -d .whl "$pin"
done
ls -la .whl
