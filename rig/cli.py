"""Command line: argparse -> the stages. Prints, picks the exit code, holds no logic of its own."""
from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

from rig import __version__, cli_report
from rig.config import RigConfig, load_config
from rig.behaviour_doc import link as doc_link, section_numbers
from rig.errors import EXIT_HARNESS, RigError
from rig.expectations import for_kernel, load_expectations, select_cases
from rig.image import build_image, ensure_ssh_key, image_spec
from rig.kernel import build_kernel, kernel_spec
from rig.race import SCENARIOS as RACE_SCENARIOS
from rig.progress import Progress


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE", help="rig YAML (default: rig.yaml at the repository root)")
    p.add_argument("--source", metavar="SRC", help="kernel source: debian:6.12, tarball:PATH, tree:PATH")
    p.add_argument("--patch", action="append", default=[], metavar="FILE",
                   help="a patch, mbox or series file applied on top of the source (repeatable)")
    p.add_argument("--series", action="append", default=[], metavar="FILE", dest="patch_series",
                   help="a quilt series file or an mbox (same as --patch; repeatable)")
    p.add_argument("--profile", help="kernel profile (default, debug, gupfast, or one defined in the YAML)")
    p.add_argument("--kconfig-add", action="append", default=[], metavar="CONFIG_X=y",
                   help="extra kernel option, after the profile's fragments (repeatable)")


