"""One VM session, shared by `rig run` and `rig race`: boot a machine, prepare it (upload probes or the racer),
hand it out, retire it (dmesg, QEMU stopped, console scanned to its very end) before any replacement boots,
and keep every kernel report of every boot with the slice (case or race scenario) it belongs to.

Slices come from the `p2pdma-rig: begin/end <id>` lines the guest writes to /dev/kmsg around each case or
scenario (rig.console.case_slices). A report outside every slice belongs to the boot itself."""
from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Callable

from rig import console as consolemod
from rig.config import RigConfig
from rig.errors import BootError, GuestError
from rig.image import GuestImage, SshKey
from rig.kernel import KernelBuild, decode_stacktrace, has_dwarf
from rig.model import BootRecord, SplatRecord
from rig.progress import Progress
from rig.vm import DiskDir, RunningVM, launch_vm, start_vm

NO_DWARF_NOTE = ("this kernel has no DWARF (CONFIG_DEBUG_INFO off), so file:line shows as '?'; run with "
                 "--profile debug to get them")


class VMSession:
    def __init__(self, cfg: RigConfig, kernel: KernelBuild, image: GuestImage, key: SshKey, run_dir: Path,
                 progress: Progress, prepare: Callable[[RunningVM, Path], None] | None = None,
                 on_retire: Callable[[BootRecord], None] | None = None, disks: Path | None = None,
                 keep_disks: bool = False):
        self.cfg, self.kernel, self.image, self.key = cfg, kernel, image, key
        self.run_dir = run_dir
        # each boot's overlay, NVMe backing files and upload bundle go to <disks>/boot-N/, never the run
        # directory; without `disks` the session makes a temporary one and removes it when closed
        self._own_disks = None if disks else DiskDir(run_dir.name, keep_disks)
        self.disks = disks or self._own_disks.path
        self.progress = progress
        self._prepare = prepare  # called on every new VM, with its boot's scratch directory, before it is used
        self.on_retire = on_retire  # called with the boot's record once its console is scanned to the end
        self.vm: RunningVM | None = None
        self.boots: list[BootRecord] = []
        self._decoded: dict[str, Future] = {}  # splat text -> its decoded trace (decode_stacktrace.sh), coming
        self._decoder: ThreadPoolExecutor | None = None
        self._booted = 0  # boot numbers handed out (a VM booted ahead takes its number when it starts)
        # VMs booting ahead of their turn (prefetch): topology -> (the VM, its wait for SSH and preparation)
        self._ahead: dict[str, tuple[RunningVM, Future]] = {}
        self._pool: ThreadPoolExecutor | None = None

    # ------------------------------------------------------------ VMs
    @property
    def topology(self) -> str:
        return self.boots[-1].topology if self.vm and self.boots else ""

    def vm_for(self, topology: str) -> RunningVM:
        """The running VM if it has this topology and lives; else the old one retired and a new one booted."""
        if self.vm is not None:
            if not self.vm.alive():
                self.retire("QEMU exited")
            elif self.topology != topology:
                self.retire(f"next work needs topology {topology}")
        return self.vm or self._take_ahead(topology) or self._boot(topology)

    def prefetch(self, topology: str) -> bool:
        """Boot a VM of `topology` now, in the background (SSH wait and preparation in a worker thread), for a
        later vm_for(topology): its boot overlaps the cases of the VM in use. One per topology at a time, and
        no more than machine.boots_at_once still booting: the caller asks again after every case, and a later
        call starts it. False when it was not started now."""
        if topology in self._ahead:
            return True
        if sum(not fut.done() for _vm, fut in self._ahead.values()) >= self.cfg.machine.boots_at_once:
            return False
        n = self._booted = self._booted + 1
        workdir, scratch = self.run_dir / f"boot-{n}", self.disks / f"boot-{n}"
        vm = launch_vm(self.cfg.machine_for(topology), self.kernel, self.image, self.key, workdir, boot=n,
                       disks=scratch)  # QEMU is started by this (the main) thread: it dies with it
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="boot-ahead")

        def ready() -> None:
            vm.wait_ready(vm.boot_timeout_s)
            if self._prepare:
                self._prepare(vm, scratch)

        self._ahead[topology] = (vm, self._pool.submit(ready))
        return True

    def _take_ahead(self, topology: str) -> RunningVM | None:
        """The VM booted ahead for this topology, once it is ready; None if there is none or it failed (its
        console log stays in its boot directory; the caller then boots one the ordinary way)."""
        if topology not in self._ahead:
            return None
        vm, fut = self._ahead.pop(topology)
        try:
            fut.result()
        except BaseException as e:  # noqa: BLE001 - a failed early boot is retried in the foreground
            vm.stop()
            self.progress.note(f"VM {vm.boot} ({topology}), booted ahead, failed ({e.__class__.__name__}: "
                               f"{str(e).splitlines()[0][:200]}); booting it again")
            self._crashed_booting(vm.boot, topology, vm.workdir)
            return None
        return self._use(vm, topology, prepared=True)

    def _boot(self, topology: str) -> RunningVM:
        """A VM of `topology` booted now. A kernel that crashes before SSH comes up gets one more boot (seen
        under TCG: boot_known_issues); its crashed boot is recorded and judged like any other."""
        for attempt in (1, 2):
            n = self._booted = self._booted + 1
            workdir, scratch = self.run_dir / f"boot-{n}", self.disks / f"boot-{n}"
            self.progress.update(f"booting VM {n} (topology {topology})")
            try:
                vm = start_vm(self.cfg.machine_for(topology), self.kernel, self.image, self.key, workdir, boot=n,
                              progress=self.progress, disks=scratch)
            except BootError:
                if attempt == 2 or not self._crashed_booting(n, topology, workdir):
                    raise
                continue
            return self._use(vm, topology, prepared=False)
        raise AssertionError("unreachable")

    def _crashed_booting(self, n: int, topology: str, workdir: Path) -> bool:
        """Record boot `n`, whose kernel left a report on its console before the machine came up: its reports
        are judged like those of any boot (on_retire). False when its console holds none (QEMU that cannot
        start, a boot that hangs: not retried)."""
        log = workdir / "console.log"
        text = log.read_text(errors="replace") if log.exists() else ""
        found = consolemod.find_splats(text)
        if not found:
            return False
        cmdline = workdir / "qemu-cmdline.txt"
        rec = BootRecord(n, topology, workdir, None, "", cmdline.read_text().strip() if cmdline.exists() else "",
                         ended_by=f"the kernel crashed while booting ({found[0].title}); booted again")
        rec.splats = [self.record(s, n) for s in found]
        self.boots.append(rec)
        self.progress.note(f"VM {n} ({topology}): {rec.ended_by}")
        if self.on_retire:
            self.on_retire(rec)
        return True

    def _use(self, vm: RunningVM, topology: str, prepared: bool) -> RunningVM:
        self.boots.append(BootRecord(vm.boot, topology, vm.workdir, vm.ready_s, vm.cmd.accel, vm.cmd.shell()))
        self.vm = vm
        ahead = " (booted ahead)" if prepared else ""
        self.progress.note(f"VM {vm.boot} ({topology}) up in {vm.ready_s:.1f}s{ahead} ({vm.cmd.accel}: "
                           f"{vm.cmd.accel_reason}); ssh: {vm.ssh_command()}")
        if self._prepare and not prepared:
            try:
                self._prepare(vm, self.disks / f"boot-{vm.boot}")
            except BaseException:
                self.retire("preparing the VM failed")
                raise
        return vm

    def retire(self, why: str) -> BootRecord | None:
        """Stop the current VM: its dmesg if it still answers, QEMU stopped, every report of its console kept."""
        vm, self.vm = self.vm, None
        if vm is None:
            return None
        rec = self.boots[-1]
        rec.ended_by = why
        if vm.alive():
            try:
                (rec.workdir / "dmesg.txt").write_text(vm.run("dmesg", timeout=20).stdout)
            except GuestError:
                pass
        vm.stop()  # the console thread drains QEMU's last output before it returns
        log = rec.workdir / "console.log"
        text = log.read_text(errors="replace") if log.exists() else ""
        slices = consolemod.case_slices(text)
        rec.splats = [self.record(s, rec.boot, owner=_owner(s, slices)) for s in consolemod.find_splats(text)]
        self.decode([s for s in rec.splats if s.text in self._decoded])  # the boot's copies of decoded reports
        if self.on_retire:
            self.on_retire(rec)
        return rec

    def close(self) -> None:
        try:
            self.retire("end of run")
        finally:
            # VMs booted ahead and never used: stopped (their wait ends with QEMU), nothing of them is judged
            for vm, fut in self._ahead.values():
                vm.stop()
                try:
                    fut.result(timeout=60)
                except BaseException:  # noqa: BLE001 - it was never used
                    pass
            self._ahead.clear()
            if self._pool is not None:
                self._pool.shutdown(wait=True)
            self.wait_decoded()
            if self._own_disks is not None:
                self._own_disks.close()

    def __enter__(self) -> "VMSession":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------ reports
    def record(self, splat: consolemod.Splat, boot: int, owner: str = "") -> SplatRecord:
        """A console report as the run keeps it; its standing is the judge's (rig/judge.py), its decoded trace
        comes from decode() for the reports that count."""
        return SplatRecord.of(splat, boot, owner)

    def decode(self, records: list[SplatRecord]) -> None:
        """The traces of these reports decoded against this kernel's vmlinux (scripts/decode_stacktrace.sh), once
        per report text, in the background: it takes one to two seconds of CPU a report. The rig decodes the
        reports that count (a failure to look into), not those a case allows or that are its known issue, whose
        raw trace is kept all the same. `decoded` is filled in by the time close() returns."""
        for rec in records:
            if rec.text not in self._decoded:
                if self._decoder is None:
                    self._decoder = ThreadPoolExecutor(max_workers=1, thread_name_prefix="decode")
                self._decoded[rec.text] = self._decoder.submit(decode_stacktrace, self.kernel, rec.text)
            self._decoded[rec.text].add_done_callback(lambda fut, rec=rec: self._fill(rec, fut))

    def _fill(self, rec: SplatRecord, fut: Future) -> None:
        try:
            rec.decoded = fut.result()
        except Exception:  # noqa: BLE001 - a trace that cannot be decoded is shown raw
            rec.decoded = ""
        rec.decoded_note = NO_DWARF_NOTE if rec.decoded and not has_dwarf(self.kernel) else ""

    def wait_decoded(self) -> None:
        """Every report's trace decoded (the results written after this have them)."""
        if self._decoder is not None:
            self._decoder.shutdown(wait=True)
            self._decoder = None

    def slice_splats(self, slice_id: str) -> tuple[list[consolemod.Splat], str]:
        """The reports in one case's (or scenario's) console slice so far, and the slice's text."""
        assert self.vm and self.vm.console
        text = self.vm.console.text()
        sl = consolemod.case_slices(text).get(slice_id)
        if sl is None:
            return [], ""
        return consolemod.splats_in(consolemod.find_splats(text), sl), sl.text(text.splitlines())


def _owner(splat: consolemod.Splat, slices: dict[str, consolemod.CaseSlice]) -> str:
    return next((cid for cid, sl in slices.items() if sl.start <= splat.line <= sl.end), "")
