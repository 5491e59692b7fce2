"""The race job's pure parts: the standalone reproducer's source (racer.c with p2p.h inlined, the scenario as
its defaults) compiles on its own and runs that scenario with no arguments; `make races`' median and its
BENCHMARKS.md section."""
import subprocess

import pytest

from rig import bench
from rig.race import RACER_SOURCE, SCENARIOS, RaceSpec, reproducer_source


def test_the_reproducer_is_one_file_that_builds_alone_and_knows_its_schedule(tmp_path):
    source = reproducer_source("mmap-count", RaceSpec(("mmap-count",), 60, 4, 1234), "sysfs-allocate")
    assert '#include "../lib/p2p.h"' not in source and "static int p2p_locate(void)" in source
    for define in ('REPRO_SCENARIO "mmap-count"', 'REPRO_SEED "1234"', 'REPRO_SECONDS "60"', 'REPRO_WORKERS "4"',
                   'REPRO_MEMORY "sysfs-allocate"'):
        assert f"#define {define}" in source
    (tmp_path / "repro.c").write_text(source)
    # the host's UAPI headers are enough to build it, as on a machine without the rig
    r = subprocess.run(["gcc", "-static", "-O2", "-Wall", "-Wno-unused-function", "-pthread", "-o",
                        str(tmp_path / "repro"), str(tmp_path / "repro.c")], capture_output=True, text=True)
    assert r.returncode == 0 and "warning" not in r.stderr, r.stderr
    listed = subprocess.run([str(tmp_path / "repro"), "--list"], capture_output=True, text=True).stdout.split()
    assert set(SCENARIOS) <= set(listed)


def test_racer_and_rig_know_the_same_scenarios(tmp_path):
    subprocess.run(["gcc", "-static", "-O2", "-pthread", "-o", str(tmp_path / "racer"), str(RACER_SOURCE)],
                   check=True)
    listed = subprocess.run([str(tmp_path / "racer"), "--list"], capture_output=True, text=True).stdout.split()
    assert [s for s in listed if not s.startswith("selftest-")] == list(SCENARIOS)


@pytest.mark.parametrize("hits, median", [
    (["2.1 s (W)", "4.4 s (W)", "2.2 s (W)"], "2.2 s"),
    (["2.1 s (W)", "none in 60 s", "3 s (W)"], "3 s"),  # a seed without a hit is later than every hit
    (["none in 60 s", "none in 60 s", "2 s (W)"], "not found in most seeds (1 of 3)"),
])
def test_the_median_time_to_hit_counts_misses_as_later(hits, median):
    assert bench._median(hits) == median


def test_the_races_section_replaces_itself_and_keeps_the_others(tmp_path, monkeypatch):
    monkeypatch.setattr(bench, "REPO_ROOT", tmp_path)
    path = tmp_path / "BENCHMARKS.md"
    path.write_text("# Benchmarks\n\n| a | b |\n\n## Flakiness\n\nflaky rows\n\n## Inner loop\n\nrows\n")
    bench._write_section(bench.RACES_HEADING, [bench.RACES_HEADING, "", "row one", ""])
    bench._write_section(bench.RACES_HEADING, [bench.RACES_HEADING, "", "second", ""])
    text = path.read_text()
    assert text.count(bench.RACES_HEADING) == 1 and "second" in text and "row one" not in text
    assert text.index("| a | b |") < text.index(bench.RACES_HEADING) < text.index("## Flakiness")
    assert "flaky rows" in text and "## Inner loop" in text


@pytest.mark.parametrize("scenarios, profile", [(["mmap-count"], "default"), (["unbind-mapped"], "debug"),
                                                (["mmap-count", "unbind-mapped"], "debug"), ([], "debug")])
def test_a_race_of_aimed_scenarios_only_runs_where_their_median_was_measured(tmp_path, scenarios, profile):
    from rig import pipeline

    request = pipeline.race_request(None, pipeline.Flags(), scenarios, 10, 4, 1, out=tmp_path / "race")
    assert request.run.config.kernel.profile == profile
    # --profile still decides when given
    given = pipeline.race_request(None, pipeline.Flags(profile="debug"), scenarios, 10, 4, 1, out=tmp_path / "r2")
    assert given.run.config.kernel.profile == "debug"
