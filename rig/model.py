"""Typed values that flow from the VM stage to the results stage: verdicts, splats, case and boot records.

The runner and the race controller produce them; results.py, report.py and the tests read them. Nothing here
runs anything."""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path

from rig.console import Splat, is_crash


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


def splat_standing(allowed: bool, known_issue: str) -> str:
    """' (allowed by the expectation)', ' (known issue ID)' or '' for a splat that counts (SplatRecord's fields,
    also as results.json keeps them)."""
    if allowed:
        return " (allowed by the expectation)"
    return f" (known issue {known_issue})" if known_issue else ""


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
    def standing(self) -> str:
        """Why it fails nothing, for a report line ("" = it counts)."""
        return splat_standing(self.allowed, self.known_issue)

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

    def failure_text(self) -> str:
        lines = [f"{self.id}: {self.verdict}" + (f" ({self.reason})" if self.reason else "")]
        lines.append(f"  expected: {self.expected}")
        lines.append(f"  observed: {self.observed}")
        lines += [f"  mismatch: {m}" for m in self.mismatches]
        for s in self.splats:
            lines.append(f"  splat{s.standing}: {s.title}")
            if s.decoded:
                lines.append(f"  decoded trace of {s.title} (scripts/decode_stacktrace.sh):")
                lines += ["    " + ln for ln in s.decoded.splitlines()[:80]]
            elif s.text and not s.standing:
                lines += ["    " + ln for ln in s.text.splitlines()[:40]]
        if self.dmesg:
            lines.append("  dmesg during the case:")
            lines += ["    " + ln for ln in self.dmesg.splitlines()[-40:]]
        return "\n".join(lines)

    @property
    def failing_splats(self) -> list[SplatRecord]:
        """The case's reports that count against it: neither allowed nor its known issue's."""
        return [s for s in self.splats if not s.standing]


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
