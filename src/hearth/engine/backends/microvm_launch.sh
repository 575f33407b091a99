#!/bin/sh
# Runs inside a microVM's root file system as root, already in the function's cgroup (started by
# microvm_supervisor.py): drops every privilege, becomes nobody and execs the agent ("$@") in /tmp
# with a clean environment. The agent reaches the host over the virtio-serial port /dev/hearth-agent,
# or over the inherited descriptor $HEARTH_AGENT_FD (vsock, Firecracker).
cd /tmp || exit 70
if [ -n "$HEARTH_AGENT_FD" ]; then transport="HEARTH_AGENT_FD=$HEARTH_AGENT_FD"; else transport="HEARTH_AGENT_PORT=/dev/hearth-agent"; fi
exec /usr/bin/setpriv --reuid=65534 --regid=65534 --clear-groups --no-new-privs --inh-caps=-all --bounding-set=-all -- \
  /usr/bin/env -i PATH=/usr/local/bin:/usr/bin:/bin HOME=/tmp TMPDIR=/tmp LANG=C.UTF-8 \
  PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 NODE_ENV=production "$transport" "$@"
