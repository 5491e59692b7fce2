"""KCIDB reports of real run directories (tests/data/runs/README.md), validated by kcidb-io, KernelCI's own
schema package (pinned in pyproject.toml's test extras), against schema v5.3. Host-only."""
import json
import subprocess

import jsonschema
import kcidb_io
import pytest

from rig import cli_report
from rig.errors import ConfigError
from rig.kcidb import ORIGIN, STATUS, patchset_hash, to_kcidb, write_kcidb
from rig.model import CaseResult
from rig.model import RunManifest
from rig.records import from_json, to_json
from rig.results import write_run
from rig.sources import read_patches

from conftest import DATA, ROOT
from test_report import PASSED_RUN, FAILED_RUN, rig

RUNS = DATA / "runs"
BASE_RUN = RUNS / "base"  # 3 pass, 1 xfail (leak.data_after_free), kernel.console.boot-1; exit 0
BROKEN_RUN = RUNS / "broken"  # + selftest.hang error (watchdog), selftest.leak_mapping fail; exit 1
PATCHED_RUN = RUNS / "patched"  # base's cases on the kernel with the shipped fix: leak.data_after_free xpass
ALL_RUNS = [BASE_RUN, BROKEN_RUN, PATCHED_RUN, FAILED_RUN, PASSED_RUN]
SCHEMA = kcidb_io.schema.V5_3
FIX = ROOT / "patches" / "fixes" / "linux-6.12" / "0001-PCI-P2PDMA-Clear-p2pmem-before-mapping-it-to-userspa.patch"


def cases_of(run):
    return json.loads((run / "results.json").read_text())["cases"]


def test_the_pinned_kcidb_io_validates_schema_5_3():
    assert (SCHEMA.major, SCHEMA.minor) == (5, 3) and kcidb_io.schema.LATEST is SCHEMA


@pytest.mark.parametrize("run", ALL_RUNS, ids=lambda p: p.name)
def test_every_real_run_is_a_valid_kcidb_report(run):
    report = to_kcidb(run)
    SCHEMA.validate_exactly(report)
    assert report["version"] == {"major": 5, "minor": 3}
    [checkout], [build] = report["checkouts"], report["builds"]
    manifest = json.loads((run / "manifest.json").read_text())
    assert build["id"] == f"{ORIGIN}:{manifest['kernel']['key']}" and build["checkout_id"] == checkout["id"]
    assert build["compiler"] == manifest["kernel"]["compiler"] and build["status"] == "PASS"
    assert checkout["git_commit_name"] == manifest["kernel"]["source"]["version"] == "6.12.117-1~deb12u1"
    if run != PATCHED_RUN:
        assert checkout["patchset_hash"] == ""  # no patches
    cases = cases_of(run)
    assert [t["path"] for t in report["tests"]] == [f"p2pdma_rig.{c['id']}" for c in cases]
    assert [t["status"] for t in report["tests"]] == [STATUS[c["verdict"]] for c in cases]
    assert [t["misc"]["rig_verdict"] for t in report["tests"]] == [c["verdict"] for c in cases]
    assert len({t["id"] for t in report["tests"]}) == len(cases)
    assert all(t["build_id"] == build["id"] for t in report["tests"])


def test_verdicts_map_onto_kcidb_statuses_with_the_reason_kept():
    report = to_kcidb(BROKEN_RUN)
    tests = {t["path"].removeprefix("p2pdma_rig."): t for t in report["tests"]}
    assert {i: t["status"] for i, t in tests.items()} == {
        "sysfs.published": "PASS", "mmap.mremap_dontunmap": "PASS", "leak.data_after_free": "FAIL",
        "selftest.hang": "ERROR", "selftest.leak_mapping": "FAIL", "kernel.console.boot-1": "PASS"}
    # the boot's own result (a splat outside every case would fail it) is a test like the cases
    assert tests["kernel.console.boot-1"]["environment"]["misc"]["topology"] == "default"
    # xfail: the known bug showed, so the code is faulty (FAIL); which bug, and why, is kept
    leak = tests["leak.data_after_free"]
    assert leak["misc"]["rig_verdict"] == "xfail" and leak["misc"]["known_issue"] == "p2pmem-not-zeroed"
    assert leak["misc"]["reason"].startswith("known issue p2pmem-not-zeroed: p2pmem_alloc_mmap()")
    assert "known issue p2pmem-not-zeroed" in leak["log_excerpt"] and "[xfail]" in leak["comment"]
    [issue] = report["issues"]
    assert issue["id"] == f"{ORIGIN}:p2pmem-not-zeroed" and issue["culprit"]["code"] is True
    [incident] = report["incidents"]
    assert (incident["test_id"], incident["issue_id"], incident["present"]) == (leak["id"], issue["id"], True)
    # error and fail keep their reasons too
    assert "watchdog: the probe ran longer than 5s" in tests["selftest.hang"]["log_excerpt"]
    assert "left the machine changed" in tests["selftest.leak_mapping"]["log_excerpt"]
    assert "p2pdma-rig: begin selftest.leak_mapping" in tests["selftest.leak_mapping"]["log_excerpt"]


