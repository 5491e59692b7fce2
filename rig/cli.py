"""Command line: argv -> requests (rig.pipeline) -> printed outcomes and the exit code. No logic of its own."""
from __future__ import annotations

import os
import signal
import sys


def _interrupted_early(signum, frame):  # noqa: ARG001
    # Ctrl-C while the stages load, before main() runs: nothing has started yet, so nothing to stop
    sys.stderr.write("rig: interrupted\n")
    os._exit(130)


signal.signal(signal.SIGINT, _interrupted_early)

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from rig import __version__, cli_report, pipeline, vm  # noqa: E402
from rig.errors import EXIT_HARNESS, RigError  # noqa: E402
from rig.matrix import load_matrix, matrix_table, run_matrix  # noqa: E402
from rig.race import SCENARIOS as RACE_SCENARIOS, race_summary  # noqa: E402
from rig.results import series_table, summary_table  # noqa: E402


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
    race.add_argument("--until-hit", action="store_true",
                      help="end each scenario at its first report, a known issue's too (time to hit)")
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


def _flags(args: argparse.Namespace) -> pipeline.Flags:
    get = lambda name: getattr(args, name, None)  # noqa: E731 - not every command has every flag
    return pipeline.Flags(source=get("source"), patches=tuple((get("patch") or []) + (get("patch_series") or [])),
                          profile=get("profile"), kconfig_add=tuple(get("kconfig_add") or ()), accel=get("accel"),
                          cpu=get("cpu"), semantics=get("semantics"), select=tuple(get("select") or ()))


def cmd_run(args: argparse.Namespace) -> int:
    request = pipeline.run_request(args.config, _flags(args), args.out, args.shuffle, args.keep_disks, args.kcidb,
                                   tuple(sys.argv))
    outcome = pipeline.run(request)
    print(f"\n{summary_table(outcome.results, outcome.boots)}")
    for what, value in (("disks kept (--keep-disks)", outcome.disks), ("kcidb", request.kcidb)):
        if value:
            print(f"{what}: {value}")
    print(f"\nresults: {outcome.run_dir / 'results.json'}  (exit {outcome.exit_code})")
    return outcome.exit_code


def cmd_kernel(args: argparse.Namespace) -> int:
    cfg = pipeline.load_run_config(args.config, _flags(args))
    if args.available:
        print(pipeline.kernel_versions(cfg))
    elif args.print_key:
        print(pipeline.kernel_key(cfg))
    elif args.menuconfig:
        return pipeline.menuconfig(cfg)
    else:
        build = pipeline.prepare_kernel(cfg)
        print(build.bzimage if args.print_path else
              f"bzImage:  {build.bzimage}\nvmlinux:  {build.vmlinux}\nheaders:  {build.headers}\n"
              f"config:   {build.config}\nmanifest: {build.path / 'manifest.json'}")
    return 0


def cmd_series(args: argparse.Namespace) -> int:
    request = pipeline.run_request(args.config, _flags(args), args.out, keep_disks=args.keep_disks,
                                   command=tuple(sys.argv), prefix="series-", series=args.series_file)
    outcome = pipeline.run_series(request, args.series_file)
    print(f"\n{series_table(outcome.steps)}")
    if outcome.stopped:
        print(f"\nSTOPPED: {outcome.stopped}")
    else:
        print(f"\nseries results: {outcome.walk_dir / 'series.json'}")
    return outcome.exit_code


def cmd_image(args: argparse.Namespace) -> int:
    print(pipeline.build_image_only(args.config).disk)
    return 0


def cmd_boot(args: argparse.Namespace) -> int:
    request = pipeline.boot_request(args.config, _flags(args), args.topology, args.out, args.keep_disks)
    with pipeline.booted(request, args.topology) as (machine, disks):
        print(f"VM up in {machine.ready_s:.1f}s ({machine.cmd.accel}). Console: {request.run_dir / 'console.log'}\n"
              f"  shell:   {machine.ssh_command()}\n  or:      rig ssh        (Ctrl-C here stops the VM)", flush=True)
        if args.keep_disks:
            print(f"disks kept (--keep-disks): {disks}")
        try:
            while machine.alive():
                time.sleep(0.5)
        except KeyboardInterrupt:
            print("\nstopping the VM")
            return 0
        print(f"QEMU exited (guest panic or poweroff); last console lines:\n{machine.console.tail(15)}")
        return 3


