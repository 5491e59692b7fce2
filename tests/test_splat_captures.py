"""Every splat pattern of rig/console.py proven on a real console of the rig's own kernel (syzkaller pkg/report
testdata style): tests/data/splats/<name>.log is a whole serial console recorded by record.py, <name>.expected
the outcome checked against it. tests/data/splats/README.md says how each was recorded."""
import pytest
import yaml

from rig import console
from rig.console import case_slices, find_splats, splats_in

from conftest import DATA

SPLATS = DATA / "splats"
CAPTURES = sorted(p.stem for p in SPLATS.glob("*.expected"))


def load(name):
    return (SPLATS / f"{name}.log").read_text(), yaml.safe_load((SPLATS / f"{name}.expected").read_text())


def test_every_capture_has_its_console():
    assert len(CAPTURES) >= len(console.PATTERNS)
    assert sorted(p.stem for p in SPLATS.glob("*.log")) == CAPTURES


@pytest.mark.parametrize("name", CAPTURES)
def test_first_splat_is_titled(name):
    text, exp = load(name)
    splats = find_splats(text)
    assert splats, f"{name}: no splat found"
    first = splats[0]
    assert (first.kind, first.title, first.fatal) == (exp["kind"], exp["title"], exp["fatal"])
    if exp["frame"]:
        assert first.title.endswith(f" in {exp['frame']}"), first.title
    # the report is cut where it ends: not after its first line, not in the middle of a stack or a KASAN report
    assert len(first.text.splitlines()) > 3
    assert first.text.count("<TASK>") == first.text.count("</TASK>")
    if first.kind == "kasan" and "wild-memory-access" not in first.title:  # a wild address has no shadow to show
        assert "Memory state around the buggy address" in first.text
    if first.kind == "kasan":
        assert first.text.splitlines()[-1].endswith("=" * 66)  # up to KASAN's closing rule


@pytest.mark.parametrize("name", CAPTURES)
def test_splat_is_attributed_to_the_trigger(name):
    text, exp = load(name)
    lines = text.splitlines()
    if exp["case"] is None:  # a report at boot, before any case: outside every slice
        first = find_splats(text)[0]
        assert not any(splats_in([first], sl) for sl in case_slices(text).values())
        return
    sl = case_slices(text)[exp["case"]]
    assert f"p2pdma-rig: begin {exp['case']}" in lines[sl.start]
    inside = splats_in(find_splats(text), sl)
    assert inside and inside[0].title == exp["title"]
    # nothing before the trigger: the boot itself is clean
    assert [s.title for s in find_splats("\n".join(lines[:sl.start]))] == []


def _pattern_of(line):
    body = console.strip_time(line)
    return next(i for i, p in enumerate(console.PATTERNS) if p.regex.search(body))


def test_every_pattern_is_proven_by_a_capture():
    """A pattern added to the table without a real capture fails here: record one (tests/data/splats/record.py).
    Only first splats count: their titles are the ones the .expected files check."""
    started = set()
    for name in CAPTURES:
        text, _exp = load(name)
        started.add(_pattern_of(text.splitlines()[find_splats(text)[0].line]))
    missing = [f"{p.kind}: {p.regex.pattern}" for i, p in enumerate(console.PATTERNS) if i not in started]
    assert not missing, "patterns without a real capture:\n" + "\n".join(missing)
