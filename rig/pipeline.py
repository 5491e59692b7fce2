"""The run itself, in the style of kunit_tool (`KunitRequest` -> `run_tests()` -> `KunitResult`): a frozen
`RunRequest`, checked completely when it is made (every input the rig can check before work: the YAML and the
flags, the case selection, the host's QEMU and CPU models, the topologies, the image's packages, the kernel
command lines, the output paths), then `run()`, which executes the stages (kernel -> image -> VMs and probes ->
results -> report), and a typed `RunOutcome`. `rig run`, `rig series`, `rig matrix`, `make bench` and the VM
tests are callers of it; rig/cli.py only turns argv into requests and prints outcomes.

Downstream of every stage: nothing in rig/ but the callers imports it."""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import platform
import secrets
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, TextIO

from rig import __version__
from rig.config import RigConfig, kconfig_line_problem, load_config
from rig.errors import ConfigError, RigError
from rig.expectations import Expectation, for_kernel, load_expectations, select_cases
from rig.image import GuestImage, SshKey, build_image, ensure_ssh_key, image_spec
from rig.kernel import KernelBuild, KernelSpec, build_kernel, kernel_spec, reproduce_command
from rig.model import BootRecord, CaseResult, RunManifest, RunRecord
from rig.progress import Progress
from rig.validate import check_image, check_output_dir, check_run, check_source_scheme, check_topology

if False:  # typing only: the race stage is imported when a race runs
    from rig.race import RaceSpec  # noqa: F401


# ---------------------------------------------------------------- the request


@dataclass(frozen=True)
class Flags:
    """What the command line says about the kernel, the machine and the selection; each overrides the YAML."""

    source: str | None = None
    patches: tuple[str, ...] = ()
    profile: str | None = None
    kconfig_add: tuple[str, ...] = ()
    accel: str | None = None
    cpu: str | None = None
    semantics: str | None = None
    select: tuple[str, ...] = ()

    # dotted config key -> (this field, the flag that sets it): an error blames the flag, not rig.yaml
    KEYS = {"kernel.source": ("source", "--source"), "kernel.patches": ("patches", "--patch/--series"),
            "kernel.profile": ("profile", "--profile"), "kernel.kconfig_add": ("kconfig_add", "--kconfig-add"),
            "machine.accel": ("accel", "--accel"), "machine.cpu": ("cpu", "--cpu"),
            "probes.semantics": ("semantics", "--semantics"), "probes.select": ("select", "-k")}

    def given(self) -> dict[str, str]:
        """Dotted keys the flags set -> the flag (validate.origin names the flag in an error)."""
        return {key: flag for key, (attr, flag) in self.KEYS.items() if getattr(self, attr)}


def load_run_config(config_file: str | None, flags: Flags = Flags()) -> RigConfig:
    """The YAML (its own errors name the file and key), then the flags over it (their errors name the flag)."""
    base = load_config(config_file)
    if flags.profile and flags.profile not in base.profiles:
        raise ConfigError(f"--profile {flags.profile}: no such kernel profile (defined: "
                          f"{', '.join(sorted(base.profiles))}; rig.yaml `profiles` adds more)")
    for line in flags.kconfig_add:
        problem = kconfig_line_problem(line)
        if problem:
            raise ConfigError(f"--kconfig-add {line!r}: {problem}")
    if flags.source:
        check_source_scheme(flags.source, "--source")
    for p in flags.patches:
        if not Path(p).expanduser().is_file():
            raise ConfigError(f"--patch {p}: no such file")
    overrides: dict = {}
    if flags.source:
        kind, sep, rest = flags.source.partition(":")
        if sep and kind in ("tree", "tarball"):
            overrides["kernel.source"] = f"{kind}:{Path(rest).expanduser().resolve()}"
        elif not sep:
            overrides["kernel.source"] = str(Path(flags.source).expanduser().resolve())
        else:
            overrides["kernel.source"] = flags.source
    if flags.patches:
        overrides["kernel.patches"] = [str(Path(p).expanduser().resolve()) for p in flags.patches]
    for key, (attr, _flag) in Flags.KEYS.items():
        value = getattr(flags, attr)
        if value and key not in overrides:
            overrides[key] = list(value) if isinstance(value, tuple) else value
    return load_config(config_file, overrides)


