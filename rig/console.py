"""Kernel console -> splats (titled syzkaller-style) and per-case slices. Pure text processing.

The pattern table is the one place that knows what a kernel report looks like; tests feed it real console
captures from tests/data/consoles/.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

_TIME = re.compile(r"^\[\s*\d+\.\d+\]\s?")
_FRAME = re.compile(r"^\s*(\?\s+)?([A-Za-z_][\w.]*)\+0x[0-9a-f]+/0x[0-9a-f]+")
_RIP = re.compile(r"RIP: \d+:([A-Za-z_][\w.]*)\+0x")
MARKER = re.compile(r"p2pdma-rig: (begin|end) (\S+)")

# frames that say how a task waited or how a report was printed, never where the problem is
_BORING_FRAMES = {
    "dump_stack", "dump_stack_lvl", "show_stack", "__warn", "warn_slowpath_fmt", "report_bug", "handle_bug",
    "exc_invalid_op", "asm_exc_invalid_op", "panic", "__schedule", "schedule", "schedule_timeout",
    "schedule_preempt_disabled", "io_schedule", "io_schedule_timeout", "__wait_for_common",
    "wait_for_completion", "wait_for_completion_timeout", "wait_for_completion_io", "__mutex_lock",
    "mutex_lock", "mutex_lock_nested", "__mutex_lock_common", "rwsem_down_read_slowpath",
    "rwsem_down_write_slowpath", "down_read", "down_write", "__down_common", "__switch_to", "__switch_to_asm",
    "kasan_report", "print_report", "print_address_description", "__kasan_report", "check_region_inline",
    "__asan_load8", "__asan_store8", "__asan_load4", "__asan_store4", "ret_from_fork", "ret_from_fork_asm",
    "entry_SYSCALL_64_after_hwframe", "do_syscall_64", "kthread", "sysrq_handle_crash", "__handle_sysrq",
    "write_sysrq_trigger", "rcu_dump_cpu_stacks", "print_cpu_stall", "check_cpu_stall", "rcu_sched_clock_irq",
    "watchdog_timer_fn", "__hrtimer_run_queues",
    # UBSAN, lockdep, the page allocator's and might_sleep()'s report printers
    "ubsan_epilogue", "__ubsan_handle_out_of_bounds", "__ubsan_handle_shift_out_of_bounds",
    "__ubsan_handle_load_invalid_value", "lockdep_rcu_suspicious", "bad_page", "free_page_is_bad_report",
    "free_page_is_bad", "free_pages_prepare", "free_unref_page", "__free_pages_ok", "__free_pages",
    "__might_resched", "__might_sleep", "lock_acquire", "__lock_acquire",
    # the allocator's report of a failed allocation, and vmalloc's own steps
    "warn_alloc", "__vmalloc_node_range_noprof", "__vmalloc_node_noprof", "vzalloc_node_noprof",
    "__vmalloc_node_range", "__vmalloc_node", "vzalloc_node",
}


@dataclass(frozen=True)
class Pattern:
    kind: str
    regex: re.Pattern
    title: str  # format: {0}.. regex groups, {frame} the first interesting frame
    fatal: bool = False
    # where the frame is when it is not the first interesting frame of a stack: the first match in the report
    # (group 1); e.g. lockdep names the acquiring function in "at: func+0x.." before any stack
    frame: re.Pattern | None = None
    # the line that closes this kind of report (besides "---[ end trace"), and how long it may get
    end: re.Pattern | None = None
    max_lines: int = 80


def _p(kind: str, regex: str, title: str, fatal: bool = False, frame: str | None = None, end: str | None = None,
       max_lines: int = 80) -> Pattern:
    return Pattern(kind, re.compile(regex), title, fatal, re.compile(frame) if frame else None,
                   re.compile(end) if end else None, max_lines)


_AT = r", at: ([A-Za-z_][\w.]*)\+0x"


# order matters: the first pattern that matches a line starts a report
PATTERNS: tuple[Pattern, ...] = (
    # a KASAN report (access, stacks of the allocation and the free, the memory state) is closed by a ==== line
    _p("kasan", r"BUG: KASAN: ([\w-]+) in ([A-Za-z_][\w.]*)", "KASAN: {0} in {1}", end=r"^={40,}$", max_lines=200),
    _p("bug", r"kernel BUG at (\S+)!", "kernel BUG in {frame}"),
    _p("oops", r"BUG: unable to handle (?:page fault for address|kernel paging request)",
       "BUG: unable to handle kernel paging request in {frame}"),
    _p("oops", r"BUG: kernel NULL pointer dereference", "BUG: kernel NULL pointer dereference in {frame}"),
    _p("oops", r"general protection fault", "general protection fault in {frame}"),
    # an exception with no report line of its own before die()'s header: "Oops: int3: 0000 [#1] SMP" (7.x,
    # a breakpoint nobody claimed), "Oops: invalid opcode: ..." without a BUG() line. Not "Oops: Oops: 0000",
    # the header under a "BUG: ..." line, which opened its report already
    _p("oops", r"^Oops: ([a-z][\w ]*?): [0-9a-f]{4} \[#\d+\]", "Oops: {0} in {frame}"),
    _p("soft_lockup", r"watchdog: BUG: soft lockup - CPU#\d+ stuck", "BUG: soft lockup in {frame}"),
    _p("bug", r"BUG: (sleeping function called from invalid context|scheduling while atomic|"
              r"Bad page state|Bad page map|workqueue lockup|spinlock \w+)", "BUG: {0} in {frame}"),
    _p("bug", r"^BUG: (.+?)(?: \(.*)?$", "BUG: {0}"),
    # lockdep says "possible circular locking dependency detected" but "possible recursive locking detected"
    _p("lockdep", r"WARNING: possible (?:circular locking dependency|recursive locking) detected",
       "possible deadlock in {frame}", frame=_AT, max_lines=200),
    _p("lockdep", r"WARNING: suspicious RCU usage", "suspicious RCU usage in {frame}"),
    _p("warning", r"WARNING: CPU: \d+ PID: \d+ at \S+ ([A-Za-z_][\w.]*)\+0x", "WARNING in {0}"),
    # the header of 7.3 (kernel/panic.c __warn; 6.12 has the one above): "WARNING: mm/gup.c:2533 at f+0x.../0x..., CPU#0: gup/269"
    _p("warning", r"WARNING: (?:\S+:\d+ )?at ([A-Za-z_][\w.]*)\+0x[0-9a-f]+/0x[0-9a-f]+, CPU#\d+:", "WARNING in {0}"),
    _p("warning", r"^WARNING: (.+)", "WARNING: {0}"),
    # the allocator's report of a failed allocation (warn_alloc: the caller's message, a stack, the memory state)
    _p("alloc_failure", r"^\S+: (page allocation failure|vmemmap alloc failure|vmalloc error)(?:: order:\d+|: size \d+)",
       "{0} in {frame}", end=r"\d+ pages reserved$"),
    _p("hung_task", r"INFO: task (\S+):\d+ blocked for more than \d+ seconds", "INFO: task hung in {frame}"),
    _p("rcu_stall", r"rcu: INFO: (rcu_\w+) (?:self-)?detected stall", "INFO: rcu detected stall in {frame}"),
    _p("ubsan", r"UBSAN: ([\w-]+) in (\S+)", "UBSAN: {0} in {frame}"),
    _p("panic", r"Kernel panic - not syncing: (.+?)\s*\]?$", "kernel panic: {0}", fatal=True),
)

_END = re.compile(r"---\[ end (trace|Kernel panic)")
_DIE_HEADER = re.compile(r"^Oops: ")
# 7.x printk prints a message again, whole, when its first printing was cut short: the cut copy is no report
_REPLAY = "** replaying previous printk message **"


# reports after which the kernel is not trusted any more: the run goes on in a fresh VM, and exits 3
CRASH_KINDS = ("oops", "bug", "kasan")


def is_crash(kind: str, fatal: bool) -> bool:
    return fatal or kind in CRASH_KINDS


@dataclass(frozen=True)
class Splat:
    kind: str
    title: str
    fatal: bool
    line: int  # index of the report's first line in the console
    text: str

    def as_dict(self) -> dict:
        return {"kind": self.kind, "title": self.title, "fatal": self.fatal, "line": self.line, "text": self.text}


def strip_time(line: str) -> str:
    return _TIME.sub("", line)


def _match(line: str) -> tuple[Pattern, re.Match] | None:
    body = strip_time(line)
    for pat in PATTERNS:
        m = pat.regex.search(body)
        if m:
            return pat, m
    return None


def first_interesting_frame(lines: list[str]) -> str:
    for line in lines:
        m = _RIP.search(line)
        if m and m.group(1) not in _BORING_FRAMES:
            return m.group(1)
    for line in lines:
        m = _FRAME.match(strip_time(line))
        if m and not m.group(1) and m.group(2) not in _BORING_FRAMES:
            return m.group(2)
    return "unknown"


def _frame_at(pat: Pattern, report: list[str]) -> str:
    if pat.frame is None:
        return ""
    for line in report:
        m = pat.frame.search(line)
        if m and m.group(1) not in _BORING_FRAMES:
            return m.group(1)
    return ""


def find_splats(console: str) -> list[Splat]:
    lines = console.splitlines()
    splats: list[Splat] = []
    i = 0
    while i < len(lines):
        hit = _match(lines[i])
        if not hit:
            i += 1
            continue
        pat, m = hit
        if i + 1 < len(lines) and _REPLAY in lines[i + 1]:
            i += 2  # the report starts again, whole, after the replay line
            continue
        end = i + 1
        while end < len(lines) and end - i < pat.max_lines:
            if _END.search(lines[end]) or (pat.end and pat.end.search(strip_time(lines[end]))):
                end += 1
                break
            # die()'s header ("Oops: <trap>: 0000 [#1]") belongs to the report above it, which it follows
            if MARKER.search(lines[end]) or (_match(lines[end]) and not pat.kind == "kasan"
                                             and not _DIE_HEADER.search(strip_time(lines[end]))):
                break
            end += 1
        report = lines[i:end]
        frame = _frame_at(pat, report) or first_interesting_frame(report[1:] if pat.kind != "oops" else report)
        groups = [re.sub(r"\+0x[0-9a-f]+/0x[0-9a-f]+$", "", g or "") for g in m.groups()]
        title = pat.title.format(*groups, frame=frame)
        splats.append(Splat(pat.kind, title, pat.fatal, i, "\n".join(report)))
        i = end
    return splats


@dataclass(frozen=True)
class CaseSlice:
    case_id: str
    start: int  # line of the begin marker
    end: int  # line of the end marker, or the last line if the case never ended (crash, hang)

    def text(self, console_lines: list[str]) -> str:
        return "\n".join(console_lines[self.start: self.end + 1])


def case_slices(console: str) -> dict[str, CaseSlice]:
    """Case id -> its span of console lines, from the kmsg markers run_case.py writes. Last run wins."""
    lines = console.splitlines()
    open_cases: dict[str, int] = {}
    slices: dict[str, CaseSlice] = {}
    for n, line in enumerate(lines):
        m = MARKER.search(line)
        if not m:
            continue
        what, cid = m.groups()
        if what == "begin":
            open_cases[cid] = n
        elif cid in open_cases:
            slices[cid] = CaseSlice(cid, open_cases.pop(cid), n)
    for cid, start in open_cases.items():
        slices[cid] = CaseSlice(cid, start, max(len(lines) - 1, start))
    return slices


def splats_in(splats: list[Splat], sl: CaseSlice) -> list[Splat]:
    return [s for s in splats if sl.start <= s.line <= sl.end]
