#!/bin/sh
# Runs inside a microVM's root file system as root, already in the function's cgroup (started by
# supervisor.py): drops every privilege, becomes nobody and execs the agent ("$@") in /tmp
# with a clean environment. The agent reaches the host over the virtio-serial port /dev/hearth-agent,
# or over the inherited descriptor $HEARTH_AGENT_FD (vsock, Firecracker).
# `--root DIR` (custom runtimes): the agent (the relay) runs chrooted into DIR, the function's own root
# file system; chroot(8) drops to nobody after entering it, with no privileges left to regain.
cd /tmp || exit 70
if [ -n "$HEARTH_AGENT_FD" ]; then transport="HEARTH_AGENT_FD=$HEARTH_AGENT_FD"; else transport="HEARTH_AGENT_PORT=/dev/hearth-agent"; fi
if [ "$1" = --root ]; then
  root=$2
  shift 2
  exec /usr/bin/setpriv --clear-groups --no-new-privs --inh-caps=-all --bounding-set=-all,+sys_chroot,+setuid,+setgid -- \
    /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/tmp LANG=C.UTF-8 "$transport" \
    /usr/sbin/chroot --userspec=65534:65534 --groups=65534 "$root" "$@"
fi
exec /usr/bin/setpriv --reuid=65534 --regid=65534 --clear-groups --no-new-privs --inh-caps=-all --bounding-set=-all -- \
  /usr/bin/env -i PATH=/usr/local/bin:/usr/bin:/bin HOME=/tmp TMPDIR=/tmp LANG=C.UTF-8 \
  PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 NODE_ENV=production "$transport" "$@"
