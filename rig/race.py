"""Race controller: guest-side workers (guest-tests/race/racer.c) hammer p2pmem while the provider is unbound
and rebound; the host owns the clock, watches the console, and stops at the first failure with everything a
reproducer needs (docs/behaviour.md section 8).

Detection: console splats (the console.py table: KASAN, lockdep, WARNING, BUG, Oops, hung task, RCU stall,
soft lockup, panic), a guest that stops answering (no racer progress on the console and no SSH for `hang_s`:
the rig asks for task dumps with sysrq before stopping it), data corruption and broken invariants reported by
the workers (`available` not back at its baseline, an unbind that does not return within its bound).
"""
from __future__ import annotations

import json
import random
import re
import subprocess
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from rig.config import REPO_ROOT, RigConfig
from rig.errors import BuildError, ConfigError, GuestError
from rig.expectations import load_boot_known_issues, load_race_known_issues
from rig.image import GuestImage, SshKey
from rig.judge import judge_race_console, judge_scenario, race_known_issue
from rig.kernel import KernelBuild
from rig.model import SplatRecord, Verdict
from rig.probes import CFLAGS, MEMORY_OF
from rig.progress import Progress
from rig.session import VMSession
from rig.vm import RunningVM

RACER_SOURCE = REPO_ROOT / "guest-tests" / "race" / "racer.c"
SCENARIOS = ("unbind-mapped", "fork-unbind", "rebind-cycles", "mmap-munmap", "munmap-odirect", "odirect-unbind",
             "gup-unbind", "gupfast-unbind", "inflight-peer", "surprise-removal", "unbind-held-open", "mmap-count",
             "sysfs-readers", "grab-at-bind")
# scenarios that need another machine (rig.yaml `topologies`); the rest run on the default one
SCENARIO_TOPOLOGY = {"inflight-peer": "switch-slow", "surprise-removal": "hotplug"}
# break the kernel on purpose to prove the detectors (run only when named)
SELFTESTS = ("selftest-warn", "selftest-panic", "selftest-hang")
_PROGRESS = re.compile(r"p2pdma-race: progress t=(\d+) iterations=(\d+) cycles=(\d+) sigbus=(\d+)")


@dataclass(frozen=True)
class RaceSpec:
    scenarios: tuple[str, ...]
    seconds: float  # per scenario
    workers: int
    seed: int
    hang_s: float = 60.0
    hung_task_timeout_s: int = 30
    cycles: int = 0  # > 0: stop a scenario after this many unbind/rebind cycles (or when its time is up)
    until_hit: bool = False  # end a scenario at its first report, a known issue's too (time-to-hit figures)

    def arguments(self, scenarios: list[str] | None = None) -> list[str]:
        """`rig race`'s own options that replay these scenarios with this seed (the kernel's and the machine's
        come from the request: rig.pipeline.RunRequest.reproduce)."""
        args = ["--seed", str(self.seed), "--seconds", f"{self.seconds:g}", "--workers", str(self.workers)]
        args += [a for s in (scenarios or self.scenarios) for a in ("--scenario", s)]
        if self.cycles:
            args += ["--cycles", str(self.cycles)]
        if self.hang_s != 60.0:
            args += ["--hang-s", f"{self.hang_s:g}"]
        if self.until_hit:
            args += ["--until-hit"]
        return args


