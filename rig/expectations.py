"""guest-tests/expectations.yaml -> expectations and known issues -> a verdict for an observation. Pure."""
from __future__ import annotations

import copy
import dataclasses
import fnmatch
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from rig.behaviour_doc import DOC_REL, section_numbers, sections as doc_sections
from rig.config import REPO_ROOT
from rig.errors import ConfigError

EXPECTATIONS_FILE = REPO_ROOT / "guest-tests" / "expectations.yaml"

HOST_ACTIONS = ("device_del",)
CASE_KEYS = {"section", "expect", "expect_v3", "skip_v3", "dmesg", "topology", "host_action", "manual",
             "allow_splats", "allow_dmesg"}
# the designs of userspace P2P memory a kernel can offer (rig.kernel.p2pmem_semantics tells which one it has):
# "merged" = mmap of sysfs p2pmem/allocate (Linux 6.2 and later); "v3" = the seed's series, mmap of /dev/nvmeN
SEMANTICS = ("merged", "v3")


KNOWN_ISSUE_KEYS = {"id", "cases", "section", "signature", "reason", "seen_in", "since", "since_change",
                    "fixed_in", "fix_commit", "allow_dmesg", "semantics", "changes_machine", "splats", "with_patch",
                    "with_config", "fix", "upstream", "component"}
# whose bug a known issue is: the kernel's, or QEMU's emulation (the kernel is judged on QEMU's devices)
COMPONENTS = ("kernel", "qemu")
OVERRIDE_KEYS = {"case", "since", "commit", "reason", "expect", "dmesg", "allow_dmesg"}


_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: the table parses in 40 ms, not 200
_parsed: dict[tuple[str, float, int], Any] = {}


def _read_yaml(path: Path) -> Any:
    """The parsed file, once per content (several loaders read expectations.yaml in one run)."""
    st = path.stat()
    key = (str(path), st.st_mtime, st.st_size)
    if key not in _parsed:
        _parsed[key] = yaml.load(path.read_text(), Loader=_YAML_LOADER)
    return copy.deepcopy(_parsed[key])


def kernel_version(text: str) -> tuple[int, int, int]:
    """`7.3.4`, `6.12.117`, `7.3.0-rc7`, `7.3~rc7`, `7.3` -> (7, 3, 4) ... A release candidate counts as its
    release: a change merged for 7.0 is in 7.0-rc1. ValueError when it is not a kernel version."""
    m = re.match(r"\s*(\d+)\.(\d+)(?:\.(\d+))?", str(text))
    if not m:
        raise ValueError(f"{text!r} is not a kernel version")
    return int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)


@dataclass(frozen=True)
class VersionWindow:
    """The kernels a known bug is in, the one rule for every kind of known issue (a case's, a race scenario's):
    from `since` (the version whose change `since_change` brought it; "" = every version the rig judges) up
    to, not including, `fixed_in` (whose commit `fix_commit` fixes it; "" = not fixed upstream)."""

    since: str = ""
    since_change: str = ""
    fixed_in: str = ""
    fix_commit: str = ""
    seen_in: tuple[str, ...] = ()  # the releases the rig observed it in

    def contains(self, release: str) -> bool:
        """A kernel of unknown release has only the bugs that are in every version."""
        if not release:
            return not self.since
        v = kernel_version(release)
        if self.since and v < kernel_version(self.since):
            return False
        return not (self.fixed_in and v >= kernel_version(self.fixed_in))

    def status(self, release: str) -> str:
        """'known issue, still present in 7.3.4 (seen in ...)' / 'fixed in 7.4 (commit)' / 'not in 6.12.117: the
        bug came with 7.0'."""
        if not release:
            return "known issue (kernel release unknown)"
        if self.fixed_in and kernel_version(release) >= kernel_version(self.fixed_in):
            return f"fixed in {self.fixed_in} ({self.fix_commit})"
        if self.since and kernel_version(release) < kernel_version(self.since):
            return f"not in {release}: the bug came with {self.since}"
        fix = f"; fix upstream: {self.fix_commit}, in {self.fixed_in}" if self.fix_commit else ""
        return f"known issue, still present in {release} (seen in {', '.join(self.seen_in)}{fix})"


