"""docs/behaviour.md against the real guest-tests/expectations.yaml: every section a case cites is a heading,
every case is documented under one of its sections, and `rig list` / the loader point into the document."""
import argparse
import re

import pytest
import yaml

from rig import cli
from rig.behaviour_doc import BEHAVIOUR_DOC, github_anchor, link, parse, section_numbers, sections
from rig.errors import ConfigError
from rig.expectations import EXPECTATIONS_FILE, load_expectations

RAW = yaml.safe_load(EXPECTATIONS_FILE.read_text())
CASES = RAW["cases"]
DOC = sections()


def test_the_document_exists_and_numbers_its_sections():
    assert BEHAVIOUR_DOC.is_file()
    for n in ("1", "1.1", "1.2", "1.3", "1.4", "2", "3", "4", "5", "6", "7", "8", "9"):
        assert n in DOC, f"section {n} is not a heading of docs/behaviour.md"
    assert [f"8.{i}" for i in range(1, 11)] == [n for n in DOC if n.startswith("8.")]
    # a heading starts with its number, so a tool finds it; anchors are unique
    assert all(s.title.split()[0] == n for n, s in DOC.items())
    assert len({s.anchor for s in DOC.values()}) == len(DOC)


@pytest.mark.parametrize("cid", list(CASES))
def test_every_section_a_case_cites_is_a_heading(cid):
    missing = [n for n in section_numbers(CASES[cid]["section"]) if n not in DOC]
    assert not missing, f"{cid}: section(s) {missing} are not headings of docs/behaviour.md"


def test_every_known_issue_section_is_a_heading():
    for issue in RAW.get("known_issues") or []:
        assert all(n in DOC for n in section_numbers(issue["section"])), issue["id"]


@pytest.mark.parametrize("cid", list(CASES))
def test_every_case_is_documented_under_one_of_its_sections(cid):
    """A new case must be listed (as `area.name`, usually on the section's **Checked by:** line) under a
    section it cites, so the document says what the case checks."""
    cited = section_numbers(CASES[cid]["section"])
    assert any(f"`{cid}`" in DOC[n].body for n in cited if n in DOC), (
        f"{cid} is not listed under its section(s) {', '.join(cited)} of docs/behaviour.md: add `{cid}` to the "
        f"**Checked by:** line of section {cited[0]} (and describe what it checks if the section does not)")


def test_the_document_lists_no_case_that_does_not_exist():
    areas = {cid.split(".", 1)[0] for cid in CASES}
    text = BEHAVIOUR_DOC.read_text()
    named = {m for m in re.findall(r"`([a-z][a-z0-9_]*\.[a-z0-9_]+)`", text) if m.split(".", 1)[0] in areas}
    assert named - set(CASES) == set(), "docs/behaviour.md lists cases that expectations.yaml does not have"


def test_a_listed_case_sits_under_a_section_it_cites():
    """The other direction: a case on a section's **Checked by:** lines whose `section:` does not name that
    section is a stale entry (prose may mention any case)."""
    for n, s in DOC.items():
        checked_by = " ".join(re.findall(r"\*\*Checked by:\*\*(.*?)(?:\n\s*\n|$)", s.body, re.S))
        for cid in re.findall(r"`([a-z][a-z0-9_]*\.[a-z0-9_]+)`", checked_by):
            if cid in CASES:
                assert n in section_numbers(CASES[cid]["section"]), f"{cid} is listed under {n}, cites another"


def test_github_anchors():
    assert github_anchor("1.2 mmap of p2pmem/allocate") == "12-mmap-of-p2pmemallocate"
    assert github_anchor("8.10 gup_test long-term pin with FOLL_PCI_P2PDMA") == \
        "810-gup_test-long-term-pin-with-foll_pci_p2pdma"
    assert github_anchor("9 QEMU's NVMe and what it changes") == "9-qemus-nvme-and-what-it-changes"
    assert link("1.2") == "docs/behaviour.md#12-mmap-of-p2pmemallocate"
    assert link("99") == "docs/behaviour.md"


def test_parse_ends_a_section_at_the_next_numbered_heading_only():
    doc = parse("# Title\n## 1 One\na\n### not numbered\nb\n```\n## 7 in a code block\n```\n## 1.1 Sub\nc\n"
                "## 1 One\n")
    assert list(doc) == ["1", "1.1"]
    assert "a" in doc["1"].body and "not numbered" in doc["1"].body and "in a code block" in doc["1"].body
    assert doc["1.1"].body.strip() == "c"


def test_the_loader_refuses_a_section_that_is_not_a_heading(tmp_path):
    p = tmp_path / "e.yaml"
    p.write_text("cases:\n  a.b:\n    section: '1.2, 42.7'\n    expect: {a: 1}\n")
    with pytest.raises(ConfigError, match=r"section 42\.7 is not a heading of docs/behaviour\.md"):
        load_expectations(p)
    p.write_text("cases:\n  a.b:\n    expect: {a: 1}\n")
    with pytest.raises(ConfigError, match="needs a 'section' of docs/behaviour.md"):
        load_expectations(p)


def test_rig_list_links_each_case_to_its_first_section(capsys):
    assert cli.cmd_list(argparse.Namespace(select=["unbind.while_mapped", "mmap.private"], kernel=None)) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert f"docs/behaviour.md#{DOC['1.4'].anchor}" in lines["unbind.while_mapped"]
    assert "docs/behaviour.md#12-mmap-of-p2pmemallocate" in lines["mmap.private"]
