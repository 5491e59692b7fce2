"""Accelerator choice and the QEMU command line (pure)."""
from pathlib import Path

from rig.config import MachineConfig, NvmeConfig
from rig.qemu import NvmeDrive, build_command, choose_accel, kernel_cmdline, kvm_usable


def cpuinfo(tmp_path, flags):
    p = tmp_path / "cpuinfo"
    p.write_text(f"processor\t: 0\nflags\t\t: fpu vme {flags}\n\nprocessor\t: 1\nflags\t\t: fpu vme {flags}\n")
    return str(p)


def test_kvm_needs_device_and_vmx_or_svm(tmp_path):
    dev = tmp_path / "kvm"
    dev.write_text("")  # opens read-write like a usable /dev/kvm
    assert kvm_usable(str(dev), cpuinfo(tmp_path, "sse vmx"))[0]
    assert kvm_usable(str(dev), cpuinfo(tmp_path, "sse svm"))[0]
    ok, why = kvm_usable(str(dev), cpuinfo(tmp_path, "sse hypervisor"))
    assert not ok and "neither vmx nor svm" in why
    ok, why = kvm_usable(str(tmp_path / "missing"), cpuinfo(tmp_path, "vmx"))
    assert not ok and "does not open" in why


def test_this_machine_real_cpuinfo_is_read():
    ok, why = kvm_usable()
    assert why  # a reason is always given


def test_choose_accel():
    assert choose_accel("auto", (True, "x"))[0] == "kvm"
    assert choose_accel("auto", (False, "x"))[0] == "tcg"
    assert choose_accel("tcg", (True, "x"))[0] == "tcg"
    assert choose_accel("kvm", (False, "no vmx"))[0] == "kvm"


def _cmd(accel="tcg", machine=None):
    machine = machine or MachineConfig(nvme=(NvmeConfig(cmb_size_mb=64), NvmeConfig(cmb_size_mb=8)))
    return build_command(
        machine, accel=(accel, "why"), bzimage=Path("/k/bzImage"), root_overlay=Path("/r/root.qcow2"),
        nvme=[NvmeDrive(Path(f"/r/nvme{i}.img"), n) for i, n in enumerate(machine.nvme)], ssh_port=40022,
        qmp_socket=Path("/tmp/s/qmp.sock"), cmdline=kernel_cmdline("AAAAkey"),
    )


def test_command_line_has_the_parts():
    argv = list(_cmd().argv)
    joined = " ".join(argv)
    assert argv[argv.index("-machine") + 1] == "q35"
    assert argv[argv.index("-accel") + 1] == "tcg" and argv[argv.index("-cpu") + 1] == "max"
    assert "-no-reboot" in argv and "-nodefaults" in argv
    assert "hostfwd=tcp:127.0.0.1:40022-:22" in joined
    assert "virtio-blk-pci,drive=root" in joined
    assert "unix:/tmp/s/qmp.sock,server=on,wait=off" in joined
    nvme = [a for a in argv if a.startswith("driver=nvme,")]
    assert len(nvme) == 2 and "cmb_size_mb=64" in nvme[0] and "cmb_size_mb=8" in nvme[1]
    assert "format=qcow2" in joined  # every boot writes to an overlay, never the cached image


def test_kvm_uses_host_cpu_unless_told():
    assert "host" in _cmd("kvm").argv
    m = MachineConfig(cpu="EPYC")
    assert "EPYC" in _cmd("kvm", m).argv


def test_kernel_cmdline():
    line = kernel_cmdline("AAAAkey", "hung_task_timeout_secs=20")
    assert "console=ttyS0" in line and "panic=-1" in line and "rig.sshkey=AAAAkey" in line
    assert line.endswith("hung_task_timeout_secs=20")


def test_switch_and_root_port_topology():
    from rig.qemu import nvme_topology_args

    argv = nvme_topology_args([
        NvmeDrive(Path("/r/n0.img"), NvmeConfig(64, attach="switch")),
        NvmeDrive(Path("/r/n1.img"), NvmeConfig(0, attach="switch", latency_ns=2_000_000_000)),
        NvmeDrive(Path("/r/n2.img"), NvmeConfig(8, attach="root-port")),
    ])
    joined = " ".join(argv)
    assert joined.count("x3130-upstream") == 1 and joined.count("xio3130-downstream") == 2
    assert "driver=nvme,id=nvme0,serial=p2pdmarig0000,drive=nvm0,cmb_size_mb=64,bus=swdn0" in argv
    assert "driver=nvme,id=nvme1,serial=p2pdmarig0001,drive=nvm1,bus=swdn1" in argv  # no CMB on the peer
    assert "driver=raw,node-name=nvm0,file=nvm0-file" in argv  # -blockdev: survives device_del
    assert "driver=null-co,node-name=nvm1,size=268435456,latency-ns=2000000000,read-zeroes=on" in argv
    assert "pcie-root-port,id=rp2,bus=pcie.0,addr=0x12,chassis=3,slot=3" in argv
    assert "driver=nvme,id=nvme2,serial=p2pdmarig0002,drive=nvm2,cmb_size_mb=8,bus=rp2" in argv