def test_a_real_patched_run_an_xpass_and_its_patchset():
    report = to_kcidb(PATCHED_RUN)
    tests = {t["path"].removeprefix("p2pdma_rig."): t for t in report["tests"]}
    leak = tests["leak.data_after_free"]
    assert leak["status"] == "PASS" and leak["misc"]["rig_verdict"] == "xpass"
    assert leak["misc"]["reason"] == "known issue p2pmem-not-zeroed did not show: the kernel may fix it"
    [incident] = report["incidents"]
    assert incident["present"] is False and incident["test_id"] == leak["id"]
    # KCIDB's patchset hash: sha256 of the patches' sha256s, one per line (the recorded patch, as it was then)
    recorded = json.loads((PATCHED_RUN / "manifest.json").read_text())["kernel"]["patches"][0]["sha256"]
    shell = subprocess.run(f"echo {recorded} | sha256sum | cut -c-64", shell=True,
                           capture_output=True, text=True, check=True).stdout.strip()
    [checkout], [build] = report["checkouts"], report["builds"]
    assert checkout["patchset_hash"] == shell
    base = to_kcidb(BASE_RUN)
    assert checkout["id"] != base["checkouts"][0]["id"] and build["id"] != base["builds"][0]["id"]
    assert build["command"].endswith(f"--patch {json.loads((PATCHED_RUN / 'manifest.json').read_text())['kernel']['patches'][0]['file']}")


def test_xpass_is_a_pass_whose_incident_says_the_bug_was_absent(tmp_path):
    """A kernel that fixes a known bug (the shipped patch on leak.data_after_free), as write_run records it,
    with the patch's manifest entry as rig/sources.py writes it."""
    xpass = CaseResult(
        id="leak.data_after_free", area="leak", description="a new mapping must not see old bytes", section="1.2",
        verdict="xpass", expected={"stale_bytes": 0}, observed={"stale_bytes": 0}, mismatches=[],
        reason="known issue p2pmem-not-zeroed did not show: the kernel under test may fix it", duration_s=0.3,
        boot=1, dmesg="", known_issue="p2pmem-not-zeroed")
    manifest = json.loads((BASE_RUN / "manifest.json").read_text())
    manifest["kernel"]["patches"] = to_json([p.manifest() for p in read_patches([FIX])])
    d = tmp_path / "patched"
    d.mkdir()
    write_run(d, [xpass], [], from_json(RunManifest, manifest))
    report = to_kcidb(d, url_base="https://ci.example.org/artifacts/nightly-default")
    SCHEMA.validate_exactly(report)
    [test] = report["tests"]
    assert test["status"] == "PASS" and test["misc"]["rig_verdict"] == "xpass"
    assert "did not show" in test["log_excerpt"]
    [incident] = report["incidents"]
    assert incident["present"] is False and incident["test_id"] == test["id"]
    # the patch set is KCIDB's hash of the patch files, exactly as its docs compute it
    shell = subprocess.run(f"sha256sum {FIX} | cut -c-64 | sha256sum | cut -c-64", shell=True,
                           capture_output=True, text=True, check=True).stdout.strip()
    [checkout] = report["checkouts"]
    assert checkout["patchset_hash"] == shell == patchset_hash([p.manifest() for p in read_patches([FIX])])
    assert "Clear p2pmem before mapping it to userspace" in checkout["comment"]
    assert checkout["id"] != to_kcidb(BASE_RUN)["checkouts"][0]["id"]  # another checkout than the plain source
    assert test["log_url"] == "https://ci.example.org/artifacts/nightly-default/boot-1/console.log"


def test_the_validator_is_live_and_the_origin_checked():
    report = to_kcidb(BASE_RUN)
    report["tests"][0]["status"] = "XFAIL"  # not a KCIDB status
    with pytest.raises(jsonschema.ValidationError):
        SCHEMA.validate_exactly(report)
    report = to_kcidb(BASE_RUN)
    report["tests"][0]["start_time"] = "yesterday"  # the format checker is on
    with pytest.raises(jsonschema.ValidationError):
        SCHEMA.validate_exactly(report)
    with pytest.raises(ConfigError, match="KCIDB origin"):
        to_kcidb(BASE_RUN, origin="P2PDMA-rig")


def test_rig_kcidb_command(tmp_path, capsys):
    import shutil

    d = tmp_path / "run"
    shutil.copytree(BROKEN_RUN, d)
    assert rig("kcidb", str(d)) == 0
    assert capsys.readouterr().out == f"{d / 'kcidb.json'}\n"
    SCHEMA.validate_exactly(json.loads((d / "kcidb.json").read_text()))
    assert rig("kcidb", str(d), "-o", "-", "--origin", "my_lab") == 0
    report = json.loads(capsys.readouterr().out)
    SCHEMA.validate_exactly(report)
    assert {t["origin"] for t in report["tests"]} == {"my_lab"} and report["builds"][0]["id"].startswith("my_lab:")
    assert rig("kcidb", str(tmp_path / "missing")) == 2
    assert write_kcidb(d, tmp_path / "sub" / "k.json") == tmp_path / "sub" / "k.json"
    assert cli_report.HANDLERS["kcidb"]
