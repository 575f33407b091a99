#!/usr/bin/env bash
# Install the Debian packages Hearth needs that are missing, then make sure dockerd runs.
# Root only; idempotent; quiet when everything is already there (apt-get update runs only if
# something is missing). Packages: docker.io (the engine), mmdebstrap + eatmydata + dpkg-dev
# (runtime images; mmdebstrap's hooks call dpkg-architecture), nodejs (host-side tests run the
# JavaScript agent), wrk (benchmarks), curl (ensure-docker.sh's health check), runsc (gVisor: the
# gvisor backend; ensure-docker.sh registers it with dockerd), chromium + chromium-driver (the
# dashboard's headless-browser test), qemu-system-x86 + lz4 + e2fsprogs (the microvm backend: QEMU,
# and the guest image build's kernel decompression and read-only root), postgresql (the server
# binaries only: the PostgreSQL store test starts a throwaway cluster of its own), golang-go (builds
# the custom runtimes' static relay, and the Go runtime the tests use).
# Extra packages: HEARTH_EXTRA_PACKAGES="pkg1 pkg2".
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

if [ "$(id -u)" != 0 ]; then
  echo "install-system.sh installs Debian packages and must run as root (e.g. sudo bash $0)." >&2
  echo "Without root, scripts/ensure-docker.sh checks that a Docker daemon answers." >&2
  exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install-system.sh needs apt-get (Debian 12 or a derivative)." >&2
  exit 1
fi

# command that proves the package is there -> Debian package
wanted=(
  "dockerd docker.io"
  "mmdebstrap mmdebstrap"
  "eatmydata eatmydata"
  "dpkg-architecture dpkg-dev"
  "node nodejs"
  "wrk wrk"
  "curl curl"
  "runsc runsc"
  "chromium chromium"
  "chromedriver chromium-driver"
  "qemu-system-x86_64 qemu-system-x86"
  "lz4 lz4"
  "mke2fs e2fsprogs"
  "go golang-go"
)
missing=()
for entry in "${wanted[@]}"; do
  read -r cmd pkg <<<"$entry"
  command -v "$cmd" >/dev/null 2>&1 || missing+=("$pkg")
done
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || missing+=("postgresql")
for pkg in ${HEARTH_EXTRA_PACKAGES:-}; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
done

if [ ${#missing[@]} -gt 0 ]; then
  echo "Installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  log=$(mktemp)
  # Recommends stay on: docker.io's (cgroupfs-mount, ...) matter on hosts without systemd.
  if ! { apt-get update -qq && apt-get install -y -qq "${missing[@]}"; } >"$log" 2>&1; then
    echo "apt-get failed:" >&2
    tail -30 "$log" >&2
    rm -f "$log"
    exit 1
  fi
  rm -f "$log"
fi

exec bash "$here/ensure-docker.sh"