def _check_window(raw: dict, where: str) -> None:
    """The version keys of a known issue entry (either kind): well-formed, and each with its companion."""
    if bool(raw.get("fixed_in")) != bool(raw.get("fix_commit")):
        raise ConfigError(f"{where}: 'fixed_in' and 'fix_commit' go together (the version and the upstream commit "
                          "that fixes it)")
    if raw.get("since") and not raw.get("since_change"):
        raise ConfigError(f"{where}: 'since' needs 'since_change', the upstream change that brought the bug")
    seen = raw.get("seen_in") or []
    for key, value in [("since", raw.get("since")), ("fixed_in", raw.get("fixed_in")),
                       *[(f"seen_in[{i}]", v) for i, v in enumerate(seen)]]:
        if value:
            try:
                kernel_version(str(value))
            except ValueError as e:
                raise ConfigError(f"{where}: '{key}': {e}")


def _window(raw: dict) -> dict:
    return {"since": str(raw.get("since") or ""), "since_change": " ".join(str(raw.get("since_change") or "").split()),
            "fixed_in": str(raw.get("fixed_in") or ""), "fix_commit": " ".join(str(raw.get("fix_commit") or "").split()),
            "seen_in": tuple(str(v) for v in raw.get("seen_in") or [])}


@dataclass(frozen=True)
class KnownIssue:
    id: str
    cases: tuple[str, ...]
    reason: str
    section: str
    # what the buggy kernel shows (same form as `expect`): XFAIL only when the observation matches it
    signature: dict = field(default_factory=dict)
    # kernel releases (make kernelrelease) in which the rig observed it
    seen_in: tuple[str, ...] = ()
    # the first kernel version that has the bug ("" = every version the rig judges) and the change that
    # brought it; the issue applies from `since` up to (not including) `fixed_in`
    since: str = ""
    since_change: str = ""
    # the upstream version and commit that fix it, when there is one
    fixed_in: str = ""
    fix_commit: str = ""
    # kernel messages (warning level or worse) the buggy kernel logs with it
    allow_dmesg: tuple[str, ...] = ()
    # whose bug: "merged" (the kernel's), or "v3" (the seed's series: counts only on a kernel with its design,
    # where it takes the place of a merged issue of the same case)
    semantics: str = "merged"
    # what the bug leaves changed in the machine after the case (run_case.py's state items, e.g.
    # "p2pmem/available" for a leak): not held against the case when the observation has the signature
    changes_machine: str = ""
    # the kernel reports the bug leaves (titles, re.fullmatch): when set, the issue shows as these splats in the
    # case (with what follows them: a dead probe, a guest that stops answering), and the signature may be empty
    splats: tuple[str, ...] = ()
    # counts only on a kernel built with a patch whose subject contains this (a bug of one variant of a series)
    with_patch: str = ""
    # counts only on a kernel whose .config sets this option to y (a bug only a debug option reports: lockdep)
    with_config: str = ""
    # the rig's fix, written for submission: patch files under patches/fixes/ (one per kernel it applies to)
    fix: tuple[str, ...] = ()
    # what upstream has about it: a fix in some tree, a thread, or what was searched and not found
    upstream: str = ""
    component: str = "kernel"  # COMPONENTS

    def shown_by(self, observed: dict) -> bool:
        return not compare(self.signature, observed)

    def explains(self, splat_title: str) -> bool:
        return any(re.fullmatch(p, splat_title) for p in self.splats)

    def built_into(self, patch_subjects: tuple[str, ...], config: frozenset[str] = frozenset()) -> bool:
        """The kernel has what the issue needs: the patch it belongs to, the option that reports it."""
        return ((not self.with_patch or any(self.with_patch in s for s in patch_subjects))
                and (not self.with_config or self.with_config in config))

    @property
    def window(self) -> VersionWindow:
        return VersionWindow(self.since, self.since_change, self.fixed_in, self.fix_commit, self.seen_in)

    def applies_to(self, release: str) -> bool:
        return self.window.contains(release)

    def status(self, release: str) -> str:
        fix = f"; the rig's fix: {', '.join(self.fix)}" if self.fix and self.applies_to(release) else ""
        return self.window.status(release) + fix