def _machine(p: argparse.ArgumentParser) -> None:
    p.add_argument("--accel", choices=("auto", "kvm", "tcg"), help="QEMU accelerator (default from YAML: auto)")
    p.add_argument("--cpu", help="QEMU -cpu model (default: max under TCG, host under KVM)")
    p.add_argument("--keep-disks", action="store_true",
                   help="keep the guest disks (root overlay, NVMe backing files, probe bundle) in their temporary "
                   "directory, printed at the end and named in the manifest (default: deleted)")


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="rig", description="QEMU-backed integration tests for Linux userspace "
                                 "P2PDMA: build a kernel, boot it with an NVMe CMB as P2P memory, run probes.")
    ap.add_argument("--version", action="version", version=f"p2pdma-rig {__version__}")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND", required=True)

    run = sub.add_parser("run", help="build kernel and image, boot QEMU, run the probes, write out/<run-id>/")
    _common(run)
    _machine(run)
    run.add_argument("-k", action="append", default=[], metavar="PATTERN", dest="select",
                     help="run only cases whose id matches (glob or substring; repeatable)")
    run.add_argument("--out", metavar="DIR", help="run directory (default: out/<run-id>)")
    run.add_argument("--semantics", choices=("auto", "merged", "v3"),
                     help="the design of userspace P2P memory to use and judge: auto (default: what the built "
                          "kernel offers), merged (sysfs p2pmem/allocate) or v3 (the seed's series, /dev/nvmeN)")
    run.add_argument("--shuffle", type=int, metavar="SEED",
                     help="run the cases of each machine in a random order that SEED repeats (isolation check)")
    run.add_argument("--kcidb", metavar="FILE",
                     help="also write the run as KCIDB JSON (KernelCI's schema) to FILE, as `rig kcidb` does")

    k = sub.add_parser("kernel", help="build the kernel only and print the bzImage path")
    _common(k)
    k.add_argument("--print-path", action="store_true", help="print only the bzImage path (for scripts)")
    k.add_argument("--print-key", action="store_true",
                   help="print the build's cache key without building (CI cache keys)")
    k.add_argument("--available", action="store_true",
                   help="list the kernel versions debian:<version> can get (Debian's archive and the host)")
    k.add_argument("--menuconfig", action="store_true",
                   help="open the tree's menuconfig on the rig's build directory")

    ser = sub.add_parser("series", help="build and test the kernel after each patch of a series; table of "
                         "verdict changes per patch")
    _common(ser)
    _machine(ser)
    ser.add_argument("series_file", nargs="+", metavar="MBOX_OR_SERIES", help="mbox, series file or patches")
    ser.add_argument("-k", action="append", default=[], metavar="PATTERN", dest="select",
                     help="run only cases whose id matches (glob or substring; repeatable)")
    ser.add_argument("--out", metavar="DIR", help="walk directory (default: out/series-<id>)")

    img = sub.add_parser("image", help="build the guest image only and print the disk path")
    img.add_argument("--config", metavar="FILE")

    boot = sub.add_parser("boot", help="boot the VM and print the ssh command; Ctrl-C stops it")
    _common(boot)
    _machine(boot)
    boot.add_argument("--out", metavar="DIR", help="directory for console.log etc. (default: out/boot-<id>)")
    boot.add_argument("--topology", default="default",
                      help="machine variant from rig.yaml `topologies` (switch, rootbus-intel, rootbus-amd, ...)")

    ssh = sub.add_parser("ssh", help="open a shell (or run a command) in the VM of the latest `rig boot`")
    ssh.add_argument("--config", metavar="FILE", help="rig YAML whose out_dir holds latest-boot (default: rig.yaml)")
    ssh.add_argument("--dir", metavar="DIR", help="the boot's directory (default: <out_dir>/latest-boot)")
    ssh.add_argument("cmd", nargs=argparse.REMAINDER, help="command to run instead of a shell")

    race = sub.add_parser("race", help="hammer unbind/rebind against mmap, fork, O_DIRECT workers until the kernel "
                          "breaks or the time runs out; prints a reproducer on failure")
    _common(race)
    _machine(race)
    race.add_argument("--scenario", action="append", default=[], metavar="NAME",
                      help="scenario to run (repeatable; default: all): " + ", ".join(RACE_SCENARIOS))
    race.add_argument("--seconds", type=float, default=60.0, help="duration of each scenario (default 60)")
    race.add_argument("--cycles", type=int, default=0,
                      help="stop each scenario after this many unbind/rebind cycles (default: run for --seconds)")
    race.add_argument("--workers", type=int, default=4, help="worker threads in the guest (default 4)")
    race.add_argument("--seed", type=int, help="seed of every random choice (default: a new one, printed)")
    race.add_argument("--hang-s", type=float, default=60.0,
                      help="no progress and no answer for this long = a hung guest (default 60)")
    race.add_argument("--out", metavar="DIR", help="race directory (default: out/race-<id>)")

    cli_report.add_parsers(sub)

    mx = sub.add_parser("matrix", help="run every cell of a YAML matrix (kernels x profiles x patch sets) in "
                        "parallel VMs; one run directory per cell and a summary")
    mx.add_argument("matrix_file", metavar="MATRIX.yaml")
    mx.add_argument("--config", metavar="FILE", help="rig YAML every cell uses (default: rig.yaml)")
    mx.add_argument("--parallel", type=int, help="cells at once (default: the matrix's `parallel`, else cores/2)")
    mx.add_argument("--out", metavar="DIR", help="matrix directory (default: out/matrix-<id>)")

    ls = sub.add_parser("list", help="list the probe cases with their expectations")
    ls.add_argument("-k", action="append", default=[], metavar="PATTERN", dest="select")
    ls.add_argument("--kernel", metavar="VERSION",
                    help="show the expectations that apply to this kernel version (e.g. 7.3, 6.12.117)")
    return ap


# dotted config key -> the flag that sets it, so that an error blames the flag, not rig.yaml
FLAG_OF = {"kernel.profile": "--profile", "kernel.source": "--source", "kernel.patches": "--patch/--series",
           "kernel.kconfig_add": "--kconfig-add", "machine.accel": "--accel", "machine.cpu": "--cpu",
           "probes.semantics": "--semantics", "probes.select": "-k"}


