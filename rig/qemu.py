"""QEMU command line: accelerator choice and topology -> argv. Pure: starts nothing, unit tested."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from rig.config import MachineConfig, NvmeConfig

READY_MARKER = "p2pdma-rig: guest ready"


def kvm_usable(dev: str = "/dev/kvm", cpuinfo: str = "/proc/cpuinfo") -> tuple[bool, str]:
    """KVM only where /dev/kvm opens AND the CPU has hardware virtualisation (vmx/svm).

    A paravirtual /dev/kvm without vmx/svm opens fine but guests crawl (machine-notes.md), hence both checks.
    """
    try:
        fd = os.open(dev, os.O_RDWR)
        os.close(fd)
    except OSError as e:
        return False, f"{dev} does not open ({e.strerror})"
    try:
        flags = set()
        with open(cpuinfo) as f:
            for line in f:
                if line.startswith("flags"):
                    flags.update(line.split(":", 1)[1].split())
    except OSError:
        return False, f"{cpuinfo} unreadable"
    if not flags & {"vmx", "svm"}:
        return False, f"{dev} opens but the CPU lists neither vmx nor svm"
    return True, f"{dev} opens and the CPU has {'vmx' if 'vmx' in flags else 'svm'}"


def choose_accel(requested: str, usable: tuple[bool, str]) -> tuple[str, str]:
    """-> (accel, reason)."""
    ok, why = usable
    if requested == "tcg":
        return "tcg", "accel: tcg requested"
    if requested == "kvm":
        return "kvm", "accel: kvm requested" + ("" if ok else f" (warning: {why})")
    return ("kvm", why) if ok else ("tcg", why)


@dataclass(frozen=True)
class NvmeDrive:
    """One NVMe controller of the machine and the file behind its namespace (unused with latency_ns: null-co
    stores nothing, and by a controller that shares the namespace of its subsystem's first controller)."""

    backing: Path
    nvme: NvmeConfig = NvmeConfig()


@dataclass(frozen=True)
class QemuCommand:
    argv: tuple[str, ...]
    accel: str
    accel_reason: str
    ssh_port: int
    qmp_socket: Path

    def shell(self) -> str:
        import shlex

        return " ".join(shlex.quote(a) for a in self.argv)


# what Linux needs on its command line to use each IOMMU (CONFIG_INTEL_IOMMU_DEFAULT_ON is off in the fragments)
IOMMU_CMDLINE = {"": "", "intel": "intel_iommu=on", "virtio": ""}
# intremap=off: interrupt remapping needs a split irqchip under KVM and nothing here needs it; virtio-iommu takes
# slot 0x1e, free of the NVMe slots (nvme_topology_args)
IOMMU_DEVICE = {"intel": "intel-iommu,intremap=off", "virtio": "virtio-iommu-pci,addr=0x1e"}


def machine_cmdline(machine: MachineConfig) -> str:
    """The machine's own additions to the kernel command line: its IOMMU's switch, then kernel_cmdline."""
    return " ".join(p for p in (IOMMU_CMDLINE[machine.iommu], machine.kernel_cmdline) if p)


def kernel_cmdline(ssh_pubkey_b64: str, extra: str = "") -> str:
    parts = [
        "console=ttyS0,115200", "earlyprintk=serial,ttyS0,115200", "root=/dev/vda", "rw", "rootfstype=ext4",
        "init=/sbin/rig-init",
        # a panic ends QEMU (with -no-reboot) instead of hanging; the console watcher reports it
        "panic=-1",
        "nokaslr",  # stable addresses in traces, decodable against vmlinux
        "net.ifnames=0", "tsc=reliable",
        "i8042.noaux=1",  # no PS/2 mouse probe: about 0.45 s of the boot under TCG, and nothing uses a mouse
        f"rig.sshkey={ssh_pubkey_b64}",
    ]
    cmd = " ".join(p for p in parts if p)
    return f"{cmd} {extra}".strip()


def build_command(
    machine: MachineConfig,
    *,
    accel: tuple[str, str],
    bzimage: Path,
    root_overlay: Path,
    nvme: list[NvmeDrive],
    ssh_port: int,
    qmp_socket: Path,
    cmdline: str,
    qemu_binary: str = "qemu-system-x86_64",
) -> QemuCommand:
    acc, reason = accel
    cpu = machine.cpu if machine.cpu != "auto" else ("host" if acc == "kvm" else "max")
    argv = [
        qemu_binary,
        "-machine", "q35",
        "-accel", acc,
        "-cpu", cpu,
        "-smp", str(machine.smp),
        "-m", str(machine.memory_mb),
        *(["-bios", "qboot.rom"] if machine.firmware == "qboot" else []),  # from QEMU's data directory
        "-nodefaults", "-display", "none", "-no-reboot",
        "-serial", "stdio",
        "-kernel", str(bzimage),
        "-append", cmdline,
        "-qmp", f"unix:{qmp_socket},server=on,wait=off",
        # root disk: virtio-blk (a block device without P2PDMA support, the EREMOTEIO control)
        "-drive", f"file={root_overlay},if=none,id=root,format=qcow2,cache=unsafe",
        "-device", "virtio-blk-pci,drive=root,addr=0x2",
        # user networking, SSH on 127.0.0.1 only; romfile= skips the iPXE ROM (faster boot)
        "-netdev", f"user,id=n0,hostfwd=tcp:127.0.0.1:{ssh_port}-:22",
        "-device", "virtio-net-pci,netdev=n0,romfile=,addr=0x3",
    ]
    if machine.iommu:
        # before the devices it translates: QEMU gives a device its address space when the device is created
        argv[argv.index("-drive"):argv.index("-drive")] = ["-device", IOMMU_DEVICE[machine.iommu]]
    argv += nvme_topology_args(nvme)
    return QemuCommand(tuple(argv), acc, reason, ssh_port, qmp_socket)


def nvme_topology_args(nvme: list[NvmeDrive]) -> list[str]:
    """NVMe controllers where the topology puts them. Slots: root-complex endpoints from 00:04.0, root ports
    from 00:10.0, the switch's root port at 00:18.0 (upstream x3130, one xio3130 downstream port per drive); a
    controller attached as `function` is the next function of the device before it. Controllers that name one
    subsystem share an nvme-subsys, and the namespace its first controller defines (nvme-ns, shared)."""
    argv: list[str] = []
    switch_ports = 0
    for name in dict.fromkeys(d.nvme.subsystem for d in nvme if d.nvme.subsystem):
        argv += ["-device", f"nvme-subsys,id=subsys-{name},nqn={name}"]
    for i, drive in enumerate(nvme):
        n = drive.nvme
        if owns_namespace(nvme, i):
            if n.latency_ns:
                argv += ["-blockdev", f"driver=null-co,node-name=nvm{i},size={n.namespace_mb * 1024 * 1024},"
                                      f"latency-ns={n.latency_ns},read-zeroes=on"]
            else:
                # -blockdev, not -drive: a hot-unplugged controller must leave its backend for device_add
                argv += ["-blockdev", f"driver=file,node-name=nvm{i}-file,filename={drive.backing},cache.no-flush=on",
                         "-blockdev", f"driver=raw,node-name=nvm{i},file=nvm{i}-file"]
        # the port the controller plugs into (a root-complex endpoint and a further function need none)
        if n.attach == "root-port":
            argv += ["-device", f"pcie-root-port,id=rp{i},bus=pcie.0,addr={0x10 + i:#x},chassis={1 + i},slot={1 + i}"]
        elif n.attach == "switch":
            if switch_ports == 0:
                argv += ["-device", "pcie-root-port,id=swrp,bus=pcie.0,addr=0x18,chassis=30,slot=30",
                         "-device", "x3130-upstream,id=swup,bus=swrp"]
            argv += ["-device", f"xio3130-downstream,id=swdn{switch_ports},bus=swup,chassis={40 + switch_ports},"
                                f"slot={switch_ports}"]
            switch_ports += 1
        argv += ["-device", ",".join(f"{k}={v}" for k, v in nvme_device(nvme, i).items())]
        if explicit_namespace(n) and owns_namespace(nvme, i):
            ns = {"driver": "nvme-ns", "drive": f"nvm{i}", "bus": f"nvme{i}", "nsid": "1"}
            if n.metadata_bytes:
                ns["ms"] = str(n.metadata_bytes)  # mset=0: metadata in a buffer of its own (MPTR), not in the LBA
            if n.protection:
                ns["pi"] = str(n.protection)
            argv += ["-device", ",".join(f"{k}={v}" for k, v in ns.items())]
    return argv


def explicit_namespace(n: NvmeConfig) -> bool:
    """The namespace needs an nvme-ns device of its own (metadata, protection, a subsystem) instead of the
    controller's drive= shorthand."""
    return bool(n.metadata_bytes or n.protection or n.subsystem)


def owns_namespace(nvme: list[NvmeDrive], i: int) -> bool:
    """Controller i defines a namespace: every controller, but the second and later of one subsystem."""
    sub = nvme[i].nvme.subsystem
    return not sub or all(d.nvme.subsystem != sub for d in nvme[:i])


def nvme_device(nvme: list[NvmeDrive], i: int) -> dict:
    """The properties of NVMe controller i, as -device takes them and as QMP device_add re-creates it."""
    drive = nvme[i]
    n = drive.nvme
    # the serial names the controller's place (probes find controller i by it), but one subsystem has one
    # serial (QEMU refuses another): that of its first controller
    first = i if not n.subsystem else next(j for j, d in enumerate(nvme) if d.nvme.subsystem == n.subsystem)
    props = {"driver": "nvme", "id": f"nvme{i}", "serial": f"p2pdmarig{first:04d}"}
    if not explicit_namespace(n):
        props["drive"] = f"nvm{i}"
    if n.subsystem:
        props["subsys"] = f"subsys-{n.subsystem}"
    if n.cmb_size_mb:
        props["cmb_size_mb"] = str(n.cmb_size_mb)
    props.update(kv.split("=", 1) for kv in hotplug_slot(nvme, i).split(","))
    return props


def hotplug_slot(nvme: list[NvmeDrive], i: int) -> str:
    """The bus= (and addr=) of controller i: on the command line, and for device_add after device_del. A
    `function` controller takes the slot of the device before it, one function up; that device then says
    multifunction=on."""
    base = i
    while nvme[base].nvme.attach == "function":
        base -= 1
    function = i - base
    attach = nvme[base].nvme.attach
    if attach == "root-port":
        bus, slot = f"bus=rp{base}", 0
    elif attach == "switch":
        bus, slot = f"bus=swdn{sum(1 for d in nvme[:base] if d.nvme.attach == 'switch')}", 0
    else:
        bus, slot = "bus=pcie.0", 0x4 + base
    has_functions = base + 1 < len(nvme) and nvme[base + 1].nvme.attach == "function"
    if function:
        return f"{bus},addr={slot:#x}.{function}"
    if has_functions:
        return f"{bus},addr={slot:#x}.0,multifunction=on"
    return f"{bus},addr={slot:#x}" if attach not in ("root-port", "switch") else bus