@dataclass(frozen=True)
class Override:
    """An intended behaviour change upstream: from kernel version `since` on, the case expects this instead."""
    case_id: str
    since: str
    commit: str  # the upstream change: subject, author, where it was posted; the commit id when known
    reason: str
    expect: dict | None = None
    dmesg: tuple[str, ...] | None = None
    allow_dmesg: tuple[str, ...] | None = None


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
    # version-keyed expectations declared for the case, and the one applied to the kernel under test
    overrides: tuple[Override, ...] = ()
    override: Override | None = None
    # the kernel release the expectation was chosen for ("" = not chosen for a kernel)
    kernel_release: str = ""
    # a known issue of this case that does not apply to kernel_release (fixed there, or not yet there)
    inactive_issue: KnownIssue | None = None
    # the seed's v3 design: why the case does not apply there ("" = it does)
    skip_v3: str = ""
    # every known issue declared for the case (one per semantics); for_kernel picks known_issue among them
    declared_issues: tuple[KnownIssue, ...] = ()
    # the case's own `expect` as the table declares it (for_kernel may replace `expect`; None = not replaced yet)
    declared_expect: dict | None = None
    # the design the expectation was chosen for (for_kernel), and why the case is skipped on it ("" = run it)
    semantics: str = "merged"
    skip: str = ""

    def allows(self, splat_title: str) -> bool:
        return any(re.fullmatch(p, splat_title) for p in self.allow_splats)

    def unexpected_messages(self, messages: tuple[str, ...] | list[str]) -> list[str]:
        patterns = self.dmesg + self.allow_dmesg + (self.known_issue.allow_dmesg if self.known_issue else ())
        return [m for m in messages if not any(re.search(p, m) for p in patterns)]

    @property
    def area(self) -> str:
        return self.case_id.split(".", 1)[0]