def _check_flags(args: argparse.Namespace, base: RigConfig) -> None:
    """The values given on the command line, checked against the YAML they override; errors name the flag."""
    from rig.config import kconfig_line_problem
    from rig.validate import check_source_scheme

    profile = getattr(args, "profile", None)
    if profile and profile not in base.profiles:
        raise RigError(f"--profile {profile}: no such kernel profile (defined: {', '.join(sorted(base.profiles))}; "
                       "rig.yaml `profiles` adds more)")
    for line in getattr(args, "kconfig_add", None) or []:
        problem = kconfig_line_problem(line)
        if problem:
            raise RigError(f"--kconfig-add {line!r}: {problem}")
    if getattr(args, "source", None):
        check_source_scheme(args.source, "--source")
    for p in getattr(args, "patch", []) + getattr(args, "patch_series", []):
        if not Path(p).expanduser().is_file():
            raise RigError(f"--patch {p}: no such file")


def _config(args: argparse.Namespace) -> RigConfig:
    base = load_config(args.config)  # the YAML alone: its errors name the file and key
    _check_flags(args, base)
    overrides: dict = {}
    if getattr(args, "profile", None):
        overrides["kernel.profile"] = args.profile
    if getattr(args, "source", None):
        src = args.source
        kind, sep, rest = src.partition(":")
        if sep and kind in ("tree", "tarball"):
            src = f"{kind}:{Path(rest).expanduser().resolve()}"
        elif not sep:
            src = str(Path(src).expanduser().resolve())
        overrides["kernel.source"] = src
    patches = [str(Path(p).resolve()) for p in getattr(args, "patch", []) + getattr(args, "patch_series", [])]
    if patches:
        overrides["kernel.patches"] = patches
    if getattr(args, "kconfig_add", None):
        overrides["kernel.kconfig_add"] = list(args.kconfig_add)
    if getattr(args, "accel", None):
        overrides["machine.accel"] = args.accel
    if getattr(args, "cpu", None):
        overrides["machine.cpu"] = args.cpu
    if getattr(args, "semantics", None):
        overrides["probes.semantics"] = args.semantics
    if getattr(args, "select", None):
        overrides["probes.select"] = list(args.select)
    return load_config(args.config, overrides)


def _flags_given(args: argparse.Namespace) -> dict[str, str]:
    """Dotted keys set by flags in this command -> the flag, for validate.origin()."""
    given = {"kernel.profile": "profile", "kernel.source": "source", "kernel.kconfig_add": "kconfig_add",
             "machine.accel": "accel", "machine.cpu": "cpu", "probes.semantics": "semantics"}
    return {key: FLAG_OF[key] for key, attr in given.items() if getattr(args, attr, None)}


def _preflight(cfg: RigConfig, args: argparse.Namespace, topologies: list[str], out: Path | None = None) -> None:
    """Everything checkable before the build: host QEMU, CPU models, topologies, image suite, output dir."""
    from rig.validate import check_output_dir, check_run

    check_run(cfg, _flags_given(args), topologies)
    if out is not None:
        check_output_dir(out, "--out" if getattr(args, "out", None) else f"{cfg.source_file}: 'out_dir'")


def _new_run_dir(cfg: RigConfig, explicit: str | None, prefix: str = "") -> Path:
    from rig.validate import check_output_dir

    if explicit:
        d = Path(explicit).expanduser().resolve()
    else:
        run_id = time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(2)
        d = cfg.out_path / f"{prefix}{run_id}"
    check_output_dir(d, "--out" if explicit else f"{cfg.source_file}: 'out_dir'")
    return d


def _link_latest(cfg: RigConfig, d: Path, name: str) -> Path | None:
    """<out_dir>/<name> -> d, when d is inside the configured output directory; a directory given with --out
    elsewhere gets no link (nothing is ever created outside out_dir). Replaced atomically: parallel runs
    (matrix cells) never see it missing."""
    out = cfg.out_path.resolve()
    try:
        rel = d.resolve().relative_to(out)
    except ValueError:
        return None
    link, tmp = out / name, out / f".{name}.{os.getpid()}"
    try:
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(rel)
        os.replace(tmp, link)
    except OSError:
        tmp.unlink(missing_ok=True)
        return None
    return link


