"""The p2pmem sysfs group: size, available, published, allocate (docs/behaviour.md section 1.1)."""
import os
import stat
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
from rigprobe import case, errname, main, provider  # noqa: E402


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


if __name__ == "__main__":
    sys.exit(main("sysfs"))