def load_expectations(path: Path = EXPECTATIONS_FILE) -> dict[str, Expectation]:
    try:
        data = _read_yaml(path)
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"cannot read expectations {path}: {e}")
    if not isinstance(data, dict) or not isinstance(data.get("cases"), dict):
        raise ConfigError(f"{path}: needs a 'cases' mapping")
    # (semantics, with_patch, with_config, case id) -> its known issue
    issues: dict[tuple[str, str, str, str], KnownIssue] = {}
    for raw in data.get("known_issues") or []:
        if not isinstance(raw.get("signature", {}), dict) or not (raw.get("signature") or raw.get("splats")):
            raise ConfigError(f"{path}: known issue {raw.get('id')} needs a 'signature': the observation keys the "
                              "buggy kernel shows (same form as 'expect'), or 'splats': the titles of the kernel "
                              "reports it leaves, so that only that bug is XFAIL")
        unknown = set(raw) - KNOWN_ISSUE_KEYS
        if unknown:
            raise ConfigError(f"{path}: known issue {raw.get('id')} has unknown key(s) {', '.join(sorted(unknown))}")
        seen = raw.get("seen_in")
        if not isinstance(seen, list) or not seen:
            raise ConfigError(f"{path}: known issue {raw.get('id')} needs 'seen_in': the kernel releases "
                              "(make kernelrelease) in which the rig observed it")
        _check_window(raw, f"{path}: known issue {raw.get('id')}")
        window = _window(raw)
        issue = KnownIssue(raw["id"], tuple(raw["cases"]), " ".join(str(raw["reason"]).split()),
                           str(raw.get("section", "")), dict(raw.get("signature") or {}), window["seen_in"],
                           window["since"], window["since_change"], window["fixed_in"], window["fix_commit"],
                           _regexes(raw.get("allow_dmesg"), f"{path}: known issue {raw.get('id')}: allow_dmesg"),
                           str(raw.get("semantics", "merged")), str(raw.get("changes_machine") or ""),
                           _regexes(raw.get("splats"), f"{path}: known issue {raw.get('id')}: splats"),
                           " ".join(str(raw.get("with_patch") or "").split()), str(raw.get("with_config") or ""),
                           tuple(str(f) for f in raw.get("fix") or ()), " ".join(str(raw.get("upstream") or "").split()),
                           str(raw.get("component", "kernel")))
        if issue.component not in COMPONENTS:
            raise ConfigError(f"{path}: known issue {issue.id}: 'component' must be one of {', '.join(COMPONENTS)}")
        _check_fix_paths(issue.fix, f"{path}: known issue {issue.id}")
        if issue.with_config and not re.fullmatch(r"CONFIG_[A-Z0-9_]+", issue.with_config):
            raise ConfigError(f"{path}: known issue {issue.id}: 'with_config' must be an option name such as "
                              f"CONFIG_PROVE_LOCKING, got {issue.with_config!r}")
        if issue.semantics not in SEMANTICS:
            raise ConfigError(f"{path}: known issue {issue.id}: 'semantics' must be one of {', '.join(SEMANTICS)}")
        for cid in issue.cases:
            if cid not in data["cases"]:
                raise ConfigError(f"{path}: known issue {issue.id} names unknown case {cid}")
            key = (issue.semantics, issue.with_patch, issue.with_config, cid)
            if key in issues:
                raise ConfigError(f"{path}: case {cid} is in two known issues ({issues[key].id}, {issue.id}); a case "
                                  "has one known issue per design (and per patch named by with_patch, per option by with_config)")
            issues[key] = issue
    overrides: dict[str, list[Override]] = {}
    for raw in data.get("version_overrides") or []:
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: version_overrides entries must be mappings")
        cid = raw.get("case")
        unknown = set(raw) - OVERRIDE_KEYS
        if unknown:
            raise ConfigError(f"{path}: version override of {cid} has unknown key(s) {', '.join(sorted(unknown))}")
        if cid not in data["cases"]:
            raise ConfigError(f"{path}: version override names unknown case {cid}")
        if not raw.get("commit") or not raw.get("reason"):
            raise ConfigError(f"{path}: version override of {cid} needs 'commit' (the upstream change that "
                              "changed the behaviour) and 'reason'")
        try:
            kernel_version(str(raw.get("since", "")))
        except ValueError:
            raise ConfigError(f"{path}: version override of {cid} needs 'since': the first kernel version with the "
                              f"new behaviour, got {raw.get('since')!r}")
        if raw.get("expect") is not None and not isinstance(raw["expect"], dict):
            raise ConfigError(f"{path}: version override of {cid}: 'expect' must be a mapping")
        ov = Override(cid, str(raw["since"]), " ".join(str(raw["commit"]).split()), " ".join(str(raw["reason"]).split()),
                      raw.get("expect"),
                      _regexes(raw["dmesg"], f"{path}: {cid}: dmesg") if "dmesg" in raw else None,
                      _regexes(raw["allow_dmesg"], f"{path}: {cid}: allow_dmesg") if "allow_dmesg" in raw else None)
        if any(kernel_version(o.since) == kernel_version(ov.since) for o in overrides.get(cid, [])):
            raise ConfigError(f"{path}: two version overrides of {cid} from {ov.since}")
        overrides.setdefault(cid, []).append(ov)
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
        if raw.get("expect_v3") is not None and not isinstance(raw["expect_v3"], dict):
            raise ConfigError(f"{path}: case {cid!r}: 'expect_v3' must be a mapping")
        if raw.get("expect_v3") is not None and raw.get("skip_v3"):
            raise ConfigError(f"{path}: case {cid!r} has both 'expect_v3' and 'skip_v3'")
        out[cid] = Expectation(cid, str(raw["section"]), raw["expect"], raw.get("expect_v3"), issues.get(("merged", "", "", cid)),
                               lists["dmesg"], str(raw.get("topology", "default")),
                               str(raw.get("host_action", "")), bool(raw.get("manual", False)),
                               lists["allow_splats"], lists["allow_dmesg"], tuple(overrides.get(cid, ())),
                               skip_v3=" ".join(str(raw.get("skip_v3") or "").split()),
                               declared_issues=tuple(i for (*_, c), i in issues.items() if c == cid))
        action = out[cid].host_action.split()
        if action and (action[0] not in HOST_ACTIONS or len(action) != 2):
            raise ConfigError(f"{path}: case {cid!r}: host_action must be one of "
                              f"{', '.join(a + ' <qdev id>' for a in HOST_ACTIONS)}")
    return out