def reproduce_run(args: argparse.Namespace, cfg: RigConfig, spec) -> list[str]:
    """The `rig run` command line that repeats this run: the config file, the kernel (source, profile, extra
    options, patches), every machine and expectation option that differs from the default, the selection and
    the shuffle seed. Output options (--out, --kcidb, --keep-disks) change no verdict and are left out."""
    from rig.kernel import reproduce_command

    argv = ["rig", "run"] + (["--config", cfg.source_file] if args.config else [])
    argv += shlex.split(reproduce_command(spec))[2:]
    for opt, value, default in (("--accel", cfg.machine.accel, "auto"), ("--cpu", cfg.machine.cpu, "auto"),
                                ("--semantics", cfg.probes.semantics, "auto")):
        if value != default:
            argv += [opt, value]
    argv += [a for p in cfg.probes.select for a in ("-k", p)]
    if args.shuffle is not None:
        argv += ["--shuffle", str(args.shuffle)]
    return argv


def _host_facts() -> dict:
    try:
        qemu = subprocess.run(["qemu-system-x86_64", "--version"], capture_output=True, text=True).stdout
        qemu = qemu.splitlines()[0] if qemu else ""
    except FileNotFoundError:
        qemu = ""
    return {"hostname": platform.node(), "cpus": os.cpu_count(), "kernel": platform.release(),
            "python": platform.python_version(), "qemu": qemu}


def cmd_kernel(args: argparse.Namespace) -> int:
    cfg = _config(args)
    if args.available:
        from rig import debian

        print(debian.available_report(cfg.cache_path, note=lambda m: print(m, file=sys.stderr)))
        return 0
    spec = kernel_spec(cfg)
    if args.print_key:
        from rig.kernel import build_key

        print(build_key(spec))
        return 0
    build = build_kernel(spec, Progress("kernel"))
    if args.menuconfig:
        from rig.kernel import menuconfig

        return menuconfig(spec)
    if args.print_path:
        print(build.bzimage)
    else:
        print(f"bzImage:  {build.bzimage}\nvmlinux:  {build.vmlinux}\nheaders:  {build.headers}\n"
              f"config:   {build.config}\nmanifest: {build.path / 'manifest.json'}")
    return 0


def cmd_image(args: argparse.Namespace) -> int:
    from rig.validate import check_image

    cfg = load_config(args.config)
    check_image(cfg, {})
    img = build_image(image_spec(cfg), Progress("image"))
    print(img.disk)
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from rig.expectations import kernel_version

    exps = load_expectations()
    if args.kernel:
        try:
            kernel_version(args.kernel)
        except ValueError as e:
            raise RigError(f"--kernel: {e} (expected e.g. 7.3 or 6.12.117)")
        exps = for_kernel(exps, args.kernel)
        print(f"expectations for Linux {args.kernel} (what `rig run` applies to a kernel whose make kernelrelease "
              "is this version):")
    ids = select_cases(exps, args.select) if args.select else list(exps)
    for cid in ids:
        e = exps[cid]
        flag = ""
        if e.known_issue:
            flag += (f"  [{e.known_issue.status(args.kernel)}: {e.known_issue.id}]" if args.kernel
                     else f"  [known issue: {e.known_issue.id}, seen in {', '.join(e.known_issue.seen_in)}]")
        if e.inactive_issue:
            flag += f"  [known issue {e.inactive_issue.id}: {e.inactive_issue.status(args.kernel)}]"
        if e.override:
            flag += f"  [since {e.override.since}: {e.override.commit}]"
        elif e.overrides and not args.kernel:
            flag += "".join(f"  [from {o.since}: {json.dumps(o.expect)}]" for o in e.overrides)
        flag += f"  [v3: {json.dumps(e.expect_v3)}]" if e.expect_v3 is not None else ""
        flag += f"  [v3: skipped, {e.skip_v3}]" if e.skip_v3 else ""
        flag += "".join(f"  [v3 known issue: {i.id}" + (f", with the patch '{i.with_patch}'" if i.with_patch else "")
                        + "]" for i in e.declared_issues if i.semantics == "v3")
        flag += f"  [topology: {e.topology}]" if e.topology != "default" else ""
        flag += f"  [allows splats: {', '.join(e.allow_splats)}]" if e.allow_splats else ""
        flag += "  [manual: only with -k <exact id>]" if e.manual else ""
        doc = doc_link((section_numbers(e.section) or [""])[0])  # the case's first section in docs/behaviour.md
        print(f"{cid:40s} §{e.section:12s} {doc}  {json.dumps(e.expect)}{flag}")
    return 0


