"""Race controller: guest-side workers (guest-tests/race/racer.c) hammer p2pmem while the provider is unbound
and rebound; the host owns the clock, watches the console, and stops at the first failure with everything a
reproducer needs (p2pdma-behaviour.md section 8).

Detection: console splats (the console.py table: KASAN, lockdep, WARNING, BUG, Oops, hung task, RCU stall,
soft lockup, panic), a guest that stops answering (no racer progress on the console and no SSH for `hang_s`:
the rig asks for task dumps with sysrq before stopping it), data corruption and broken invariants reported by
the workers (`available` not back at its baseline, an unbind that does not return within its bound).
"""
from __future__ import annotations

import json
import random
import re
import shlex
import subprocess
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from rig import console as consolemod
from rig.config import REPO_ROOT, RigConfig
from rig.errors import BuildError, ConfigError, GuestError
from rig.image import GuestImage, SshKey
from rig.kernel import KernelBuild, decode_stacktrace
from rig.progress import Progress
from rig.vm import RunningVM, start_vm

RACER_SOURCE = REPO_ROOT / "guest-tests" / "race" / "racer.c"
SCENARIOS = ("unbind-mapped", "fork-unbind", "rebind-cycles", "mmap-munmap", "munmap-odirect", "odirect-unbind",
             "gup-unbind", "inflight-peer", "surprise-removal")
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

    def reproducer(self, profile: str, scenario: str | None = None) -> str:
        scen = [scenario] if scenario else list(self.scenarios)
        args = ["rig", "race", "--seed", str(self.seed), "--seconds", f"{self.seconds:g}", "--workers",
                str(self.workers), "--profile", profile] + [a for s in scen for a in ("--scenario", s)]
        if self.cycles:
            args += ["--cycles", str(self.cycles)]
        if self.hang_s != 60.0:
            args += ["--hang-s", f"{self.hang_s:g}"]
        return shlex.join(args)


@dataclass
class ScenarioResult:
    scenario: str
    boot: int
    verdict: str  # ok | invariant | splat | hang | crash
    seconds: float
    counters: dict
    broken: list[str]
    splats: list[dict] = field(default_factory=list)
    decoded: str = ""

    @property
    def cycles_per_s(self) -> float:
        return (self.counters.get("cycles", 0) / self.seconds) if self.seconds else 0.0


def parse_spec(scenarios: list[str], seconds: float, workers: int, seed: int | None, cycles: int = 0,
               hang_s: float = 60.0) -> RaceSpec:
    unknown = [s for s in scenarios if s not in SCENARIOS + SELFTESTS]
    if unknown:
        raise ConfigError(f"unknown race scenario(s) {', '.join(unknown)}; known: {', '.join(SCENARIOS)}")
    if seconds <= 0 or workers < 1 or workers > 64:
        raise ConfigError("--seconds must be > 0 and --workers between 1 and 64")
    return RaceSpec(tuple(scenarios or SCENARIOS), seconds, workers,
                    seed if seed is not None else random.SystemRandom().randrange(1, 2**31), hang_s, 30, cycles)