def _check_fix_paths(fix: tuple[str, ...], where: str) -> None:
    missing = [f for f in fix if not (REPO_ROOT / f).is_file()]
    if missing:
        raise ConfigError(f"{where}: 'fix' names {', '.join(missing)}, which is not a file of the rig (paths are "
                          f"relative to {REPO_ROOT})")


RACE_KNOWN_ISSUE_KEYS = {"id", "scenarios", "splat", "reason", "seen_in", "since", "since_change", "fixed_in",
                         "fix_commit", "fix", "upstream", "median_hit_s"}


@dataclass(frozen=True)
class RaceKnownIssue:
    """A kernel bug a race scenario can hit: its signature is the title of the report it leaves (full match).
    A scenario whose only reports match is XFAIL, not failed; any other report still fails it. Its kernels are
    a VersionWindow, as a case's known issue's are."""

    id: str
    scenarios: tuple[str, ...]
    splat: str
    reason: str
    window: VersionWindow = VersionWindow()
    fix: tuple[str, ...] = ()  # as KnownIssue.fix
    upstream: str = ""
    # the median time from the start of its first scenario (the one aimed at it) to its report, on the default
    # profile (BENCHMARKS.md): a run of that scenario that never hits it says how many times that it ran
    median_hit_s: float = 0.0

    def matches(self, scenario: str, title: str, release: str) -> bool:
        return scenario in self.scenarios and self.window.contains(release) and re.fullmatch(self.splat, title) is not None

    def status(self, release: str) -> str:
        fix = f"; the rig's fix: {', '.join(self.fix)}" if self.fix and self.window.contains(release) else ""
        return f"{self.id}: {self.window.status(release)}{fix}"

    def unseen(self, scenario: str, seconds: float, release: str) -> str:
        """What a run of `scenario` for `seconds` without this issue's report says about it, "" if nothing:
        only the scenario aimed at it, with a measured median, on a kernel the issue is known in, tells."""
        if not (self.median_hit_s and self.scenarios[0] == scenario and self.window.contains(release)):
            return ""
        return (f"{self.id}: not seen in {seconds:g} s of {scenario}; median time to hit {self.median_hit_s:g} s "
                f"({seconds / self.median_hit_s:.0f}x)")


def load_race_known_issues(path: Path = EXPECTATIONS_FILE, scenarios: tuple[str, ...] = (),
                           key: str = "race_known_issues") -> list[RaceKnownIssue]:
    """`race_known_issues` of expectations.yaml; `scenarios` are the names a scenario list may use. With
    key="boot_known_issues": the reports a machine's kernel can leave while it boots, before any case (their
    scenario is "boot")."""
    try:
        data = _read_yaml(path) or {}
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"cannot read expectations {path}: {e}")
    boot = key == "boot_known_issues"
    out = []
    for raw in data.get(key) or []:
        where = f"{path}: {key[:-1].replace('_', ' ')} {raw.get('id') if isinstance(raw, dict) else raw!r}"
        if not isinstance(raw, dict):
            raise ConfigError(f"{where} must be a mapping")
        unknown = set(raw) - (RACE_KNOWN_ISSUE_KEYS - {"scenarios"} if boot else RACE_KNOWN_ISSUE_KEYS)
        if unknown:
            raise ConfigError(f"{where} has unknown key(s) {', '.join(sorted(unknown))}")
        missing = [k for k in ("id", "splat", "reason", "seen_in") + (() if boot else ("scenarios",)) if not raw.get(k)]
        if missing:
            raise ConfigError(f"{where} needs {', '.join(missing)}")
        bad = [s for s in raw.get("scenarios", ()) if scenarios and s not in scenarios]
        if bad:
            raise ConfigError(f"{where} names unknown scenario(s) {', '.join(bad)}")
        _check_window(raw, where)
        fix = tuple(str(f) for f in raw.get("fix") or ())
        _check_fix_paths(fix, where)
        median = raw.get("median_hit_s", 0.0)
        if not isinstance(median, (int, float)) or median < 0:
            raise ConfigError(f"{where}: median_hit_s must be a number of seconds, got {median!r}")
        out.append(RaceKnownIssue(str(raw["id"]), ("boot",) if boot else tuple(raw["scenarios"]),
                                  _regexes([raw["splat"]], where)[0], " ".join(str(raw["reason"]).split()),
                                  VersionWindow(**_window(raw)), fix, " ".join(str(raw.get("upstream", "")).split()),
                                  float(median)))
    return out


