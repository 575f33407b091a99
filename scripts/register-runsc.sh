#!/usr/bin/env bash
# Register gVisor's runsc (Debian's `runsc` package) as the dockerd runtime "runsc" that Hearth's gvisor
# backend uses, with the arguments it needs on this kind of host (docs/isolation.md):
#   --network=none    runsc refuses to start otherwise here ("cannot run with network enabled in root
#                     network namespace"); gVisor sandboxes have no network at all
#   --host-uds=open   lets the agent connect to the host Unix socket bind-mounted at /hearth/agent.sock
#                     (connect only: nothing inside can create a socket on the host)
# Idempotent: adds the runtime to /etc/docker/daemon.json only if no "runsc" runtime is there (an existing
# one is left alone and reported if it lacks these arguments), keeps every other setting, and reloads a
# running dockerd with SIGHUP (never a restart: running containers are not touched). When dockerd is not
# running, it reads the file when it starts. Root only; without root or without runsc it does nothing.
set -euo pipefail

config=${HEARTH_DOCKER_DAEMON_JSON:-/etc/docker/daemon.json}
name=runsc

[ "$(id -u)" = 0 ] || exit 0
runsc=$(command -v runsc || true)
[ -n "$runsc" ] || exit 0

# Prints "added", "present" or "lacks <args>"; writes the file atomically only when it adds the runtime.
result=$(python3 - "$config" "$name" "$runsc" <<'EOF'
import json, os, sys, tempfile

path, name, binary = sys.argv[1:4]
wanted = ["--network=none", "--host-uds=open"]
try:
    with open(path) as f:
        text = f.read()
    config = json.loads(text) if text.strip() else {}
except FileNotFoundError:
    config = {}
if not isinstance(config, dict):
    sys.exit(f"{path} does not hold a JSON object")
runtimes = config.setdefault("runtimes", {})
existing = runtimes.get(name)
if existing is not None:
    args = existing.get("runtimeArgs") or []
    lacks = [a for a in wanted if a not in args and not (a == "--host-uds=open" and "--host-uds=all" in args)]
    print("lacks " + " ".join(lacks) if lacks else "present")
    sys.exit(0)
runtimes[name] = {"path": binary, "runtimeArgs": wanted}
os.makedirs(os.path.dirname(path), exist_ok=True)
fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".daemon.json.")
with os.fdopen(fd, "w") as f:
    json.dump(config, f, indent=2)
    f.write("\n")
os.chmod(tmp, 0o644)
os.replace(tmp, path)
print("added")
EOF
)

case "$result" in
  present) exit 0 ;;
  lacks*)
    echo "WARNING: dockerd's \"$name\" runtime in $config lacks runtimeArgs: ${result#lacks }." >&2
    echo "         Hearth's gvisor backend stays unavailable until they are added (then: kill -HUP dockerd)." >&2
    exit 0 ;;
esac

echo "Registered gVisor ($runsc) as dockerd runtime \"$name\" in $config."
answers() { docker info >/dev/null 2>&1; }
if ! answers; then exit 0; fi  # dockerd reads the file when it starts
pid=$(cat /var/run/docker.pid 2>/dev/null || pidof dockerd || true)
if [ -z "$pid" ]; then
  echo "dockerd answers but its pid is unknown: send it SIGHUP to load the runtime." >&2
  exit 0
fi
kill -HUP "$pid"
for _ in $(seq 1 40); do
  if docker info --format '{{json .Runtimes}}' 2>/dev/null | grep -q "\"$name\""; then
    echo "dockerd reloaded its configuration (SIGHUP): runtime \"$name\" is there."
    exit 0
  fi
  sleep 0.25
done
echo "dockerd did not show runtime \"$name\" 10 s after SIGHUP; see its log." >&2
exit 1