def _run_cases(cfg: RigConfig, kernel, image, key, run_dir: Path, case_ids: list[str], expectations,
               argv_for_reproduce: list[str], shuffle_seed: int | None = None, keep_disks: bool = False):
    """Compile the probes, run the cases in VMs, write the run directory. The probes' binaries and every
    boot's disks go to a temporary directory, deleted at the end unless keep_disks.
    Returns (results.json's data, the case results, the boots)."""
    from rig.vm import DiskDir

    with DiskDir(run_dir.name, keep_disks) as disks:
        return _run_cases_in(cfg, kernel, image, key, run_dir, case_ids, expectations, argv_for_reproduce,
                             shuffle_seed, disks if keep_disks else None, disks)


def _run_cases_in(cfg, kernel, image, key, run_dir, case_ids, expectations, argv_for_reproduce, shuffle_seed,
                  kept_disks: Path | None, disks: Path):
    from rig import probes as probesmod
    from rig.results import write_run
    from rig.runner import Suite, run_order

    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    progress = Progress("run")
    progress.note(f"run directory {run_dir}")
    probe_set = probesmod.prepare(kernel, disks, cfg.cache_path, image.recipe.get("suite", ""))
    probesmod.check_against(probe_set.cases, list(expectations))
    suite = Suite(cfg, kernel, image, key, run_dir, expectations, probe_set, progress, disks=disks)
    try:
        with suite:
            suite.run_all(run_order(case_ids, expectations, shuffle_seed))
    finally:
        manifest = {
            "rig_version": __version__, "run_id": run_dir.name + "-" + secrets.token_hex(4),
            "command": sys.argv, "config_file": cfg.source_file,
            "started": started, "ended": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "kernel": kernel.manifest, "image": image.recipe, "semantics": cfg.probes.semantics,
            "selection": list(cfg.probes.select), "shuffle_seed": shuffle_seed, "host": _host_facts(),
            "accel": suite.boots[0].accel if suite.boots else None,
            "qemu_cmdlines": [b.qemu_cmdline for b in suite.boots],
            "reproduce": shlex.join(argv_for_reproduce),
            "disks": str(kept_disks) if kept_disks else None,
        }
        data = write_run(run_dir, suite.results, suite.boots, manifest)
        from rig.report import write_report

        write_report(run_dir)
    return data, suite.results, suite.boots


def _with_semantics(cfg: RigConfig, kernel) -> RigConfig:
    """`probes.semantics: auto` resolved to the design the built kernel offers (its manifest says, from its
    System.map); an explicit merged/v3 stays, with a warning when the kernel does not offer it."""
    import dataclasses

    offered = kernel.manifest.get("p2pmem_semantics", "merged")
    chosen = cfg.probes.semantics
    if chosen == "auto":
        chosen = offered
        if offered != "merged":
            print(f"rig: the kernel has the seed's {offered} design (pci_mmap_p2pmem): the probes map /dev/nvmeN "
                  f"and are judged by its expectations", file=sys.stderr)
    elif chosen != offered:
        print(f"rig: warning: --semantics {chosen}, but the kernel offers the {offered} design", file=sys.stderr)
    return dataclasses.replace(cfg, probes=dataclasses.replace(cfg.probes, semantics=chosen))


def _for_built_kernel(expectations, kernel, semantics: str = "merged"):
    """The expectations for the kernel that was built: its manifest's `make kernelrelease` and the subjects of
    the patches applied to it, never a flag."""
    release = kernel.manifest.get("kernelrelease", "")
    if not release:
        print("rig: warning: the kernel's release is unknown; version-keyed expectations are not applied",
              file=sys.stderr)
    patches = tuple(p.get("subject", "") for p in kernel.manifest.get("patches", []))
    return for_kernel(expectations, release, semantics, patches)


