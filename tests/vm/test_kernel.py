"""The kernel under review (issue: sources, patches, series walk) on real kernels: runs through pipeline.run(),
the errors and the series table through the rig CLI."""
import json
import os

import pytest

from rig.config import load_config

from conftest import DATA, ZEROING_FIX, run_pipeline, run_rig

pytestmark = pytest.mark.vm

STALE = DATA / "patches" / "0001-PCI-P2PDMA-stale-context.patch"


def rig(*args):
    return run_rig(*args, timeout=1500)  # a patched kernel may be a rebuild


def kernel_entries():
    root = load_config().cache_path / "kernels"
    return sorted(p.name for p in root.iterdir() if p.is_dir())


def test_shipped_fix_flips_the_leak_case_from_xfail_to_xpass(tmp_path):
    base = run_pipeline(tmp_path / "base", select=["leak.data_after_free"])
    assert base.exit_code == 0, base.log
    fixed = run_pipeline(tmp_path / "fixed", patches=[ZEROING_FIX], select=["leak.data_after_free"])
    assert fixed.exit_code == 0, fixed.log
    verdict = {name: r.data["cases"][0]["verdict"] for name, r in (("base", base), ("fixed", fixed))}
    manifest = fixed.data["manifest"]["kernel"]
    assert verdict == {"base": "xfail", "fixed": "xpass"}
    assert manifest["patches"][0]["subject"] == "[PATCH] PCI/P2PDMA: Clear p2pmem before mapping it to userspace"
    assert len(manifest["patches"][0]["sha256"]) == 64
    assert "--patch" in manifest["reproduce"]


def test_a_patch_that_does_not_apply_is_exit_2_and_leaves_the_cache_clean():
    before = kernel_entries()
    r = rig("kernel", "--patch", STALE)
    assert r.returncode == 2, r.stderr
    assert "0001-PCI-P2PDMA-stale-context.patch" in r.stderr
    assert "drivers/pci/p2pdma.c: hunk #1 (at line 103) does not apply" in r.stderr
    assert kernel_entries() == before
    src = load_config().cache_path / "src"
    tree = next(p for p in src.iterdir() if p.is_dir() and p.name.startswith("debian-linux-source-6.12"))
    assert (tree / "drivers/pci/p2pdma.c").read_text() == (DATA / "p2pdma-6.12.117.c").read_text()
    assert not list((tree / "drivers/pci").glob("*.rej"))


def test_series_walk_names_the_patch_that_changed_a_verdict(tmp_path):
    mbox = tmp_path / "series.mbox"
    mbox.write_text(ZEROING_FIX.read_text())
    r = rig("series", mbox, "-k", "leak.data_after_free", "-k", "mmap.private", "--out", tmp_path / "walk")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "leak.data_after_free: xfail -> xpass" in r.stdout
    steps = json.loads((tmp_path / "walk" / "series.json").read_text())["steps"]
    assert [s["verdicts"]["leak.data_after_free"] for s in steps] == ["xfail", "xpass"]
    assert [s["verdicts"]["mmap.private"] for s in steps] == ["pass", "pass"]


def test_series_walk_stops_at_a_patch_that_does_not_apply(tmp_path):
    mbox = tmp_path / "series.mbox"
    mbox.write_text(ZEROING_FIX.read_text() + "\n" + STALE.read_text())
    r = rig("series", mbox, "-k", "mmap.private", "--out", tmp_path / "walk")
    assert r.returncode == 2
    assert "STOPPED: patch 2" in r.stdout and "does not apply" in r.stdout
    steps = json.loads((tmp_path / "walk" / "series.json").read_text())["steps"]
    assert len(steps) == 2  # base and the first patch ran; the walk stopped before the broken one


# its cold build is 8 of a fresh machine's make test minutes; the nightly job runs the profile on 6.12 and 7.3
@pytest.mark.skipif(os.environ.get("P2PDMA_RIG_GUPFAST") != "1",
                    reason="the gupfast profile runs in the nightly job (.github/workflows/nightly.yml); "
                           "P2PDMA_RIG_GUPFAST=1 make test runs it here too")
def test_gupfast_profile_passes_the_whole_suite(tmp_path):
    """The profile where GUP-fast really handles P2PDMA pages (no CONFIG_SECRETMEM, which makes GUP-fast give
    up on every page of a kernel that has it): every case, every topology, as in the default profile."""
    r = run_pipeline(tmp_path / "gupfast", profile="gupfast")
    data = r.data
    bad = {c["id"]: c["verdict"] for c in data["cases"] if c["verdict"] not in ("pass", "xfail")}
    assert r.exit_code == 0 and not bad, r.summary[-3000:] + r.log[-2000:]
    kernel = data["manifest"]["kernel"]
    assert kernel["profile"] == "gupfast"
    config = (load_config().cache_path / "kernels" / kernel["key"] / "config").read_text()
    assert "# CONFIG_SECRETMEM is not set" in config
