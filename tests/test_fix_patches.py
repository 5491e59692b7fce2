"""patches/fixes/ as data: every patch is in a kernel's series and fixes a known issue that names it, each is
written for submission (one [PATCH] mail, a subject in the subsystem's form, no sign-off: the sender adds
theirs), and each Fixes: tag names an id of 12 hex digits with its subject."""
import re

import pytest

from conftest import ROOT
from rig.expectations import load_expectations, load_race_known_issues
from rig.sources import read_patches

FIXES = ROOT / "patches" / "fixes"
SERIES = sorted(FIXES.glob("series-*"))
PATCHES = sorted(FIXES.glob("*/*.patch"))


def series_entries(series):
    return [p.source_file for p in read_patches([series])]


def test_every_patch_is_in_a_series_and_every_entry_exists():
    listed = {p for s in SERIES for p in series_entries(s)}
    assert {p.resolve() for p in PATCHES} == listed
    assert [s.name for s in SERIES] == ["series-6.12", "series-7.3"]
    # a patch for both kernels (common/) is in both series, a version's own only in its own
    for p in PATCHES:
        homes = [s.name for s in SERIES if p.resolve() in series_entries(s)]
        assert homes == (["series-6.12", "series-7.3"] if p.parent.name == "common"
                         else [f"series-{p.parent.name.removeprefix('linux-')}"]), p


def test_every_patch_fixes_a_known_issue_that_names_it():
    named = ({f for e in load_expectations().values() for k in e.declared_issues for f in k.fix}
             | {f for k in load_race_known_issues() for f in k.fix})
    # QEMU's fixes (patches/qemu/) are named by QEMU's known issues the same way
    qemu = {str(p.relative_to(ROOT)) for p in (ROOT / "patches" / "qemu").glob("*.patch")}
    assert {str(p.relative_to(ROOT)) for p in PATCHES} | qemu == named


@pytest.mark.parametrize("patch", PATCHES, ids=lambda p: f"{p.parent.name}/{p.name[:30]}")
def test_each_patch_is_written_for_submission(patch):
    [p] = read_patches([patch])
    assert re.fullmatch(r"\[PATCH\] [A-Za-z0-9/_-]+(/[A-Za-z0-9_-]+)*: \S.*", p.subject), p.subject
    text = patch.read_text()
    message = text.split("\n---\n", 1)[0]
    assert "Signed-off-by:" not in message
    assert re.search(r"p2pdma-rig\s+(cases?|race\s+scenarios?)\s", message)  # the reproducer
    for tag in re.findall(r"^Fixes: .*$", message, re.M):
        assert re.fullmatch(r'Fixes: [0-9a-f]{12} \("[^"]+"\)', tag), tag