@dataclass(frozen=True)
class RunRequest:
    """One run, every input checked (make it with `run_request`): the kernel and machine (`config`, the YAML with
    the flags over it), the cases, and where the outputs go."""

    config: RigConfig
    flags: Flags
    case_ids: tuple[str, ...]
    run_dir: Path
    config_file: str | None = None  # --config, when given: the reproduce line names it too
    shuffle: int | None = None
    keep_disks: bool = False
    kcidb: Path | None = None
    command: tuple[str, ...] = ()  # the argv that made the request, for the manifest

    @property
    def topologies(self) -> list[str]:
        expectations = load_expectations()
        return sorted({expectations[c].topology for c in self.case_ids})

    def reproduce(self, spec: KernelSpec, command: str = "run", extra: list[str] | tuple[str, ...] = ()) -> list[str]:
        """The command line that repeats it (`rig run`, `rig series`, `rig race`, `rig boot`): the config file,
        everything that chose the kernel (source, profile, extra options, patches) and the machine (each flag
        that differs from the default), for run and series the expectations' design, the selection and the
        shuffle seed, then the command's own `extra` arguments. Outputs (--out, --kcidb, --keep-disks) change
        no verdict and are left out."""
        cfg = self.config
        argv = ["rig", command] + (["--config", cfg.source_file] if self.config_file else [])
        argv += shlex.split(reproduce_command(spec))[2:]
        options = [("--accel", cfg.machine.accel, "auto"), ("--cpu", cfg.machine.cpu, "auto")]
        if command in ("run", "series"):
            options.append(("--semantics", cfg.probes.semantics, "auto"))
        argv += [a for opt, value, default in options if value != default for a in (opt, value)]
        if command in ("run", "series"):
            argv += [a for p in cfg.probes.select for a in ("-k", p)]
            if self.shuffle is not None:
                argv += ["--shuffle", str(self.shuffle)]
        return argv + list(extra)


def new_run_dir(cfg: RigConfig, explicit: str | Path | None, prefix: str = "") -> Path:
    """--out, or <out_dir>/<prefix><time>-<random>: checked writable and not a run directory already."""
    if explicit:
        d = Path(explicit).expanduser().resolve()
    else:
        d = cfg.out_path / f"{prefix}{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"
    flag = "--out" if explicit else f"{cfg.source_file}: 'out_dir'"
    for name in ("results.json", "manifest.json", "race.json", "series.json", "matrix.json"):
        if (d / name).exists():
            raise ConfigError(f"{d} ({flag}) already holds a run ({name}): a run never writes over another. Fix: "
                              "choose a new directory, or delete that one.")
    check_output_dir(d, flag)
    return d


def check_writable_file(path: Path, flag: str) -> None:
    """A file the run writes at its end (--kcidb): its directory exists and takes a file now, not after a build."""
    parent = path.expanduser().resolve().parent
    if not parent.is_dir() or not os.access(parent, os.W_OK):
        raise ConfigError(f"{flag} {path}: cannot write there ({parent} is not a writable directory). Fix: name a "
                          "file in a directory that exists and is writable.")


def selected(cfg: RigConfig) -> list[str]:
    case_ids = select_cases(load_expectations(), cfg.probes.select)
    if not case_ids:
        raise ConfigError(f"no case matches {list(cfg.probes.select)}; `rig list` shows the case ids")
    return case_ids


