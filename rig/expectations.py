"""guest-tests/expectations.yaml -> expectations and known issues -> a verdict for an observation. Pure."""
from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from rig.behaviour_doc import DOC_REL, section_numbers, sections as doc_sections
from rig.config import REPO_ROOT
from rig.errors import ConfigError
from rig.model import Verdict

EXPECTATIONS_FILE = REPO_ROOT / "guest-tests" / "expectations.yaml"

HOST_ACTIONS = ("device_del",)
CASE_KEYS = {"section", "expect", "expect_v3", "dmesg", "topology", "host_action", "manual", "allow_splats",
             "allow_dmesg"}


@dataclass(frozen=True)
class KnownIssue:
    id: str
    cases: tuple[str, ...]
    reason: str
    section: str
    # what the buggy kernel shows (same form as `expect`): XFAIL only when the observation matches it
    signature: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Expectation:
    case_id: str
    section: str
    expect: dict
    expect_v3: dict | None = None
    known_issue: KnownIssue | None = None
    dmesg: tuple[str, ...] = ()  # regexes that must match a line the kernel logged during the case
    topology: str = "default"  # the machine the case needs (rig.yaml `topologies`)
    # done by the host once the probe logs "p2pdma-rig: ready <id>": "device_del <qdev id>" (QMP)
    host_action: str = ""
    # run only when selected by their exact id (-k): cases that crash or hang the guest on purpose (self-tests)
    manual: bool = False
    # regexes (re.fullmatch) of splat titles this case provokes on purpose; any other splat fails it
    allow_splats: tuple[str, ...] = ()

    # regexes (re.search) of kernel messages at warning level or worse that the case may log; the `dmesg`
    # patterns count too. Any other such message fails the case: the kernel complained about something.
    allow_dmesg: tuple[str, ...] = ()

    def allows(self, splat_title: str) -> bool:
        return any(re.fullmatch(p, splat_title) for p in self.allow_splats)

    def unexpected_messages(self, messages: tuple[str, ...] | list[str]) -> list[str]:
        patterns = self.dmesg + self.allow_dmesg
        return [m for m in messages if not any(re.search(p, m) for p in patterns)]

    @property
    def area(self) -> str:
        return self.case_id.split(".", 1)[0]

    def for_semantics(self, semantics: str) -> dict:
        if semantics == "v3" and self.expect_v3 is not None:
            return self.expect_v3
        return self.expect


@dataclass(frozen=True)
class Judgement:
    verdict: Verdict
    expected: dict
    mismatches: list[str] = field(default_factory=list)
    reason: str = ""


def load_expectations(path: Path = EXPECTATIONS_FILE) -> dict[str, Expectation]:
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"cannot read expectations {path}: {e}")
    if not isinstance(data, dict) or not isinstance(data.get("cases"), dict):
        raise ConfigError(f"{path}: needs a 'cases' mapping")
    issues: dict[str, KnownIssue] = {}
    for raw in data.get("known_issues") or []:
        if not isinstance(raw.get("signature"), dict) or not raw["signature"]:
            raise ConfigError(f"{path}: known issue {raw.get('id')} needs a 'signature': the observation keys the "
                              "buggy kernel shows (same form as 'expect'), so that only that bug is XFAIL")
        issue = KnownIssue(raw["id"], tuple(raw["cases"]), " ".join(str(raw["reason"]).split()),
                           str(raw.get("section", "")), dict(raw["signature"]))
        for cid in issue.cases:
            if cid not in data["cases"]:
                raise ConfigError(f"{path}: known issue {issue.id} names unknown case {cid}")
            issues[cid] = issue
    out: dict[str, Expectation] = {}
    doc = doc_sections()  # {} without the file: nothing to check against
    for cid, raw in data["cases"].items():
        if "." not in cid or not isinstance(raw, dict) or not isinstance(raw.get("expect"), dict):
            raise ConfigError(f"{path}: case {cid!r} needs an 'area.name' id and an 'expect' mapping")
        if not raw.get("section"):
            raise ConfigError(f"{path}: case {cid!r} needs a 'section' of {DOC_REL}")
        missing = [n for n in section_numbers(raw["section"]) if doc and n not in doc]
        if missing:
            raise ConfigError(f"{path}: case {cid!r}: section {', '.join(missing)} is not a heading of {DOC_REL}")
        unknown = set(raw) - CASE_KEYS
        if unknown:
            raise ConfigError(f"{path}: case {cid!r} has unknown key(s) {', '.join(sorted(unknown))}")
        lists = {key: _regexes(raw.get(key), f"{path}: case {cid!r}: {key}")
                 for key in ("allow_splats", "allow_dmesg", "dmesg")}
        out[cid] = Expectation(cid, str(raw["section"]), raw["expect"], raw.get("expect_v3"), issues.get(cid),
                               lists["dmesg"], str(raw.get("topology", "default")),
                               str(raw.get("host_action", "")), bool(raw.get("manual", False)),
                               lists["allow_splats"], lists["allow_dmesg"])
        action = out[cid].host_action.split()
        if action and (action[0] not in HOST_ACTIONS or len(action) != 2):
            raise ConfigError(f"{path}: case {cid!r}: host_action must be one of "
                              f"{', '.join(a + ' <qdev id>' for a in HOST_ACTIONS)}")
    return out


