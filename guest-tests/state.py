"""What the kernel records about P2P memory, read back (docs/behaviour.md section 1.5): the memory type x86 keeps
for the CMB's kernel mapping (PAT), the cache attributes of the page table entries of the kernel's and a
process's mapping of the same memory (debugfs page_tables), and where a process's p2pmem pages are
(/proc/self/pagemap). Unlike an errno, these are the kernel's own records of what it did."""
import contextlib
import ctypes
import mmap
import os
import re
import struct
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
from rigprobe import ProbeError, case, main, memory_file, provider  # noqa: E402

PAGE = 4096
# the cache type of a 4 KiB PTE from its PWT/PCD/PAT bits under Linux's PAT layout (arch/x86/mm/pat/memtype.c:
# WB, WC, UC-, UC, WB, WP, UC-, WT)
PAT_TYPES = ("WB", "WC", "UC-", "UC", "WB", "WP", "UC-", "WT")


def bar(index=2):
    """(start, end) physical addresses of one BAR of the provider (the NVMe CMB is BAR 2)."""
    with open(os.path.join(provider(), "resource")) as f:
        start, end, _flags = (int(x, 16) for x in f.read().splitlines()[index].split())
    return start, end


def memtypes():
    """x86's memtype records: [(start, end, type)] from /sys/kernel/debug/x86/pat_memtype_list."""
    try:
        with open("/sys/kernel/debug/x86/pat_memtype_list") as f:
            text = f.read()
    except OSError as e:
        raise ProbeError(f"no pat_memtype_list ({e.strerror}): this kernel has no X86_PAT or no debugfs")
    return [(int(a, 16), int(b, 16), t) for a, b, t in
            re.findall(r"PAT: \[mem 0x([0-9a-f]+)-0x([0-9a-f]+)\] ([\w-]+)", text)]


WATCHDOG_THRESH = "/proc/sys/kernel/watchdog_thresh"


@contextlib.contextmanager
def watchdog_relaxed():
    """The soft-lockup watchdog at its largest threshold (60 s: a report after 120 s) while the probe walks the
    kernel's whole page table: ptdump holds the CPU for the whole walk, which under TCG with KASAN's shadow
    mappings (profile debug) takes 15 s and more, where the default threshold reports a lockup after 20 s."""
    try:
        with open(WATCHDOG_THRESH) as f:
            old = f.read().strip()
    except OSError:  # no lockup detector in this kernel
        yield
        return
    with open(WATCHDOG_THRESH, "w") as f:
        f.write("60")
    try:
        yield
    finally:
        with open(WATCHDOG_THRESH, "w") as f:
            f.write(old)


def page_tables():
    """This process's whole page table (user and kernel half) as debugfs page_tables prints it:
    [(start, end, attributes)], and the start of the kernel's direct map of physical memory (where the "Low
    Kernel Mapping" begins: 4- or 5-level paging, with or without KASLR)."""
    entries, direct_map, marker = [], None, False
    try:
        with watchdog_relaxed(), open("/sys/kernel/debug/page_tables/current_kernel") as f:
            for line in f:
                if "Low Kernel Mapping" in line:
                    marker = True
                    continue
                m = re.match(r"0x([0-9a-f]+)-0x([0-9a-f]+)\s+\S+\s+(.*)$", line)
                if m:
                    entries.append((int(m.group(1), 16), int(m.group(2), 16), m.group(3).split()))
                    if marker and direct_map is None:
                        direct_map = entries[-1][0]
    except OSError as e:
        raise ProbeError(f"no debugfs page_tables ({e.strerror}): this kernel has no PTDUMP_DEBUGFS")
    if direct_map is None:
        raise ProbeError("debugfs page_tables shows no Low Kernel Mapping")
    return entries, direct_map


def attributes_at(entries, address):
    """The printed attributes of the entry that maps `address`, e.g. ['RW', 'USR', 'PCD', 'NX', 'pte']."""
    return next((attrs for start, end, attrs in entries if start <= address < end), None)