def cmd_ssh(args: argparse.Namespace) -> int:
    d = Path(args.dir) if args.dir else pipeline.load_config(args.config).out_path / "latest-boot"
    state = d / "ssh.json"
    if not state.exists():
        raise RigError(f"no running VM found ({state} missing). Start one with `rig boot` in another terminal.")
    info = json.loads(state.read_text())
    argv = ["ssh", "-i", info["key"], "-p", str(info["port"]), "-o", "StrictHostKeyChecking=no",
            "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", "root@127.0.0.1"]
    os.execvp("ssh", argv + [a for a in args.cmd if a != "--"])
    return 0


def cmd_race(args: argparse.Namespace) -> int:
    request = pipeline.race_request(args.config, _flags(args), args.scenario, args.seconds, args.workers, args.seed,
                                    args.cycles, args.hang_s, args.out, args.keep_disks, args.until_hit)
    spec = request.spec
    print(f"rig race: seed {spec.seed}; scenarios {', '.join(spec.scenarios)}; {spec.seconds:g}s each, "
          f"{spec.workers} workers, kernel profile {request.run.config.kernel.profile}", flush=True)
    outcome = pipeline.run_race(request)
    print(f"\n{race_summary(outcome.results, spec.seed)}")
    if outcome.disks:
        print(f"disks kept (--keep-disks): {outcome.disks}")
    print(f"race results: {outcome.run_dir / 'race.json'}")
    for repro in sorted(outcome.run_dir.glob("repro-*/README.md")):
        print(f"standalone reproducer: {repro.parent} (README.md: how to run it without the rig)")
    failed = outcome.failed
    if failed is not None:
        print(f"FAILED in {failed.scenario}: {failed.outcome}; everything is kept in {outcome.run_dir}")
        for s in failed.splats:
            print(f"  {s.title}{s.standing_note}")
        print(f"reproduce with: {outcome.data['reproduce']}")
    return outcome.exit_code


def cmd_matrix(args: argparse.Namespace) -> int:
    matrix = load_matrix(Path(args.matrix_file), args.config)
    out = pipeline.new_run_dir(pipeline.load_config(args.config), args.out, prefix="matrix-")
    print(f"rig matrix: {len(matrix.cells)} cell(s), {args.parallel or matrix.parallel} at a time, in {out}", flush=True)
    print(matrix_table(data := run_matrix(matrix, out, args.parallel)))
    print(f"\nmatrix results: {out / 'matrix.json'}  (exit {data['exit_code']})")
    return data["exit_code"]


def cmd_list(args: argparse.Namespace) -> int:
    if args.kernel:
        print(f"expectations for Linux {args.kernel} (what `rig run` applies to a kernel whose make kernelrelease is "
              "this version):")
    for line in pipeline.case_list(args.select, args.kernel):
        print(line)
    return 0


HANDLERS = {"run": cmd_run, "kernel": cmd_kernel, "series": cmd_series, "image": cmd_image, "boot": cmd_boot,
            "ssh": cmd_ssh, "race": cmd_race, "matrix": cmd_matrix, "list": cmd_list, **cli_report.HANDLERS}


def _sigterm(signum, frame):  # noqa: ARG001
    # turn SIGTERM (CI cancelling, `kill`) into the same clean path as Ctrl-C: context managers stop QEMU
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    # Ctrl-C stops the rig and its QEMU even when the rig was started with SIGINT ignored (a background job of
    # a non-interactive shell inherits SIG_IGN, and Python then installs no KeyboardInterrupt handler)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _sigterm)
    try:
        args = parser().parse_args(argv)
        return HANDLERS[args.command](args)
    except RigError as e:
        print(f"rig: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("rig: interrupted" + ("; QEMU stopped" if vm.started else ""), file=sys.stderr)
        return 130
    except OSError as e:  # a path the user gave that cannot be read or written
        print(f"rig: error: {e.strerror or e}:{f' {e.filename}' if e.filename else ''}", file=sys.stderr)
        return EXIT_HARNESS
    except Exception as e:  # noqa: BLE001 - never a traceback for a user: one line, the full story in a log
        print(f"rig: internal error: {e.__class__.__name__}: {str(e)[:300]} (traceback: {_crash_log()})",
              file=sys.stderr)
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
