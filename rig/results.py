"""Results stage: case results + manifest -> results.json, ktap.txt, junit.xml, a summary table, an exit code.
Serializers only; runs nothing."""
from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from collections import Counter, OrderedDict
from pathlib import Path

from rig.errors import EXIT_CASE_FAILED, EXIT_GUEST_CRASH, EXIT_OK, RigError
from rig.model import FAILING, VERDICTS, BootRecord, CaseResult, RunManifest, RunRecord
from rig.records import from_json, to_json as record_json


def exit_code(results: list[CaseResult], boots: list[BootRecord]) -> int:
    """3 when the guest kernel crashed (Oops, BUG, KASAN, panic) anywhere, in a case or outside every case
    (each boot's kernel.console result holds the latter), unless a case allows it or it is the report of a
    case's known issue; 1 when a case failed; else 0."""
    crashed = any(s.crash and s.counts for r in results for s in r.splats) or any(
        s.crash and s.counts for b in boots for s in b.splats)
    if crashed:
        return EXIT_GUEST_CRASH
    if any(r.verdict in FAILING for r in results):
        return EXIT_CASE_FAILED
    return EXIT_OK


def counts(results: list[CaseResult]) -> Counter:
    return Counter(r.verdict for r in results)


def run_record(results: list[CaseResult], boots: list[BootRecord], manifest: RunManifest) -> RunRecord:
    return RunRecord(dict(counts(results)), exit_code(results, boots), list(results), list(boots), manifest)


def read_run(run_dir: Path | str) -> RunRecord:
    """A run directory's results.json in the types it was written from (manifest.json's copy of the manifest
    wins, as the file a user may read and fix by hand); RigError when it is not a run directory."""
    d = Path(run_dir)
    f = d / "results.json"
    if not f.is_file():
        raise RigError(f"{d}: not a run directory (no results.json)")
    try:
        data = json.loads(f.read_text())
    except (OSError, ValueError) as e:
        raise RigError(f"{f}: unreadable: {e}") from e
    if not isinstance(data, dict) or not isinstance(data.get("cases"), list):
        raise RigError(f"{f}: no case list; not a results.json written by `rig run`")
    record = RunRecord.from_json(data, str(f))
    m = d / "manifest.json"
    if m.is_file():
        try:
            record.manifest = from_json(RunManifest, json.loads(m.read_text()), str(m))
        except ValueError:
            pass
    return record


def _ktap_text(text: str) -> str:
    """A description or diagnostic on one KTAP line: no newline, no '#' (it would start a directive)."""
    return " ".join(text.replace("#", "No.").split())


def ktap_line(n: int, r: CaseResult) -> str:
    """One result line as Documentation/dev-tools/ktap.rst defines it, with every verdict's reason kept:
    xfail -> ok # XFAIL, skip -> ok # SKIP, error -> not ok # ERROR (or # TIMEOUT for the watchdog), fail ->
    not ok with the reason as diagnostic data. KTAP has no XPASS directive: an xpass is ok, its reason goes on
    a diagnostic line before it (see to_ktap)."""
    reason = _ktap_text(r.reason or "; ".join(r.mismatches))
    ok = "not ok" if r.verdict in FAILING else "ok"
    if r.verdict == "skip":
        tail = f" # SKIP {reason}"
    elif r.verdict == "xfail":
        tail = f" # XFAIL {reason}"
    elif r.verdict == "error":
        tail = f" # {'TIMEOUT' if 'watchdog' in r.reason else 'ERROR'} {reason}"
    elif r.verdict == "fail":
        tail = f" # {reason}" if reason else ""
    else:
        tail = ""
    return f"{ok} {n} {_ktap_text(r.id)}{tail}".rstrip()


