"""Shared boilerplate of the Python probes: same protocol as lib/probe.h.

`python3 AREA.py --list` prints one JSON object per case; `python3 AREA.py NAME` runs one case and prints
{"id", "obs": {...}} (or "skip"/"error"). Probes report facts; guest-tests/expectations.yaml says what is right.
Standard library only: the guest image has python3 and nothing else.
"""
import errno
import glob
import json
import os
import sys

_cases = []


def case(description):
    def register(fn):
        _cases.append((fn.__name__, description, fn))
        return fn

    return register


class Skip(Exception):
    pass


class ProbeError(Exception):
    pass


def errname(e):
    return "OK" if e == 0 else errno.errorcode.get(e, "E?")


def provider():
    """sysfs directory of the P2P provider: P2PDMA_PROVIDER=<bdf> or the first device with p2pmem/."""
    bdf = os.environ.get("P2PDMA_PROVIDER")
    if bdf:
        return "/sys/bus/pci/devices/" + bdf
    found = sorted(glob.glob("/sys/bus/pci/devices/*/p2pmem"))
    if not found:
        raise ProbeError("no PCI device has a p2pmem/ directory (no P2P memory registered)")
    return os.path.dirname(found[0])


def memory_file():
    """The file P2P memory is mapped from (probe.h's p2p_memory_path): p2pmem/allocate, or /dev/nvmeN of the
    provider's controller when P2PDMA_MEMORY=nvme-chardev (the seed's v3 series)."""
    d = provider()
    if os.environ.get("P2PDMA_MEMORY") != "nvme-chardev":
        return os.path.join(d, "p2pmem", "allocate")
    found = sorted(glob.glob(os.path.join(d, "nvme", "nvme*")))
    if not found:
        raise ProbeError(f"{d} has no NVMe controller (nvme/nvme*): no /dev/nvmeN to map")
    return "/dev/" + os.path.basename(found[0])


def main(area):
    args = sys.argv[1:]
    if args == ["--list"]:
        for name, desc, _fn in _cases:
            print(json.dumps({"id": f"{area}.{name}", "description": desc}))
        return 0
    if len(args) != 1:
        print(f"usage: {sys.argv[0]} --list | CASE", file=sys.stderr)
        return 2
    for name, _desc, fn in _cases:
        if name != args[0]:
            continue
        cid = f"{area}.{name}"
        try:
            print(json.dumps({"id": cid, "obs": fn()}))
        except Skip as e:
            print(json.dumps({"id": cid, "skip": str(e)}))
        except ProbeError as e:
            print(json.dumps({"id": cid, "error": str(e)}))
        return 0
    print(f"{sys.argv[0]}: no case {args[0]}", file=sys.stderr)
    return 2
