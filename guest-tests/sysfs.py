"""The p2pmem sysfs group: size, available, published, allocate (docs/behaviour.md section 1.1)."""
import glob
import os
import stat
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
from rigprobe import Skip, case, errname, main, provider  # noqa: E402


def attr(name):
    with open(os.path.join(provider(), "p2pmem", name)) as f:
        return int(f.read().strip(), 0)


@case("size, available, published and allocate exist in p2pmem/")
def files_exist():
    d = os.path.join(provider(), "p2pmem")
    return {name: os.path.exists(os.path.join(d, name)) for name in ("size", "available", "published", "allocate")}


@case("the NVMe driver publishes its CMB (published = 1)")
def published():
    return {"published": attr("published")}


@case("size is the CMB size (cmbsz of the NVMe controller); available is below it by the driver's queues")
def size_available():
    size, available = attr("size"), attr("available")
    d = os.path.join(provider(), "nvme")
    cmb_bytes = None
    for ctrl in sorted(os.listdir(d)) if os.path.isdir(d) else []:
        try:
            with open(os.path.join(d, ctrl, "cmbsz")) as f:
                cmbsz = int(f.read().strip(), 0)
            # CMBSZ: SZU in bits 11:8 (4 KiB * 16^SZU), SZ in bits 31:12
            cmb_bytes = (4096 << (4 * ((cmbsz >> 8) & 0xF))) * (cmbsz >> 12)
        except OSError:
            pass
    return {
        "size_matches_cmbsz": size == cmb_bytes,
        "size_is_power_of_two": size > 0 and size & (size - 1) == 0,
        "available_le_size": 0 < available <= size,
        "driver_share_under_1_percent": (size - available) * 100 < size,
        "size": size,
        "available": available,
    }


@case("allocate is mode 0660 and stat() reports 1 TiB")
def allocate_stat():
    st = os.stat(os.path.join(provider(), "p2pmem", "allocate"))
    return {"mode": oct(stat.S_IMODE(st.st_mode)), "st_size": st.st_size}


@case("read() of allocate fails with EIO (it is only for mmap)")
def allocate_read():
    fd = os.open(os.path.join(provider(), "p2pmem", "allocate"), os.O_RDONLY)
    try:
        os.read(fd, 16)
        return {"read": "OK"}
    except OSError as e:
        return {"read": errname(e.errno)}
    finally:
        os.close(fd)


@case("write() of allocate fails with EIO")
def allocate_write():
    fd = os.open(os.path.join(provider(), "p2pmem", "allocate"), os.O_WRONLY)
    try:
        os.write(fd, b"x")
        return {"write": "OK"}
    except OSError as e:
        return {"write": errname(e.errno)}
    finally:
        os.close(fd)


def _controller(index):
    """sysfs directory of NVMe controller `index` of the topology (serial p2pdmarig<index>, rig/qemu.py)."""
    for ctrl in sorted(glob.glob("/sys/class/nvme/nvme*")):
        with open(os.path.join(ctrl, "serial")) as f:
            if f.read().strip() == f"p2pdmarig{index:04d}":
                return ctrl
    raise Skip(f"no NVMe controller {index} (this case needs its topology)")


def cmb_register(pci):
    """CMBSZ as the controller presents it (NVMe register 0x3c in BAR 0, read through sysfs resource0): the CMB
    the device offers, whether or not Linux took it."""
    import mmap
    import struct

    with open(os.path.join(pci, "resource0"), "rb") as f:
        regs = mmap.mmap(f.fileno(), 4096, mmap.MAP_SHARED, mmap.PROT_READ)
        try:
            return struct.unpack_from("<I", regs, 0x3C)[0]
        finally:
            regs.close()


def kernel_lines_about(bdf):
    """Everything the kernel logged about one PCI function (its kmsg lines name the BDF)."""
    fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
    said = []
    try:
        while True:
            try:
                rec = os.read(fd, 8192).decode("utf-8", "replace")
            except BlockingIOError:
                break
            text = rec.partition(";")[2].split("\n", 1)[0]
            if bdf in text:
                said.append(text)
    finally:
        os.close(fd)
    return said


def cmb_seen_by_linux(index):
    """What the controller offers (CMBSZ) and what Linux made of it: P2P memory, and what it said."""
    ctrl = _controller(index)
    pci = os.path.realpath(os.path.join(ctrl, "device"))
    cmbsz = cmb_register(pci)
    said = kernel_lines_about(os.path.basename(pci))
    return {
        "cmb_bytes": (4096 << (4 * ((cmbsz >> 8) & 0xF))) * (cmbsz >> 12),
        "p2pmem_dir": os.path.exists(os.path.join(pci, "p2pmem")),
        # what registering P2P memory logs: "added peer-to-peer DMA memory", "failed to register the CMB"
        "p2p_messages": [m for m in said if "peer-to-peer DMA memory" in m or "CMB" in m],
    }


@case("a 1 MiB CMB (QEMU offers it): Linux registers no P2P memory for it, silently (2 MiB rule)")
def small_cmb_ignored():
    return cmb_seen_by_linux(3)


@case("a controller without a CMB (CMBSZ 0): no P2P memory, nothing said")
def no_cmb_no_p2pmem():
    return cmb_seen_by_linux(1)


if __name__ == "__main__":
    sys.exit(main("sysfs"))
