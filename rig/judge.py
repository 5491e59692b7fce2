"""One judge for everything the rig runs, in one vocabulary: a case against its expectation, a boot's console
against the cases judged on it, a race scenario against its invariants and reports. Each gives a
model.Verdict, and each kernel report a model.Standing (counts, allowed, known issue); which kernels a known
issue covers is one rule for both kinds (expectations.VersionWindow).

The runner and the race controller gather what happened (the probe's result, the console's reports, the
kernel's messages, what the case left changed); only this module decides what it means."""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from rig.expectations import Expectation, MessageRules, RaceKnownIssue, compare
from rig.model import BootRecord, CaseResult, SplatRecord, Verdict

CONSOLE_AREA = "kernel"


def console_case_id(boot: int) -> str:
    return f"kernel.console.boot-{boot}"


@dataclass(frozen=True)
class Judgement:
    verdict: Verdict
    expected: dict
    mismatches: list[str] = field(default_factory=list)
    reason: str = ""


@dataclass
class CaseEvidence:
    """What happened during a case, as the runner gathered it; judge_case decides what it means."""

    result: dict | None  # the probe's result line (None: it printed none)
    probe_problem: str = ""  # what went wrong with the probe itself (a timeout, a death by signal)
    guest_lost: str = ""  # why the guest stopped answering during the case ("" = it still answers)
    splats: list[SplatRecord] = field(default_factory=list)  # the reports of the case's console slice
    dmesg: str = ""  # what the kernel logged during the case
    messages: list[str] = field(default_factory=list)  # its lines at warning level or worse
    state_changes: list[str] = field(default_factory=list)  # what the case left changed in the machine
    changes_machine: bool = False  # the host changes the machine on purpose (a host action)

    @property
    def observed(self) -> dict | None:
        return (self.result or {}).get("obs") if self.result else None


def judge_case(exp: Expectation, ev: CaseEvidence, rules: MessageRules) -> Judgement:
    """A case's verdict from its evidence. Sets each report's standing: allowed by the expectation, or the
    case's known issue when the verdict is XFAIL by that issue's `splats`."""
    for s in ev.splats:
        s.allowed = exp.allows(s.title)
    failing = [s for s in ev.splats if not s.allowed]
    problems = [ev.probe_problem] if ev.probe_problem else []
    if ev.guest_lost:
        problems.append(f"the guest stopped answering during the case ({ev.guest_lost})")
    if failing:
        problems.append("kernel splat: " + "; ".join(s.title for s in failing))
    # the kernel complaining (warning level or worse) about something the case does not declare; the lines of
    # a report are judged as that report
    complaints = [m for m in rules.unexpected(exp.unexpected_messages(ev.messages), True)
                  if not any(m in s.text for s in ev.splats)]
    if complaints:
        problems.append("unexpected kernel message(s) at warning level or worse: "
                        + "; ".join(repr(m[:160]) for m in complaints[:5]))
    # a case must leave the machine as it found it (provider bound, pool whole, nothing mounted), unless the
    # host changed it on purpose or the change is the case's known bug at work
    if ev.state_changes and not ev.changes_machine and not known_change(exp, ev.observed, ev.state_changes):
        problems.append("the case left the machine changed: " + "; ".join(ev.state_changes))
    judgement = _verdict(exp, ev.result, "; ".join(problems), ev.dmesg, tuple(s.title for s in failing))
    if judgement.verdict == Verdict.XFAIL and failing:  # only a known issue's `splats` make that an XFAIL
        for s in failing:
            s.known_issue = exp.known_issue.id
    return judgement