def to_ktap(results: list[CaseResult]) -> str:
    """KTAP v1 (Documentation/dev-tools/ktap.rst): one test per area, its cases as subtests indented by two
    spaces; each mismatch is a diagnostic line before its case's result."""
    areas: OrderedDict[str, list[CaseResult]] = OrderedDict()
    for r in results:
        areas.setdefault(r.area, []).append(r)
    out = ["KTAP version 1", f"1..{len(areas)}"]
    for n, (area, rs) in enumerate(areas.items(), 1):
        out += ["  KTAP version 1", f"  # Subtest: {area}", f"  1..{len(rs)}"]
        for m, r in enumerate(rs, 1):
            out += [f"  # {r.id}: {_ktap_text(mm)}" for mm in r.mismatches]
            if r.verdict == "xpass":
                out.append(f"  # {r.id}: XPASS: {_ktap_text(r.reason)}")
            out.append("  " + ktap_line(m, r))
        area_ok = "ok" if all(r.verdict not in FAILING for r in rs) else "not ok"
        out.append(f"{area_ok} {n} {area}")
    return "\n".join(out) + "\n"


def _wall_seconds(manifest: RunManifest) -> float | None:
    import datetime

    try:
        fmt = "%Y-%m-%dT%H:%M:%SZ"
        return (datetime.datetime.strptime(manifest.ended, fmt)
                - datetime.datetime.strptime(manifest.started, fmt)).total_seconds()
    except ValueError:
        return None


def junit_properties(manifest: RunManifest) -> dict[str, str]:
    """The manifest's key facts, as a CI shows them beside the cases."""
    kernel = manifest.kernel
    props = {
        "kernel.source": kernel.source.id,
        "kernel.profile": kernel.profile,
        "kernel.key": kernel.key,
        "kernel.config_sha256": kernel.config_sha256,
        "kernel.patches": " ".join(kernel.patch_subjects),
        "semantics": manifest.semantics,
        "shuffle_seed": "" if manifest.shuffle_seed is None else str(manifest.shuffle_seed),
        "accel": manifest.accel or "",
        "qemu": manifest.host.get("qemu", ""),
        "reproduce": manifest.reproduce,
    }
    return {k: v for k, v in props.items() if v}


def suite_name(manifest: RunManifest) -> str:
    """One name per kernel and profile, so that the suites of a matrix's cells do not collide in a CI."""
    kernel = manifest.kernel
    parts = [p for p in (kernel.source.id, kernel.profile, "patched" if kernel.patches else "") if p]
    return "p2pdma-rig" + (f" {' '.join(parts)}" if parts else "")


def to_junit(results: list[CaseResult], manifest: RunManifest | None = None) -> str:
    manifest = manifest or RunManifest()
    wall = _wall_seconds(manifest)
    suite = ET.Element("testsuite", name=suite_name(manifest), tests=str(len(results)),
                       failures=str(sum(r.verdict == "fail" for r in results)),
                       errors=str(sum(r.verdict == "error" for r in results)),
                       skipped=str(sum(r.verdict in ("skip", "xfail") for r in results)),
                       time=f"{wall if wall is not None else sum(r.duration_s for r in results):.3f}")
    props = junit_properties(manifest)
    if props:
        el = ET.SubElement(suite, "properties")
        for k, v in props.items():
            ET.SubElement(el, "property", name=k, value=v)
    for r in results:
        tc = ET.SubElement(suite, "testcase", classname=r.area, name=r.id, time=f"{r.duration_s:.3f}")
        if r.verdict in FAILING:
            el = ET.SubElement(tc, "failure" if r.verdict == "fail" else "error",
                               message=(r.reason or "; ".join(r.mismatches))[:500])
            el.text = r.failure_text()
        elif r.verdict == "skip":
            ET.SubElement(tc, "skipped", message=r.reason)
        elif r.verdict == "xfail":
            ET.SubElement(tc, "skipped", message=f"XFAIL: {r.reason}")
        if r.verdict == "xpass":
            ET.SubElement(tc, "system-out").text = f"XPASS: {r.reason}"
    root = ET.Element("testsuites")
    root.append(suite)
    xml = ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"
    # a console can carry control characters (ESC of a colour code...) that XML 1.0 forbids even escaped
    return re.sub("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]", "\ufffd", xml)