def run_request(config_file: str | None = None, flags: Flags = Flags(), out: str | Path | None = None,
                shuffle: int | None = None, keep_disks: bool = False, kcidb: str | Path | None = None,
                command: tuple[str, ...] = (), prefix: str = "", series: list[str] | None = None) -> RunRequest:
    """A checked RunRequest: ConfigError (exit 2, a message naming the input and the fix) for anything wrong
    that the rig can see before it builds. `series`: the files of `rig series`, which must exist."""
    for f in series or []:
        if not Path(f).expanduser().is_file():
            raise ConfigError(f"{f}: no such series, mbox or patch file")
    cfg = load_run_config(config_file, flags)
    case_ids = selected(cfg)
    expectations = load_expectations()
    check_run(cfg, flags.given(), sorted({expectations[c].topology for c in case_ids}))
    if kcidb:
        check_writable_file(Path(kcidb), "--kcidb")
    run_dir = new_run_dir(cfg, out, prefix)
    return RunRequest(cfg, flags, tuple(case_ids), run_dir, config_file, shuffle, keep_disks,
                      Path(kcidb).expanduser().resolve() if kcidb else None, tuple(command))


# ---------------------------------------------------------------- what a run makes


@dataclass
class RunOutcome:
    run_dir: Path
    record: RunRecord  # results.json as written
    reproduce: str = ""

    @property
    def exit_code(self) -> int:
        return self.record.exit_code

    @property
    def results(self) -> list[CaseResult]:
        return self.record.cases

    @property
    def boots(self) -> list[BootRecord]:
        return self.record.boots

    @property
    def disks(self) -> str | None:
        return self.record.manifest.disks


@dataclass
class Prepared:
    """The kernel, the image and the SSH key of a request: what every VM of it boots."""

    spec: KernelSpec
    kernel: KernelBuild
    image: GuestImage
    key: SshKey


def prepare(cfg: RigConfig, spec: KernelSpec | None = None, stream: TextIO | None = None) -> Prepared:
    spec = spec or kernel_spec(cfg, note=_note(stream, "kernel"))
    kernel = build_kernel(spec, Progress("kernel", stream))
    image = build_image(image_spec(cfg), Progress("image", stream))
    return Prepared(spec, kernel, image, ensure_ssh_key(cfg.cache_path))


def _note(stream: TextIO | None, stage: str):
    return lambda m: print(f"[{stage}] {m}", file=stream or sys.stderr, flush=True)


def with_semantics(cfg: RigConfig, kernel: KernelBuild, stream: TextIO | None = None) -> RigConfig:
    """`probes.semantics: auto` resolved to the design the built kernel offers (its manifest says, from its
    System.map); an explicit merged/v3 stays, with a warning when the kernel does not offer it."""
    offered = kernel.manifest.p2pmem_semantics
    chosen = cfg.probes.semantics
    say = _note(stream, "run")
    if chosen == "auto":
        chosen = offered
        if offered != "merged":
            say(f"the kernel has the seed's {offered} design (pci_mmap_p2pmem): the probes map /dev/nvmeN and are "
                "judged by its expectations")
    elif chosen != offered:
        say(f"warning: --semantics {chosen}, but the kernel offers the {offered} design")
    return dataclasses.replace(cfg, probes=dataclasses.replace(cfg.probes, semantics=chosen))


def expectations_for(kernel: KernelBuild, semantics: str, stream: TextIO | None = None) -> dict[str, Expectation]:
    """The expectations for the kernel that was built: its manifest's `make kernelrelease` and the subjects of
    the patches applied to it, never a flag."""
    release = kernel.manifest.kernelrelease
    if not release:
        _note(stream, "run")("warning: the kernel's release is unknown; version-keyed expectations are not applied")
    return for_kernel(load_expectations(), release, semantics, kernel.manifest.patch_subjects, kernel_options(kernel))


def kernel_options(kernel: KernelBuild) -> frozenset[str]:
    """The options the built kernel sets to y (its .config), for known issues that only an option reports."""
    try:
        text = kernel.config.read_text(errors="replace")
    except OSError:
        return frozenset()
    return frozenset(line.split("=", 1)[0] for line in text.splitlines() if line.endswith("=y"))


def host_facts() -> dict:
    try:
        qemu = subprocess.run(["qemu-system-x86_64", "--version"], capture_output=True, text=True).stdout
        qemu = qemu.splitlines()[0] if qemu else ""
    except FileNotFoundError:
        qemu = ""
    return {"hostname": platform.node(), "cpus": os.cpu_count(), "kernel": platform.release(),
            "python": platform.python_version(), "qemu": qemu}