def compile_racer(kernel: KernelBuild, out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = ["gcc", "-static", "-O2", "-Wall", "-pthread", "-I", str(kernel.headers), "-o", str(out), str(RACER_SOURCE)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise BuildError(f"racer.c does not compile:\n{r.stderr[-2000:]}")
    return out


class Race:
    def __init__(self, cfg: RigConfig, kernel: KernelBuild, image: GuestImage, key: SshKey, run_dir: Path,
                 spec: RaceSpec, progress: Progress | None = None):
        self.cfg, self.kernel, self.image, self.key = cfg, kernel, image, key
        self.run_dir = run_dir
        self.spec = spec
        self.progress = progress or Progress("race")
        self.vm: RunningVM | None = None
        self.boots = 0
        self.topology = ""
        self.machine = cfg.machine
        self.racer = compile_racer(kernel, run_dir / "racer")

    def _boot(self, topology: str) -> RunningVM:
        self.boots += 1
        self.machine = self.cfg.machine_for(topology)
        self.topology = topology
        vm = start_vm(self.machine, self.kernel, self.image, self.key, self.run_dir / f"boot-{self.boots}",
                      boot=self.boots, progress=self.progress)
        vm.put(self.racer, "/root/racer")
        vm.run(f"chmod +x /root/racer; echo {self.spec.hung_task_timeout_s} > /proc/sys/kernel/hung_task_timeout_secs")
        self.progress.note(f"VM {self.boots} up in {vm.ready_s:.1f}s; ssh: {vm.ssh_command()}")
        self.vm = vm
        return vm

    def _stop_vm(self, keep_dmesg: bool = True) -> None:
        vm, self.vm = self.vm, None
        if vm is None:
            return
        if keep_dmesg and vm.alive():
            try:
                (vm.workdir / "dmesg.txt").write_text(vm.run("dmesg", timeout=20).stdout)
            except GuestError:
                pass
        vm.stop()

    def _task_dumps(self, vm: RunningVM) -> None:
        """A guest that stopped answering: ask the kernel for blocked-task and all-task dumps via sysrq."""
        for key in ("w", "t"):
            try:
                vm.qmp("send-key", keys=[{"type": "qcode", "data": k} for k in ("alt", "sysrq", key)])
            except Exception:  # noqa: BLE001 - QMP may be gone with the guest
                return
            time.sleep(2)

    def _surprise_removals(self, vm: RunningVM, until: float, done: threading.Event, counter: list) -> None:
        """Host side of `surprise-removal`: QMP device_del of the provider, then device_add of the same
        controller on the same slot, again and again; the device is back before the workers finish."""
        from rig.qemu import NvmeDrive, hotplug_slot, nvme_device

        drives = [NvmeDrive(Path("-"), n.cmb_size_mb, n.attach, n.latency_ns, n.namespace_mb) for n in self.machine.nvme]
        props = nvme_device(0, drives[0], hotplug_slot(drives, 0))
        rng = random.Random(self.spec.seed)
        # not before the racer has read its baseline: a removal frees the driver's queues in the pool
        assert vm.console
        vm.console.wait_for("p2pdma-race: start scenario=surprise-removal", 30)
        done.wait(2)
        while not done.is_set() and time.monotonic() < until - 12:
            try:
                vm.qmp("device_del", id="nvme0")
                done.wait(4 + rng.random() * 2)  # the guest's hotplug driver takes a few seconds
                vm.qmp("device_add", **props)
                counter[0] += 1
                done.wait(3 + rng.random() * 2)
            except Exception as e:  # noqa: BLE001 - a QMP error ends the cycling; the guest side reports
                counter.append(str(e))
                return

    def run_scenario(self, scenario: str) -> ScenarioResult:
        topology = SCENARIO_TOPOLOGY.get(scenario, "default")
        if self.vm and self.topology != topology:
            self._stop_vm()
        vm = self.vm if self.vm and self.vm.alive() else self._boot(topology)
        assert vm.console
        start_line = len(vm.console.text().splitlines())
        seconds = self.spec.seconds
        cmd = f"/root/racer {scenario} {seconds:g} {self.spec.workers} {self.spec.seed} {self.spec.cycles}"
        box: dict = {}

        def drive():
            try:
                box["result"] = vm.run(cmd, timeout=seconds + self.spec.hang_s + 60)
            except GuestError as e:
                box["error"] = str(e)

        worker = threading.Thread(target=drive, daemon=True)
        t0 = time.monotonic()
        worker.start()
        host_done, removals = threading.Event(), [0]
        if scenario == "surprise-removal":
            threading.Thread(target=self._surprise_removals, args=(vm, t0 + seconds, host_done, removals),
                             daemon=True).start()
        last_progress_t, last_progress = time.monotonic(), None
        verdict, splats, hang_note = "ok", [], ""
        while worker.is_alive():
            worker.join(0.5)
            lines = vm.console.text().splitlines()[start_line:]
            found = consolemod.find_splats("\n".join(lines))
            if found:
                splats = found
                verdict = "crash" if any(s.fatal for s in found) or not vm.alive() else "splat"
                break
            if not vm.alive():
                verdict = "crash"
                break
            prog = next((m for m in map(_PROGRESS.search, reversed(lines)) if m), None)
            if prog and prog.group(0) != last_progress:
                last_progress, last_progress_t = prog.group(0), time.monotonic()
                it, cyc, bus = int(prog.group(2)), int(prog.group(3)), int(prog.group(4))
                el = max(time.monotonic() - t0, 0.001)
                self.progress.update(f"{scenario}: {el:4.0f}s/{seconds:g}s  {it} iterations  {cyc} cycles "
                                     f"({cyc / el:.2f}/s)  {bus} SIGBUS  0 splats")
            if time.monotonic() - last_progress_t > self.spec.hang_s:
                verdict = "hang"
                try:
                    vm.run("true", timeout=10)
                    hang_note = f"no progress for {self.spec.hang_s:g}s (the guest still answers SSH)"
                except GuestError:
                    hang_note = f"no progress and no SSH for {self.spec.hang_s:g}s"
                self._task_dumps(vm)
                break
        host_done.set()
        elapsed = time.monotonic() - t0
        counters: dict = {}
        broken: list[str] = [hang_note] if hang_note else []
        if verdict == "ok":
            worker.join(seconds + self.spec.hang_s + 90)
            res = box.get("result")
            line = next((ln for ln in reversed(res.stdout.splitlines()) if ln.startswith("{")), None) if res else None
            if line is None:
                verdict, broken = "hang" if "error" in box else "invariant", [box.get("error") or "racer printed no result"]
            else:
                counters = json.loads(line)
                broken = counters.pop("broken", [])
                if "error" in counters:
                    broken = [counters["error"]]
                if scenario == "surprise-removal":
                    counters["cycles"] = removals[0]  # removals + re-adds done by the host
                    broken += [f"QMP: {e}" for e in removals[1:]]
                verdict = "invariant" if broken else "ok"
                elapsed = counters.get("seconds", elapsed)
        time.sleep(1.0 if verdict != "ok" else 0)  # let the rest of a report reach the console
        if verdict in ("splat", "crash", "hang") and not splats:
            splats = consolemod.find_splats("\n".join(vm.console.text().splitlines()[start_line:]))
        decoded = ""
        if splats:
            decoded = decode_stacktrace(self.kernel, "\n".join(s.text for s in splats))
        result = ScenarioResult(scenario, self.boots, verdict, round(elapsed, 1), counters, broken,
                                [s.as_dict() for s in splats], decoded)
        if verdict != "ok":
            self._stop_vm(keep_dmesg=verdict != "crash")
        return result

    def run(self) -> list[ScenarioResult]:
        results = []
        try:
            for scenario in self.spec.scenarios:
                r = self.run_scenario(scenario)
                results.append(r)
                self.progress.note(f"{scenario}: {r.verdict.upper()} after {r.seconds:g}s, "
                                   f"{r.counters.get('iterations', 0)} iterations, {r.counters.get('cycles', 0)} "
                                   f"unbind/rebind cycles ({r.cycles_per_s:.2f}/s)"
                                   + "".join(f"\n    splat: {s['title']}" for s in r.splats)
                                   + "".join(f"\n    broken: {b}" for b in r.broken))
                if r.verdict != "ok":
                    break  # first failure: stop and keep everything
        finally:
            self._stop_vm()
        return results


def write_race(run_dir: Path, spec: RaceSpec, results: list[ScenarioResult], kernel: KernelBuild, profile: str,
               qemu_cmdlines: list[str]) -> dict:
    failed = next((r for r in results if r.verdict != "ok"), None)
    data = {
        "seed": spec.seed,
        "spec": asdict(spec),
        "results": [dict(asdict(r), cycles_per_s=round(r.cycles_per_s, 3)) for r in results],
        "failed": failed.scenario if failed else None,
        "reproduce": spec.reproducer(profile, failed.scenario if failed else None),
        "kernel": kernel.manifest,
        "qemu_cmdlines": qemu_cmdlines,
    }
    (run_dir / "race.json").write_text(json.dumps(data, indent=2) + "\n")
    if failed and failed.decoded:
        (run_dir / "decoded-trace.txt").write_text(failed.decoded)
    return data
