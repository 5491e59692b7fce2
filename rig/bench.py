"""`make bench`: measure the speed targets and write BENCHMARKS.md (never asserted inside tests).

Measured: cold kernel build (empty cache and ccache), second build of the same key, cold image build,
boot to SSH (three boots), the inner loop (one case against virtme-ng booting the same bzImage, an edit of
p2pdma.c to a verdict) and a warm `rig run` end to end; the same cold build and suite for mainline 7.3
(Debian's linux-source-7.3, downloaded into the empty cache). BENCH_COLD=0 skips the cold builds (minutes),
BENCH_73=0 the 7.3 rows.
"""
from __future__ import annotations

import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rig import pipeline
from rig.config import REPO_ROOT, load_config
from rig.errors import RigError
from rig.image import build_image, ensure_ssh_key, image_spec
from rig.kernel import build_kernel, kernel_spec
from rig.model import Verdict
from rig.progress import Progress
from rig.vm import start_vm

LOG = REPO_ROOT / "out" / "bench.log"  # the progress of every in-process run (a bench prints only its figures)


def _log():
    LOG.parent.mkdir(parents=True, exist_ok=True)
    return open(LOG, "a", encoding="utf-8")


def _run(out: Path, flags: pipeline.Flags = pipeline.Flags(), shuffle: int | None = None) -> pipeline.RunOutcome | None:
    """One `rig run`, in-process (pipeline.run: the same request and stages as the command); None when it could
    not run (its error is in the log)."""
    with _log() as log:
        try:
            return pipeline.run(pipeline.run_request(flags=flags, out=out, shuffle=shuffle), stream=log)
        except RigError as e:
            print(f"[bench] run failed: {e}", file=log)
            return None


def _exit(outcome: pipeline.RunOutcome | None) -> str:
    return str(outcome.exit_code) if outcome else "none: it did not run (out/bench.log)"


def _cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _timed(fn):
    t0 = time.monotonic()
    out = fn()
    return out, time.monotonic() - t0


def _p2pdma_comment_patch(tag: str) -> str:
    """A patch that only adds a comment to p2pdma.c, unique per call (so its build key is new): make recompiles
    one file and relinks. The next build of another patch set reverts it."""
    head = (REPO_ROOT / "tests" / "data" / "p2pdma-6.12.117.c").read_text().splitlines()[:3]
    return ("--- a/drivers/pci/p2pdma.c\n+++ b/drivers/pci/p2pdma.c\n@@ -1,3 +1,4 @@\n"
            f"+/* p2pdma-rig {tag} {time.time_ns()} */\n" + "".join(f" {ln}\n" for ln in head))


def _one_file_rebuild(spec) -> float:
    import dataclasses

    from rig.sources import Patch

    text = _p2pdma_comment_patch("bench")
    with tempfile.TemporaryDirectory(prefix="p2pdma-rig-bench-patch-") as d:
        path = Path(d) / "bench.patch"  # the manifest records the sha256 of the file a patch came from
        path.write_text(text)
        patch = Patch(path, 0, "bench: touch drivers/pci/p2pdma.c", text)
        _, t = _timed(lambda: build_kernel(dataclasses.replace(spec, patches=(patch,)), Progress("bench rebuild")))
    return t


def _race_rate(cfg, profile: str) -> tuple[str, str, str]:
    what = f"`rig race --scenario unbind-mapped --workers 4` on the {profile} profile, unbind/rebind cycles per second"
    if profile != "default":
        from rig.kernel import build_key

        spec = kernel_spec(load_config(overrides={"kernel.profile": profile}))
        if not (cfg.cache_path / "kernels" / build_key(spec)).is_dir():
            return what, f"not measured: the {profile} kernel is not built (`rig kernel --profile {profile}`)", ">= 4/s (default)"
    with tempfile.TemporaryDirectory(prefix="p2pdma-rig-bench-race-") as d, _log() as log:
        try:
            request = pipeline.race_request(None, pipeline.Flags(profile=profile), ["unbind-mapped"], 30, 4, 1,
                                            out=Path(d) / "race")
            res = pipeline.run_race(request, stream=log).results[0]
        except (RigError, IndexError) as e:
            return what, f"failed to run ({e})", ">= 4/s (default)"
    return what, f"{res.cycles_per_s:.2f}/s ({res.verdict}, {res.counters.get('iterations', 0)} iterations)", \
        ">= 4/s (default)"