def _verdict(exp: Expectation, probe_result: dict | None, problem: str, dmesg: str,
             splats: tuple[str, ...]) -> Judgement:
    expected = exp.expect
    if exp.dmesg:
        expected = {**expected, "dmesg": list(exp.dmesg)}
    issue = exp.known_issue
    if issue and issue.splats:
        expected = {**expected, "splats": "none"}
        if splats and all(issue.explains(t) for t in splats):
            # the known bug's reports, and what follows them (a dead probe, a lost guest, a changed machine)
            return Judgement(Verdict.XFAIL, expected, [problem],
                             f"{issue.status(exp.kernel_release)} [{issue.id}]: {issue.reason}")
    if problem:
        # the observation is still shown against the expectation, so a report says everything that went wrong
        seen = compare(exp.expect, probe_result["obs"]) if (probe_result or {}).get("obs") else []
        return Judgement(Verdict.ERROR if probe_result is None else Verdict.FAIL, expected, seen, problem)
    if probe_result is None:
        return Judgement(Verdict.ERROR, expected, [], "the probe printed no result")
    if "skip" in probe_result:
        return Judgement(Verdict.SKIP, expected, [], str(probe_result["skip"]))
    if "error" in probe_result:
        return Judgement(Verdict.ERROR, expected, [], f"probe could not run: {probe_result['error']}")
    observed = probe_result.get("obs") or {}
    mismatches = compare(exp.expect, observed)
    for pattern in exp.dmesg:
        if not re.search(pattern, dmesg):
            mismatches.append(f"dmesg: expected a line matching {pattern!r}, none logged during the case")
    if issue:
        if not mismatches:
            return Judgement(Verdict.XPASS, expected, [], f"known issue {issue.id} did not show: the kernel may fix it")
        if issue.splats:
            return Judgement(Verdict.FAIL, expected, mismatches + [f"not the known issue {issue.id} either: none of "
                                                                 "its kernel reports"],
                             f"neither the correct behaviour nor the kernel reports of known issue {issue.id}")
        off_signature = compare(issue.signature, observed)
        if not off_signature:
            return Judgement(Verdict.XFAIL, expected, mismatches,
                             f"{issue.status(exp.kernel_release)} [{issue.id}]: {issue.reason}")
        # neither correct nor the known bug: a new wrong behaviour
        return Judgement(Verdict.FAIL, expected, mismatches + [f"not the known issue {issue.id} either: " + m
                                                             for m in off_signature],
                         f"neither the correct behaviour nor the signature of known issue {issue.id}")
    note = ""
    if exp.override is not None:
        note = f"expectation of {exp.override.since} and later ({exp.override.commit})"
    if exp.inactive_issue is not None:
        note = "; ".join(filter(None, [note, f"known issue {exp.inactive_issue.id}: "
                                             f"{exp.inactive_issue.status(exp.kernel_release)}"]))
    return Judgement(Verdict.FAIL if mismatches else Verdict.PASS, expected, mismatches, note)


def known_change(exp: Expectation, observed: dict | None, state_changes: list[str]) -> bool:
    """A case left the machine changed, and the change is its known bug at work (a leak that shows in
    `available`): the observation has the issue's signature and every changed item is one the issue names."""
    issue = exp.known_issue
    if issue is None or not issue.changes_machine or not observed:
        return False
    return issue.shown_by(observed) and all(issue.changes_machine in c for c in state_changes)


def mark_boot_issues(splats: list[SplatRecord], issues: list[RaceKnownIssue], release: str) -> None:
    """A report outside every case that is a boot known issue's (boot_known_issues) gets that standing, and so
    does the panic that follows it."""
    seen = ""
    for s in splats:
        if s.owner or s.known_issue:
            continue
        issue = race_known_issue("boot", s.title, issues, release)
        if issue:
            s.known_issue = seen = issue.id
        elif seen and s.kind == "panic":
            s.known_issue = seen


