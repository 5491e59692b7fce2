"""Re-record the console captures the splat tests use, from the real kernel in real QEMU.

    .venv/bin/python tests/data/consoles/capture.py {warn,hung,panic}

Each capture boots the default kernel, makes the guest do one real thing that produces a kernel report, and
copies the whole serial console here. Markers written to /dev/kmsg around the commands are the same as
run_case.py writes, so the tests can check that a splat is attributed to the case it happened in.
"""
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent.parent))

from rig.config import load_config  # noqa: E402
from rig.errors import GuestError  # noqa: E402
from rig.image import build_image, ensure_ssh_key, image_spec  # noqa: E402
from rig.kernel import build_kernel, kernel_spec  # noqa: E402
from rig.vm import start_vm  # noqa: E402


def marked(case_id, cmd):
    return (f"echo 'p2pdma-rig: begin {case_id}' > /dev/kmsg; {cmd}; "
            f"echo 'p2pdma-rig: end {case_id}' > /dev/kmsg")


# PIN_LONGTERM_BENCHMARK (0xc0506703) with FOLL_PCI_P2PDMA (0x400): WARN_ON_ONCE in is_valid_gup_args()
WARN = marked("sysfs.published", "cat /sys/bus/pci/devices/*/p2pmem/published") + "; " + marked(
    "gup.longterm_benchmark_p2p", r'''python3 -c "
import ctypes, fcntl, glob, mmap, os, struct
d = glob.glob('/sys/bus/pci/devices/*/p2pmem')[0]
fd = os.open(d + '/allocate', os.O_RDWR)
m = mmap.mmap(fd, 16 * 4096, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
addr = ctypes.addressof(ctypes.c_char.from_buffer(m))
g = os.open('/sys/kernel/debug/gup_test', os.O_RDWR)
buf = bytearray(struct.pack('QQQQIII32sI', 0, 0, addr, 16 * 4096, 1, 0x400, 0, bytes(32), 0))
fcntl.ioctl(g, 0xc0506703, buf)
print('bytes pinned', struct.unpack('QQQQ', bytes(buf[:32]))[3])
"''')

# a writer blocked on a frozen ext4 stays in D state past a 5 s hung-task timeout
HUNG = marked("fs.frozen_writer", "echo 5 > /proc/sys/kernel/hung_task_timeout_secs; "
              "mkfs.ext4 -q -F /dev/nvme0n1 && mkdir -p /mnt/t && mount /dev/nvme0n1 /mnt/t && "
              "fsfreeze -f /mnt/t && (sh -c 'echo x > /mnt/t/f' &) ; sleep 14; fsfreeze -u /mnt/t; sleep 1")

PANIC = marked("sysrq.crash", "echo c > /proc/sysrq-trigger")

CAPTURES = {
    "warn": (WARN, "warn-gup-longterm-p2pdma.log"),
    "hung": (HUNG, "hung-task-fsfreeze.log"),
    "panic": (PANIC, "panic-sysrq.log"),
}


def main(what):
    cmd, name = CAPTURES[what]
    cfg = load_config()
    kernel = build_kernel(kernel_spec(cfg))
    image = build_image(image_spec(cfg))
    key = ensure_ssh_key(cfg.cache_path)
    work = Path(tempfile.mkdtemp(prefix="p2pdma-rig-capture-"))
    vm = start_vm(cfg.machine, kernel, image, key, work)
    try:
        try:
            r = vm.run(cmd, timeout=90)
            print(r.stdout, r.stderr[-2000:])
        except GuestError as e:  # the panic capture loses the guest, as it should
            print("guest gone:", e)
        time.sleep(3)
    finally:
        vm.stop()
    shutil.copy(work / "console.log", HERE / name)
    shutil.rmtree(work, ignore_errors=True)
    print("wrote", HERE / name)


if __name__ == "__main__":
    main(sys.argv[1])
