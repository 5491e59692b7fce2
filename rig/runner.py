"""Runs probe cases in VMs with isolation: a case that crashes or hangs the guest, or leaves the machine in
another state than it found it, fails alone; the rig boots a fresh VM and goes on. Every kernel report counts:
one inside a case judges that case, one outside every case fails the boot's `kernel.console` result.
Shared by `rig run` and the pytest session fixture."""
from __future__ import annotations

import random
import threading
import time

from rig import probes as probesmod
from rig.config import RigConfig
from rig.errors import ConfigError, GuestError
from rig.expectations import Expectation, MessageRules, load_boot_known_issues, load_message_rules
from rig.image import GuestImage, SshKey
from rig.judge import CaseEvidence, judge_case, judge_console
from rig.kernel import KernelBuild
from rig.model import BootRecord, CaseResult, Verdict
from rig.progress import Progress
from rig.session import VMSession
from rig.vm import RunningVM

def run_order(case_ids: list[str], expectations: dict[str, Expectation], shuffle_seed: int | None) -> list[str]:
    """Cases grouped by the machine they need (one boot per topology, in first-use order); with a seed, the
    cases of each group in a random order that the seed repeats."""
    groups: dict[str, list[str]] = {}
    for cid in case_ids:
        groups.setdefault(expectations[cid].topology, []).append(cid)
    rng = random.Random(shuffle_seed)
    out: list[str] = []
    for ids in groups.values():
        if shuffle_seed is not None:
            rng.shuffle(ids)
        out += ids
    return out


def upcoming_boots(case_ids: list[str], i: int, expectations: dict[str, Expectation]) -> list[str]:
    """The topologies of the VMs the cases from case_ids[i] on will certainly need after the one case i runs
    in: one per change of topology, and the same topology again after a case with a host action (it always
    ends its VM). Pure."""
    out: list[str] = []
    current = expectations[case_ids[i]].topology
    for prev, cid in zip(case_ids[i:], case_ids[i + 1:]):
        exp = expectations[cid]
        if exp.skip:
            continue
        if exp.topology != current or expectations[prev].host_action:
            out.append(exp.topology)
            current = exp.topology
    return out


