#!/usr/bin/env bash
# Make sure a Docker daemon answers on /var/run/docker.sock.
# Installs Debian's docker.io and starts dockerd (no default bridge) when run as root and none answers.
# As root, also registers gVisor's runsc with dockerd when it is installed (register-runsc.sh: daemon.json,
# then a SIGHUP to a running dockerd; a running dockerd is never restarted).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
log=${HEARTH_DOCKERD_LOG:-/var/log/hearth-dockerd.log}

answers() { docker info >/dev/null 2>&1 || curl -sf --unix-socket /var/run/docker.sock http://d/_ping >/dev/null 2>&1; }

if answers; then exec bash "$here/register-runsc.sh"; fi

if [ "$(id -u)" != 0 ]; then
  echo "No Docker daemon answers and this is not root: start dockerd (or add yourself to the docker group) first." >&2
  exit 1
fi

if ! command -v dockerd >/dev/null 2>&1; then
  echo "Installing Debian's docker.io ..."
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io >/dev/null
fi

bash "$here/register-runsc.sh"  # before dockerd starts: it reads daemon.json then

# Under systemd, the packaged service is the right way to run it.
if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1 \
    && systemctl start docker >/dev/null 2>&1; then
  for _ in $(seq 1 120); do
    if answers; then exit 0; fi
    sleep 0.25
  done
fi

echo "Starting dockerd (log: $log) ..."
# setsid: dockerd must outlive the shell (and make's process group) that started it.
setsid nohup dockerd --bridge=none --iptables=false --ip-masq=false --log-level=warn >"$log" 2>&1 < /dev/null &
for _ in $(seq 1 120); do
  if answers; then echo "dockerd is up."; exit 0; fi
  sleep 0.25
done
echo "dockerd did not answer within 30 s; see $log" >&2
tail -20 "$log" >&2 || true
exit 1