def link_latest(cfg: RigConfig, d: Path, name: str) -> Path | None:
    """<out_dir>/<name> -> d, when d is inside the configured output directory; a directory given with --out
    elsewhere gets no link (nothing is ever created outside out_dir). Replaced atomically: parallel runs
    (matrix cells) never see it missing."""
    out = cfg.out_path.resolve()
    try:
        rel = d.resolve().relative_to(out)
    except ValueError:
        return None
    link, tmp = out / name, out / f".{name}.{os.getpid()}.{secrets.token_hex(2)}"
    try:
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(rel)
        os.replace(tmp, link)
    except OSError:
        tmp.unlink(missing_ok=True)
        return None
    return link


class RunSession:
    """A run in progress: its VMs and case server (the Suite), cases run one at a time (`case`) or all (`all`),
    and `finish()`, which writes the run directory and gives the outcome. `run()` is this in one call; the VM
    tests run it case by case, each case a test of its own."""

    def __init__(self, request: RunRequest, prepared: Prepared, stream: TextIO | None = None,
                 reproduce: list[str] | None = None):
        from rig import probes as probesmod
        from rig.runner import Suite
        from rig.vm import DiskDir

        self.request, self.prepared, self.stream = request, prepared, stream
        kernel = prepared.kernel
        self.cfg = with_semantics(request.config, kernel, stream)  # the reproduce line keeps what was asked
        self.expectations = expectations_for(kernel, self.cfg.probes.semantics, stream)
        self.reproduce = shlex.join(reproduce or request.reproduce(prepared.spec))
        self.started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self.progress = Progress("run", stream)
        self.progress.note(f"run directory {request.run_dir}")
        self._disks = DiskDir(request.run_dir.name, request.keep_disks)
        try:
            probe_set = probesmod.prepare(kernel, self._disks.path, self.cfg.cache_path,
                                          prepared.image.recipe.get("suite", ""))
            probesmod.check_against(probe_set.cases, list(self.expectations))
            self.probe_set = probe_set
            self.suite = Suite(self.cfg, kernel, prepared.image, prepared.key, request.run_dir, self.expectations,
                               probe_set, self.progress, disks=self._disks.path)
        except BaseException:
            self._disks.close()
            raise
        self._outcome: RunOutcome | None = None

    def case(self, case_id: str) -> CaseResult:
        return self.suite.run_one(case_id)

    def all(self) -> list[CaseResult]:
        from rig.runner import run_order

        return self.suite.run_all(run_order(list(self.request.case_ids), self.expectations, self.request.shuffle))

    def finish(self) -> RunOutcome:
        """Every VM stopped, the run directory written (results, JUnit, KTAP, report.html, KCIDB if asked)."""
        if self._outcome is not None:
            return self._outcome
        from rig.report import write_report
        from rig.results import write_run

        r, kernel, suite = self.request, self.prepared.kernel, self.suite
        try:
            suite.close()
        finally:
            manifest = RunManifest(
                rig_version=__version__, run_id=r.run_dir.name + "-" + secrets.token_hex(4),
                command=tuple(r.command or sys.argv), config_file=self.cfg.source_file, started=self.started,
                ended=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), kernel=kernel.manifest,
                image=dict(self.prepared.image.recipe), semantics=self.cfg.probes.semantics,
                selection=tuple(self.cfg.probes.select), shuffle_seed=r.shuffle, host=host_facts(),
                accel=suite.boots[0].accel if suite.boots else None,
                qemu_cmdlines=tuple(b.qemu_cmdline for b in suite.boots), reproduce=self.reproduce,
                disks=str(self._disks.path) if r.keep_disks else None)
            record = write_run(r.run_dir, suite.results, suite.boots, manifest)
            self._disks.close()
        write_report(r.run_dir)
        if r.kcidb:
            from rig.kcidb import write_kcidb

            write_kcidb(r.run_dir, r.kcidb)
        self._outcome = RunOutcome(r.run_dir, record, self.reproduce)
        return self._outcome

    def close(self) -> None:
        """Stop everything (an interrupted run): VMs stopped, disks removed, nothing written."""
        if self._outcome is None:
            try:
                self.suite.close()
            finally:
                self._disks.close()


