"""The expectations table against what real kernels showed: every observation of a whole `rig run`
(tests/data/observations/, written by its record.py from a run's results.json) judged again with today's table
for that kernel release. A table edit that would turn a real run red, or a known issue whose signature no
longer matches the bug, fails here in a second, without a VM."""
import json

import pytest

from rig.expectations import MessageRules, for_kernel, load_expectations
from rig.judge import CaseEvidence, judge_case
from rig.model import SplatRecord, Verdict

from conftest import DATA

RECORDINGS = sorted((DATA / "observations").glob("*.json"))


def test_both_kernels_are_recorded():
    assert {p.stem for p in RECORDINGS} >= {"6.12.118-default", "7.3.4-default", "6.12.118-default-v3"}


@pytest.mark.parametrize("path", RECORDINGS, ids=lambda p: p.stem)
def test_a_recorded_run_is_green_under_todays_table(path):
    data = json.loads(path.read_text())
    table = for_kernel(load_expectations(), data["kernelrelease"], data.get("semantics", "merged"))
    bad = []
    for cid, rec in sorted(data["cases"].items()):
        if cid not in table:
            bad.append(f"{cid}: no longer in the table (record the run again)")
            continue
        reports = [SplatRecord("report", t, False, i, "", 1, cid) for i, t in enumerate(rec.get("splats", []))]
        result = {"obs": rec["observed"]} if rec["observed"] is not None else None
        j = judge_case(table[cid], CaseEvidence(result, dmesg=rec["dmesg"], splats=reports), MessageRules())
        if table[cid].skip:
            bad.append(f"{cid}: observed, but the table skips it on this design ({table[cid].skip})")
        elif j.verdict not in (Verdict.PASS, Verdict.XFAIL):
            bad.append(f"{cid}: {j.verdict} {j.reason} {j.mismatches}")
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("path", RECORDINGS, ids=lambda p: p.stem)
def test_every_case_of_the_table_was_seen_on_that_kernel(path):
    """A case added to the table needs a run on each recorded kernel (record.py), so its expectation is known
    to hold there, or its difference is explained (override or known issue)."""
    data = json.loads(path.read_text())
    table = for_kernel(load_expectations(), data["kernelrelease"], data.get("semantics", "merged"))
    missing = sorted(cid for cid, e in table.items() if not e.manual and not e.skip and cid not in data["cases"])
    assert not missing, f"not observed on {data['kernelrelease']}: {', '.join(missing)}"
