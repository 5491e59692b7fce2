"""The judge of a boot's console (rig/judge.py) on real consoles: a boot known issue (boot_known_issues of
guest-tests/expectations.yaml) is named, not failed, and only in a boot's own reports."""
from pathlib import Path

from rig.console import find_splats
from rig.expectations import MessageRules, load_boot_known_issues, load_expectations
from rig.judge import judge_console
from rig.model import BootRecord, SplatRecord, Verdict

from conftest import DATA


def boot_of(capture: str) -> BootRecord:
    text = (DATA / "splats" / capture).read_text()
    return BootRecord(1, "default", Path("/tmp/boot-1"), None, "tcg", "qemu",
                      [SplatRecord.of(s, 1) for s in find_splats(text)], "the kernel crashed while booting")


def judge(capture: str, release: str = "7.3.4"):
    return judge_console(boot_of(capture), [], load_expectations(), [], MessageRules(), load_boot_known_issues(),
                         release)


def test_the_tcg_int3_crash_at_boot_is_its_known_issue_with_the_panic_after_it():
    result = judge("int3-7x.log")
    assert result.verdict == Verdict.PASS and "tcg-int3-after-text-poke" in result.reason
    assert [(s.title, s.known_issue) for s in result.splats] == [
        ("Oops: int3 in sched_clock_stable", "tcg-int3-after-text-poke"),
        ("Oops: int3 in sched_clock_stable", "tcg-int3-after-text-poke"),
        ("kernel panic: Fatal exception in interrupt", "tcg-int3-after-text-poke")]
    assert not any(s.counts for s in result.splats)


def test_any_other_report_at_boot_still_fails_the_boot():
    result = judge("panic.log", "6.12.118")  # a panic with no known report before it
    assert result.verdict == Verdict.FAIL and "kernel splat outside the cases" in result.reason