class Suite:
    def __init__(self, cfg: RigConfig, kernel: KernelBuild, image: GuestImage, key: SshKey, run_dir,
                 expectations: dict[str, Expectation], probe_set: probesmod.ProbeSet,
                 progress: Progress | None = None, disks=None, keep_disks: bool = False):
        self.cfg = cfg
        self.expectations = expectations
        self.probe_set = probe_set
        self.progress = progress or Progress("run")
        # every VM gets its case server (with the probes) as soon as it is up, booted ahead or not
        self.session = VMSession(cfg, kernel, image, key, run_dir, self.progress,
                                 prepare=lambda vm, _scratch: self._start_server(vm),
                                 on_retire=self._judge_console, disks=disks, keep_disks=keep_disks)
        self.results: list[CaseResult] = []
        self.message_rules: MessageRules = load_message_rules()
        self.boot_issues = load_boot_known_issues()
        self.release = kernel.manifest.kernelrelease
        # per boot: the kernel's messages at warning level or worse outside every case (boot, between cases)
        self._outside_messages: dict[int, list[str]] = {}
        self._servers: dict[int, probesmod.CaseServer] = {}  # boot number -> the case server of that VM
        self._servers_lock = threading.Lock()
        # the run's design (for_kernel chose one for every case): where the probes map P2P memory from
        designs = {e.semantics for e in expectations.values()}
        self.memory = probesmod.MEMORY_OF[designs.pop() if len(designs) == 1 else "merged"]
        # how many of the VMs the next cases need boot while the current one runs its cases (machine.boot_ahead)
        self.boot_ahead = cfg.machine.boot_ahead

    def _start_server(self, vm: RunningVM) -> probesmod.CaseServer:
        """The session's preparation of every new VM (in a worker thread for one booted ahead)."""
        server = probesmod.CaseServer(vm, self.probe_set, self.memory).start()
        with self._servers_lock:
            self._servers[vm.boot] = server
        return server

    def _server_for(self, vm: RunningVM) -> probesmod.CaseServer:
        """The VM's case server, started when the VM came up (_start_server); the servers of retired VMs closed."""
        with self._servers_lock:
            for boot in [b for b, s in self._servers.items() if not s.vm.alive()]:
                self._servers.pop(boot).close()
            server = self._servers.get(vm.boot)
        return server or self._start_server(vm)

    @property
    def boots(self) -> list[BootRecord]:
        return self.session.boots

    def close(self) -> None:
        with self._servers_lock:
            for server in self._servers.values():
                server.close()
            self._servers.clear()
        self.session.close()

    def __enter__(self) -> "Suite":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------ cases
    def run_one(self, case_id: str) -> CaseResult:
        exp = self.expectations[case_id]
        if exp.skip:
            # the case means nothing on this design (expectations.yaml says why): not run, never a pass
            result = CaseResult(id=case_id, area=exp.area, description=self.probe_set.cases.get(case_id, ""),
                                section=exp.section, verdict=Verdict.SKIP, expected=exp.expect, observed=None,
                                mismatches=[], reason=f"not on the {exp.semantics} design: {exp.skip}",
                                duration_s=0.0, boot=0, dmesg="", splats=[], known_issue=None)
            self.results.append(result)
            return result
        if exp.topology not in ("default", *self.cfg.topologies):
            raise ConfigError(f"case {case_id} needs topology {exp.topology!r}, which rig.yaml does not define")
        vm = self.session.vm_for(exp.topology)
        boot = self.boots[-1].boot
        timeout = float(self.cfg.probes.case_timeout_s)
        self.progress.update(f"{case_id}")
        guest_lost = ""
        t0 = time.monotonic()
        during = (lambda: self._host_action(vm, case_id, exp.host_action)) if exp.host_action else None
        try:
            run = self._server_for(vm).run(case_id, timeout, during=during)
        except GuestError as e:
            guest_lost = str(e)
            run = probesmod.CaseRun(case_id, None, "", time.monotonic() - t0, "")
        # the end marker reaches the console a little after SSH returns
        assert vm.console
        vm.console.wait_for(f"p2pdma-rig: end {case_id}", 3.0 if not guest_lost else 1.0,
                            stop_if=lambda: not vm.alive())
        found, dmesg = self.session.slice_splats(case_id)
        self._outside_messages.setdefault(boot, []).extend(run.kernel_warnings_before)
        evidence = CaseEvidence(run.result, run.problem, guest_lost or ("" if vm.alive() else "QEMU exited"),
                                [self.session.record(s, boot, owner=case_id) for s in found], dmesg,
                                list(run.kernel_warnings), list(run.state_changes), bool(exp.host_action))
        judgement = judge_case(exp, evidence, self.message_rules)
        self.session.decode([s for s in evidence.splats if s.counts])
        result = CaseResult(
            id=case_id, area=exp.area, description=self.probe_set.cases.get(case_id, ""), section=exp.section,
            verdict=judgement.verdict, expected=judgement.expected, observed=evidence.observed,
            mismatches=judgement.mismatches, reason=judgement.reason, duration_s=round(run.duration_s, 3),
            boot=boot, dmesg=dmesg, splats=evidence.splats,
            known_issue=exp.known_issue.id if exp.known_issue else None,
            known_issue_component=exp.known_issue.component if exp.known_issue else "",
        )
        self.results.append(result)
        if evidence.guest_lost or any(s.crash and not s.allowed for s in evidence.splats):
            # the kernel is not to be trusted any more (a known bug's crash included): next case gets a fresh VM
            self.session.retire(f"after {case_id}: {judgement.reason}")
        elif run.state_changes and not exp.host_action:
            self.session.retire(f"after {case_id}: it left the machine changed, the next case gets a fresh one")
        elif exp.host_action:
            self.session.retire(f"after {case_id}: the host changed the machine ({exp.host_action})")
        return result

    def _host_action(self, vm: RunningVM, case_id: str, action: str) -> None:
        """Wait for the probe's ready marker, then act on the machine through QMP."""
        assert vm.console
        if not vm.console.wait_for(f"p2pdma-rig: ready {case_id}", 60, stop_if=lambda: not vm.alive()):
            return  # the probe never got ready; it reports why itself
        verb, target = action.split()
        vm.qmp(verb, id=target)

    def _judge_console(self, rec: BootRecord) -> None:
        result = judge_console(rec, self.results, self.expectations, self._outside_messages.get(rec.boot, []),
                               self.message_rules, self.boot_issues, self.release)
        self.session.decode([s for s in result.splats if s.counts])
        self.results.append(result)
        if result.verdict != Verdict.PASS:
            self.progress.note(f"boot {rec.boot}: {result.reason}")

    def run_all(self, case_ids: list[str]) -> list[CaseResult]:
        for n, cid in enumerate(case_ids, 1):
            r = self.run_one(cid)
            # after the case, so that the VM in use booted first (and has the lower boot number)
            if self.boot_ahead:
                for topology in upcoming_boots(case_ids, n - 1, self.expectations)[:self.boot_ahead]:
                    if not self.session.prefetch(topology):
                        break  # in order: the next machine first
            self.progress.note(f"[{n:3d}/{len(case_ids)}] {r.verdict.upper():5s} {cid}"
                               + (f"  ({r.reason[:90]})" if r.verdict != Verdict.PASS and r.reason else ""))
        return self.results
