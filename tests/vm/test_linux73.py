"""Mainline 7.3 end to end: Debian's linux-source-7.3 fetched from the archive by the rig (its own apt state),
built, and the whole suite run on it with the expectations chosen from its `make kernelrelease`; then the 7.3
zeroing fix flips leak.data_after_free from XFAIL to XPASS. The first run on a fresh machine downloads 167 MB
and builds the kernel cold (about 9 minutes on 2 cores); later runs reuse the cache."""
import json
import os

import pytest

from conftest import ROOT, run_rig

# Opt-in until issue 10 is finished: the 25 cases added after the 7.3 expectations were written (nvme.*, the
# coverage cases, the kernel-message checks) have no 7.3 verdicts yet, and 15 of them differ on 7.3.4 (notes of
# the third session). A red make test would hide every other result, a green one would claim what is not done.
pytestmark = [pytest.mark.vm, pytest.mark.skipif(
    os.environ.get("P2PDMA_RIG_LINUX73") != "1",
    reason="7.3 end to end is opt-in (P2PDMA_RIG_LINUX73=1): the cases added in the third session have no 7.3 "
           "expectations yet (issue 10)")]

SOURCE = "debian:7.3"
FIX_73 = ROOT / "patches" / "linux-7.3" / "0001-PCI-P2PDMA-Clear-p2pmem-before-mapping-it-to-userspa.patch"


def rig(*args):
    return run_rig(*args, timeout=3600)  # a cold 7.3 build plus the whole suite


@pytest.fixture(scope="module")
def run73(tmp_path_factory):
    out = tmp_path_factory.mktemp("linux73") / "run"
    r = rig("run", "--source", SOURCE, "--out", out)
    data = json.loads((out / "results.json").read_text()) if (out / "results.json").exists() else None
    return r, data


@pytest.mark.timeout(3600)
def test_the_whole_suite_passes_on_73(run73):
    r, data = run73
    assert data is not None, r.stderr[-3000:]
    bad = [f"{c['id']}: {c['verdict']} {c['reason']} {c['mismatches']}" for c in data["cases"]
           if c["verdict"] in ("fail", "error", "xpass")]
    assert r.returncode == 0 and not bad, "\n".join(bad) + r.stdout[-3000:]


@pytest.mark.timeout(3600)
def test_73_manifest_names_the_package_and_the_release(run73):
    _r, data = run73
    kernel = data["manifest"]["kernel"]
    assert kernel["kernelrelease"].startswith("7.3.")
    deb = kernel["source"]["debian"]
    assert deb["package"] == "linux-source-7.3" and deb["debian_patches"] is True
    assert deb["suite"] in ("trixie-backports", "sid", "experimental") and len(deb["deb_sha256"]) == 64
    assert kernel["source"]["id"].startswith("debian-linux-source-7.3_")


@pytest.mark.timeout(3600)
def test_every_difference_from_612_is_explained(run73):
    _r, data = run73
    cases = {c["id"]: c for c in data["cases"]}
    # an intended change upstream: the version override applies, and says which change
    pre = cases["odirect.preadv_ram_then_p2pmem"]
    assert pre["verdict"] == "pass" and pre["observed"]["read"] == "OK"
    assert "6.17 and later" in pre["reason"] and "don't merge different kinds of P2P transfers" in pre["reason"]
    # a regression: a known issue with its versions, still present
    intel = cases["peer.rootbus_intel_dio"]
    assert intel["verdict"] == "xfail" and intel["known_issue"] == "p2p-unreachable-einval"
    assert "still present in 7.3" in intel["reason"]
    for cid in ("leak.data_after_free", "fault.wp_loop_mprotect", "fault.madv_populate_read"):
        assert cases[cid]["verdict"] == "xfail" and "still present in 7.3" in cases[cid]["reason"], cid


@pytest.mark.timeout(3600)
def test_73_zeroing_fix_flips_the_leak_case(tmp_path):
    r = rig("run", "--source", SOURCE, "--patch", FIX_73, "-k", "leak.data_after_free", "--out", tmp_path / "fixed")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    data = json.loads((tmp_path / "fixed" / "results.json").read_text())
    assert data["cases"][0]["verdict"] == "xpass"
    assert data["manifest"]["kernel"]["patches"][0]["subject"] == \
        "[PATCH] PCI/P2PDMA: Clear p2pmem before mapping it to userspace"
