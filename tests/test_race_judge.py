"""A race scenario's verdict from its reports, on a real console: the surprise-removal run in which the rig
found the kernfs mmap-count race (tests/data/race/, recorded by `rig race --seed 7 --scenario surprise-removal`
on the default 6.12.117 kernel, untouched)."""
import dataclasses

import pytest

from rig.console import case_slices, find_splats, splats_in
from rig.errors import ConfigError
from rig.expectations import VersionWindow, load_race_known_issues
from rig.judge import judge_scenario
from rig.model import SplatRecord, Standing, Verdict
from rig.race import SCENARIOS, SELFTESTS

from conftest import DATA

CONSOLE = (DATA / "race" / "surprise-removal-kernfs-drain.console.log").read_text()
KNOWN = load_race_known_issues(scenarios=SCENARIOS + SELFTESTS)


def reports(scenario="surprise-removal"):
    return [SplatRecord.of(s, 1, f"race.{scenario}")
            for s in splats_in(find_splats(CONSOLE), case_slices(CONSOLE)["race.surprise-removal"])]


def judge(failure="", found=None, issues=KNOWN, release="6.12.117", alive=True, scenario="surprise-removal"):
    return judge_scenario(scenario, failure, reports() if found is None else found, issues, release, alive)


def test_the_recorded_report_is_the_kernfs_warning_in_its_scenario_slice():
    assert [s.title for s in reports()] == ["WARNING in kernfs_drain_open_files"]


def test_a_known_bug_only_is_xfail_and_names_the_issue():
    found = reports()
    verdict, failure, hit = judge(found=found)
    assert (verdict, failure) == (Verdict.XFAIL, "")
    assert hit == ["kernfs-mmap-count-race: known issue, still present in 6.12.117 (seen in 6.12.117, 6.12.118, "
                   "7.3.4); the rig's fix: patches/fixes/common/0004-kernfs-Count-mmapped-open-files-with-an-atomic_t"
                   ".patch"]
    assert found[0].standing is Standing.KNOWN_ISSUE and found[0].known_issue == "kernfs-mmap-count-race"


def test_a_broken_invariant_stays_a_failure_with_a_known_report():
    assert judge("invariant")[:2] == (Verdict.FAIL, "invariant")


def test_the_same_report_in_a_scenario_it_is_not_known_for_fails():
    # mmap-munmap never removes the node: a drain warning there would be something else
    found = reports()
    assert judge(found=found, scenario="mmap-munmap") == (Verdict.FAIL, "splat", [])
    assert found[0].counts


def test_the_version_window_is_the_case_known_issues_rule():
    fixed = [dataclasses.replace(k, window=dataclasses.replace(k.window, fixed_in="6.12.200", fix_commit="abc"))
             for k in KNOWN]
    assert judge(issues=fixed, release="6.12.200")[:2] == (Verdict.FAIL, "splat")
    assert judge(issues=fixed, release="6.12.117")[0] == Verdict.XFAIL
    # `since`, which the race's own rule used to ignore: a kernel before the bug fails on the report
    later = [dataclasses.replace(k, window=dataclasses.replace(k.window, since="6.13", since_change="x"))
             for k in KNOWN]
    assert judge(issues=later, release="6.12.117")[:2] == (Verdict.FAIL, "splat")
    assert judge(issues=later, release="7.3.4")[0] == Verdict.XFAIL
    assert VersionWindow(since="6.13").contains("7.3.4") and not VersionWindow(since="6.13").contains("6.12.117")


def test_a_report_the_watcher_did_not_see_still_fails_the_scenario():
    # the racer ended cleanly and the report reached the console after the watcher's last look
    assert judge(issues=[])[:2] == (Verdict.FAIL, "splat")
    assert judge(issues=[], alive=False)[:2] == (Verdict.FAIL, "crash")


def test_a_clean_scenario_passes():
    assert judge(found=[]) == (Verdict.PASS, "", [])


@pytest.mark.parametrize("entry,message", [
    ({"id": "x", "scenarios": ["no-such"], "splat": "WARNING in f", "reason": "r", "seen_in": ["6.12.117"]},
     "unknown scenario(s) no-such"),
    ({"id": "x", "scenarios": ["unbind-mapped"], "splat": "WARNING in f", "reason": "r"}, "needs seen_in"),
    ({"id": "x", "scenarios": ["unbind-mapped"], "splat": "(", "reason": "r", "seen_in": ["6.12.117"]},
     "is not a regex"),
    ({"id": "x", "scenarios": ["unbind-mapped"], "splat": "W", "reason": "r", "seen_in": ["6.12.117"],
      "fixed_in": "7.4"}, "go together"),
])
def test_bad_race_known_issues_are_rejected(tmp_path, entry, message):
    import yaml
    p = tmp_path / "e.yaml"
    p.write_text(yaml.safe_dump({"cases": {}, "race_known_issues": [entry]}))
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_race_known_issues(p, SCENARIOS)


def test_a_run_of_the_aimed_scenario_without_the_report_says_how_long_against_the_median():
    [issue] = [k for k in KNOWN if k.id == "kernfs-mmap-count-race"]
    aimed = issue.scenarios[0]
    assert aimed == "mmap-count" and issue.median_hit_s > 0
    note = issue.unseen(aimed, 10 * issue.median_hit_s, "6.12.118")
    assert note.startswith("kernfs-mmap-count-race: not seen in ") and note.endswith("(10x)")
    # another scenario, or a kernel outside the issue's window, says nothing
    assert issue.unseen("unbind-mapped", 600, "6.12.118") == ""


def test_the_time_to_the_first_report_comes_from_the_kernel_stamps():
    from rig.race import time_to_first_report

    text = "[    2.536537] p2pdma-race: start scenario=mmap-count seconds=60\n" + reports()[0].text
    assert time_to_first_report(text, reports()) == round(float(reports()[0].text[1:13]) - 2.536537, 1)
    assert time_to_first_report("no start line", reports()) is None and time_to_first_report(text, []) is None