def _warm_run(what: str, flags: pipeline.Flags = pipeline.Flags()) -> tuple[str, str, str]:
    """One whole run (its kernel and image built first, outside the clock), wall time and exit code."""
    with _log() as log:
        pipeline.prepare(pipeline.load_run_config(None, flags), stream=log)
    with tempfile.TemporaryDirectory(prefix="p2pdma-rig-bench-run-") as d:
        outcome, t = _timed(lambda: _run(Path(d) / "run", flags))
    return f"{what} (kernel and image cached; exit {_exit(outcome)})", f"{t:.1f} s", "<= 75 s"


# what `vng --run <bzImage>` needs of a kernel beyond the rig's default one (virtme-ng's configkernel.py:
# the host's root over 9p, its tmpfs/overlay setup, a virtio console); the rig's own cases pass on it too
VNG_KCONFIG = ("CONFIG_NETWORK_FILESYSTEMS=y", "CONFIG_NET_9P=y", "CONFIG_NET_9P_VIRTIO=y", "CONFIG_9P_FS=y",
               "CONFIG_OVERLAY_FS=y", "CONFIG_VIRTIO_CONSOLE=y", "CONFIG_BINFMT_SCRIPT=y", "CONFIG_TMPFS=y",
               "CONFIG_UNIX98_PTYS=y")
INNER_CASE = "sysfs.published"


def _median_runs(cmd_for, runs: int, env=None) -> tuple[float, float, float, int]:
    """One warm-up, then `runs` timed runs of `cmd_for(i)` (run i's argv): (median, min, max) wall seconds and
    the last exit code."""
    rc = 0
    times = []
    for i in range(runs + 1):
        t0 = time.monotonic()
        rc = subprocess.run(cmd_for(i), cwd=REPO_ROOT, capture_output=True, text=True, env=env).returncode
        if i:
            times.append(time.monotonic() - t0)
    return statistics.median(times), min(times), max(times), rc


def inner_loop(cfg, runs: int = 5) -> list[tuple[str, str, str]]:
    """Issue 14's three figures, side by side in one run: `rig run -k <one case>` against
    `vng --run <the same bzImage> -e true` (virtme-ng from PyPI, the rig's kernel plus VNG_KCONFIG), an edit
    of drivers/pci/p2pdma.c to a verdict, and the whole default suite (in main())."""
    vng = shutil.which("vng") or str(Path(sys.executable).parent / "vng")
    rows: list[tuple[str, str, str]] = []
    add = [a for opt in VNG_KCONFIG for a in ("--kconfig-add", opt)]
    spec = kernel_spec(load_config(overrides={"kernel.kconfig_add": list(VNG_KCONFIG)}))
    kernel = build_kernel(spec, Progress("bench vng kernel"))
    with tempfile.TemporaryDirectory(prefix="p2pdma-rig-bench-inner-") as d:
        # the command as a user types it, interpreter start included, timed like vng's: not pipeline.run()
        rig_cmd = [sys.executable, "-m", "rig.cli", "run", *add, "-k", INNER_CASE, "--out"]
        rig_med, rig_min, rig_max, rig_rc = _median_runs(lambda i: rig_cmd + [f"{d}/run{i}"], runs)  # new dirs
        rows.append((f"`rig run -k {INNER_CASE}` on a cached kernel (default + virtme-ng's options; exit {rig_rc})",
                     f"{rig_med:.1f} s (min {rig_min:.1f}, max {rig_max:.1f})", ""))
        if Path(vng).exists():
            # vng starts its virtme-run helper from PATH: the environment it was installed into comes first
            env = {**os.environ, "PATH": f"{Path(vng).parent}:{os.environ.get('PATH', '')}"}
            vng_cmd = [vng, "--run", str(kernel.bzimage), "--disable-kvm", "--disable-microvm", "-e", "true"]
            v_med, v_min, v_max, v_rc = _median_runs(lambda _i: vng_cmd, runs, env)
            version = subprocess.run([vng, "--version"], capture_output=True, text=True).stdout.strip()
            rows.append((f"`vng --run <same bzImage> --disable-kvm --disable-microvm -e true` ({version}; exit {v_rc})",
                         f"{v_med:.1f} s (min {v_min:.1f}, max {v_max:.1f})", ""))
            rows.append(("ratio rig / vng (medians, same run)", f"{rig_med / v_med:.2f}", "<= 0.6"))
        else:
            rows.append(("`vng` (virtme-ng)", "not measured: not installed (`make bench` installs it)", ""))
    # edit to verdict: a new one-line change to p2pdma.c each time, its rebuild and the case, end to end
    with tempfile.TemporaryDirectory(prefix="p2pdma-rig-bench-edit-") as d:
        patch = Path(d) / "edit.patch"
        patch.write_text(_p2pdma_comment_patch("bench edit"))
        outcome, t = _timed(lambda: _run(Path(d) / "run", pipeline.Flags(patches=(str(patch),), select=(INNER_CASE,))))
        rows.append((f"edit to verdict: a one-line patch to drivers/pci/p2pdma.c, then `rig run --patch P -k "
                     f"{INNER_CASE}` (rebuild included; exit {_exit(outcome)})", f"{t:.1f} s", "<= 35 s"))
    return rows