def test_iommu_device_comes_before_the_devices_it_translates():
    argv = list(_cmd(machine=MachineConfig(iommu="intel")).argv)
    at = argv.index("intel-iommu,intremap=off")
    assert argv[at - 1] == "-device" and at < argv.index("virtio-blk-pci,drive=root,addr=0x2")
    assert "intel-iommu,intremap=off" not in _cmd().argv


def test_machine_cmdline_turns_the_iommu_on():
    from rig.qemu import machine_cmdline

    assert machine_cmdline(MachineConfig(iommu="intel", kernel_cmdline="iommu=pt")) == "intel_iommu=on iommu=pt"
    assert machine_cmdline(MachineConfig(kernel_cmdline="swiotlb=force")) == "swiotlb=force"
    assert machine_cmdline(MachineConfig()) == ""


def test_two_functions_of_one_device_behind_one_root_port():
    from rig.qemu import nvme_topology_args

    argv = nvme_topology_args([NvmeDrive(Path("/r/n0.img"), NvmeConfig(64, attach="root-port")),
                               NvmeDrive(Path("/r/n1.img"), NvmeConfig(0, attach="function"))])
    assert sum(a.startswith("pcie-root-port") for a in argv) == 1  # one port for both functions
    assert "driver=nvme,id=nvme0,serial=p2pdmarig0000,drive=nvm0,cmb_size_mb=64,bus=rp0,addr=0x0.0,multifunction=on" in argv
    assert "driver=nvme,id=nvme1,serial=p2pdmarig0001,drive=nvm1,bus=rp0,addr=0x0.1" in argv


def test_metadata_namespace_is_a_device_of_its_own():
    from rig.qemu import nvme_topology_args

    argv = nvme_topology_args([NvmeDrive(Path("/r/n0.img"), NvmeConfig(64, metadata_bytes=16, protection=1))])
    assert "driver=nvme,id=nvme0,serial=p2pdmarig0000,cmb_size_mb=64,bus=pcie.0,addr=0x4" in argv  # no drive=
    assert "driver=nvme-ns,drive=nvm0,bus=nvme0,nsid=1,ms=16,pi=1" in argv


def test_a_subsystem_shares_its_first_controllers_namespace():
    from rig.qemu import nvme_topology_args, owns_namespace

    drives = [NvmeDrive(Path("/r/n0.img"), NvmeConfig(64, attach="switch", subsystem="mp")),
              NvmeDrive(Path("/r/n1.img"), NvmeConfig(0, attach="switch", subsystem="mp"))]
    argv = nvme_topology_args(drives)
    assert argv[:2] == ["-device", "nvme-subsys,id=subsys-mp,nqn=mp"]
    assert "driver=nvme,id=nvme0,serial=p2pdmarig0000,subsys=subsys-mp,cmb_size_mb=64,bus=swdn0" in argv
    assert "driver=nvme,id=nvme1,serial=p2pdmarig0000,subsys=subsys-mp,bus=swdn1" in argv  # the subsystem's serial
    assert [a for a in argv if a.startswith("driver=nvme-ns")] == ["driver=nvme-ns,drive=nvm0,bus=nvme0,nsid=1"]
    assert sum(a.startswith("driver=raw") for a in argv) == 1
    assert owns_namespace(drives, 0) and not owns_namespace(drives, 1)


def test_no_two_devices_share_a_slot_of_the_root_complex_with_either_iommu():
    """virtio-iommu-pci sits at 00:1e.0: root-complex controllers count up from 00:04.0, root ports from 00:10.0,
    the switch's port is 00:18.0 (it once sat on the second root controller's slot, 00:05.0)."""
    nvme = (NvmeConfig(),) * 4 + (NvmeConfig(attach="root-port"), NvmeConfig(attach="switch"))
    for iommu in ("intel", "virtio"):
        argv = _cmd(machine=MachineConfig(nvme=nvme, iommu=iommu)).argv
        devices = [dict(kv.split("=", 1) for kv in argv[i + 1].split(",")[1:] if "=" in kv)
                   for i, a in enumerate(argv) if a == "-device"]
        on_root = [d["addr"] for d in devices if d.get("bus", "pcie.0") == "pcie.0" and "addr" in d]
        assert len(on_root) == len(set(on_root)) >= 7, (iommu, on_root)
