#!/usr/bin/env bash
# Installs podman (builds images, runs containers and `podman kube play`) and mmdebstrap (builds the local
# Debian base image when no registry is reachable), and writes podman's system-wide settings as a drop-in,
# /etc/containers/containers.conf.d/50-infopt.conf. Idempotent: a second run installs and rewrites nothing.
#
# Why these settings (measured on the project's CPU machines, Debian 12, cgroup v1, in a container):
#   runtime = "runc"          crun rejects this cgroup layout
#   cgroup_manager = cgroupfs no systemd as PID 1
#   default_ulimits           podman's defaults (copied from the host's hard limits) fail with
#                             "setrlimit: operation not permitted"; explicit values within the host's work
# INFOPT_SKIP_APT=1 skips the apt step (a machine that has the packages from elsewhere).
# INFOPT_SKIP_PODMAN=1 skips everything: the podman tests then skip, saying why.
set -euo pipefail
if [ -n "${INFOPT_SKIP_PODMAN:-}" ]; then
  echo "setup_podman: skipped (INFOPT_SKIP_PODMAN is set); the podman tests will skip"
  exit 0
fi

PACKAGES=(podman mmdebstrap runc conmon catatonit containernetworking-plugins)
CONF_DIR=/etc/containers/containers.conf.d
CONF="$CONF_DIR/50-infopt.conf"

missing=()
for tool in podman mmdebstrap runc catatonit; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if [ "${#missing[@]}" -gt 0 ] && [ -z "${INFOPT_SKIP_APT:-}" ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "setup_podman: missing ${missing[*]}; as root: apt-get install --no-install-recommends ${PACKAGES[*]}" >&2
    exit 1
  fi
  echo "setup_podman: installing ${PACKAGES[*]}"
  apt-get -o DPkg::Lock::Timeout=600 update -qq
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends \
    "${PACKAGES[@]}" >/dev/null
fi

want='# Written by infopt scripts/setup_podman.sh (idempotent; safe to delete to restore the defaults).
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=1024:1024"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"'
if [ "$(id -u)" = 0 ]; then
  if [ ! -f "$CONF" ] || [ "$(cat "$CONF")" != "$want" ]; then
    mkdir -p "$CONF_DIR"
    printf '%s\n' "$want" > "$CONF.tmp"
    mv "$CONF.tmp" "$CONF"
    echo "setup_podman: wrote $CONF"
  fi
elif [ ! -f "$CONF" ]; then
  echo "setup_podman: $CONF is missing; run this script once as root" >&2
  exit 1
fi

podman --version
