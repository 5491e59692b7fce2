"""A race scenario's verdict from its reports, on a real console: the surprise-removal run in which the rig
found the kernfs mmap-count race (tests/data/race/, recorded by `rig race --seed 7 --scenario surprise-removal`
on the default 6.12.117 kernel, untouched)."""
import dataclasses

import pytest

from rig.console import case_slices, find_splats, splats_in
from rig.errors import ConfigError
from rig.expectations import load_race_known_issues
from rig.race import SCENARIOS, SELFTESTS, judge_reports

from conftest import DATA

CONSOLE = (DATA / "race" / "surprise-removal-kernfs-drain.console.log").read_text()
KNOWN = load_race_known_issues(scenarios=SCENARIOS + SELFTESTS)


def reports(scenario="surprise-removal"):
    return splats_in(find_splats(CONSOLE), case_slices(CONSOLE)["race.surprise-removal"])


def test_the_recorded_report_is_the_kernfs_warning_in_its_scenario_slice():
    found = reports()
    assert [s.title for s in found] == ["WARNING in kernfs_drain_open_files"]


def test_a_known_bug_only_is_known_and_names_the_issue():
    verdict, known = judge_reports("surprise-removal", "ok", reports(), KNOWN, "6.12.117", alive=True)
    assert verdict == "known"
    (issue,) = known.values()
    assert issue.id == "kernfs-mmap-count-race" and "still present in 6.12.117" in issue.status("6.12.117")


def test_a_broken_invariant_stays_a_failure_with_a_known_report():
    assert judge_reports("surprise-removal", "invariant", reports(), KNOWN, "6.12.117", True)[0] == "invariant"


def test_the_same_report_in_a_scenario_it_is_not_known_for_fails():
    # mmap-munmap never removes the node: a drain warning there would be something else
    assert judge_reports("mmap-munmap", "ok", reports(), KNOWN, "6.12.117", True) == ("splat", {})


def test_a_fixed_kernel_fails_on_the_report():
    fixed = [dataclasses.replace(k, fixed_in="6.12.200", fix_commit="abc") for k in KNOWN]
    assert judge_reports("surprise-removal", "ok", reports(), fixed, "6.12.200", True)[0] == "splat"
    assert judge_reports("surprise-removal", "ok", reports(), fixed, "6.12.117", True)[0] == "known"


def test_a_report_the_watcher_did_not_see_still_fails_the_scenario():
    # the racer ended cleanly ("ok") and the report reached the console after the watcher's last look
    assert judge_reports("surprise-removal", "ok", reports(), [], "6.12.117", True)[0] == "splat"
    assert judge_reports("surprise-removal", "ok", reports(), [], "6.12.117", alive=False)[0] == "crash"


def test_a_clean_scenario_is_ok():
    assert judge_reports("surprise-removal", "ok", [], KNOWN, "6.12.117", True) == ("ok", {})


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
