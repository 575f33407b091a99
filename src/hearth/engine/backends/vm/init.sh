#!/bin/busybox sh
# PID 1 of a Hearth microVM (runs from the initramfs built by hearth/images/microvm.py; docs/isolation.md).
#
# Loads the virtio modules, mounts the read-only root disk and builds the function's small world in
# it: tmpfs /tmp and /hearth, a minimal /dev, the agents read-only at /opt/hearth, a cgroup with the
# function's memory and process limits under /run (root only). Then it runs the supervisor
# (supervisor.py, root, in the root file system), which serves the host's control channel
# and starts the agent as nobody; when the supervisor ends, the VM powers off (QEMU -no-reboot exits).
#
# A `provided` VM (custom runtimes, image functions) has a second read-only disk, the function's own
# root (disks.py: an image's file system and the relay); it is mounted at /run/hearth-fn in the
# root with the same /tmp, /dev, /proc and /hearth, and the relay runs chrooted into it (launch.sh).
#
# Kernel command line: hearth.runtime=python|javascript|provided hearth.mem=<MiB> hearth.pids=<n>
# hearth.tmpfs=<MiB> hearth.transport=virtio|vsock hearth.autostart=0|1
/bin/busybox --install -s /bin
export PATH=/bin
umask 022
mkdir -p /proc /sys /dev /newroot
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev

say() { echo "hearth-init: $*" > /dev/console; }
die() { say "$*"; sync; reboot -f; sleep 5; }

RUNTIME=python MEM=128 PIDS=128 TMPFS=64 TRANSPORT=virtio AUTOSTART=0
for word in $(cat /proc/cmdline); do
  case $word in
    hearth.runtime=*) RUNTIME=${word#*=} ;;
    hearth.mem=*) MEM=${word#*=} ;;
    hearth.pids=*) PIDS=${word#*=} ;;
    hearth.tmpfs=*) TMPFS=${word#*=} ;;
    hearth.transport=*) TRANSPORT=${word#*=} ;;
    hearth.autostart=*) AUTOSTART=${word#*=} ;;
  esac
done

for module in $(cat /lib/modules/order); do
  insmod /lib/modules/$module.ko || die "insmod $module failed"
done

# Wait for a path to appear (devices are probed asynchronously): up to 10 s.
wait_for() {
  n=0
  while [ ! -e "$1" ]; do
    n=$((n + 1))
    [ $n -gt 1000 ] && die "$1 did not appear"
    usleep 10000
  done
}
# Make /newroot/$2 the device of the virtio-serial port named $1, owned by $3, mode 600.
port_node() {
  n=0
  while :; do
    for p in /sys/class/virtio-ports/*; do
      if [ "$(cat "$p/name" 2>/dev/null)" = "$1" ]; then
        IFS=: read -r major minor < "$p/dev"
        mknod -m 600 "/newroot/$2" c "$major" "$minor"
        chown "$3" "/newroot/$2"
        return 0
      fi
    done
    n=$((n + 1))
    [ $n -gt 1000 ] && die "no virtio-serial port named $1"
    usleep 10000
  done
}

# Loopback, as in a container without a network (the Runtime API listens on 127.0.0.1:9001).
ip link set lo up || die "cannot bring up lo"

wait_for /dev/vda
mount -t ext4 -o ro,noatime /dev/vda /newroot || die "cannot mount the root disk"
FUNCTION_DISK=
if [ "$RUNTIME" = provided ]; then  # two disks: the function's is the one holding the relay (VMMs order them freely)
  wait_for /dev/vdb
  FUNCTION_DISK=/dev/vdb
  if [ -e /newroot/opt/hearth-relay/relay ]; then
    umount /newroot
    mount -t ext4 -o ro,noatime /dev/vdb /newroot || die "cannot mount the root disk"
    FUNCTION_DISK=/dev/vda
  fi
fi
mount -t tmpfs -o nosuid,nodev,size=${TMPFS}m,mode=1777 tmpfs /newroot/tmp
mount -t tmpfs -o nosuid,nodev,size=${TMPFS}m,mode=0755 tmpfs /newroot/hearth
mkdir /newroot/hearth/code /newroot/hearth/deps
chown 65534:65534 /newroot/hearth/code /newroot/hearth/deps
mount -t proc -o nosuid,nodev,noexec proc /newroot/proc
mount --bind /opt/hearth /newroot/opt/hearth
mount -o remount,bind,ro /newroot/opt/hearth
# The function's /dev: the usual character devices and its own port; no disks, no control port.
mount -t tmpfs -o nosuid,noexec,size=64k,mode=0755 tmpfs /newroot/dev
for spec in null:1:3 zero:1:5 full:1:7 random:1:8 urandom:1:9 tty:5:0; do
  IFS=: read -r name major minor <<EOF
$spec
EOF
  mknod -m 666 /newroot/dev/$name c $major $minor
done
ln -s /proc/self/fd /newroot/dev/fd
ln -s /proc/self/fd/0 /newroot/dev/stdin
ln -s /proc/self/fd/1 /newroot/dev/stdout
ln -s /proc/self/fd/2 /newroot/dev/stderr
mkdir /newroot/dev/shm
mount -t tmpfs -o nosuid,nodev,noexec,size=${TMPFS}m,mode=1777 tmpfs /newroot/dev/shm
# /run is the supervisor's (mode 700): the control port and the function's cgroup live there.
mount -t tmpfs -o nosuid,noexec,size=1m,mode=0700 tmpfs /newroot/run
if [ "$TRANSPORT" = virtio ]; then
  port_node hearth.agent dev/hearth-agent 65534:65534
  port_node hearth.control run/hearth-control 0:0
fi

# The function's cgroup: memory without swap and processes; an OOM kills the whole group.
mkdir /newroot/run/hearth-cg
mount -t cgroup2 none /newroot/run/hearth-cg || die "no cgroup2"
echo "+memory +pids" > /newroot/run/hearth-cg/cgroup.subtree_control
mkdir /newroot/run/hearth-cg/fn
echo $((MEM * 1048576)) > /newroot/run/hearth-cg/fn/memory.max
echo 0 > /newroot/run/hearth-cg/fn/memory.swap.max 2>/dev/null
echo 1 > /newroot/run/hearth-cg/fn/memory.oom.group
echo "$PIDS" > /newroot/run/hearth-cg/fn/pids.max

if [ -n "$FUNCTION_DISK" ]; then
  FN=/newroot/run/hearth-fn
  mkdir $FN
  mount -t ext4 -o ro,noatime,nosuid,nodev $FUNCTION_DISK $FN || die "cannot mount the function's disk"
  for dir in tmp dev hearth; do mount --bind /newroot/$dir $FN/$dir || die "cannot mount $FN/$dir"; done
  mount -t proc -o nosuid,nodev,noexec proc $FN/proc
fi

chroot /newroot /usr/bin/python3 -I -S /opt/hearth/supervisor.py \
  "runtime=$RUNTIME" "transport=$TRANSPORT" "autostart=$AUTOSTART"
say "supervisor ended ($?)"
sync
reboot -f
