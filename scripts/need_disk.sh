#!/usr/bin/env bash
# Usage: scripts/need_disk.sh WHO GIB PATH...  Fails, naming the path, its free space and what needs it, when
# a filesystem holding PATH has less than GIB GiB free. An install that runs out of space half-way leaves a
# venv that looks present but is broken (pip's "[Errno 28] No space left on device" after minutes of work);
# checking first says what to free before anything is written.
set -euo pipefail
who=$1 need_gib=$2
shift 2
for path in "$@"; do
  free_kib=$(df -Pk "$path" | awk 'NR==2 {print $4}')
  if [ "$free_kib" -lt $(( need_gib * 1024 * 1024 )) ]; then
    echo "$who: needs ${need_gib} GiB free on the filesystem of $path; it has $(( free_kib / 1024 / 1024 )) GiB" \
      "($(df -Ph "$path" | awk 'NR==2 {print $6}')). Free space there (old clones, caches under ${TMPDIR:-/tmp}) and run again." >&2
    exit 1
  fi
done