@contextlib.contextmanager
def session(request: RunRequest, prepared: Prepared | None = None, stream: TextIO | None = None,
            reproduce: list[str] | None = None) -> Iterator[RunSession]:
    prepared = prepared or prepare(request.config, stream=stream)
    s = RunSession(request, prepared, stream, reproduce)
    try:
        yield s
    finally:
        s.close()


def run(request: RunRequest, stream: TextIO | None = None) -> RunOutcome:
    """Build (or reuse) the kernel and the image, run the request's cases in VMs, write the run directory."""
    prepared = prepare(request.config, stream=stream)
    link_latest(request.config, request.run_dir, "latest")
    with session(request, prepared, stream) as s:
        try:
            s.all()
        finally:
            outcome = s.finish()
    return outcome


# ---------------------------------------------------------------- a series, patch by patch


@dataclass
class SeriesOutcome:
    walk_dir: Path
    steps: list[dict] = field(default_factory=list)  # step, label, kernel, exit_code, verdicts
    stopped: str = ""  # why the walk stopped early ("" = every step ran)

    @property
    def exit_code(self) -> int:
        if self.stopped:
            return 2
        return self.steps[-1]["exit_code"] if self.steps else 0


def run_series(request: RunRequest, series_files: list[str], stream: TextIO | None = None) -> SeriesOutcome:
    """Build and test the kernel after each patch of a series (step 0: without any); stops at a patch that does
    not apply or build. Each step is a run of its own under the walk directory."""
    from rig.errors import BuildError
    from rig.sources import read_patches

    series = read_patches([Path(f).resolve() for f in series_files])
    if not series:
        raise ConfigError(f"{' '.join(series_files)}: no patches found")
    cfg = request.config
    base = kernel_spec(cfg, note=_note(stream, "kernel"))
    image = build_image(image_spec(cfg), Progress("image", stream))
    key = ensure_ssh_key(cfg.cache_path)
    link_latest(cfg, request.run_dir, "latest-series")
    out = SeriesOutcome(request.run_dir)
    for i in range(len(series) + 1):
        label = "base" if i == 0 else f"{i:02d} {series[i - 1].subject}"
        spec = dataclasses.replace(base, patches=base.patches + tuple(series[:i]))
        print(f"== step {i}/{len(series)}: {label}", file=stream or sys.stdout, flush=True)
        try:
            kernel = build_kernel(spec, Progress("kernel", stream))
        except BuildError as e:
            which = series[i - 1].name() if i else "base"
            out.stopped = f"patch {i} ({which}: {label}) breaks the build or does not apply: {e}"
            break
        step_dir = request.run_dir / f"step-{i:02d}"
        step_dir.mkdir()
        step = dataclasses.replace(request, run_dir=step_dir, kcidb=None)
        with session(step, Prepared(spec, kernel, image, key), stream,
                     reproduce=request.reproduce(base, "series", series_files)) as s:
            try:
                s.all()
            finally:
                outcome = s.finish()
        out.steps.append({"step": i, "label": label, "kernel": kernel.key, "exit_code": outcome.exit_code,
                          "verdicts": {r.id: r.verdict for r in outcome.results}})
    (request.run_dir / "series.json").write_text(json.dumps({"steps": out.steps, "stopped": out.stopped},
                                                            indent=2) + "\n")
    return out


# ---------------------------------------------------------------- a VM to work in by hand


def boot_request(config_file: str | None, flags: Flags, topology: str, out: str | Path | None = None,
                 keep_disks: bool = False) -> RunRequest:
    """`rig boot`: the machine of one topology, no cases."""
    cfg = load_run_config(config_file, flags)
    check_topology(cfg, topology)
    check_run(cfg, flags.given(), [topology])
    return RunRequest(cfg, flags, (), new_run_dir(cfg, out, "boot-"), config_file, keep_disks=keep_disks)


def build_image_only(config_file: str | None, stream: TextIO | None = None) -> GuestImage:
    """`rig image`: the guest image of the YAML's suite, built or taken from the cache."""
    cfg = load_config(config_file)
    check_image(cfg, {})
    return build_image(image_spec(cfg), Progress("image", stream))


