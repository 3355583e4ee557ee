#!/usr/bin/env bash
# Download (here, where PyPI is reachable) the wheels the challenge needs on a GPU host beyond those of
# constraints/gpu-carry.txt (scripts/gpu_wheels.sh -> .whl/): what the gateway and the load client import and
# the GPU image may lack (orjson, prometheus_client, uvloop, httpx and their small dependencies), for CPython
# 3.12 on x86_64 Linux, pinned as constraints/cpu.txt pins them. scripts/gpu_challenge.sh installs from
# .whl/challenge/ only the modules the host cannot import, so nothing the host has is shadowed.
#
#   bash scripts/challenge_wheels.sh [PYTHON_VERSION]     # default 3.12 (the GPU image's Python)
set -euo pipefail
cd "$(dirname "$0")/.."
version=${1:-3.12}
dest=.whl/challenge
mkdir -p "$dest"
rm -f "$dest"/*.whl  # exactly the pins below
packages=(orjson prometheus_client uvloop httpx httpcore certifi anyio sniffio idna click typing_extensions)
pins=()
for name in "${packages[@]}"; do
  pin=$(grep -iE "^${name//_/[-_]}==" constraints/cpu.txt || true)
  pins+=("${pin:-$name}")
done
.venv/bin/python -m pip download --quiet --no-deps --only-binary=:all: --python-version "$version" \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  --platform any --implementation cp --dest "$dest" "${pins[@]}"
du -sh "$dest"
ls "$dest"