def judge_console(rec: BootRecord, results: list[CaseResult], expectations: dict[str, Expectation],
                  messages: list[str], rules: MessageRules, boot_issues: list[RaceKnownIssue] = (),
                  release: str = "") -> CaseResult:
    """A boot's own result (`kernel.console.boot-N`): every report of its console that no case was judged on (at
    boot, between cases, after the last one, a dead VM's last words, or a case's report that came late), and
    the kernel's messages at warning level or worse outside the cases. A report outside every case that a boot
    known issue names is that issue's, not a failure."""
    judged = {s.line: s for r in results if r.boot == rec.boot for s in r.splats}
    for s in rec.splats:  # the boot's record of a report keeps its case's standing
        if s.line in judged:
            s.allowed, s.known_issue = judged[s.line].allowed, judged[s.line].known_issue
    stray = rec.unjudged(set(judged))
    for s in stray:
        if s.owner:
            exp = expectations.get(s.owner)
            s.allowed = bool(exp and exp.allows(s.title))
            # a late report of the case's known bug (its verdict, XFAIL, already says so)
            owner_issue = exp.known_issue if exp else None
            verdict = next((r.verdict for r in results if r.id == s.owner and r.boot == rec.boot), None)
            if owner_issue and verdict == Verdict.XFAIL and owner_issue.explains(s.title):
                s.known_issue = owner_issue.id
    mark_boot_issues(stray, list(boot_issues), release)
    failing = [s for s in stray if s.counts]
    where = [f"{s.title} ({'in ' + s.owner + ', after its verdict' if s.owner else 'outside every case'})"
             for s in failing]
    complaints = [m for m in rules.unexpected(messages, in_case=False) if not any(m in s.text for s in stray)]
    problems = (["kernel splat outside the cases: " + "; ".join(where)] if where else []) + (
        ["unexpected kernel message(s) at warning level or worse outside the cases: "
         + "; ".join(repr(m[:160]) for m in complaints[:5])] if complaints else [])
    known = sorted({s.known_issue for s in stray if s.known_issue and not s.owner})
    return CaseResult(
        id=console_case_id(rec.boot), area=CONSOLE_AREA,
        description=f"no kernel report on boot {rec.boot}'s console outside the cases that were judged on it, "
                    "and no unexpected kernel message at warning level or worse at boot or between cases",
        section="", verdict=Verdict.FAIL if problems else Verdict.PASS, expected={"splats": [], "messages": []},
        observed={"splats": [s.title for s in stray], "messages": messages},
        mismatches=[f"splat: {w}" for w in where] + [f"message: {m}" for m in complaints],
        reason="; ".join(problems) or "; ".join(f"a boot known issue: {k}" for k in known), duration_s=0.0,
        boot=rec.boot, dmesg="", splats=stray,
    )


# How a race scenario went wrong, when it did ("" = its workers held every invariant to the end). A scenario's
# verdict is PASS, XFAIL (only reports of race_known_issues, invariants held) or FAIL with one of these.
RACE_FAILURES = ("invariant", "splat", "hang", "crash")


def race_known_issue(scenario: str, title: str, issues: list[RaceKnownIssue], release: str) -> RaceKnownIssue | None:
    return next((k for k in issues if k.matches(scenario, title, release)), None)


def judge_scenario(scenario: str, failure: str, splats: list[SplatRecord], issues: list[RaceKnownIssue],
                   release: str, alive: bool) -> tuple[Verdict, str, list[str]]:
    """A race scenario once every report of its console slice is in: (verdict, failure, the known issues it hit
    with their status). Each report that is a known issue's gets that standing (a fatal one never does); any
    other report fails the scenario, also one that came after the watcher's last look."""
    hit = []
    for s in splats:
        issue = None if s.fatal else race_known_issue(scenario, s.title, issues, release)
        if issue:
            s.known_issue = issue.id
            hit.append(issue.status(release))
    if failure in ("", "invariant") and any(s.counts for s in splats):
        failure = "crash" if any(s.fatal for s in splats) or not alive else "splat"
    if failure:
        return Verdict.FAIL, failure, sorted(set(hit))
    return (Verdict.XFAIL if hit else Verdict.PASS), "", sorted(set(hit))


def judge_race_console(rec: BootRecord, judged_lines: set[int], boot_issues: list[RaceKnownIssue] = (),
                       release: str = "") -> tuple[Verdict, str, list[SplatRecord]]:
    """A race boot's reports that no scenario was judged on (at boot, between scenarios, after the last one):
    every one counts, but those of a boot known issue."""
    stray = rec.unjudged(judged_lines)
    mark_boot_issues(stray, list(boot_issues), release)
    counting = [s for s in stray if s.counts]
    if not counting:
        return (Verdict.XFAIL if stray else Verdict.PASS), "", stray
    return Verdict.FAIL, ("crash" if any(s.crash for s in counting) else "splat"), stray