def _selected(cfg: RigConfig, expectations) -> list[str]:
    case_ids = select_cases(expectations, cfg.probes.select)
    if not case_ids:
        raise RigError(f"no case matches {list(cfg.probes.select)}; `rig list` shows the case ids")
    return case_ids


def cmd_run(args: argparse.Namespace) -> int:
    from rig.results import summary_table

    cfg = _config(args)
    expectations = load_expectations()
    case_ids = _selected(cfg, expectations)
    _preflight(cfg, args, sorted({expectations[c].topology for c in case_ids}))
    spec = kernel_spec(cfg)
    run_dir = _new_run_dir(cfg, args.out)
    kernel = build_kernel(spec, Progress("kernel"))
    run_cfg = _with_semantics(cfg, kernel)  # the reproduce line keeps what was asked (auto)
    expectations = _for_built_kernel(expectations, kernel, run_cfg.probes.semantics)
    image = build_image(image_spec(cfg), Progress("image"))
    key = ensure_ssh_key(cfg.cache_path)
    _link_latest(cfg, run_dir, "latest")
    reproduce = reproduce_run(args, cfg, spec)
    data, results, boots = _run_cases(run_cfg, kernel, image, key, run_dir, case_ids, expectations, reproduce,
                                      args.shuffle, args.keep_disks)
    if args.kcidb:
        from rig.kcidb import write_kcidb

        write_kcidb(run_dir, args.kcidb)
    print()
    print(summary_table(results))
    for b in boots:
        for s in b.splats:
            where = f"in {s.owner}" if s.owner else "outside every case"
            print(f"  SPLAT (boot {b.boot}, {where}){s.standing}: {s.title}")
    if data["manifest"].get("disks"):
        print(f"disks kept (--keep-disks): {data['manifest']['disks']}")
    if args.kcidb:
        print(f"kcidb: {args.kcidb}")
    print(f"\nresults: {run_dir / 'results.json'}  (exit {data['exit_code']})")
    return data["exit_code"]


def cmd_series(args: argparse.Namespace) -> int:
    """Build and test the kernel after each patch of a series; print which cases changed verdict where."""
    import dataclasses

    from rig.errors import BuildError
    from rig.results import series_table
    from rig.sources import read_patches

    cfg = _config(args)
    expectations = load_expectations()
    case_ids = _selected(cfg, expectations)
    _preflight(cfg, args, sorted({expectations[c].topology for c in case_ids}))
    base = kernel_spec(cfg)
    series = read_patches([Path(f).resolve() for f in args.series_file])
    if not series:
        raise RigError(f"{' '.join(args.series_file)}: no patches found")
    walk_dir = _new_run_dir(cfg, args.out, prefix="series-")
    image = build_image(image_spec(cfg), Progress("image"))
    key = ensure_ssh_key(cfg.cache_path)
    _link_latest(cfg, walk_dir, "latest-series")
    steps: list[dict] = []
    stopped = ""
    for i in range(len(series) + 1):
        label = "base" if i == 0 else f"{i:02d} {series[i - 1].subject}"
        spec = dataclasses.replace(base, patches=base.patches + tuple(series[:i]))
        print(f"== step {i}/{len(series)}: {label}", flush=True)
        try:
            kernel = build_kernel(spec, Progress("kernel"))
        except BuildError as e:
            stopped = f"patch {i} ({series[i - 1].name() if i else 'base'}: {label}) breaks the build or does not apply: {e}"
            break
        step_dir = walk_dir / f"step-{i:02d}"
        step_dir.mkdir()
        step_cfg = _with_semantics(cfg, kernel)
        data, results, _boots = _run_cases(step_cfg, kernel, image, key, step_dir, case_ids,
                                           _for_built_kernel(expectations, kernel, step_cfg.probes.semantics),
                                           ["rig", "series"] + args.series_file, keep_disks=args.keep_disks)
        steps.append({"step": i, "label": label, "kernel": kernel.key, "exit_code": data["exit_code"],
                      "verdicts": {r.id: r.verdict for r in results}})
    (walk_dir / "series.json").write_text(json.dumps({"steps": steps, "stopped": stopped}, indent=2) + "\n")
    print()
    print(series_table(steps))
    if stopped:
        print(f"\nSTOPPED: {stopped}")
        return 2
    print(f"\nseries results: {walk_dir / 'series.json'}")
    return steps[-1]["exit_code"]


