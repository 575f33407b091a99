"""MicroVM sandboxes: one backend class driving a VMM (QEMU's microvm machine or Firecracker).

Host side, one job a module:

- backend.py: `MicroVMBackend` (boot or restore, snapshot locks, handshake, timings, orphans) and
  `firecracker_backend()`; the `microvm` backend is the class with `QemuVmm`, `firecracker` with `FirecrackerVmm`;
- vmm.py: the `Vmm` interface, what differs between VMMs; qemu.py (with qmp.py) and firecracker.py implement it;
- shapes.py: what a VM is started with; process.py: the VMM process and the supervisor's control channel;
- cgroups.py: the host CPU quota; snapshots.py: the saved guests; sandbox.py: a VM as an `AgentSandbox`;
- orphans.py, host.py, timings.py: leftovers of dead Hearths, host facts, start times;
- provided_functions.py and disks.py: custom runtimes and image functions (the function's own disk).

Guest side (packed into the initramfs by hearth.images.microvm): init.sh, supervisor.py, launch.sh.
"""
