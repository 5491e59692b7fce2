"""Runs probe cases in VMs with isolation: a case that crashes or hangs the guest fails alone, the rig saves
what it saw, boots a fresh VM and goes on. Shared by `rig run` and the pytest session fixture."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from rig import console as consolemod
from rig import probes as probesmod
from rig.config import RigConfig
from rig.errors import ConfigError, GuestError
from rig.expectations import Expectation, judge
from rig.image import GuestImage, SshKey
from rig.kernel import KernelBuild, decode_stacktrace, has_dwarf
from rig.progress import Progress
from rig.vm import RunningVM, start_vm


@dataclass
class CaseResult:
    id: str
    area: str
    description: str
    section: str
    verdict: str
    expected: dict
    observed: dict | None
    mismatches: list[str]
    reason: str
    duration_s: float
    boot: int
    dmesg: str
    splats: list[dict] = field(default_factory=list)
    known_issue: str | None = None

    def failure_text(self) -> str:
        lines = [f"{self.id}: {self.verdict}" + (f" ({self.reason})" if self.reason else "")]
        lines.append(f"  expected: {self.expected}")
        lines.append(f"  observed: {self.observed}")
        lines += [f"  mismatch: {m}" for m in self.mismatches]
        for s in self.splats:
            lines.append(f"  splat: {s['title']}")
            if s.get("decoded"):
                lines.append(f"  decoded trace of {s['title']} (scripts/decode_stacktrace.sh):")
                lines += ["    " + ln for ln in s["decoded"].splitlines()[:80]]
        if self.dmesg:
            lines.append("  dmesg during the case:")
            lines += ["    " + ln for ln in self.dmesg.splitlines()[-40:]]
        return "\n".join(lines)


@dataclass
class BootRecord:
    boot: int
    topology: str
    workdir: Path
    ready_s: float | None
    accel: str
    qemu_cmdline: str
    splats: list[dict] = field(default_factory=list)
    ended_by: str = ""


class Suite:
    def __init__(self, cfg: RigConfig, kernel: KernelBuild, image: GuestImage, key: SshKey, run_dir: Path,
                 expectations: dict[str, Expectation], probe_set: probesmod.ProbeSet,
                 progress: Progress | None = None):
        self.cfg = cfg
        self.kernel = kernel
        self.image = image
        self.key = key
        self.run_dir = run_dir
        self.expectations = expectations
        self.probe_set = probe_set
        self.progress = progress or Progress("run")
        self.vm: RunningVM | None = None
        self.boots: list[BootRecord] = []
        self.results: list[CaseResult] = []
        self._decoded: dict[str, str] = {}  # splat text -> decoded trace (a case's splat is also its boot's)

    def _splat_dict(self, splat: consolemod.Splat) -> dict:
        """A splat as results.json keeps it, with its trace decoded against this kernel's vmlinux."""
        if splat.text not in self._decoded:
            self._decoded[splat.text] = decode_stacktrace(self.kernel, splat.text)
        d = splat.as_dict()
        if self._decoded[splat.text]:
            d["decoded"] = self._decoded[splat.text]
            if not has_dwarf(self.kernel):
                d["decoded_note"] = ("this kernel has no DWARF (CONFIG_DEBUG_INFO off), so file:line shows as '?'; "
                                     "run with --profile debug to get them")
        return d

    # ------------------------------------------------------------ VM lifecycle
    def _boot(self, topology: str) -> RunningVM:
        n = len(self.boots) + 1
        workdir = self.run_dir / f"boot-{n}"
        self.progress.update(f"booting VM {n} (topology {topology})")
        machine = self.cfg.machine_for(topology)
        vm = start_vm(machine, self.kernel, self.image, self.key, workdir, boot=n, progress=self.progress)
        self.boots.append(BootRecord(n, topology, workdir, vm.ready_s, vm.cmd.accel, vm.cmd.shell()))
        self.progress.note(f"VM {n} ({topology}) up in {vm.ready_s:.1f}s ({vm.cmd.accel}: {vm.cmd.accel_reason}); "
                           f"ssh: {vm.ssh_command()}")
        probesmod.upload(vm, self.probe_set, workdir)
        self.vm = vm
        return vm

    def _retire(self, why: str) -> None:
        """Stop the current VM, keeping its console and (if it still answers) its dmesg."""
        vm, self.vm = self.vm, None
        if vm is None:
            return
        rec = self.boots[-1]
        rec.ended_by = why
        try:
            if vm.alive():
                r = vm.run("dmesg", timeout=20)
                (rec.workdir / "dmesg.txt").write_text(r.stdout)
        except GuestError:
            pass
        vm.stop()
        text = (rec.workdir / "console.log").read_text(errors="replace") if (rec.workdir / "console.log").exists() else ""
        rec.splats = [self._splat_dict(s) for s in consolemod.find_splats(text)]

    def close(self) -> None:
        self._retire("end of run")

    def __enter__(self) -> "Suite":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------ cases
    def run_one(self, case_id: str) -> CaseResult:
        exp = self.expectations[case_id]
        if exp.topology not in ("default", *self.cfg.topologies):
            raise ConfigError(f"case {case_id} needs topology {exp.topology!r}, which rig.yaml does not define")
        if self.vm and self.boots[-1].topology != exp.topology:
            self._retire(f"next case needs topology {exp.topology}")
        vm = self.vm if self.vm and self.vm.alive() else self._boot(exp.topology)
        boot = self.boots[-1].boot
        timeout = float(self.cfg.probes.case_timeout_s)
        self.progress.update(f"{case_id}")
        guest_lost = ""
        t0 = time.monotonic()
        during = (lambda: self._host_action(vm, case_id, exp.host_action)) if exp.host_action else None
        try:
            run = probesmod.run_case(vm, case_id, timeout, during=during)
        except GuestError as e:
            guest_lost = str(e)
            run = probesmod.CaseRun(case_id, None, "", time.monotonic() - t0, "")
        # the end marker reaches the console a little after SSH returns
        assert vm.console
        vm.console.wait_for(f"p2pdma-rig: end {case_id}", 3.0 if not guest_lost else 1.0,
                            stop_if=lambda: not vm.alive())
        text = vm.console.text()
        sl = consolemod.case_slices(text).get(case_id)
        lines = text.splitlines()
        splats = consolemod.splats_in(consolemod.find_splats(text), sl) if sl else []
        dmesg = sl.text(lines) if sl else ""

        problem = run.problem
        if guest_lost or not vm.alive():
            why = guest_lost or "QEMU exited"
            problem = f"the guest stopped answering during the case ({why})"
        if splats:
            problem = (problem + "; " if problem else "") + "kernel splat: " + "; ".join(s.title for s in splats)
        judgement = judge(exp, run.result, self.cfg.probes.semantics, problem, dmesg)
        verdict = judgement.verdict
        result = CaseResult(
            id=case_id, area=exp.area, description=self.probe_set.cases.get(case_id, ""), section=exp.section,
            verdict=verdict, expected=judgement.expected,
            observed=(run.result or {}).get("obs") if run.result else None,
            mismatches=judgement.mismatches, reason=judgement.reason, duration_s=round(run.duration_s, 3),
            boot=boot, dmesg=dmesg, splats=[self._splat_dict(s) for s in splats],
            known_issue=exp.known_issue.id if exp.known_issue else None,
        )
        self.results.append(result)
        if guest_lost or not vm.alive() or any(consolemod.is_crash(s.kind, s.fatal) for s in splats):
            # the kernel is not to be trusted any more: next case gets a fresh VM
            self._retire(f"after {case_id}: {problem}")
        elif exp.host_action:
            self._retire(f"after {case_id}: the host changed the machine ({exp.host_action})")
        return result

    def _host_action(self, vm: RunningVM, case_id: str, action: str) -> None:
        """Wait for the probe's ready marker, then act on the machine through QMP."""
        assert vm.console
        if not vm.console.wait_for(f"p2pdma-rig: ready {case_id}", 60, stop_if=lambda: not vm.alive()):
            return  # the probe never got ready; it reports why itself
        verb, target = action.split()
        vm.qmp(verb, id=target)

    def run_all(self, case_ids: list[str]) -> list[CaseResult]:
        for n, cid in enumerate(case_ids, 1):
            r = self.run_one(cid)
            self.progress.note(f"[{n:3d}/{len(case_ids)}] {r.verdict.upper():5s} {cid}"
                               + (f"  ({r.reason[:90]})" if r.verdict not in ("pass",) and r.reason else ""))
        return self.results