SOURCE_73 = "debian:7.3"
FLAKINESS_HEADING = "## Flakiness"


def flakiness(runs: int = 5, seed0: int = 20261125) -> int:
    """`make flaky`: `runs` consecutive full runs of the clean kernel in table order, then `runs` shuffled
    (seeds seed0, seed0+1, ...); every verdict other than pass/xfail counts. Writes the section of BENCHMARKS.md
    headed FLAKINESS_HEADING (the rest of the file is left as `make bench` wrote it)."""
    rows, bad_total = [], 0
    plans = [("table order", None)] * runs + [("shuffled", seed0 + i) for i in range(runs)]
    for n, (order, seed) in enumerate(plans, 1):
        with tempfile.TemporaryDirectory(prefix="p2pdma-rig-flaky-") as d:
            outcome, t = _timed(lambda: _run(Path(d) / "run", shuffle=seed))
            cases = outcome.results if outcome else []
            bad_cases = [c for c in cases if c.verdict not in ("pass", "xfail")]
            if bad_cases or not cases:  # keep what explains it
                keep = REPO_ROOT / "out" / "flaky" / f"run-{n}"
                shutil.rmtree(keep, ignore_errors=True)
                if outcome:
                    shutil.copytree(outcome.run_dir, keep)
        bad = sorted(f"{c.id} ({c.verdict}: {' '.join(c.reason.split())[:200]})" for c in bad_cases)
        bad_total += len(bad) + (0 if cases else 1)
        rows.append(f"| {n} | {order}{f' (seed {seed})' if seed else ''} | {len(cases)} | {_exit(outcome)} | {t:.0f} s | "
                    f"{', '.join(bad) or ('no results.json' if not cases else 'none')} |")
        print(rows[-1], flush=True)
        _write_flakiness(rows, bad_total, runs, len(plans))  # after every run: a stopped bench keeps its figures
    return 0 if bad_total == 0 else 1


def _write_flakiness(rows: list[str], failures: int, runs: int, planned: int) -> None:
    section = [FLAKINESS_HEADING, "",
               f"`make flaky` ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} CPUs): {runs} "
               f"consecutive full `rig run`s of the clean default kernel, then {runs} with `--shuffle`. Results "
               "include each boot's `kernel.console`. Anything but pass or xfail counts as a failure.", "",
               "| run | order | results | exit | wall | not pass/xfail |", "|---|---|---|---|---|---|", *rows, "",
               f"Failures in {len(rows)} of {planned} runs: {failures}.", ""]
    path = REPO_ROOT / "BENCHMARKS.md"
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    path.write_text(text.split(FLAKINESS_HEADING)[0].rstrip() + "\n\n" + "\n".join(section))


RACES_HEADING = "## Races: time to the first report"
SEEDED_RACES_DIR = REPO_ROOT / "patches" / "seeded-races"
# each planted bug (patches/seeded-races/, on 6.12) with the race scenario and profile the nightly would try it
# with: the workers map and unbind (unbind-mapped); the debug profile for what only lockdep, KASAN or
# PROVE_RCU can see
SEEDED_RACES = (("0001-seeded-race-drop-a-page-reference.patch", "unbind-mapped", "default"),
                ("0002-seeded-race-drop-the-RCU-read-lock.patch", "unbind-mapped", "debug"),
                ("0003-seeded-race-drop-synchronize_rcu.patch", "unbind-mapped", "debug"),
                # its RCU readers are the sysfs attributes' show functions: the scenario that reads them
                ("0003-seeded-race-drop-synchronize_rcu.patch", "sysfs-readers", "debug"),
                ("0004-seeded-race-drop-the-NULL-check.patch", "unbind-mapped", "default"))


