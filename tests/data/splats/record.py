"""Record one real console per splat pattern of rig/console.py, from the rig's own `capture` kernel in QEMU.

    .venv/bin/python tests/data/splats/record.py            # every capture (make captures)
    .venv/bin/python tests/data/splats/record.py bug panic  # some of them
    .venv/bin/python tests/data/splats/record.py --list

The kernel is Debian's linux-source-6.12 built with profile `capture` (tiny-base + p2pdma + debug + capture:
KASAN, lockdep, PROVE_RCU, UBSAN, KFENCE, LKDTM) plus 0001-lkdtm-capture-triggers.patch (LKDTM-style
triggers for the reports LKDTM has none for). Every capture is a fresh boot: the guest sets the detector's
sysctls, writes a begin marker to /dev/kmsg (as run_case.py does), provokes the report through
/sys/kernel/debug/provoke-crash/DIRECT, waits for the report, writes the end marker. The whole serial console
is stored as <name>.log, untouched, and the outcome a person checked against it as <name>.expected (YAML,
syzkaller pkg/report testdata style): kind, title, fatal, frame, and the marker case id.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent.parent
sys.path.insert(0, str(REPO))

PATCH = HERE / "0001-lkdtm-capture-triggers.patch"
PROFILE = "capture"
DIRECT = "/sys/kernel/debug/provoke-crash/DIRECT"
BOOTS = 3  # boots tried per capture until one comes up without a splat of its own


@dataclass(frozen=True)
class Capture:
    name: str  # tests/data/splats/<name>.log and .expected
    trigger: str  # LKDTM crash type written to provoke-crash/DIRECT
    # what the console watcher must say about the first report (checked by a person against the capture)
    kind: str
    title: str
    frame: str  # the function the title names ("" when the report format has no function)
    fatal: bool = False
    # shell run in the guest before the begin marker (detector knobs)
    setup: str = ""
    # the trigger never returns (the task hangs or spins with preemption off): start it detached and wait for
    # `wait_for` on the console instead
    detached: bool = False
    wait_for: str = ""
    why: str = ""  # for the README

    @property
    def case_id(self) -> str:
        return f"lkdtm.{self.trigger}"


CAPTURES: tuple[Capture, ...] = (
    Capture("bug", "BUG", "bug", "kernel BUG in lkdtm_BUG", "lkdtm_BUG",
            why="BUG() -> kernel BUG at ...! and an invalid-opcode Oops"),
    Capture("warning", "WARNING", "warning", "WARNING in lkdtm_WARNING", "lkdtm_WARNING",
            why="WARN_ON(1)"),
    Capture("gpf", "ACCESS_NULL", "oops", "general protection fault in lkdtm_ACCESS_NULL", "lkdtm_ACCESS_NULL",
            why="a NULL read in KASAN-instrumented code: the shadow check of address 0 is a non-canonical access"),
    Capture("null-ptr-deref", "EXEC_NULL", "oops", "BUG: kernel NULL pointer dereference in execute_location",
            "execute_location", why="a call through a NULL function pointer (no KASAN check on an instruction fetch)"),
    Capture("paging-request", "WRITE_RO", "oops", "BUG: unable to handle kernel paging request in lkdtm_WRITE_RO",
            "lkdtm_WRITE_RO", why="a write to .rodata: a permissions-violation page fault"),
    Capture("kasan-slab-out-of-bounds", "SLAB_LINEAR_OVERFLOW", "kasan",
            "KASAN: slab-out-of-bounds in lkdtm_SLAB_LINEAR_OVERFLOW", "lkdtm_SLAB_LINEAR_OVERFLOW",
            why="a write 4 bytes past a kmalloc(1020) object"),
    Capture("kasan-use-after-free", "READ_AFTER_FREE", "kasan",
            "KASAN: slab-use-after-free in lkdtm_READ_AFTER_FREE", "lkdtm_READ_AFTER_FREE",
            why="a read of a freed kmalloc object"),
    Capture("kfence-use-after-free", "KFENCE_READ_AFTER_FREE", "bug",
            "BUG: KFENCE: use-after-free read in lkdtm_KFENCE_READ_AFTER_FREE", "lkdtm_KFENCE_READ_AFTER_FREE",
            why="a read of a freed KFENCE object (no pattern of its own: the generic `BUG: ...` one)"),
    Capture("ubsan-array-index-out-of-bounds", "ARRAY_BOUNDS", "ubsan",
            "UBSAN: array-index-out-of-bounds in lkdtm_ARRAY_BOUNDS", "lkdtm_ARRAY_BOUNDS",
            why="an index past a fixed-size array member (inside the object, so KASAN stays quiet)"),
    Capture("lockdep-circular", "LOCKDEP_CIRCULAR", "lockdep", "possible deadlock in lkdtm_LOCKDEP_CIRCULAR",
            "lkdtm_LOCKDEP_CIRCULAR", why="(patch) two mutexes taken A-B, then B-A"),
    Capture("lockdep-recursive", "LOCKDEP_RECURSIVE", "lockdep", "possible deadlock in lkdtm_LOCKDEP_RECURSIVE",
            "lkdtm_LOCKDEP_RECURSIVE", why="(patch) two mutexes of one lock class nested without a subclass"),
    Capture("lockdep-lock-held-returning-to-user", "SPINLOCKUP", "warning",
            "WARNING: lock held when returning to user space!", "",
            why="once: the task leaves the kernel holding the spinlock (the generic `WARNING: ...` "
                "pattern; the report has no stack, so the title names no function)"),
    Capture("suspicious-rcu-usage", "RCU_SUSPICIOUS", "lockdep", "suspicious RCU usage in lkdtm_RCU_SUSPICIOUS",
            "lkdtm_RCU_SUSPICIOUS", why="(patch) rcu_dereference() outside rcu_read_lock()"),
    Capture("bad-page-state", "BAD_PAGE_STATE", "bug", "BUG: Bad page state in lkdtm_BAD_PAGE_STATE",
            "lkdtm_BAD_PAGE_STATE", why="(patch) a page freed with a nonzero mapcount"),
    Capture("sleep-in-atomic", "SLEEP_IN_ATOMIC", "bug",
            "BUG: sleeping function called from invalid context in lkdtm_SLEEP_IN_ATOMIC", "lkdtm_SLEEP_IN_ATOMIC",
            why="(patch) might_sleep() under a spinlock"),
    Capture("soft-lockup", "SOFTLOCKUP", "soft_lockup", "BUG: soft lockup in lkdtm_SOFTLOCKUP", "lkdtm_SOFTLOCKUP",
            setup="echo 1 > /sys/module/rcupdate/parameters/rcu_cpu_stall_suppress; "
                  "sysctl -q kernel.watchdog_thresh=2",
            detached=True, wait_for="soft lockup - CPU#",
            why="a preempt-disabled busy loop; watchdog_thresh=2 (report after 4 s), RCU stall warnings off"),
    Capture("rcu-stall", "SOFTLOCKUP", "rcu_stall", "INFO: rcu detected stall in lkdtm_SOFTLOCKUP",
            "lkdtm_SOFTLOCKUP",
            setup="sysctl -q kernel.soft_watchdog=0; echo 3 > /sys/module/rcupdate/parameters/rcu_cpu_stall_timeout",
            detached=True, wait_for="detected stall",
            why="the same loop with the soft-lockup watchdog off and rcu_cpu_stall_timeout=3"),
    Capture("hung-task", "HUNG_TASK", "hung_task", "INFO: task hung in lkdtm_HUNG_TASK", "lkdtm_HUNG_TASK",
            setup="sysctl -q kernel.hung_task_timeout_secs=5", detached=True, wait_for="blocked for more than",
            why="a task in TASK_UNINTERRUPTIBLE forever; hung_task_timeout_secs=5"),
    Capture("panic", "PANIC", "panic", "kernel panic: dumptest", "", fatal=True,
            why='panic("dumptest"); QEMU exits (panic=-1, -no-reboot)'),
)
BY_NAME = {c.name: c for c in CAPTURES}


def expected_yaml(c: Capture) -> str:
    import yaml

    data = {"kind": c.kind, "title": c.title, "fatal": c.fatal, "frame": c.frame or None, "case": c.case_id,
            "trigger": c.trigger}
    return (f"# expected outcome of {c.name}.log (README.md says how it was recorded)\n"
            + yaml.safe_dump(data, sort_keys=False))


def _quiet(console, seconds: float, timeout: float) -> None:
    """Wait until the console has been silent for `seconds` (the report is complete), at most `timeout`."""
    deadline = time.monotonic() + timeout
    last, since = len(console.text()), time.monotonic()
    while time.monotonic() < deadline and not console.closed.is_set():
        time.sleep(0.2)
        now = len(console.text())
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= seconds:
            return


def record(c: Capture, cfg, kernel, image, key) -> Path:
    from rig.errors import GuestError
    from rig.vm import start_vm

    from rig.console import find_splats

    for attempt in range(1, BOOTS + 1):
        work = Path(tempfile.mkdtemp(prefix=f"p2pdma-rig-splat-{c.name}-"))
        vm = start_vm(cfg.machine, kernel, image, key, work)
        # a report before the trigger would be the first splat (and a KASAN report turns lockdep off): boot again
        early = find_splats(vm.console.text())
        if not early:
            break
        vm.stop()
        print(f"{c.name}: boot {attempt} already has a splat ({early[0].title}); console kept in {work}",
              file=sys.stderr)
    else:
        raise SystemExit(f"{c.name}: {BOOTS} boots in a row had a splat before the trigger")
    begin = f"echo 'p2pdma-rig: begin {c.case_id}' > /dev/kmsg"
    end = f"echo 'p2pdma-rig: end {c.case_id}' > /dev/kmsg"
    # a subshell writes the trigger: an Oops kills the writer, not the shell that writes the end marker
    trig = f"sh -c 'echo {c.trigger} > {DIRECT}'"
    try:
        if c.setup:
            vm.run(c.setup, timeout=60)
        _quiet(vm.console, 2, 20)
        try:
            if c.detached:
                vm.run(f"{begin}; setsid {trig} </dev/null >/dev/null 2>&1 &", timeout=60)
                if not vm.console.wait_for(c.wait_for, 180, stop_if=lambda: not vm.alive()):
                    print(f"{c.name}: no {c.wait_for!r} on the console within 180 s", file=sys.stderr)
                _quiet(vm.console, 3, 60)
                vm.run(end, timeout=30)
            else:
                r = vm.run(f"{begin}; {trig}; {end}", timeout=120)
                print(f"{c.name}: exit {r.exited} {r.stderr.strip()[-300:]}")
        except GuestError as e:  # a panic takes the guest with it, a stall may keep SSH from answering
            print(f"{c.name}: guest gone or not answering: {e}")
        _quiet(vm.console, 3, 30)
    finally:
        vm.stop()
    out = HERE / f"{c.name}.log"
    shutil.copy(work / "console.log", out)
    (HERE / f"{c.name}.expected").write_text(expected_yaml(c))
    shutil.rmtree(work, ignore_errors=True)
    return out


def capture_config():
    from rig.config import load_config

    return load_config(overrides={"kernel.profile": PROFILE, "kernel.patches": [str(PATCH)]})


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("names", nargs="*", metavar="NAME", help="captures to record (default: all)")
    ap.add_argument("--list", action="store_true", help="list the captures and exit")
    ap.add_argument("--expected-only", action="store_true",
                    help="rewrite the .expected files from the table above, record nothing")
    ap.add_argument("-j", "--jobs", type=int, default=1, help="guests booted at the same time (default 1)")
    args = ap.parse_args(argv)
    if args.list:
        for c in CAPTURES:
            print(f"{c.name:38} {c.trigger:24} {c.title}")
        return 0
    unknown = [n for n in args.names if n not in BY_NAME]
    if unknown:
        ap.error(f"unknown capture(s) {', '.join(unknown)}; known: {', '.join(BY_NAME)}")
    if args.expected_only:
        for c in [BY_NAME[n] for n in args.names] or CAPTURES:
            (HERE / f"{c.name}.expected").write_text(expected_yaml(c))
        return 0
    from rig.image import build_image, ensure_ssh_key, image_spec
    from rig.kernel import build_kernel, kernel_spec

    cfg = capture_config()
    t0 = time.monotonic()
    kernel = build_kernel(kernel_spec(cfg))
    print(f"kernel {kernel.key} ({kernel.bzimage}) in {time.monotonic() - t0:.0f} s")
    image = build_image(image_spec(cfg))
    key = ensure_ssh_key(cfg.cache_path)
    def one(c: Capture) -> None:
        t = time.monotonic()
        out = record(c, cfg, kernel, image, key)
        print(f"wrote {out.relative_to(REPO)} in {time.monotonic() - t:.0f} s", flush=True)

    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        for f in [pool.submit(one, c) for c in [BY_NAME[n] for n in args.names] or CAPTURES]:
            f.result()
    return 0


if __name__ == "__main__":
    sys.exit(main())
