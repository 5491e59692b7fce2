"""ktap.txt read by the kernel's own KTAP parser (tools/testing/kunit/kunit_parser.py of the built source tree):
every verdict lands on the status KTAP gives it, with its reason on the line. Needs the kernel source (extracted
by the first build), hence under tests/vm."""
import importlib
import sys
from pathlib import Path

import pytest

from rig.config import load_config
from rig.kernel import build_kernel, kernel_spec
from rig.model import CaseResult
from rig.progress import Progress
from rig.results import to_ktap

pytestmark = pytest.mark.vm


@pytest.fixture(scope="module")
def kunit_parser():
    kernel = build_kernel(kernel_spec(load_config()), Progress("kernel"))
    tree = (Path(kernel.manifest.build_dir) / "source").resolve()  # kbuild's link to the tree it compiled
    sys.path.insert(0, str(tree / "tools" / "testing" / "kunit"))
    try:
        yield importlib.import_module("kunit_parser")
    finally:
        sys.path.pop(0)


def case(cid, verdict, reason="", mismatches=()):
    return CaseResult(id=cid, area=cid.split(".")[0], description="d", section="1", verdict=verdict,
                      expected={}, observed={}, mismatches=list(mismatches), reason=reason, duration_s=0.1,
                      boot=1, dmesg="")


def test_every_verdict_through_kunit_parser(kunit_parser):
    results = [
        case("mmap.ok", "pass"),
        case("mmap.bad", "fail", mismatches=["mmap: expected 'EINVAL', observed 'OK'"]),
        case("mmap.known", "xfail", "known issue p2pmem-not-zeroed: a new mapper # reads\nold bytes"),
        case("mmap.fixed", "xpass", "known issue p2pmem-not-zeroed did not show"),
        case("gup.noperm", "skip", "no gup_test in\nthis kernel"),
        case("gup.lost", "error", "the guest stopped answering during the case"),
        case("gup.slow", "error", "watchdog: the probe ran longer than 60s and was killed"),
    ]
    text = to_ktap(results)
    lines = text.splitlines()
    assert all(not ln.startswith("   ") or ln.startswith("  ") and not ln.startswith("    ") for ln in lines)
    assert "  ok 3 mmap.known # XFAIL known issue p2pmem-not-zeroed: a new mapper No. reads old bytes" in lines
    assert "  ok 1 gup.noperm # SKIP no gup_test in this kernel" in lines
    assert "  not ok 2 gup.lost # ERROR the guest stopped answering during the case" in lines
    assert "  not ok 3 gup.slow # TIMEOUT watchdog: the probe ran longer than 60s and was killed" in lines
    assert "  # mmap.fixed: XPASS: known issue p2pmem-not-zeroed did not show" in lines
    assert not any("XPASS" in ln and ln.lstrip().startswith(("ok", "not ok")) for ln in lines)

    S = kunit_parser.TestStatus
    top = kunit_parser.parse_run_tests(text.splitlines(keepends=True))
    assert top.counts.errors == 0
    statuses = {t.name: t.status for area in top.subtests for t in area.subtests}
    assert statuses == {"mmap.ok": S.SUCCESS, "mmap.bad": S.FAILURE, "mmap.known": S.SUCCESS,
                        "mmap.fixed": S.SUCCESS, "gup.noperm": S.SKIPPED, "gup.lost": S.FAILURE,
                        "gup.slow": S.FAILURE}
    assert [(a.name, a.status) for a in top.subtests] == [("mmap", S.FAILURE), ("gup", S.FAILURE)]
