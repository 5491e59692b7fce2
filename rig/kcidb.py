"""KCIDB (KernelCI's common report database): a run directory -> one KCIDB JSON report. Downstream of results:
it reads results.json and manifest.json only, so it works on a copied or downloaded run directory.

The report holds one checkout (the kernel source plus the patches on it), one build (the rig's kernel build; its
id is the build's cache key, so every run of the same build names the same object), one test per case and per
boot's `kernel.console` result, and for the known kernel bugs an issue each with an incident per case that
showed it (xfail) or did not (xpass). Verdicts map onto KCIDB's statuses by what they say about the kernel:

    pass -> PASS, fail -> FAIL, error -> ERROR, skip -> SKIP,
    xfail -> FAIL (the known bug showed: the code is faulty; the issue and incident say which bug),
    xpass -> PASS (the correct behaviour showed; its incident says the known bug was absent)

and every test keeps the rig's own verdict, reason and mismatches in `misc` and its `log_excerpt`.
Validated against schema v5.3 by the kcidb-io package in the tests; submitted with kcidb's `kcidb-submit`."""
from __future__ import annotations

import hashlib
import json
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

from rig.errors import ConfigError
from rig.model import CaseResult, RunRecord
from rig.records import to_json
from rig.report import why
from rig.results import read_run
from rig.sources import PatchRecord

ORIGIN = "p2pdma_rig"
SCHEMA_VERSION = {"major": 5, "minor": 3}
STATUS = {"pass": "PASS", "fail": "FAIL", "error": "ERROR", "skip": "SKIP", "xfail": "FAIL", "xpass": "PASS"}
TEST_PATH = "p2pdma_rig"  # the tests' node in KCIDB's test tree: p2pdma_rig.<area>.<name>
LOG_EXCERPT_MAX = 16384  # the schema's maxLength


def _time(stamp: str | None, minus_s: float = 0.0) -> str | None:
    """RFC 3339 with an explicit UTC offset, as the schema's date-time wants it."""
    if not stamp:
        return None
    try:
        t = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    except ValueError:
        return None
    return (t - timedelta(seconds=minus_s)).isoformat()


def _clean(d: dict) -> dict:
    """KCIDB allows no null property: leave out what is unknown."""
    return {k: v for k, v in d.items() if v is not None and v != {} and v != []}


def patchset_hash(patches: tuple[PatchRecord, ...] | list[PatchRecord]) -> str:
    """KCIDB's patchset hash: sha256 over the newline-terminated sha256 of each patch file, in order of
    application (`sha256sum *.patch | cut -c-64 | sha256sum`); "" without patches. An mbox is one file."""
    files = list(dict.fromkeys((p.file, p.sha256) for p in patches))
    if not files:
        return ""
    return hashlib.sha256("".join(f"{sha}\n" for _, sha in files).encode()).hexdigest()


def run_id(run_dir: Path, run: RunRecord) -> str:
    """The run's own id (manifest `run_id`; for older runs, the directory's name and its results' hash)."""
    if run.manifest.run_id:
        return run.manifest.run_id
    digest = hashlib.sha256((run_dir / "results.json").read_bytes()).hexdigest()[:12]
    return f"{run_dir.resolve().name}-{digest}"


def _url(base: str | None, name: str) -> str | None:
    return f"{base.rstrip('/')}/{name}" if base else None


def _excerpt(c: CaseResult) -> str:
    """The lines a reader needs to see why a case got its verdict, then its dmesg slice, cut to the schema's
    maximum (keeping the start, where the reason is)."""
    lines = [f"{c.id}: {c.verdict.value}"] + [f"  {x}" for x in why(c)]
    for s in c.splats:
        lines.append(f"  {s.title}{s.standing_note}:")
        lines += ["    " + ln for ln in (s.decoded or s.text).splitlines()[:60]]
    if c.dmesg:
        lines += ["  dmesg during the case:"] + ["    " + ln for ln in c.dmesg.splitlines()[-60:]]
    text = re.sub("\x00", "", "\n".join(lines) + "\n")
    return text if len(text) <= LOG_EXCERPT_MAX else text[:LOG_EXCERPT_MAX - 12] + "\n[... cut]\n"


def check_url_base(url_base: str | None) -> None:
    """KCIDB's schema takes only absolute http(s) URLs for logs and output files."""
    from urllib.parse import urlparse

    if url_base is None:
        return
    u = urlparse(url_base)
    if u.scheme not in ("http", "https") or not u.netloc:
        raise ConfigError(f"--url-base {url_base!r}: not an http(s) URL (KCIDB's schema refuses the report). Fix: give "
                          "where the run directory will be reachable, e.g. https://ci.example.org/artifacts/run-1/")