def load_boot_known_issues(path: Path = EXPECTATIONS_FILE) -> list[RaceKnownIssue]:
    return load_race_known_issues(path, key="boot_known_issues")


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
        data = _read_yaml(path) or {}
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


def for_kernel(expectations: dict[str, Expectation], release: str, semantics: str = "merged",
               patches: tuple[str, ...] = (), config: frozenset[str] = frozenset()) -> dict[str, Expectation]:
    """The expectations for the kernel actually built (its manifest's `make kernelrelease`, the design of
    userspace P2P memory it offers, the subjects of the patches applied to it): the newest version override
    whose `since` is not after it replaces the case's expect/dmesg/allow_dmesg, and a known issue counts only
    from its `since` up to its `fixed_in`. On the v3 design, a case's expect_v3, skip_v3 and v3 known issue take
    the place of the merged ones; a known issue of one patch (with_patch) counts only when that patch is built
    in, one of an option (with_config) only when `config` (the options the kernel sets to y) has it, and then
    before the others of its design. Pure."""
    if semantics not in SEMANTICS:
        raise ValueError(f"unknown semantics {semantics!r}")
    out = {}
    for cid, e in expectations.items():
        ov = None
        if release:
            fitting = [o for o in e.overrides if kernel_version(o.since) <= kernel_version(release)]
            ov = max(fitting, key=lambda o: kernel_version(o.since), default=None)
        base = e.declared_expect if e.declared_expect is not None else e.expect
        changes: dict[str, Any] = {"override": ov, "kernel_release": release, "declared_expect": base,
                                   "expect": base}
        if ov is not None:
            if ov.expect is not None:
                changes["expect"] = ov.expect
            if ov.dmesg is not None:
                changes["dmesg"] = ov.dmesg
            if ov.allow_dmesg is not None:
                changes["allow_dmesg"] = ov.allow_dmesg
        changes["semantics"], changes["skip"] = semantics, ""
        if semantics == "v3":
            if e.expect_v3 is not None:
                changes["expect"] = e.expect_v3
            changes["skip"] = e.skip_v3
        declared = e.declared_issues or tuple(i for i in (e.known_issue, e.inactive_issue) if i is not None)
        changes["declared_issues"] = declared
        built = [i for i in declared if i.built_into(patches, config)]

        def of_design(design: str) -> KnownIssue | None:
            mine = sorted((i for i in built if i.semantics == design),
                          key=lambda i: (not i.with_patch, not i.with_config))
            return mine[0] if mine else None
        # the seed's series is built on a merged kernel: that kernel's bugs stay on v3, unless v3 has its own for
        # the case, or an expect_v3 (a v3 expectation is the whole story there: the merged bug's signature was
        # written for the merged mapping)
        issue = of_design(semantics)
        if issue is None and not (semantics == "v3" and e.expect_v3 is not None):
            issue = of_design("merged")
        if issue is None:
            changes["known_issue"] = changes["inactive_issue"] = None
        else:
            active = issue.applies_to(release)
            changes["known_issue"] = issue if active else None
            changes["inactive_issue"] = None if active else issue
        out[cid] = dataclasses.replace(e, **changes)
    return out


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