@dataclass
class ScenarioResult:
    scenario: str
    boot: int
    # PASS, XFAIL (its only reports were race_known_issues', its invariants held) or FAIL (rig/judge.py)
    verdict: Verdict
    seconds: float
    counters: dict
    broken: list[str]
    splats: list[SplatRecord] = field(default_factory=list)
    decoded: str = ""
    known: list[str] = field(default_factory=list)  # the known issues it hit, with their status
    failure: str = ""  # how a FAIL went wrong: judge.RACE_FAILURES (invariant, splat, hang, crash)
    first_hit_s: float | None = None  # from the scenario's start to its first report (kernel timestamps)
    unseen: list[str] = field(default_factory=list)  # race known issues aimed at it that it ran without

    @property
    def failed(self) -> bool:
        return self.verdict.failing

    @property
    def crashed(self) -> bool:
        return self.failure == "crash"

    @property
    def cycles_per_s(self) -> float:
        return (self.counters.get("cycles", 0) / self.seconds) if self.seconds else 0.0

    @property
    def outcome(self) -> str:
        """'PASS', 'XFAIL', 'FAIL (hang)'..., for a summary line."""
        return self.verdict.upper() + (f" ({self.failure})" if self.failure else "")

    def to_json(self) -> dict:
        data = asdict(self)
        data["verdict"] = self.verdict.value
        return dict(data, cycles_per_s=round(self.cycles_per_s, 3))

    @classmethod
    def from_json(cls, data: dict) -> "ScenarioResult":
        fields = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**{**fields, "verdict": Verdict(data["verdict"]),
                      "splats": [SplatRecord.from_json(s) for s in data.get("splats", [])]})


def parse_spec(scenarios: list[str], seconds: float, workers: int, seed: int | None, cycles: int = 0,
               hang_s: float = 60.0, until_hit: bool = False) -> RaceSpec:
    unknown = [s for s in scenarios if s not in SCENARIOS + SELFTESTS]
    if unknown:
        raise ConfigError(f"unknown race scenario(s) {', '.join(unknown)}; known: {', '.join(SCENARIOS)}")
    if not seconds > 0:
        raise ConfigError(f"--seconds {seconds:g}: each scenario needs some time; give a number of seconds above 0")
    if workers < 1 or workers > 64:
        raise ConfigError(f"--workers {workers}: between 1 and 64 worker threads in the guest")
    if cycles < 0:
        raise ConfigError(f"--cycles {cycles}: a number of unbind/rebind cycles (0 = run for --seconds)")
    if not hang_s > 0:
        raise ConfigError(f"--hang-s {hang_s:g}: how long without progress means a hung guest; give seconds above 0")
    return RaceSpec(tuple(scenarios or SCENARIOS), seconds, workers,
                    seed if seed is not None else random.SystemRandom().randrange(1, 2**31), hang_s, 30, cycles,
                    until_hit)