@dataclass(frozen=True)
class MessageRules:
    """Kernel messages at warning level or worse that the rig's machines print without any fault of the kernel
    under test: `anywhere` (QEMU/TCG timing noise) and `outside_cases` (normal at boot on these machines)."""

    anywhere: tuple[str, ...] = ()
    outside_cases: tuple[str, ...] = ()

    def unexpected(self, messages, in_case: bool) -> list[str]:
        patterns = self.anywhere + (() if in_case else self.outside_cases)
        return [m for m in messages if not any(re.search(p, m) for p in patterns)]


def load_message_rules(path: Path = EXPECTATIONS_FILE) -> MessageRules:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"cannot read expectations {path}: {e}")
    raw = data.get("kernel_messages") or {}
    unknown = set(raw) - {"anywhere", "outside_cases"}
    if unknown:
        raise ConfigError(f"{path}: kernel_messages has unknown key(s) {', '.join(sorted(unknown))}")
    return MessageRules(_regexes(raw.get("anywhere"), f"{path}: kernel_messages.anywhere"),
                        _regexes(raw.get("outside_cases"), f"{path}: kernel_messages.outside_cases"))


def _regexes(value: Any, where: str) -> tuple[str, ...]:
    """A YAML list of regexes (absent = none), each one compiled once to be sure it is one."""
    value = value or []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where} must be a list of regexes")
    for v in value:
        try:
            re.compile(v)
        except re.error as e:
            raise ConfigError(f"{where} entry {v!r} is not a regex: {e}")
    return tuple(value)


def _matches(expected: Any, observed: Any) -> bool:
    if isinstance(expected, dict):
        if "one_of" in expected:
            return observed in expected["one_of"]
        if isinstance(observed, bool) or not isinstance(observed, (int, float)):
            return False
        return expected.get("min", observed) <= observed <= expected.get("max", observed)
    if isinstance(expected, bool) or isinstance(observed, bool):
        return expected is observed
    return expected == observed


def compare(expected: dict, observed: dict) -> list[str]:
    """One line per expected key that the observation does not satisfy."""
    out = []
    for key, want in expected.items():
        if key not in observed:
            out.append(f"{key}: expected {want!r}, not reported by the probe")
        elif not _matches(want, observed[key]):
            out.append(f"{key}: expected {want!r}, observed {observed[key]!r}")
    return out


def judge(exp: Expectation, probe_result: dict | None, semantics: str = "merged", problem: str = "",
          dmesg: str = "") -> Judgement:
    """Verdict for one case. `problem` is what went wrong around the probe (timeout, crash, splat);
    `dmesg` is what the kernel logged during the case."""
    expected = exp.for_semantics(semantics)
    if exp.dmesg:
        expected = {**expected, "dmesg": list(exp.dmesg)}
    if problem:
        return Judgement(Verdict.ERROR if probe_result is None else Verdict.FAIL, expected, [], problem)
    if probe_result is None:
        return Judgement(Verdict.ERROR, expected, [], "the probe printed no result")
    if "skip" in probe_result:
        return Judgement(Verdict.SKIP, expected, [], str(probe_result["skip"]))
    if "error" in probe_result:
        return Judgement(Verdict.ERROR, expected, [], f"probe could not run: {probe_result['error']}")
    observed = probe_result.get("obs") or {}
    mismatches = compare(exp.for_semantics(semantics), observed)
    for pattern in exp.dmesg:
        if not re.search(pattern, dmesg):
            mismatches.append(f"dmesg: expected a line matching {pattern!r}, none logged during the case")
    issue = exp.known_issue
    if issue:
        if not mismatches:
            return Judgement(Verdict.XPASS, expected, [], f"known issue {issue.id} did not show: the kernel may fix it")
        off_signature = compare(issue.signature, observed)
        if not off_signature:
            return Judgement(Verdict.XFAIL, expected, mismatches, f"known issue {issue.id}: {issue.reason}")
        # neither correct nor the known bug: a new wrong behaviour
        return Judgement(Verdict.FAIL, expected, mismatches + [f"not the known issue {issue.id} either: " + m
                                                             for m in off_signature],
                         f"neither the correct behaviour nor the signature of known issue {issue.id}")
    return Judgement(Verdict.FAIL if mismatches else Verdict.PASS, expected, mismatches)


def select_cases(expectations: dict[str, Expectation], patterns: tuple[str, ...] | list[str]) -> list[str]:
    """Cases whose id matches a pattern (glob or substring); no pattern = every case but the manual ones.
    A manual case (it crashes or hangs the guest on purpose) is run only when a pattern is its exact id."""
    out = []
    for cid, exp in expectations.items():
        if exp.manual:
            if cid in patterns:
                out.append(cid)
        elif not patterns or any(fnmatch.fnmatchcase(cid, p) or p in cid for p in patterns):
            out.append(cid)
    return out