def _first_report(flags: pipeline.Flags, scenario: str, seed: int, seconds: float,
                  planted: bool = False) -> tuple[str, str]:
    """`rig race --until-hit` of one scenario and seed: (the time to its first report or what happened, the
    report's title or the broken invariant). For a `planted` bug a known issue's report is not the one sought."""
    with tempfile.TemporaryDirectory(prefix="p2pdma-rig-bench-race-") as d, _log() as log:
        try:
            request = pipeline.race_request(None, flags, [scenario], seconds, 4, seed, out=Path(d) / "race",
                                            until_hit=True)
            res = pipeline.run_race(request, stream=log).results[0]
        except (RigError, IndexError) as e:
            return "did not run", str(e)[:200]
    what = "; ".join(sorted({s.title for s in res.splats})) or (res.broken[0][:160] if res.broken else "")
    if res.first_hit_s is not None and planted and res.verdict == Verdict.XFAIL:  # a bug the rig already knows
        return f"known issue after {res.first_hit_s:g} s", what
    if res.first_hit_s is not None:
        return f"{res.first_hit_s:g} s", what
    if res.failure:
        return f"{res.outcome} after {res.seconds:g} s", what
    return f"none in {res.seconds:g} s", what


def _race_row(bug: str, source: str, scenario: str, profile: str, runs: list[tuple[str, str]]) -> str:
    seen = "; ".join(dict.fromkeys(w for _, w in runs if w)) or "-"
    return (f"| {bug} | {source} | `{scenario}` ({profile}) | {' / '.join(t for t, _ in runs)} | "
            f"{_median([t for t, _ in runs])} | {seen} |")


def races(seeds: int = 5, seconds: float = 60) -> int:
    """`make races`: the aimed scenario of each race known issue (seeds 1..`seeds`, both kernels, --until-hit),
    and each planted bug of patches/seeded-races/ (3 seeds) with its scenario: time to the first report. Writes
    the section of BENCHMARKS.md headed RACES_HEADING."""
    from rig.expectations import load_race_known_issues

    rows = []
    for issue in [k for k in load_race_known_issues() if k.median_hit_s]:
        for source in ("debian:6.12", SOURCE_73):
            flags = pipeline.Flags(source=source, profile="default")
            runs = [_first_report(flags, issue.scenarios[0], seed, seconds) for seed in range(1, seeds + 1)]
            rows.append(_race_row(f"known issue `{issue.id}`", source, issue.scenarios[0], "default", runs))
            print(rows[-1], flush=True)
    for patch, scenario, profile in SEEDED_RACES:
        flags = pipeline.Flags(source="debian:6.12", profile=profile, patches=(str(SEEDED_RACES_DIR / patch),))
        runs = [_first_report(flags, scenario, seed, seconds, planted=True) for seed in range(1, 4)]
        name = patch.split("-", 3)[3].removesuffix(".patch").replace("-", " ")
        rows.append(_race_row(f"planted: {name}", "debian:6.12", scenario, profile, runs))
        print(rows[-1], flush=True)
    section = [RACES_HEADING, "",
               f"`make races` ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} CPUs): "
               f"`rig race --until-hit`, {seconds:g} s at most per seed, 4 workers; the time from the scenario's "
               "start to its first report (guest kernel timestamps), seeds 1, 2, ... Planted bugs: "
               "patches/seeded-races/ (never to be sent).", "",
               "| bug | kernel | scenario (profile) | per seed | median | what it saw |", "|---|---|---|---|---|---|",
               *rows, ""]
    _write_section(RACES_HEADING, section)
    return 0


def _median(hits: list[str]) -> str:
    times = [float(h.split(" s", 1)[0]) for h in hits if h[:1].isdigit()]
    if len(times) * 2 <= len(hits):
        return f"not found in most seeds ({len(times)} of {len(hits)})"
    # seeds without a hit count as later than every hit
    return f"{statistics.median(times + [float('inf')] * (len(hits) - len(times))):g} s"


def _write_section(heading: str, section: list[str]) -> None:
    """Replace (or add before the flakiness section) one `## ` section of BENCHMARKS.md."""
    path = REPO_ROOT / "BENCHMARKS.md"
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    if heading in text:
        head, rest = text.split(heading, 1)
        tail = rest[rest.index("\n## "):] if "\n## " in rest else ""
        text = head.rstrip() + "\n\n" + "\n".join(section) + tail
    elif FLAKINESS_HEADING in text:
        head, rest = text.split(FLAKINESS_HEADING, 1)
        text = head.rstrip() + "\n\n" + "\n".join(section) + "\n" + FLAKINESS_HEADING + rest
    else:
        text = text.rstrip() + "\n\n" + "\n".join(section)
    path.write_text(text)


