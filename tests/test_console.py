"""Splat detection and case slicing on real console captures (tests/data/consoles/README.md says how each
was recorded)."""
import pytest

from rig.console import case_slices, find_splats, splats_in

from conftest import DATA

CONSOLES = DATA / "consoles"


def load(name):
    return (CONSOLES / name).read_text()


def test_clean_run_has_no_splats_and_one_slice_per_case():
    text = load("run-default-6.12.117.log")
    assert find_splats(text) == []
    slices = case_slices(text)
    assert len(slices) == 43
    lines = text.splitlines()
    priv = slices["mmap.private"].text(lines)
    assert "attempted private mapping" in priv and "nonzero" not in priv
    assert "madvise_populate: unhandled return value: -121" in slices["fault.madv_populate_read"].text(lines)


@pytest.mark.parametrize("capture,kind,title,fatal", [
    ("warn-gup-longterm-p2pdma.log", "warning", "WARNING in is_valid_gup_args", False),
    ("hung-task-fsfreeze.log", "hung_task", "INFO: task hung in percpu_rwsem_wait", False),
    ("panic-sysrq.log", "panic", "kernel panic: sysrq triggered crash", True),
])
def test_real_splats_are_titled(capture, kind, title, fatal):
    splats = find_splats(load(capture))
    assert [(s.kind, s.title, s.fatal) for s in splats][:1] == [(kind, title, fatal)]
    assert len(splats[0].text.splitlines()) > 3


def test_splat_is_attributed_to_the_case_it_happened_in():
    text = load("warn-gup-longterm-p2pdma.log")
    splats = find_splats(text)
    slices = case_slices(text)
    assert [s.title for s in splats_in(splats, slices["gup.longterm_benchmark_p2p"])] == ["WARNING in is_valid_gup_args"]
    assert splats_in(splats, slices["sysfs.published"]) == []


def test_unfinished_case_slice_runs_to_the_end():
    text = "p2pdma-rig: begin a.b\nsome\nKernel panic - not syncing: x\n"
    sl = case_slices(text)["a.b"]
    assert sl.end == 2
    assert [s.title for s in splats_in(find_splats(text), sl)] == ["kernel panic: x"]


@pytest.mark.parametrize("line,title", [
    ("[   5.1] BUG: KASAN: slab-use-after-free in p2pdma_page_free+0x1a/0x40", "KASAN: slab-use-after-free in p2pdma_page_free"),
    ("[   5.1] kernel BUG at lib/genalloc.c:508!", "kernel BUG in unknown"),
    ("[   5.1] watchdog: BUG: soft lockup - CPU#0 stuck for 22s! [a.out:77]", "BUG: soft lockup in unknown"),
    ("[   5.1] rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:", "INFO: rcu detected stall in unknown"),
])
def test_pattern_table_titles(line, title):
    assert find_splats(line + "\n")[0].title == title