def cmd_boot(args: argparse.Namespace) -> int:
    from rig.validate import check_topology
    from rig.vm import DiskDir

    cfg = _config(args)
    check_topology(cfg, args.topology)
    _preflight(cfg, args, [args.topology])
    spec = kernel_spec(cfg)
    d = _new_run_dir(cfg, args.out, prefix="boot-")
    kernel = build_kernel(spec, Progress("kernel"))
    image = build_image(image_spec(cfg), Progress("image"))
    key = ensure_ssh_key(cfg.cache_path)
    with DiskDir(d.name, args.keep_disks) as disks:
        code = _boot(cfg, args, kernel, image, key, d, disks)
    if args.keep_disks:
        print(f"disks kept (--keep-disks): {disks}")
    return code


def _boot(cfg: RigConfig, args: argparse.Namespace, kernel, image, key, d: Path, disks: Path) -> int:
    from rig.vm import start_vm

    vm = start_vm(cfg.machine_for(args.topology), kernel, image, key, d, progress=Progress("boot"), disks=disks)
    try:
        (d / "ssh.json").write_text(json.dumps({"port": vm.cmd.ssh_port, "key": str(key.private),
                                                "pid": os.getpid()}) + "\n")
        _link_latest(cfg, d, "latest-boot")
        print(f"VM up in {vm.ready_s:.1f}s ({vm.cmd.accel}). Console: {d / 'console.log'}")
        print(f"  shell:   {vm.ssh_command()}")
        print("  or:      rig ssh        (Ctrl-C here stops the VM)")
        sys.stdout.flush()
        while vm.alive():
            time.sleep(0.5)
        print("QEMU exited (guest panic or poweroff); last console lines:\n" + (vm.console.tail(15) if vm.console else ""))
        return 3
    except KeyboardInterrupt:
        print("\nstopping the VM")
        return 0
    finally:
        vm.stop()
        (d / "ssh.json").unlink(missing_ok=True)


def cmd_ssh(args: argparse.Namespace) -> int:
    d = Path(args.dir) if args.dir else load_config(args.config).out_path / "latest-boot"
    state = d / "ssh.json"
    if not state.exists():
        raise RigError(f"no running VM found ({state} missing). Start one with `rig boot` in another terminal.")
    info = json.loads(state.read_text())
    argv = ["ssh", "-i", info["key"], "-p", str(info["port"]), "-o", "StrictHostKeyChecking=no",
            "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", "root@127.0.0.1"]
    cmd = [a for a in args.cmd if a != "--"]
    os.execvp("ssh", argv + cmd)
    return 0


