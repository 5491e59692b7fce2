"""Rig self-tests: cases that break the guest on purpose, to prove the rig notices (manual: run only when
selected with -k). They report what a correct kernel would let them observe; the rig's own tests check that
the crash, the hang or the WARN is detected, titled and survived."""
import ctypes
import fcntl
import mmap
import os
import struct
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
from rigprobe import case, main, memory_file, provider  # noqa: E402


@case("panic the kernel (sysrq c): the rig must report a crash and go on in a fresh VM")
def kernel_panic():
    with open("/proc/sysrq-trigger", "w") as f:
        f.write("c")
    return {"survived": True}


@case("sleep past the watchdog: the rig must kill the case and report it")
def hang():
    time.sleep(3600)
    return {"survived": True}


@case("gup_test PIN_LONGTERM_BENCHMARK with FOLL_PCI_P2PDMA: WARN_ON_ONCE in is_valid_gup_args (section 3)")
def warn_gup_longterm():
    fd = os.open(memory_file(), os.O_RDWR)
    m = mmap.mmap(fd, 16 * 4096, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
    addr = ctypes.addressof(ctypes.c_char.from_buffer(m))
    g = os.open("/sys/kernel/debug/gup_test", os.O_RDWR)
    buf = bytearray(struct.pack("QQQQIII32sI", 0, 0, addr, 16 * 4096, 1, 0x400, 0, bytes(32), 0))
    fcntl.ioctl(g, 0xC0506703, buf)  # PIN_LONGTERM_BENCHMARK
    return {"bytes_pinned": struct.unpack("QQQQ", bytes(buf[:32]))[3]}


@case("keep a p2pmem mapping alive in a detached child after the probe returns: the rig must see the pool "
      "short of its baseline, fail this case and give the next one a fresh VM")
def leak_mapping():
    fd = os.open(memory_file(), os.O_RDWR)
    m = mmap.mmap(fd, 4 * 4096, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
    m[0:1] = b"x"  # the fault takes the pages out of the pool
    if os.fork() == 0:
        os.setsid()  # outside the probe's process group: the watchdog does not reach it
        null = os.open(os.devnull, os.O_RDWR)
        for fd_ in (0, 1, 2):  # nor does run_case.py wait for its output
            os.dup2(null, fd_)
        time.sleep(3600)
        os._exit(0)
    return {"mapped": True}


if __name__ == "__main__":
    sys.exit(main("selftest"))