def main() -> int:
    if sys.argv[1:] == ["flakiness"]:
        return flakiness(int(os.environ.get("FLAKY_RUNS", "5")))
    if sys.argv[1:] == ["races"]:
        return races()
    cold = os.environ.get("BENCH_COLD", "1") != "0"
    with_73 = os.environ.get("BENCH_73", "1") != "0"
    cfg = load_config()
    rows: list[tuple[str, str, str]] = []
    if cold:
        tmp = Path(tempfile.mkdtemp(prefix="p2pdma-rig-bench-"))
        try:
            import dataclasses

            cold_cfg = dataclasses.replace(cfg, cache_dir=str(tmp))
            _, t = _timed(lambda: build_kernel(kernel_spec(cold_cfg), Progress("bench kernel")))
            rows.append(("cold kernel build (empty cache and ccache, extraction included)", f"{t:.0f} s", "<= 480 s"))
            _, t = _timed(lambda: build_kernel(kernel_spec(cold_cfg), Progress("bench kernel")))
            rows.append(("second build of the same key, right after the cold build", f"{t:.2f} s", "no compiler run"))
            _, t = _timed(lambda: build_image(image_spec(cold_cfg), Progress("bench image")))
            rows.append(("cold guest image build (mmdebstrap + mke2fs)", f"{t:.0f} s", ""))
            if with_73:
                cold_73 = load_config(overrides={"kernel.source": SOURCE_73})
                cold_73 = dataclasses.replace(cold_73, cache_dir=str(tmp))
                _, t = _timed(lambda: build_kernel(kernel_spec(cold_73), Progress("bench kernel 7.3")))
                rows.append((f"cold kernel build of `{SOURCE_73}` (download, extraction and empty ccache included)",
                             f"{t:.0f} s", "<= 480 s"))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    spec = kernel_spec(cfg)
    kernel = build_kernel(spec, Progress("kernel"))
    _, t = _timed(lambda: build_kernel(spec, Progress("kernel")))
    rows.append(("second build of the same key (warm cache)", f"{t:.2f} s", "no compiler run"))
    rows.append(("rebuild after a one-file change (a patch to drivers/pci/p2pdma.c)",
                 f"{_one_file_rebuild(spec):.0f} s", "<= 60 s"))
    image = build_image(image_spec(cfg), Progress("image"))
    key = ensure_ssh_key(cfg.cache_path)
    boots = []
    accel = ""
    with tempfile.TemporaryDirectory(prefix="p2pdma-rig-bench-boot-") as d:
        for i in range(3):
            vm = start_vm(cfg.machine, kernel, image, key, Path(d) / f"b{i}")
            try:
                boots.append(vm.ready_s)
                accel = f"{vm.cmd.accel} ({vm.cmd.accel_reason})"
            finally:
                vm.stop()
    rows.append(("boot to SSH (QEMU start to first command), median of 3",
                 f"{statistics.median(boots):.1f} s (min {min(boots):.1f}, max {max(boots):.1f})", "<= 8 s"))
    rows += inner_loop(cfg)
    rows.append(_warm_run("warm `rig run`, all cases"))
    if with_73:
        rows.append(_warm_run("7.3: warm `rig run --source debian:7.3`, all cases", pipeline.Flags(source=SOURCE_73)))
    for profile in ("default", "debug"):
        rows.append(_race_rate(cfg, profile))

    qemu = subprocess.run(["qemu-system-x86_64", "--version"], capture_output=True, text=True).stdout.splitlines()
    lines = [
        "# Benchmarks",
        "",
        "Written by `make bench` (rig/bench.py); figures, not assertions. Re-run after changing the build, boot or",
        "probe path.",
        "",
        f"- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        f"- machine: {_cpu_model()}, {os.cpu_count()} CPUs, "
        f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB, {platform.platform()}",
        f"- QEMU: {qemu[0] if qemu else '?'}; accelerator: {accel}",
        f"- kernel: {kernel.manifest.source.id} profile {kernel.manifest.profile}",
        "",
        "| what | measured | target |",
        "|---|---|---|",
    ]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    old = (REPO_ROOT / "BENCHMARKS.md").read_text() if (REPO_ROOT / "BENCHMARKS.md").exists() else ""
    # the sections other commands write (`make races`, `make flaky`) and what follows them stay
    starts = [old.index(h) for h in (RACES_HEADING, FLAKINESS_HEADING) if h in old]
    kept = old[min(starts):] if starts else ""
    (REPO_ROOT / "BENCHMARKS.md").write_text("\n".join(lines) + "\n" + ("\n" + kept if kept else ""))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