@contextlib.contextmanager
def booted(request: RunRequest, topology: str, stream: TextIO | None = None):
    """One VM of `topology` for `rig boot`, up and answering SSH; its ssh.json in the boot directory while it
    lives. Yields (the RunningVM, its disks' directory); stops it (and removes its disks unless keep_disks)."""
    from rig.vm import DiskDir, start_vm

    cfg, d = request.config, request.run_dir
    prepared = prepare(cfg, stream=stream)
    with DiskDir(d.name, request.keep_disks) as disks:
        vm = start_vm(cfg.machine_for(topology), prepared.kernel, prepared.image, prepared.key, d,
                      progress=Progress("boot", stream), disks=disks)
        try:
            (d / "ssh.json").write_text(json.dumps({"port": vm.cmd.ssh_port, "key": str(prepared.key.private),
                                                    "pid": os.getpid()}) + "\n")
            link_latest(cfg, d, "latest-boot")
            yield vm, disks
        finally:
            vm.stop()
            (d / "ssh.json").unlink(missing_ok=True)


# ---------------------------------------------------------------- the kernel alone, the case list


def prepare_kernel(cfg: RigConfig, stream: TextIO | None = None) -> KernelBuild:
    return build_kernel(kernel_spec(cfg, note=_note(stream, "kernel")), Progress("kernel", stream))


def kernel_key(cfg: RigConfig) -> str:
    """The build's cache key without building (CI cache keys)."""
    from rig.kernel import build_key

    return build_key(kernel_spec(cfg))


def kernel_versions(cfg: RigConfig) -> str:
    """What debian:<version> can get: Debian's archive and the host."""
    from rig import debian

    return debian.available_report(cfg.cache_path, note=_note(None, "kernel"))


def menuconfig(cfg: RigConfig) -> int:
    from rig.kernel import menuconfig as kernel_menuconfig

    spec = kernel_spec(cfg)
    build_kernel(spec, Progress("kernel"))
    return kernel_menuconfig(spec)


def case_list(patterns: list[str], kernel: str | None = None) -> list[str]:
    """`rig list`: one line per case (its expectation, section, known issues, overrides; for a kernel version,
    what applies to it)."""
    from rig.behaviour_doc import link as doc_link, section_numbers
    from rig.expectations import kernel_version

    exps = load_expectations()
    if kernel:
        try:
            kernel_version(kernel)
        except ValueError as e:
            raise ConfigError(f"--kernel: {e} (expected e.g. 7.3 or 6.12.117)")
        exps = for_kernel(exps, kernel)
    ids = select_cases(exps, patterns) if patterns else list(exps)
    if patterns and not ids:
        raise ConfigError(f"no case matches {list(patterns)}; `rig list` without -k shows every case id")
    lines = []
    for cid in ids:
        e = exps[cid]
        flag = ""
        if e.known_issue:
            flag += (f"  [{e.known_issue.status(kernel)}: {e.known_issue.id}]" if kernel
                     else f"  [known issue: {e.known_issue.id}, seen in {', '.join(e.known_issue.seen_in)}]")
        if e.inactive_issue:
            flag += f"  [known issue {e.inactive_issue.id}: {e.inactive_issue.status(kernel)}]"
        if e.override:
            flag += f"  [since {e.override.since}: {e.override.commit}]"
        elif e.overrides and not kernel:
            flag += "".join(f"  [from {o.since}: {json.dumps(o.expect)}]" for o in e.overrides)
        flag += f"  [v3: {json.dumps(e.expect_v3)}]" if e.expect_v3 is not None else ""
        flag += f"  [v3: skipped, {e.skip_v3}]" if e.skip_v3 else ""
        flag += "".join(f"  [v3 known issue: {i.id}" + (f", with the patch '{i.with_patch}'" if i.with_patch else "")
                        + "]" for i in e.declared_issues if i.semantics == "v3")
        flag += f"  [topology: {e.topology}]" if e.topology != "default" else ""
        flag += f"  [allows splats: {', '.join(e.allow_splats)}]" if e.allow_splats else ""
        flag += "  [manual: only with -k <exact id>]" if e.manual else ""
        doc = doc_link((section_numbers(e.section) or [""])[0])  # the case's first section in docs/behaviour.md
        lines.append(f"{cid:40s} §{e.section:12s} {doc}  {json.dumps(e.expect)}{flag}")
    return lines


