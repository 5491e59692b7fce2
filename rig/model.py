"""Typed values that flow from the VM stage to the results stage: verdicts, splats, case and boot records.

The runner and the race controller produce them; results.py, report.py and the tests read them. Nothing here
runs anything."""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path

from rig.console import Splat, is_crash
from rig.kernel import KernelManifest
from rig.records import from_json, to_json


class Verdict(str, enum.Enum):
    """A case's verdict. A str, so JSON, KTAP and comparisons with plain strings keep working."""

    PASS = "pass"
    FAIL = "fail"
    XFAIL = "xfail"  # the known bug showed, with its signature
    XPASS = "xpass"  # the correct behaviour showed on a case with a known bug: the kernel may fix it
    SKIP = "skip"
    ERROR = "error"  # the probe could not run or the guest was lost: no observation to judge

    def __str__(self) -> str:
        return self.value

    @property
    def failing(self) -> bool:
        return self in (Verdict.FAIL, Verdict.ERROR)


VERDICTS = tuple(v.value for v in Verdict)
FAILING = tuple(v.value for v in Verdict if v.failing)


class Standing(str, enum.Enum):
    """Where a kernel report stands, set by rig/judge.py: it counts against its case (or scenario, or boot), its
    case's expectation declares it (allow_splats), or it is its owner's known issue (the owner is XFAIL, and
    the run is no crash for it)."""

    COUNTS = "counts"
    ALLOWED = "allowed"
    KNOWN_ISSUE = "known issue"


@dataclass
class SplatRecord:
    """One kernel report as the run keeps it: where it was, who it belongs to, its decoded trace."""

    kind: str
    title: str
    fatal: bool
    line: int  # index of the report's first line in its boot's console
    text: str
    boot: int
    owner: str = ""  # the case (or race scenario) whose console slice holds it; "" = outside every slice
    allowed: bool = False  # declared by the owner's expectation (allow_splats): shown, not a failure
    decoded: str = ""
    decoded_note: str = ""
    # the owner's known issue whose report this is: its case is XFAIL, and the run is no crash for it
    known_issue: str = ""

    @property
    def crash(self) -> bool:
        return is_crash(self.kind, self.fatal)

    @property
    def standing(self) -> Standing:
        if self.allowed:
            return Standing.ALLOWED
        return Standing.KNOWN_ISSUE if self.known_issue else Standing.COUNTS

    @property
    def counts(self) -> bool:
        return self.standing is Standing.COUNTS

    @property
    def standing_note(self) -> str:
        """' (allowed by the expectation)', ' (known issue ID)', or '' for a report that counts: after its title
        in every output."""
        return {Standing.ALLOWED: " (allowed by the expectation)", Standing.COUNTS: "",
                Standing.KNOWN_ISSUE: f" (known issue {self.known_issue})"}[self.standing]

    @classmethod
    def from_json(cls, data: dict, where: str = "splat") -> "SplatRecord":
        return from_json(cls, data, where)

    @classmethod
    def of(cls, splat: Splat, boot: int, owner: str = "", allowed: bool = False, decoded: str = "",
           decoded_note: str = "") -> "SplatRecord":
        return cls(splat.kind, splat.title, splat.fatal, splat.line, splat.text, boot, owner, allowed, decoded,
                   decoded_note)


@dataclass
class CaseResult:
    id: str
    area: str
    description: str
    section: str
    verdict: Verdict
    expected: dict
    observed: dict | None
    mismatches: list[str]
    reason: str
    duration_s: float
    boot: int
    dmesg: str
    splats: list[SplatRecord] = field(default_factory=list)
    known_issue: str | None = None
    known_issue_component: str = ""  # whose bug the known issue is: "kernel" or "qemu"

    def failure_text(self) -> str:
        lines = [f"{self.id}: {self.verdict}" + (f" ({self.reason})" if self.reason else "")]
        lines.append(f"  expected: {self.expected}")
        lines.append(f"  observed: {self.observed}")
        lines += [f"  mismatch: {m}" for m in self.mismatches]
        for s in self.splats:
            lines.append(f"  splat{s.standing_note}: {s.title}")
            if s.decoded:
                lines.append(f"  decoded trace of {s.title} (scripts/decode_stacktrace.sh):")
                lines += ["    " + ln for ln in s.decoded.splitlines()[:80]]
            elif s.text and s.counts:
                lines += ["    " + ln for ln in s.text.splitlines()[:40]]
        if self.dmesg:
            lines.append("  dmesg during the case:")
            lines += ["    " + ln for ln in self.dmesg.splitlines()[-40:]]
        return "\n".join(lines)

    @property
    def failing_splats(self) -> list[SplatRecord]:
        """The case's reports that count against it: neither allowed nor its known issue's."""
        return [s for s in self.splats if s.counts]

    @classmethod
    def from_json(cls, data: dict, where: str = "case") -> "CaseResult":
        return from_json(cls, data, f"{where} {data.get('id', '?')}")


