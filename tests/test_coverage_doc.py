"""docs/coverage.md, the branch map of the userspace P2PDMA path, against what it names: every mutation a row cites
is a patch in tests/data/mutations/ and in one of its tables (README.md, nvme-rootbus.md), every case it cites exists, and the HOLE rows
stay at or under half of the 47 of the first map (issue 20's bar)."""
import re

from rig.expectations import load_expectations

from conftest import ROOT

COVERAGE = ROOT / "docs" / "coverage.md"
MUTATIONS = ROOT / "tests" / "data" / "mutations"


def _rows() -> list[str]:
    return [line for line in COVERAGE.read_text().splitlines() if re.match(r"\| [A-Z]\d+ \|", line)]


def test_the_hole_rows_are_at_most_half_of_the_first_maps():
    holes = [row.split(" | ")[0].strip("| ") for row in _rows() if "HOLE" in row]
    assert len(holes) <= 23, f"{len(holes)} HOLE rows: {', '.join(holes)}"


def test_every_mutation_a_row_cites_is_a_patch_in_the_mutations_tables():
    tables = "".join(p.read_text() for p in MUTATIONS.glob("*.md"))
    cited = {m for row in _rows() for m in re.findall(r"mutation ([a-z0-9]+-[a-z0-9-]+)", row)}
    assert len(cited) >= 30
    missing = [m for m in sorted(cited) if not (MUTATIONS / f"{m}.patch").is_file() or f"`{m}" not in tables]
    assert not missing, missing


def test_every_case_a_row_cites_exists():
    cases = set(load_expectations())
    cited = {c for row in _rows() for c in re.findall(r"`([a-z]+\.[a-z0-9_]+)`", row)}
    unknown = [c for c in sorted(cited) if c.split(".")[0] in {e.split(".")[0] for e in cases} and c not in cases]
    assert not unknown, unknown