# ---------------------------------------------------------------- races


@dataclass(frozen=True)
class RaceRequest:
    run: RunRequest  # the kernel, the machine, the race directory (no cases)
    spec: "RaceSpec"


def race_request(config_file: str | None, flags: Flags, scenarios: list[str], seconds: float, workers: int,
                 seed: int | None, cycles: int = 0, hang_s: float = 60.0, out: str | Path | None = None,
                 keep_disks: bool = False, until_hit: bool = False) -> RaceRequest:
    """`rig race`: races are hunted on the debug profile (KASAN, lockdep...) unless --profile says otherwise; a
    race of scenarios aimed at known races only (the first of a race known issue's scenarios, with its measured
    median time to hit) runs on the default profile, where that median was measured and the lost update shows
    without any debug option (the debug kernel runs the workers fifteen times slower)."""
    from rig.expectations import load_race_known_issues
    from rig.race import SCENARIO_TOPOLOGY, parse_spec

    if not flags.profile:
        aimed = {k.scenarios[0] for k in load_race_known_issues() if k.median_hit_s}
        flags = dataclasses.replace(flags, profile="default" if scenarios and set(scenarios) <= aimed else "debug")
    spec = parse_spec(scenarios, seconds, workers, seed, cycles, hang_s, until_hit)
    cfg = load_run_config(config_file, flags)
    check_run(cfg, flags.given(), sorted({SCENARIO_TOPOLOGY.get(s, "default") for s in spec.scenarios}))
    run_dir = new_run_dir(cfg, out, "race-")
    return RaceRequest(RunRequest(cfg, flags, (), run_dir, config_file, keep_disks=keep_disks), spec)


@dataclass
class RaceOutcome:
    run_dir: Path
    results: list
    data: dict  # race.json as written
    disks: Path | None

    @property
    def failed(self):
        return next((r for r in self.results if r.failed), None)

    @property
    def exit_code(self) -> int:
        from rig.errors import EXIT_CASE_FAILED, EXIT_GUEST_CRASH, EXIT_OK

        failed = self.failed
        if failed is None:
            return EXIT_OK
        return EXIT_GUEST_CRASH if failed.crashed else EXIT_CASE_FAILED


def run_race(request: RaceRequest, stream: TextIO | None = None) -> RaceOutcome:
    from rig.race import Race, write_race, write_reproducer

    r, spec = request.run, request.spec
    prepared = prepare(r.config, stream=stream)
    link_latest(r.config, r.run_dir, "latest-race")
    race = Race(r.config, prepared.kernel, prepared.image, prepared.key, r.run_dir, spec, Progress("race", stream),
                keep_disks=r.keep_disks)
    results = race.run()
    failed = next((x for x in results if x.failed), None)
    # a failing kernel.console result (a report outside every scenario) is reproduced by the whole spec
    scenarios = [failed.scenario] if failed and failed.scenario in spec.scenarios else list(spec.scenarios)
    reproduce = shlex.join(r.reproduce(prepared.spec, "race", spec.arguments(scenarios)))
    cmdlines = [p.read_text() for p in sorted(r.run_dir.glob("boot-*/qemu-cmdline.txt"))]
    # every scenario that saw a report leaves a reproducer that needs neither Python nor the rig in the guest
    boot_line = shlex.join(r.reproduce(prepared.spec, "boot"))
    for x in results:
        if x.splats and x.scenario in spec.scenarios:
            write_reproducer(r.run_dir / f"repro-{x.scenario}", x, spec, prepared.kernel, boot_line)
    data = write_race(r.run_dir, spec, results, prepared.kernel, reproduce, cmdlines)
    return RaceOutcome(r.run_dir, results, data, race.session.disks if r.keep_disks else None)
