"""Checks of the input against the host, before any long work: the QEMU binary and its version, CPU models,
topology names, the Debian suite of the image, the output directory. Each failure is a ConfigError naming the
cause, its origin (a flag, or a file and key) and the fix, so the CLI exits 2 in well under a second.

The YAML's own shape and ranges are checked by rig.config; Kconfig symbols by rig.kernel once the source is
extracted (before any compiler runs)."""
from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from functools import lru_cache
from pathlib import Path

from rig.config import RigConfig
from rig.errors import ConfigError

MIN_QEMU = (7, 2)  # the NVMe CMB as P2P memory and the topologies were worked out on QEMU 7.2
# suites debootstrap/mmdebstrap can build a Debian image from (code names and aliases)
DEBIAN_SUITES = ("bullseye", "bookworm", "trixie", "forky", "sid", "oldstable", "stable", "testing", "unstable")
SOURCE_KINDS = ("debian", "tarball", "tree")
_SCHEME = re.compile(r"^([A-Za-z][\w+.-]*):(?!/)|^([A-Za-z][\w+.-]*)://")


def origin(cfg: RigConfig, key: str, flags: dict[str, str]) -> str:
    """Where a setting came from: the flag that set it, else the YAML file and key."""
    return flags.get(key) or f"{cfg.source_file}: '{key}'"