def summary_table(results: list[CaseResult], boots: list[BootRecord] = ()) -> str:
    """Verdicts per area, then each case that did not pass with why, the known issues and version-keyed
    expectations that applied, and every kernel report of the boots with its standing."""
    areas: OrderedDict[str, Counter] = OrderedDict()
    for r in results:
        areas.setdefault(r.area, Counter())[r.verdict] += 1
    head = f"{'area':<10}" + "".join(f"{c:>7}" for c in VERDICTS)
    lines = [head, "-" * len(head)]
    total: Counter = Counter()
    for area, c in areas.items():
        total.update(c)
        lines.append(f"{area:<10}" + "".join(f"{c.get(k, 0):>7}" for k in VERDICTS))
    lines.append("-" * len(head))
    lines.append(f"{'total':<10}" + "".join(f"{total.get(k, 0):>7}" for k in VERDICTS))
    bad = [r for r in results if r.verdict in FAILING + ("xpass",)]
    for r in bad:
        lines.append(f"  {r.verdict.upper():5s} {r.id}: {r.reason or '; '.join(r.mismatches)}"[:200])
        for m in r.mismatches:
            lines.append(f"        {m}"[:200])
    # known issues (still present, or fixed in this kernel) and expectations chosen for this kernel's version
    for r in results:
        if r.verdict == "xfail" or (r.verdict == "pass" and r.reason):
            lines.append(f"  {r.verdict.upper():5s} {r.id}: {r.reason.split(']: ', 1)[0] + ']' if r.verdict == 'xfail' and ']: ' in r.reason else r.reason}"[:240])
    lines += [f"  SPLAT (boot {b.boot}, {'in ' + s.owner if s.owner else 'outside every case'}){s.standing_note}: {s.title}"
              for b in boots for s in b.splats]
    lines.append(still_present_line(results))
    return "\n".join(lines)


def still_present_line(results: list[CaseResult]) -> str:
    """Which known issues this kernel still showed (XFAIL), the kernel's apart from QEMU's: a kernel with every
    fix says "none of the kernel"."""
    present: dict[str, set[str]] = {}
    for r in results:
        if r.verdict == "xfail" and r.known_issue:
            present.setdefault(r.known_issue_component or "kernel", set()).add(r.known_issue)
    kernel = ", ".join(sorted(present.get("kernel", ()))) or "none of the kernel"
    qemu = ", ".join(sorted(present.get("qemu", ())))
    return f"known issues still present: {kernel}" + (f"; QEMU's: {qemu}" if qemu else "")


def write_run(run_dir: Path, results: list[CaseResult], boots: list[BootRecord], manifest: RunManifest) -> RunRecord:
    record = run_record(results, boots, manifest)
    (run_dir / "results.json").write_text(json.dumps(record.to_json(), indent=2) + "\n")
    (run_dir / "ktap.txt").write_text(to_ktap(results))
    (run_dir / "junit.xml").write_text(to_junit(results, manifest))
    (run_dir / "manifest.json").write_text(json.dumps(record_json(manifest), indent=2) + "\n")
    # run-level copies of the last boot's console and dmesg, and every boot's QEMU command line
    if boots:
        last = boots[-1].workdir
        for name in ("console.log", "dmesg.txt"):
            if (last / name).exists():
                (run_dir / name).write_text((last / name).read_text(errors="replace"))
        (run_dir / "qemu-cmdline.txt").write_text("".join(f"# boot {b.boot}\n{b.qemu_cmdline}\n" for b in boots))
    return record


def series_table(steps: list[dict]) -> str:
    """Patch by patch: the cases whose verdict differs from the step before."""
    lines = [f"{'step':<6}{'kernel':<22}{'changed':>8}  patch"]
    for prev, step in zip([None] + steps[:-1], steps):
        changed = [] if prev is None else [
            (cid, prev["verdicts"].get(cid, "-"), v) for cid, v in step["verdicts"].items()
            if prev["verdicts"].get(cid) != v
        ]
        counts = " ".join(f"{k}:{n}" for k, n in sorted(Counter(step["verdicts"].values()).items()))
        lines.append(f"{step['step']:<6}{step['kernel']:<22}{len(changed):>8}  {step['label'][:70]}  [{counts}]")
        lines += [f"{'':14}{cid}: {a} -> {b}" for cid, a, b in changed]
    return "\n".join(lines)