def cmd_race(args: argparse.Namespace) -> int:
    from rig.errors import EXIT_CASE_FAILED, EXIT_GUEST_CRASH
    from rig.race import Race, parse_spec, write_race

    if not args.profile:
        args.profile = "debug"  # races are hunted with KASAN, lockdep and friends unless told otherwise
    cfg = _config(args)
    from rig.race import SCENARIO_TOPOLOGY

    spec = parse_spec(args.scenario, args.seconds, args.workers, args.seed, args.cycles, args.hang_s)
    _preflight(cfg, args, sorted({SCENARIO_TOPOLOGY.get(s, "default") for s in spec.scenarios}))
    kspec = kernel_spec(cfg)
    run_dir = _new_run_dir(cfg, args.out, prefix="race-")
    print(f"rig race: seed {spec.seed}; scenarios {', '.join(spec.scenarios)}; {spec.seconds:g}s each, "
          f"{spec.workers} workers, kernel profile {cfg.kernel.profile}", flush=True)
    kernel = build_kernel(kspec, Progress("kernel"))
    image = build_image(image_spec(cfg), Progress("image"))
    key = ensure_ssh_key(cfg.cache_path)
    _link_latest(cfg, run_dir, "latest-race")
    race = Race(cfg, kernel, image, key, run_dir, spec, Progress("race"), keep_disks=args.keep_disks)
    results = race.run()
    cmdlines = [p.read_text() for p in sorted(run_dir.glob("boot-*/qemu-cmdline.txt"))]
    data = write_race(run_dir, spec, results, kernel, cfg.kernel.profile, cmdlines)
    print()
    for r in results:
        print(f"{r.scenario:16s} {r.verdict:9s} {r.seconds:6.1f}s  iterations {r.counters.get('iterations', 0):7d}  "
              f"cycles {r.counters.get('cycles', 0):5d} ({r.cycles_per_s:.2f}/s)  splats {len(r.splats)}  seed {spec.seed}")
    if args.keep_disks:
        print(f"disks kept (--keep-disks): {race.session.disks}")
    print(f"\nrace results: {run_dir / 'race.json'}")
    for r in results:
        for k in r.known:
            print(f"KNOWN in {r.scenario}: {k}")
    failed = next((r for r in results if r.failed), None)
    if failed is None:
        return 0
    print(f"FAILED in {failed.scenario}: {failed.verdict}; everything is kept in {run_dir}")
    for s in failed.splats:
        print(f"  {s['title']}")
    print(f"reproduce with: {data['reproduce']}")
    return EXIT_GUEST_CRASH if failed.verdict == "crash" else EXIT_CASE_FAILED


def cmd_matrix(args: argparse.Namespace) -> int:
    from rig.matrix import load_matrix, matrix_table, run_matrix

    cfg = load_config(args.config)
    matrix = load_matrix(Path(args.matrix_file))
    out = _new_run_dir(cfg, args.out, prefix="matrix-")
    _link_latest(cfg, out, "latest-matrix")
    print(f"rig matrix: {len(matrix.cells)} cell(s), {args.parallel or matrix.parallel} at a time, in {out}",
          flush=True)
    data = run_matrix(matrix, out, args.config, args.parallel)
    print(matrix_table(data))
    print(f"\nmatrix results: {out / 'matrix.json'}  (exit {data['exit_code']})")
    return data["exit_code"]


HANDLERS = {"run": cmd_run, "kernel": cmd_kernel, "series": cmd_series, "image": cmd_image, "boot": cmd_boot,
            "ssh": cmd_ssh, "race": cmd_race, "matrix": cmd_matrix, "list": cmd_list, **cli_report.HANDLERS}


def _sigterm(signum, frame):  # noqa: ARG001
    # turn SIGTERM (CI cancelling, `kill`) into the same clean path as Ctrl-C: context managers stop QEMU
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _sigterm)
    # Ctrl-C stops the rig and its QEMU even when the rig was started with SIGINT ignored (a background job of
    # a non-interactive shell inherits SIG_IGN, and Python then installs no KeyboardInterrupt handler)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return HANDLERS[args.command](args)
    except RigError as e:
        print(f"rig: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("rig: interrupted; QEMU stopped", file=sys.stderr)
        return 130
    except OSError as e:  # a path the user gave that cannot be read or written
        where = f" {e.filename}" if e.filename else ""
        print(f"rig: error: {e.strerror or e}:{where}", file=sys.stderr)
        return EXIT_HARNESS
    except Exception as e:  # noqa: BLE001 - never a traceback for a user: one line, the full story in a log
        log = _crash_log()
        print(f"rig: internal error: {e.__class__.__name__}: {str(e)[:300]} (traceback: {log})", file=sys.stderr)
        return EXIT_HARNESS


def _crash_log() -> str:
    import tempfile
    import traceback

    fd, path = tempfile.mkstemp(prefix="rig-traceback-", suffix=".log")
    with os.fdopen(fd, "w") as f:
        f.write(f"rig {__version__}: {' '.join(sys.argv)}\n")
        traceback.print_exc(file=f)
    return path


if __name__ == "__main__":
    sys.exit(main())