def compile_racer(kernel: KernelBuild, out: Path, source: Path = RACER_SOURCE) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    # the probes' flags: racer.c shares guest-tests/lib/p2p.h with them, whose helpers it uses only in part
    cmd = ["gcc", "-static", *CFLAGS, "-pthread", "-I", str(kernel.headers), "-o", str(out), str(source)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise BuildError(f"racer.c does not compile:\n{r.stderr[-2000:]}")
    return out


@dataclass
class _GuestRacer:
    """The racer command running over SSH in a thread: its result or why it has none."""

    vm: RunningVM
    command: str
    timeout: float
    result: object = None  # CommandResult
    error: str = ""

    def __post_init__(self) -> None:
        self.thread = threading.Thread(target=self._drive, daemon=True)
        self.thread.start()

    def _drive(self) -> None:
        try:
            self.result = self.vm.run(self.command, timeout=self.timeout)
        except GuestError as e:
            self.error = str(e)

    def counters(self) -> dict | None:
        """The racer's closing JSON line, or None."""
        out = self.result.stdout if self.result is not None else ""
        line = next((ln for ln in reversed(out.splitlines()) if ln.startswith("{")), None)
        return json.loads(line) if line else None


@dataclass
class _Removals:
    """Host side of `surprise-removal`: QMP device_del / device_add cycles of the provider."""

    done: threading.Event = field(default_factory=threading.Event)
    count: int = 0
    errors: list[str] = field(default_factory=list)


class Race:
    def __init__(self, cfg: RigConfig, kernel: KernelBuild, image: GuestImage, key: SshKey, run_dir: Path,
                 spec: RaceSpec, progress: Progress | None = None, keep_disks: bool = False):
        self.cfg, self.kernel = cfg, kernel
        self.run_dir = run_dir
        self.spec = spec
        self.progress = progress or Progress("race")
        self.racer = compile_racer(kernel, run_dir / "racer")
        self.known_issues = load_race_known_issues(scenarios=SCENARIOS + SELFTESTS)
        self.boot_issues = load_boot_known_issues()
        self.release = kernel.manifest.kernelrelease
        # on the seed's v3 series the workers map /dev/nvmeN, as the probes do on that design
        self.memory_env = f"P2PDMA_MEMORY={MEMORY_OF[kernel.manifest.p2pmem_semantics]} "
        self.session = VMSession(cfg, kernel, image, key, run_dir, self.progress, prepare=self._prepare,
                                 keep_disks=keep_disks)

    def _prepare(self, vm: RunningVM, _workdir: Path) -> None:
        vm.put(self.racer, "/root/racer")
        vm.run(f"chmod +x /root/racer; echo {self.spec.hung_task_timeout_s} > /proc/sys/kernel/hung_task_timeout_secs")

    def _task_dumps(self, vm: RunningVM) -> None:
        """A guest that stopped answering: ask the kernel for blocked-task and all-task dumps via sysrq."""
        for key in ("w", "t"):
            try:
                vm.qmp("send-key", keys=[{"type": "qcode", "data": k} for k in ("alt", "sysrq", key)])
            except Exception:  # noqa: BLE001 - QMP may be gone with the guest
                return
            time.sleep(2)

    def _surprise_removals(self, vm: RunningVM, until: float, removals: _Removals) -> None:
        """Remove the provider with QMP device_del, then device_add the same controller on the same slot, again
        and again; the device is back before the workers finish."""
        from rig.qemu import NvmeDrive, nvme_device

        machine = self.cfg.machine_for(SCENARIO_TOPOLOGY["surprise-removal"])
        drives = [NvmeDrive(Path("-"), n) for n in machine.nvme]
        props = nvme_device(drives, 0)
        rng = random.Random(self.spec.seed)
        # not before the racer has read its baseline: a removal frees the driver's queues in the pool
        assert vm.console
        vm.console.wait_for("p2pdma-race: start scenario=surprise-removal", 30)
        removals.done.wait(2)
        while not removals.done.is_set() and time.monotonic() < until - 12:
            try:
                vm.qmp("device_del", id="nvme0")
                removals.done.wait(4 + rng.random() * 2)  # the guest's hotplug driver takes a few seconds
                vm.qmp("device_add", **props)
                removals.count += 1
                removals.done.wait(3 + rng.random() * 2)
            except Exception as e:  # noqa: BLE001 - a QMP error ends the cycling; the guest side reports
                removals.errors.append(str(e))
                return

    def _known_issue(self, scenario: str, title: str) -> bool:
        return race_known_issue(scenario, title, self.known_issues, self.release) is not None

    def _watch(self, vm: RunningVM, scenario: str, racer: _GuestRacer, t0: float) -> tuple[str, str]:
        """Follow the racer until it ends or something breaks: (failure, note), failure "" when it ended. Live
        status from its progress lines; a splat in the scenario's console slice, a dead QEMU, or no progress
        for hang_s stop it."""
        assert vm.console
        last_progress, last_progress_t = None, time.monotonic()
        while racer.thread.is_alive():
            racer.thread.join(0.5)
            found, text = self.session.slice_splats(f"race.{scenario}")
            # a known bug's report does not stop the scenario: its invariants are still checked to the end
            if any(s.fatal or not self._known_issue(scenario, s.title) for s in found):
                return ("crash" if any(s.fatal for s in found) or not vm.alive() else "splat"), ""
            if found and self.spec.until_hit:  # a known issue's report: it ends the scenario as its time would
                try:
                    vm.run("pkill -TERM -x racer", timeout=15)
                except GuestError:
                    pass  # the racer's own end (or the hang watch) follows
                return "", ""
            if not vm.alive():
                return "crash", ""
            prog = next((m for m in map(_PROGRESS.search, reversed(text.splitlines())) if m), None)
            if prog and prog.group(0) != last_progress:
                last_progress, last_progress_t = prog.group(0), time.monotonic()
                it, cyc, bus = int(prog.group(2)), int(prog.group(3)), int(prog.group(4))
                el = max(time.monotonic() - t0, 0.001)
                self.progress.update(f"{scenario}: {el:4.0f}s/{self.spec.seconds:g}s  {it} iterations  {cyc} cycles "
                                     f"({cyc / el:.2f}/s)  {bus} SIGBUS  0 splats")
            if time.monotonic() - last_progress_t > self.spec.hang_s:
                try:
                    vm.run("true", timeout=10)
                    note = f"no progress for {self.spec.hang_s:g}s (the guest still answers SSH)"
                except GuestError:
                    note = f"no progress and no SSH for {self.spec.hang_s:g}s"
                self._task_dumps(vm)
                return "hang", note
        return "", ""

    def run_scenario(self, scenario: str) -> ScenarioResult:
        vm = self.session.vm_for(SCENARIO_TOPOLOGY.get(scenario, "default"))
        boot = self.session.boots[-1].boot
        seconds = self.spec.seconds
        # kmsg markers give the scenario its console slice, as run_case.py does for a case
        cmd = (f"echo 'p2pdma-rig: begin race.{scenario}' > /dev/kmsg; "
               f"{self.memory_env}/root/racer {scenario} {seconds:g} {self.spec.workers} {self.spec.seed} "
               f"{self.spec.cycles}; "
               f"rc=$?; echo 'p2pdma-rig: end race.{scenario}' > /dev/kmsg; exit $rc")
        t0 = time.monotonic()
        racer = _GuestRacer(vm, cmd, seconds + self.spec.hang_s + 60)
        removals = _Removals()
        if scenario == "surprise-removal":
            threading.Thread(target=self._surprise_removals, args=(vm, t0 + seconds, removals), daemon=True).start()
        failure, note = self._watch(vm, scenario, racer, t0)
        removals.done.set()
        elapsed = time.monotonic() - t0
        counters: dict = {}
        broken: list[str] = [note] if note else []
        if not failure:
            racer.thread.join(seconds + self.spec.hang_s + 90)
            got = racer.counters()
            if got is None:
                failure, broken = ("hang" if racer.error else "invariant"), [racer.error or "racer printed no result"]
            else:
                counters = got
                broken = counters.pop("broken", [])
                if "error" in counters:
                    broken = [counters["error"]]
                if scenario == "surprise-removal":
                    counters["cycles"] = removals.count  # removals + re-adds done by the host
                    broken += [f"QMP: {e}" for e in removals.errors]
                failure = "invariant" if broken else ""
                elapsed = counters.get("seconds", elapsed)
        if failure:
            time.sleep(1.0)  # let the rest of a report reach the console
        found, text = self.session.slice_splats(f"race.{scenario}") if vm.console else ([], "")
        splats = [self.session.record(s, boot, owner=f"race.{scenario}") for s in found]
        verdict, failure, hit = judge_scenario(scenario, failure, splats, self.known_issues, self.release, vm.alive())
        self.session.decode([s for s in splats if s.counts])
        ran = counters.get("seconds", elapsed)
        unseen = [u for k in self.known_issues if not any(s.known_issue == k.id for s in splats)
                  for u in [k.unseen(scenario, ran, self.release)] if u] if not failure else []
        result = ScenarioResult(scenario, boot, verdict, round(elapsed, 1), counters, broken, splats, "", hit,
                                failure, time_to_first_report(text, splats), unseen)
        if verdict != Verdict.PASS:  # a known bug's report leaves a tainted kernel (and a spent WARN_ON_ONCE) too
            self.session.retire(f"{scenario}: {result.outcome}")
        return result

    def run(self) -> list[ScenarioResult]:
        results: list[ScenarioResult] = []
        try:
            for scenario in self.spec.scenarios:
                r = self.run_scenario(scenario)
                results.append(r)
                self.progress.note(f"{scenario}: {r.outcome} after {r.seconds:g}s, "
                                   f"{r.counters.get('iterations', 0)} iterations, {r.counters.get('cycles', 0)} "
                                   f"unbind/rebind cycles ({r.cycles_per_s:.2f}/s)"
                                   + "".join(f"\n    splat{s.standing_note}: {s.title}" for s in r.splats)
                                   + "".join(f"\n    broken: {b}" for b in r.broken)
                                   + "".join(f"\n    {k}" for k in r.known))
                if r.failed:
                    break  # first failure: stop and keep everything
        finally:
            self.session.close()
        out = results + self.console_results(results)
        self.session.wait_decoded()
        for r in out:  # the traces were decoded in the background while the race went on; close() waited
            r.decoded = "\n".join(s.decoded for s in r.splats if s.decoded)
        return out

    def console_results(self, results: list[ScenarioResult]) -> list[ScenarioResult]:
        """A `kernel.console` result for every boot with a report that no scenario was judged on (at boot,
        between scenarios, after the last one): every splat counts."""
        out = []
        for b in self.session.boots:
            verdict, failure, stray = judge_race_console(b, {s.line for r in results if r.boot == b.boot
                                                             for s in r.splats}, self.boot_issues,
                                                         self.release)
            self.session.decode([s for s in stray if s.counts])
            if stray:
                out.append(ScenarioResult(f"kernel.console.boot-{b.boot}", b.boot, verdict, 0.0, {},
                                          [f"{s.title} ({'in ' + s.owner if s.owner else 'outside every scenario'})"
                                           for s in stray], stray, failure=failure))
        return out


_KERNEL_TS = re.compile(r"^\[\s*(\d+\.\d+)\]", re.M)


def time_to_first_report(text: str, splats: list[SplatRecord]) -> float | None:
    """Seconds from the racer's start line to the first report of a scenario's console slice (both stamped by
    the guest kernel), None without a report or stamps."""
    start = re.search(r"^\[\s*(\d+\.\d+)\] p2pdma-race: start", text, re.M)
    stamps = [float(m.group(1)) for s in splats for m in [_KERNEL_TS.search(s.text)] if m]
    return round(min(stamps) - float(start.group(1)), 1) if start and stamps else None


def race_summary(results: list[ScenarioResult], seed: int) -> str:
    """One line per scenario (verdict, time, iterations, cycles and their rate, splats, time to the first report),
    then the known issues each hit and those its aimed scenario ran without."""
    lines = [f"{r.scenario:16s} {r.outcome:14s} {r.seconds:6.1f}s  iterations {r.counters.get('iterations', 0):7d}  "
             f"cycles {r.counters.get('cycles', 0):5d} ({r.cycles_per_s:.2f}/s)  splats {len(r.splats)}  seed {seed}"
             + (f"  first report after {r.first_hit_s:g}s" if r.first_hit_s is not None else "")
             for r in results]
    return "\n".join(lines + [f"XFAIL in {r.scenario}: known issue {k}" for r in results for k in r.known]
                     + [f"PASS in {r.scenario}: known issue {u}" for r in results for u in r.unseen])


P2P_HEADER = REPO_ROOT / "guest-tests" / "lib" / "p2p.h"


def reproducer_source(scenario: str, spec: RaceSpec, memory: str) -> str:
    """racer.c as one file (guest-tests/lib/p2p.h inlined) whose main() runs this scenario's schedule with this
    seed when given no arguments, and watches the kernel log itself."""
    racer = RACER_SOURCE.read_text()
    include = '#include "../lib/p2p.h"\n'
    if include not in racer:
        raise BuildError(f"{RACER_SOURCE} no longer includes {include.strip()}: the reproducer cannot inline it")
    head = (f"/* Standalone reproducer written by p2pdma-rig: race scenario {scenario}, seed {spec.seed}, "
            f"{spec.seconds:g} s, {spec.workers} workers.\n"
            f" * Build: gcc -static -O2 -pthread -o repro repro.c (the kernel's UAPI headers: -I <usr/include>)\n"
            f" * Run as root in the guest, nothing else needed: ./repro   (exit 1 and a HIT line at a report) */\n"
            f'#define REPRO_SCENARIO "{scenario}"\n#define REPRO_SEED "{spec.seed}"\n'
            f'#define REPRO_SECONDS "{spec.seconds:g}"\n#define REPRO_WORKERS "{spec.workers}"\n'
            f'#define REPRO_MEMORY "{memory}"\n')
    return head + racer.replace(include, f"/* ---- inlined from guest-tests/lib/p2p.h ---- */\n{P2P_HEADER.read_text()}"
                                          f"/* ---- end of p2p.h ---- */\n")


def write_reproducer(out: Path, result: ScenarioResult, spec: RaceSpec, kernel: KernelBuild, boot_line: str) -> Path:
    """A race directory's standalone reproducer of one scenario that saw a report: repro.c, the static binary
    `repro`, the kernel's config and a README with the commands (syzkaller's C reproducers are the model)."""
    out.mkdir(parents=True, exist_ok=True)
    memory = MEMORY_OF[kernel.manifest.p2pmem_semantics]
    source = out / "repro.c"
    source.write_text(reproducer_source(result.scenario, spec, memory))
    compile_racer(kernel, out / "repro", source)
    (out / "kernel.config").write_bytes(kernel.config.read_bytes())
    reports = "\n".join(f"    {s.text.splitlines()[0] if s.text else s.title}" for s in result.splats) or "    (none)"
    hit = f" after {result.first_hit_s:g} s" if result.first_hit_s is not None else ""
    (out / "README.md").write_text(f"""# Standalone reproducer: race scenario `{result.scenario}`, seed {spec.seed}

Made by `rig race` on {kernel.manifest.kernelrelease}; the scenario ended {result.outcome}{hit} with:

{reports}

`repro` is `repro.c` built statically: the same workers and unbind/rebind schedule as the rig's racer for this
scenario and seed ({spec.workers} workers, {spec.seconds:g} s), no Python, no rig needed in the guest. It watches
the kernel log itself: at the first report (WARNING:, BUG:, a hung task, an Oops...) it prints
`p2pdma-race: HIT after <s> s: <the report's first line>` and exits 1; without one it prints
`p2pdma-race: no report in <s> s` and exits 0. Run it again (or with `./repro {result.scenario} SECONDS WORKERS
SEED`) for another try: the race is a race.

It needs a machine with a P2PDMA provider (an NVMe controller with a CMB: the rig's default machine), root,
and a kernel with this configuration: `kernel.config` (the rig's build of {kernel.manifest.kernelrelease}).

## With the rig

    {boot_line} &
    rig ssh -- 'cat > /root/repro && chmod +x /root/repro' < repro
    rig ssh -- /root/repro

## Without the rig

Build a kernel with `kernel.config` (`make olddefconfig`), boot it where the provider is, then as root:

    gcc -static -O2 -pthread -o repro repro.c
    ./repro
""")
    return out


def write_race(run_dir: Path, spec: RaceSpec, results: list[ScenarioResult], kernel: KernelBuild, reproduce: str,
               qemu_cmdlines: list[str]) -> dict:
    failed = next((r for r in results if r.failed), None)
    data = {
        "seed": spec.seed,
        "spec": asdict(spec),
        "results": [r.to_json() for r in results],
        "failed": failed.scenario if failed else None,
        "reproduce": reproduce,
        "kernel": kernel.manifest.to_json(),
        "qemu_cmdlines": qemu_cmdlines,
    }
    (run_dir / "race.json").write_text(json.dumps(data, indent=2) + "\n")
    if failed and failed.decoded:
        (run_dir / "decoded-trace.txt").write_text(failed.decoded)
    return data