def to_kcidb(run_dir: Path | str, origin: str = ORIGIN, url_base: str | None = None) -> dict:
    """The run as a KCIDB report (a dict ready for json.dump). `url_base`: where the run directory will be
    reachable (a CI artifact URL); with it, tests link their boot's console log and the report page."""
    if not re.fullmatch(r"[a-z0-9_]+", origin):
        raise ConfigError(f"KCIDB origin {origin!r}: only lowercase letters, digits and '_'")
    check_url_base(url_base)
    d = Path(run_dir)
    run = read_run(d)
    m = run.manifest
    k, src = m.kernel, m.kernel.source
    rid = run_id(d, run)
    pset = patchset_hash(k.patches)

    tree = src.kind == "tree"
    ident = json.dumps([src.id, src.version, src.git_sha if tree else None, src.dirty if tree else None, pset])
    checkout_id = f"{origin}:checkout-{hashlib.sha256(ident.encode()).hexdigest()[:20]}"
    subjects = list(dict.fromkeys(k.patch_subjects))
    build_start = _time(k.built_at, k.build_seconds or 0.0)
    checkout = _clean({
        "id": checkout_id, "origin": origin,
        "tree_name": src.id if src.kind == "debian" else Path(src.path).name or None,
        "git_commit_hash": src.git_sha if re.fullmatch(r"[0-9a-f]{40}", src.git_sha) else None,
        "git_commit_name": src.version or None,
        "patchset_hash": pset,
        "comment": " ".join(x for x in (src.kind, src.version) if x)
        + (f" + {len(subjects)} patch(es): " + "; ".join(subjects) if subjects else ""),
        "start_time": build_start,
        "valid": True,  # the patches applied: the build exists
        "misc": _clean({"source": _clean(to_json(src)), "patches": to_json(k.patches)}),
    })

    build_id = f"{origin}:{k.key or 'build-' + rid}"
    options = "".join(f"+{o}" for o in k.kconfig_add)
    build = _clean({
        "id": build_id, "checkout_id": checkout_id, "origin": origin,
        "comment": f"profile {k.profile}" + "".join(f" +{o}" for o in k.kconfig_add),
        "start_time": build_start,
        "duration": k.build_seconds,
        "architecture": "x86_64",
        "command": k.reproduce or None,
        "compiler": k.compiler or None,
        "config_name": k.profile + options or None,
        "status": "PASS",  # a run exists only for a kernel that built
        "misc": _clean({"key": k.key or None, "config_sha256": k.config_sha256 or None,
                        "fragments": to_json(k.fragments), "build_host": k.build_host or None}),
    })

    boots = {b.boot: b for b in run.boots}
    started = _time(m.started)
    tests, issues, incidents = [], {}, []
    for c in run.cases:
        verdict = c.verdict.value
        boot = boots.get(c.boot)
        test_id = f"{origin}:{rid}:{c.id}"
        tests.append(_clean({
            "id": test_id, "build_id": build_id, "origin": origin,
            "path": f"{TEST_PATH}.{c.id}",
            "comment": (c.description or c.id) + (f" [{verdict}]" if verdict not in ("pass", "fail") else ""),
            "status": STATUS.get(verdict, "ERROR"),
            "start_time": started,
            "duration": float(c.duration_s),
            "log_excerpt": _excerpt(c),
            "log_url": _url(url_base, f"boot-{c.boot}/console.log") if c.boot else None,
            "output_files": [{"name": n, "url": _url(url_base, n)} for n in ("report.html", "results.json",
                                                                             "junit.xml")] if url_base else None,
            "environment": _clean({
                "comment": f"QEMU q35 ({(boot.accel if boot else '') or m.accel or '?'}), topology "
                           f"{boot.topology if boot else 'default'}, boot {c.boot}",
                "misc": _clean({"boot": c.boot, "topology": boot.topology if boot else None,
                                "accel": boot.accel if boot else None,
                                "qemu_cmdline": boot.qemu_cmdline if boot else None, "host": m.host or None}),
            }),
            "misc": _clean({"rig_verdict": verdict, "reason": c.reason or None,
                            "mismatches": c.mismatches, "known_issue": c.known_issue,
                            "section": c.section or None, "expected": c.expected,
                            "observed": c.observed,
                            "splats": [s.title for s in c.splats],
                            "run_id": rid, "reproduce": m.reproduce or None}),
        }))
        ki = c.known_issue
        if ki and verdict in ("xfail", "xpass"):
            reason = c.reason
            issues.setdefault(ki, _clean({
                "id": f"{origin}:{ki}", "version": 1, "origin": origin,
                "comment": re.sub(rf"^known issue {re.escape(ki)}: ", "", reason) if verdict == "xfail" else ki,
                "culprit": {"code": True, "tool": False, "harness": False},
                "misc": {"known_issues": "guest-tests/expectations.yaml"},
            }))
            incidents.append(_clean({
                "id": f"{origin}:{rid}:{c.id}:{ki}", "origin": origin, "issue_id": f"{origin}:{ki}",
                "issue_version": 1, "build_id": build_id, "test_id": test_id, "present": verdict == "xfail",
                "comment": f"{c.id}: {verdict}: {reason}" if reason else f"{c.id}: {verdict}",
            }))
    return _clean({"version": dict(SCHEMA_VERSION), "checkouts": [checkout], "builds": [build], "tests": tests,
                   "issues": list(issues.values()), "incidents": incidents})


def write_kcidb(run_dir: Path | str, out: Path | str, origin: str = ORIGIN, url_base: str | None = None) -> Path:
    report = to_kcidb(run_dir, origin, url_base)
    p = Path(out)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(report, indent=2) + "\n")
    return p
