"""MicroVM sandboxes: one backend class driving a VMM (QEMU's microvm machine or Firecracker).

See backend.py for the design; the guest's own programs (init.sh, supervisor.py, launch.sh) live here too.
"""
