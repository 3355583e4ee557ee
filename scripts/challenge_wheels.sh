#!/usr/bin/env bash
# Download (here, where PyPI is reachable) the wheels the challenge's gateway path needs on a GPU host that
# lacks them: the gateway's web stack (starlette, uvicorn with uvloop + httptools, prometheus_client) and
# their small dependencies, for CPython 3.12 on x86_64 Linux, pinned as constraints/cpu.txt pins them.
# scripts/gpu_challenge.sh installs from .whl/challenge/ only the modules the host cannot import.
#
#   bash scripts/challenge_wheels.sh [PYTHON_VERSION]     # default 3.12 (the GPU image's Python)
set -euo pipefail
cd "$(dirname "$0")/.."
version=${1:-3.12}
dest=.whl/challenge
mkdir -p "$dest"
packages=(starlette uvicorn uvloop httptools prometheus_client anyio h11 click idna sniffio typing_extensions)
pins=()
for name in "${packages[@]}"; do
  pin=$(grep -iE "^${name//_/[-_]}==" constraints/cpu.txt || true)
  pins+=("${pin:-$name}")
done
.venv/bin/python -m pip download --quiet --no-deps --only-binary=:all: --python-version "$version" \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  --implementation cp --dest "$dest" "${pins[@]}"
du -sh "$dest"
ls "$dest"