@dataclass
class BootRecord:
    boot: int
    topology: str
    workdir: Path
    ready_s: float | None
    accel: str
    qemu_cmdline: str
    splats: list[SplatRecord] = field(default_factory=list)  # every report of this boot's console
    ended_by: str = ""

    def unjudged(self, judged_lines: set[int]) -> list[SplatRecord]:
        """The reports no case or scenario was judged on (by console line): every splat counts, these in the
        boot's own `kernel.console` result."""
        return [s for s in self.splats if s.line not in judged_lines]

    def to_json(self) -> dict:
        """As results.json keeps a boot (its reports go to the run's own `splats` list)."""
        return {"boot": self.boot, "topology": self.topology, "ready_s": self.ready_s, "accel": self.accel,
                "ended_by": self.ended_by, "qemu_cmdline": self.qemu_cmdline, "dir": str(self.workdir)}

    @classmethod
    def from_json(cls, data: dict, splats: list[SplatRecord], where: str = "boot") -> "BootRecord":
        boot = from_json(_BootJson, data, where)
        return cls(boot.boot, boot.topology, Path(boot.dir), boot.ready_s, boot.accel, boot.qemu_cmdline,
                   [s for s in splats if s.boot == boot.boot], boot.ended_by)


@dataclass(frozen=True)
class _BootJson:
    boot: int
    topology: str = "default"
    ready_s: float | None = None
    accel: str = ""
    ended_by: str = ""
    qemu_cmdline: str = ""
    dir: str = ""


@dataclass(frozen=True)
class RunManifest:
    """What made a run (manifest.json, and `manifest` in results.json)."""

    rig_version: str = ""
    run_id: str = ""
    command: tuple[str, ...] = ()
    config_file: str = ""
    started: str = ""  # UTC, %Y-%m-%dT%H:%M:%SZ
    ended: str = ""
    kernel: KernelManifest = KernelManifest()
    image: dict = field(default_factory=dict)  # the image's recipe: key, suite, packages, size_mb...
    semantics: str = ""
    selection: tuple[str, ...] = ()
    shuffle_seed: int | None = None
    host: dict = field(default_factory=dict)  # hostname, cpus, kernel, python, qemu
    accel: str | None = None
    qemu_cmdlines: tuple[str, ...] = ()
    reproduce: str = ""
    disks: str | None = None  # kept with --keep-disks


@dataclass
class RunRecord:
    """A run directory's results.json, read back into the types the run wrote it from."""

    summary: dict
    exit_code: int
    cases: list[CaseResult]
    boots: list[BootRecord]
    manifest: RunManifest

    @property
    def splats(self) -> list[SplatRecord]:
        """Every report of every boot's console."""
        return [s for b in self.boots for s in b.splats]

    def to_json(self) -> dict:
        return {"summary": self.summary, "exit_code": self.exit_code, "cases": to_json(self.cases),
                "splats": to_json(self.splats), "boots": [b.to_json() for b in self.boots],
                "manifest": to_json(self.manifest)}

    @classmethod
    def from_json(cls, data: dict, where: str = "results.json") -> "RunRecord":
        splats = [SplatRecord.from_json(s, f"{where}: splats[{i}]") for i, s in enumerate(data.get("splats") or [])]
        return cls(dict(data.get("summary") or {}), int(data.get("exit_code", 0)),
                   [CaseResult.from_json(c, f"{where}: case") for c in data.get("cases") or []],
                   [BootRecord.from_json(b, splats, f"{where}: boot") for b in data.get("boots") or []],
                   from_json(RunManifest, data.get("manifest") or {}, f"{where}: manifest"))
