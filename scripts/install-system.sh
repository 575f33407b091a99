#!/usr/bin/env bash
# Install the Debian packages Hearth needs that are missing, then make sure dockerd runs.
# Idempotent and quiet when everything is there. Needs root.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

if [ "$(id -u)" != 0 ]; then
  echo "install-system.sh needs root to install Debian packages; checking Docker only." >&2
  exec bash "$here/ensure-docker.sh"
fi

# command -> Debian package
declare -A wanted=(
  [dockerd]=docker.io
  [mmdebstrap]=mmdebstrap
  [eatmydata]=eatmydata
  [wrk]=wrk
  [curl]=curl
)
missing=()
for cmd in "${!wanted[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${wanted[$cmd]}")
done
for pkg in ${HEARTH_EXTRA_PACKAGES:-}; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done

if [ ${#missing[@]} -gt 0 ]; then
  echo "Installing Debian packages: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

bash "$here/ensure-docker.sh"