@lru_cache(maxsize=8)
def _qemu_facts(binary: str) -> tuple[str, tuple[str, ...]]:
    """(version line, CPU model names) of a QEMU binary; both asked of the binary itself."""
    try:  # both at once: each is a whole QEMU start (25 ms), on every run
        asks = [subprocess.Popen([binary, *args], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
                for args in (["--version"], ["-cpu", "help"])]
        version, cpus = (ask.communicate(timeout=20)[0] for ask in asks)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise ConfigError(f"QEMU binary {binary} does not run ({e}). Fix: run `make deps` or set "
                          "machine.qemu_binary to a working QEMU.")
    names = [m.group(1) for m in re.finditer(r"^x86\s+(\S+)", cpus, re.M)]  # "x86 EPYC  AMD EPYC Processor"
    return (version.splitlines()[0] if version else ""), tuple(names)


def qemu_version(version_line: str) -> tuple[int, int] | None:
    m = re.search(r"version (\d+)\.(\d+)", version_line)
    return (int(m.group(1)), int(m.group(2))) if m else None


def check_qemu(cfg: RigConfig, flags: dict[str, str], topologies: list[str]) -> None:
    binary = cfg.machine.qemu_binary
    found = shutil.which(binary)
    if not found:
        raise ConfigError(f"QEMU binary {binary!r} not found ({origin(cfg, 'machine.qemu_binary', flags)}). Fix: "
                          "run `make deps` (installs qemu-system-x86) or set machine.qemu_binary to an existing QEMU.")
    version_line, models = _qemu_facts(found)
    version = qemu_version(version_line)
    if version is None or version < MIN_QEMU:
        raise ConfigError(f"QEMU binary {found} says {version_line!r}: the rig needs QEMU "
                          f"{'.'.join(map(str, MIN_QEMU))} or newer. Fix: `make deps`, or point machine.qemu_binary "
                          "at a newer QEMU.")
    wanted = [("machine.cpu", cfg.machine.cpu)] + [
        (f"topologies.{t}.cpu", cfg.topologies[t].cpu) for t in topologies if t != "default" and cfg.topologies[t].cpu]
    for key, cpu in wanted:
        model = cpu.split(",", 1)[0]
        if model in ("auto", "host", "max") or model in models:
            continue
        close = [m for m in models if m.lower().startswith(model[:3].lower())][:8]
        raise ConfigError(f"CPU model {cpu!r} ({origin(cfg, key, flags)}) is not one QEMU {found} knows "
                          f"(`{binary} -cpu help`)." + (f" Similar: {', '.join(close)}." if close else "")
                          + " Fix: pick a model from that list, or auto.")


def check_topology(cfg: RigConfig, name: str, flag: str = "--topology") -> None:
    if name != "default" and name not in cfg.topologies:
        raise ConfigError(f"unknown topology {name!r} ({flag}); defined: default, {', '.join(sorted(cfg.topologies))} "
                          f"(rig.yaml `topologies` adds more)")


def check_image(cfg: RigConfig, flags: dict[str, str]) -> None:
    if cfg.image.suite not in DEBIAN_SUITES:
        close = [s for s in DEBIAN_SUITES if s[:3] == cfg.image.suite[:3]]
        raise ConfigError(f"image suite {cfg.image.suite!r} ({origin(cfg, 'image.suite', flags)}) is not a Debian "
                          f"suite the image builder knows ({', '.join(DEBIAN_SUITES)})"
                          + (f"; did you mean {close[0]}?" if close else "."))


def check_source_scheme(source: str, where: str) -> None:
    m = _SCHEME.match(source)
    kind = (m.group(1) or m.group(2)) if m else ""
    if kind and kind not in SOURCE_KINDS:
        hint = " For a git repository, clone it and use tree:PATH." if kind in ("git", "http", "https", "ssh") else ""
        raise ConfigError(f"kernel source {source!r} ({where}): unknown kind {kind!r}; use debian:VERSION, "
                          f"tarball:PATH or tree:PATH.{hint}")


def check_output_dir(path: Path, flag: str) -> None:
    """The run directory can be created and written: found now, not after an 8-minute build."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".rig-write-test-"):
            pass
    except OSError as e:
        raise ConfigError(f"cannot write the output directory {path} ({flag}): {e.strerror or e}. "
                          "Fix: choose a writable directory.")


def check_accel(cfg: RigConfig, flags: dict[str, str]) -> None:
    """accel: kvm where KVM cannot run a guest (no /dev/kvm, or a CPU without vmx/svm behind it: guests crawl,
    machine-notes.md) is refused now, not after a build."""
    from rig.qemu import kvm_usable

    if cfg.machine.accel != "kvm":
        return
    ok, why = kvm_usable()
    if not ok:
        raise ConfigError(f"accel kvm ({origin(cfg, 'machine.accel', flags)}), but {why}: KVM cannot run the guests "
                          "here. Fix: --accel tcg, or auto (KVM only where it works).")


# x86's COMMAND_LINE_SIZE: the kernel keeps 2047 bytes and a NUL, and cuts the rest off silently
CMDLINE_MAX = 2047


def check_cmdlines(cfg: RigConfig, flags: dict[str, str], topologies: list[str]) -> None:
    """The whole kernel command line of each machine the run boots (the rig's part, a 68-byte SSH key, the
    machine's and the topology's additions) fits x86's limit."""
    from rig.qemu import kernel_cmdline, machine_cmdline

    for t in topologies:
        line = kernel_cmdline("A" * 68, machine_cmdline(cfg.machine_for(t)))
        if len(line) > CMDLINE_MAX:
            where = origin(cfg, "machine.kernel_cmdline", flags) + ("" if t == "default" else f" and topology {t}")
            raise ConfigError(f"the kernel command line of the {t} machine is {len(line)} bytes ({where}); x86 takes "
                              f"{CMDLINE_MAX} and cuts the rest off silently. Fix: shorten kernel_cmdline.")


def host_apt_lacks(packages: tuple[str, ...]) -> list[str]:
    """The packages the host's apt has no candidate for (`apt-cache policy`: no block, or `Candidate: (none)`);
    [] when the host has no apt-cache."""
    if not packages or not shutil.which("apt-cache"):
        return []
    out = subprocess.run(["apt-cache", "policy", *packages], capture_output=True, text=True).stdout
    candidates = dict(re.findall(r"^(\S+):\n(?:\s+Installed: .*\n)?\s+Candidate: (.*)$", out, re.M))
    return [p for p in packages if candidates.get(p, "(none)") == "(none)"]


def check_extra_packages(cfg: RigConfig, flags: dict[str, str]) -> None:
    """image.extra_packages that Debian does not have, found now (mmdebstrap would fail after the kernel build):
    checked with the host's apt when the image is of the host's own release, whose lists it has."""
    from rig.probes import host_suite

    if not cfg.image.extra_packages or cfg.image.suite != host_suite():
        return
    missing = host_apt_lacks(cfg.image.extra_packages)
    if missing:
        raise ConfigError(f"image.extra_packages ({origin(cfg, 'image.extra_packages', flags)}): no Debian "
                          f"{cfg.image.suite} package named {', '.join(missing)} (apt-cache policy). Fix: the "
                          "package's exact name (apt-cache search).")


def check_run(cfg: RigConfig, flags: dict[str, str], topologies: list[str]) -> None:
    """Everything a run needs from the host, checked before the kernel build."""
    check_source_scheme(cfg.kernel.source, origin(cfg, "kernel.source", flags))
    check_image(cfg, flags)
    check_extra_packages(cfg, flags)
    for t in topologies:
        check_topology(cfg, t, "a case's topology")
    check_cmdlines(cfg, flags, topologies)
    check_accel(cfg, flags)
    check_qemu(cfg, flags, topologies)
