"""Serializers and exit codes."""
import json
import xml.etree.ElementTree as ET
from pathlib import Path

from rig.model import RunManifest, RunRecord
from rig.records import from_json
from rig.results import exit_code, run_record, summary_table, to_junit, to_ktap
from rig.console import Splat
from rig.model import BootRecord, CaseResult, SplatRecord


def case(cid, verdict, splats=(), mismatches=()):
    return CaseResult(id=cid, area=cid.split(".")[0], description="d", section="1.2", verdict=verdict,
                      expected={"a": 1}, observed={"a": 2}, mismatches=list(mismatches), reason="why",
                      duration_s=0.5, boot=1, dmesg="[ 1.0] p2pdma-rig: begin x", splats=list(splats))


BOOT = BootRecord(1, "default", Path("/tmp/b1"), 5.0, "tcg", "qemu ...")


def test_exit_codes():
    assert exit_code([case("a.b", "pass"), case("a.c", "xfail"), case("a.d", "xpass"), case("a.e", "skip")],
                     [BOOT]) == 0
    assert exit_code([case("a.b", "pass"), case("a.c", "fail")], [BOOT]) == 1
    assert exit_code([case("a.c", "error")], [BOOT]) == 1
    crash = SplatRecord.of(Splat("panic", "kernel panic: x", True, 3, "Kernel panic - not syncing: x"), 1)
    assert exit_code([case("a.c", "error", [crash])], [BOOT]) == 3
    boot = BootRecord(1, "default", Path("/tmp/b1"), 5.0, "tcg", "q", splats=[crash])
    assert exit_code([case("a.b", "pass")], [boot]) == 3
    # the report of the case's known issue (seed-v3-unbind-frees-held-pages): XFAIL, no crash of the run
    known = SplatRecord.of(Splat("bug", "kernel BUG in gen_pool_destroy", True, 3, "kernel BUG at x"), 1,
                           owner="a.c")
    known.known_issue = "seed-v3-unbind-frees-held-pages"
    assert exit_code([case("a.c", "xfail", [known])], [BootRecord(1, "default", Path("/tmp/b1"), 5.0, "tcg", "q",
                                                                  splats=[known])]) == 0
    allowed = SplatRecord.of(Splat("warning", "WARNING in x", False, 9, "WARNING: x"), 1, allowed=True)
    assert case("a.c", "xfail", [known, allowed, crash]).failing_splats == [crash]


def test_json_has_the_documented_fields_and_reads_back_into_the_same_types():
    record = run_record([case("mmap.x", "fail", mismatches=["a: expected 1, observed 2"])], [BOOT],
                        RunManifest(run_id="r-1"))
    data = json.loads(json.dumps(record.to_json()))
    c = data["cases"][0]
    for key in ("id", "verdict", "expected", "observed", "duration_s", "boot", "dmesg", "splats"):
        assert key in c
    assert data["summary"] == {"fail": 1} and data["exit_code"] == 1
    again = RunRecord.from_json(data)
    assert again.cases == record.cases and again.manifest == record.manifest
    assert [b.to_json() for b in again.boots] == [b.to_json() for b in record.boots]


def test_ktap_shape():
    text = to_ktap([case("mmap.a", "pass"), case("mmap.b", "xfail"), case("gup.c", "fail", mismatches=["m"])])
    lines = text.splitlines()
    assert lines[0] == "KTAP version 1" and lines[1] == "1..2"
    assert "  ok 2 mmap.b # XFAIL why" in lines and "  # gup.c: m" in lines
    assert "not ok 2 gup" in lines and "ok 1 mmap" in lines


def test_junit_names_the_cell_and_carries_the_manifest():
    manifest = from_json(RunManifest, {
        "kernel": {"source": {"id": "debian-linux-source-6.12_6.12.117"}, "profile": "gupfast", "key": "k1",
                   "patches": [{"subject": "[PATCH] fix"}]},
        "started": "2026-11-25T21:15:27Z", "ended": "2026-11-25T21:18:36Z", "shuffle_seed": 7})
    suite = ET.fromstring(to_junit([case("mmap.a", "pass")], manifest)).find("testsuite")
    assert suite.get("name") == "p2pdma-rig debian-linux-source-6.12_6.12.117 gupfast patched"
    assert suite.get("time") == "189.000"  # the run's wall time, not the sum of the cases
    props = {p.get("name"): p.get("value") for p in suite.find("properties")}
    assert props["kernel.profile"] == "gupfast" and props["kernel.patches"] == "[PATCH] fix"
    assert props["shuffle_seed"] == "7"


def test_junit_is_well_formed():
    root = ET.fromstring(to_junit([case("mmap.a", "pass"), case("gup.c", "fail"), case("gup.d", "skip")]))
    suite = root.find("testsuite")
    assert suite.get("tests") == "3" and suite.get("failures") == "1"
    failed = [tc for tc in suite.iter("testcase") if tc.find("failure") is not None]
    assert failed[0].get("classname") == "gup" and "expected" in failed[0].find("failure").text


def test_summary_table_counts_by_area():
    t = summary_table([case("mmap.a", "pass"), case("mmap.b", "xfail"), case("gup.c", "fail")])
    assert "mmap" in t and "gup" in t and "FAIL  gup.c" in t


def test_the_summary_ends_with_the_known_issues_still_present_the_kernels_apart_from_qemus():
    import dataclasses

    from rig.results import still_present_line

    kernel = dataclasses.replace(case("fault.a", "xfail"), known_issue="wp-fault-livelock", known_issue_component="kernel")
    qemu = dataclasses.replace(case("nvme.b", "xfail"), known_issue="qemu-cmb-sgl-segment-read", known_issue_component="qemu")
    gone = dataclasses.replace(case("leak.c", "xpass"), known_issue="p2pmem-not-zeroed", known_issue_component="kernel")
    assert still_present_line([kernel, qemu, gone]) == ("known issues still present: wp-fault-livelock; "
                                                        "QEMU's: qemu-cmb-sgl-segment-read")
    assert still_present_line([qemu, gone]) == "known issues still present: none of the kernel; QEMU's: qemu-cmb-sgl-segment-read"
    assert summary_table([gone]).endswith("known issues still present: none of the kernel")


def test_every_known_issue_names_whose_bug_it_is():
    from rig.expectations import load_expectations

    issues = {e.known_issue.id: e.known_issue.component for e in load_expectations().values() if e.known_issue}
    assert {i for i, c in issues.items() if c == "qemu"} >= {"qemu-cmb-sgl-segment-read", "qemu-viommu-switch-p2p"}
    assert all(c == "qemu" for i, c in issues.items() if i.startswith("qemu-"))