def cache_type(attributes):
    """The PAT memory type of an entry from its printed bits: PWT, PCD, and on a 4 KiB pte the PAT bit (bit 7,
    which on a pmd or pud is PSE, the large-page bit)."""
    if not attributes or not ({"RW", "ro"} & set(attributes)):  # a range nothing maps shows only its level
        return "unmapped"
    index = ("PWT" in attributes) + 2 * ("PCD" in attributes) + 4 * ("PAT" in attributes and attributes[-1] == "pte")
    return PAT_TYPES[index]


_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]


class P2pMapping:
    """`pages` of p2pmem mapped by libc's mmap (its address is what pagemap and page_tables are asked about),
    each page touched so that it is present in the page table."""

    def __init__(self, pages):
        self.length = pages * PAGE
        fd = os.open(memory_file(), os.O_RDWR)
        try:
            self.address = _libc.mmap(None, self.length, mmap.PROT_READ | mmap.PROT_WRITE, mmap.MAP_SHARED, fd, 0)
        finally:
            os.close(fd)
        if self.address in (None, ctypes.c_void_p(-1).value):
            raise ProbeError(f"mmap of p2pmem: {os.strerror(ctypes.get_errno())}")
        view = (ctypes.c_char * self.length).from_address(self.address)
        for i in range(pages):
            view[i * PAGE] = b"Z"

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        _libc.munmap(self.address, self.length)


@case("x86 records the CMB's kernel mapping (memremap_pages, pgprot_noncached) as uncached-minus across the BAR, "
      "where the MTRRs say write-back")
def cmb_memtype():
    start, end = bar()
    covering = [t for a, b, t in memtypes() if a <= start and end < b]
    return {"bar_above_4g": start >= 1 << 32, "mtrr_over_bar": mtrr_type(start, end),
            "kernel_memtype": covering[0] if covering else "none", "records_covering_bar": len(covering)}


def mtrr_type(start, end):
    """What the MTRRs say about [start, end]: "off" (no /proc/mtrr: the firmware left them disabled, and x86
    then treats all memory as uncached), the type of the variable range that overlaps it ("uncachable",
    "write-back"...), or "default" (no range overlaps: the default type, write-back under SeaBIOS)."""
    try:
        with open("/proc/mtrr") as f:
            text = f.read()
    except FileNotFoundError:
        return "off"
    for base, size_mb, kind in re.findall(r"base=0x([0-9a-f]+) \(\s*\d+MB\), size=\s*(\d+)MB, count=\d+: ([\w-]+)", text):
        first = int(base, 16)
        if first <= end and start < first + int(size_mb) * 2**20:
            return kind
    return "default"


@case("the page table entries of the kernel's and of a process's mapping of the same p2pmem page have the same "
      "cache type (x86 forbids aliases of one physical page with conflicting memory types)")
def mapping_cache_types():
    with P2pMapping(1) as m:
        pfn = pagemap(m.address)[0]
        entries, direct_map = page_tables()
    kernel = attributes_at(entries, direct_map + pfn * PAGE)
    user_attrs = attributes_at(entries, m.address)
    return {"kernel_pte": cache_type(kernel), "user_pte": cache_type(user_attrs),
            "same_type": cache_type(kernel) == cache_type(user_attrs)}


def pagemap(address, pages=1):
    """PFNs of a process's pages from /proc/self/pagemap (root sees them), -1 for a page not present."""
    with open("/proc/self/pagemap", "rb") as f:
        f.seek(address // PAGE * 8)
        data = f.read(8 * pages)
    out = []
    for (entry,) in struct.iter_unpack("<Q", data):
        out.append(entry & ((1 << 55) - 1) if entry >> 63 else -1)
    return out


@case("/proc/self/pagemap: every page of a p2pmem mapping is present and its PFN lies in the provider's BAR, "
      "distinct pages for distinct offsets")
def pagemap_in_bar():
    pages = 4
    with P2pMapping(pages) as m:
        pfns = pagemap(m.address, pages)
    start, end = bar()
    return {"present": sum(p >= 0 for p in pfns), "in_bar": sum(start <= p * PAGE <= end for p in pfns if p >= 0),
            "distinct": len(set(pfns))}


if __name__ == "__main__":
    sys.exit(main("state"))
