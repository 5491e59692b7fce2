"""rig.yaml -> frozen dataclasses.

Every key is checked: an unknown key or a value of the wrong type is a ConfigError that names the key path
and the file, so a typo never silently falls back to a default.
"""
from __future__ import annotations

import dataclasses
import os
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from rig.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = REPO_ROOT / "rig.yaml"

DEFAULT_PROFILES = {
    "default": ("tiny-base.config", "p2pdma.config"),
    "debug": ("tiny-base.config", "p2pdma.config", "debug.config"),
    "gupfast": ("tiny-base.config", "p2pdma.config", "gupfast.config"),
    "capture": ("tiny-base.config", "p2pdma.config", "debug.config", "capture.config"),
}


@dataclass(frozen=True)
class KernelConfig:
    # debian:<version> (Debian's linux-source-<version>), tarball:<path>, tree:<path>, or a bare path
    source: str = "debian:6.12"
    # patch files, quilt series files or mboxes (git format-patch, b4), applied in order; relative to this file
    patches: tuple[str, ...] = ()
    profile: str = "default"
    # extra fragment lines, e.g. "CONFIG_KASAN=y", applied after the profile's fragments
    kconfig_add: tuple[str, ...] = ()
    # 0 = one make job per CPU
    jobs: int = 0


@dataclass(frozen=True)
class ImageConfig:
    suite: str = "bookworm"
    size_mb: int = 2048
    # added to the packages in images/packages.txt
    extra_packages: tuple[str, ...] = ()


@dataclass(frozen=True)
class NvmeConfig:
    # Controller Memory Buffer size; QEMU needs a power of two and Linux a multiple of 2 MiB; 0 = no CMB
    cmb_size_mb: int = 64
    # size of the namespace (a sparse backing file, or the null-co device)
    namespace_mb: int = 256
    # where the controller sits: root (an integrated endpoint on the root complex), root-port (its own
    # hot-pluggable PCIe root port, with ACS), switch (a downstream port of the one PCIe switch, x3130/xio3130,
    # no ACS), function (the next function of the controller before it: one multifunction device behind its port)
    attach: str = "root"
    # > 0: back the namespace with QEMU's null-co driver and this latency per request, to keep O_DIRECT
    # in flight for race tests (no data is stored)
    latency_ns: int = 0
    # bytes of metadata per logical block of the namespace (QEMU nvme-ns `ms`, in a separate buffer), and its
    # protection information type (`pi`: 0 none, 1-3; needs metadata_bytes >= 8)
    metadata_bytes: int = 0
    protection: int = 0
    # controllers that name one subsystem share an NVMe subsystem (QEMU nvme-subsys) and its namespace, which
    # the first of them defines: two paths to one namespace (NVMe multipath)
    subsystem: str = ""


FIRMWARE = ("qboot", "seabios")
ATTACH = ("root", "root-port", "switch", "function")
# "": no IOMMU; "intel": QEMU's intel-iommu (DMA remapping; the rig adds intel_iommu=on); "virtio": virtio-iommu-pci
IOMMUS = ("", "intel", "virtio")


@dataclass(frozen=True)
class MachineConfig:
    accel: str = "auto"  # auto | kvm | tcg
    cpu: str = "auto"  # auto = "max" under TCG, "host" under KVM; any QEMU -cpu model otherwise
    memory_mb: int = 1024
    smp: int = 2
    boot_timeout_s: int = 120
    # VMs of the coming topologies booted in the background while the current one runs its cases (0 = each
    # boots when its first case comes); each costs its memory_mb while it waits
    boot_ahead: int = 4
    # of those, how many boot at the same time (the others start as these come up): under TCG a boot keeps a
    # host CPU busy, which the VM running the cases needs too
    boots_at_once: int = 2
    kernel_cmdline: str = ""  # appended to the rig's own command line
    # the x86 firmware: "qboot" (QEMU's minimal one for -kernel boots: about 0.4 s sooner to the kernel; the
    # kernel assigns the BARs itself) or "seabios" (QEMU's default, which assigns them)
    firmware: str = "qboot"
    qemu_binary: str = "qemu-system-x86_64"  # name on PATH or a path (a QEMU built by hand)
    nvme: tuple[NvmeConfig, ...] = (NvmeConfig(),)
    iommu: str = ""  # IOMMUS


@dataclass(frozen=True)
class TopologyConfig:
    """A named machine variant that some cases need (a peer under a switch, a CPU model...)."""

    cpu: str = ""  # "" = machine.cpu
    nvme: tuple[NvmeConfig, ...] = (NvmeConfig(),)
    description: str = ""
    iommu: str = ""  # IOMMUS
    kernel_cmdline: str = ""  # appended to machine.kernel_cmdline on this machine (iommu=pt, swiotlb=force...)
    firmware: str = ""  # "" = machine.firmware; FIRMWARE
    # vCPUs (0 = machine.smp); 1 where the cases need no second CPU: a TCG vCPU is a host thread, and a VM
    # booting ahead on two of them takes CPU time from the one running the cases
    smp: int = 0


def _rootbus(cpu: str, description: str) -> TopologyConfig:
    """The provider and a peer NVMe on the root complex: what P2P does there depends on the CPU model alone."""
    return TopologyConfig(smp=1, cpu=cpu, nvme=(NvmeConfig(), NvmeConfig(cmb_size_mb=0)), description=description)


DEFAULT_TOPOLOGIES = {
    "switch": TopologyConfig(
        smp=1,
        nvme=(NvmeConfig(attach="switch"), NvmeConfig(cmb_size_mb=0, attach="switch")),
        description="provider and a peer NVMe under one PCIe switch (no ACS in QEMU): P2P works"),
    "rootbus-intel": _rootbus("Nehalem",
        "provider and peer on the root complex, Intel CPU model: P2P refused (host bridge not whitelisted)"),
    "rootbus-amd": _rootbus("EPYC",
        "provider and peer on the root complex, AMD family 0x17 CPU model: P2P through the host bridge"),
    # -xsave: with Opteron_G5's XSAVE under TCG (AVX filtered out) Linux hangs in its FPU setup at boot
    "rootbus-opteron": _rootbus("Opteron_G5,-xsave",
        "as rootbus-amd with an AMD family 0x15 CPU model (pre-Zen): P2P refused"),
    "rootbus-milan": _rootbus("EPYC-Milan",
        "as rootbus-amd with an AMD family 0x19 CPU model (Zen 3): P2P through the host bridge"),
    "rootbus-hygon": _rootbus("Dhyana",
        "as rootbus-amd with a Hygon family 0x18 CPU model: P2P refused (only AMD's vendor is trusted)"),
    "hotplug": TopologyConfig(
        nvme=(NvmeConfig(attach="root-port"),),
        description="the provider on its own hot-pluggable root port, for QMP device_del"),
    # guest IOMMUs: Linux asks for ACS redirect on every port that has it (pci_request_acs) when an IOMMU driver
    # runs; QEMU's pcie-root-port has ACS, its switch ports do not. Controller 0 is a provider; 1 is its second
    # function behind the same root port (their common upstream bridge has ACS redirect: through the host
    # bridge); 2 sits on a root port of its own (no common bridge: through the host bridge); 3 (a provider) and
    # 4 share a switch (a bus address, which Linux leaves out of the IOMMU)
    "iommu-amd": TopologyConfig(
        smp=1,
        cpu="EPYC", iommu="intel",
        nvme=(NvmeConfig(attach="root-port"), NvmeConfig(cmb_size_mb=0, attach="function"),
              NvmeConfig(cmb_size_mb=0, attach="root-port"), NvmeConfig(attach="switch"),
              NvmeConfig(cmb_size_mb=0, attach="switch")),
        description="intel-iommu translating, AMD family 0x17 model: peers behind an ACS root port and on another "
                    "root port (P2P through the host bridge, mapped by the IOMMU), a provider and a peer under a "
                    "switch"),
    "iommu-intel": TopologyConfig(
        smp=1,
        cpu="Nehalem", iommu="intel",
        nvme=(NvmeConfig(attach="root-port"), NvmeConfig(cmb_size_mb=0, attach="function"),
              NvmeConfig(cmb_size_mb=0, attach="root-port")),
        description="as iommu-amd with an Intel model: P2P refused, with the ACS and host bridge whitelist warnings"),
    "iommu-pt": TopologyConfig(
        smp=1,
        cpu="EPYC", iommu="intel", kernel_cmdline="iommu=pt",
        nvme=(NvmeConfig(attach="switch"), NvmeConfig(cmb_size_mb=0, attach="switch"),
              NvmeConfig(cmb_size_mb=0, attach="root-port")),
        description="intel-iommu in pass-through (identity domains), AMD model: a peer under the switch and one "
                    "on a root port"),
    # swiotlb= twice: 6.12 takes only the exact word "force"; 7.x also counts the bounce slots in use (debugfs
    # io_tlb_used_hiwater) only with ",track_hiwater", which 6.12 would read as no "force" at all
    "swiotlb": TopologyConfig(
        smp=1,
        cpu="EPYC", kernel_cmdline="swiotlb=force swiotlb=force,track_hiwater",
        nvme=(NvmeConfig(), NvmeConfig(cmb_size_mb=0)),
        description="every streaming DMA mapping bounced (swiotlb=force), AMD model, two controllers on the root "
                    "complex"),
    # NVMe shapes the other machines lack, in one machine (one boot): 0 (a provider) and 1 share a switch, 2 (a
    # provider) is on the root complex, which the Intel model cannot reach from the switch: two providers'
    # pages in one request; 3 has a 1 MiB CMB, which QEMU offers and Linux must skip; 4 (a provider) has a
    # namespace with 8 bytes of metadata per block, protection information type 1; 5 (a provider) and 6 are
    # the two controllers of one NVMe subsystem under the switch, with a shared namespace (multipath)
    "features": TopologyConfig(
        smp=1,
        cpu="Nehalem",
        nvme=(NvmeConfig(attach="switch"), NvmeConfig(cmb_size_mb=0, attach="switch"), NvmeConfig(),
              NvmeConfig(cmb_size_mb=1), NvmeConfig(metadata_bytes=8, protection=1),
              NvmeConfig(attach="switch", subsystem="mp"), NvmeConfig(cmb_size_mb=0, attach="switch", subsystem="mp")),
        description="two providers (one under a switch with a peer, one on the root complex; Intel model), a 1 MiB "
                    "CMB, a namespace with metadata, a multipath subsystem of two controllers"),
    # qboot leaves the MTRRs off, and with them off x86 makes every write-back request for MMIO uncached-minus
    # (pat_x_mtrr_type): a missing pgprot_noncached() cannot show. SeaBIOS programs them as firmware on real
    # machines does: write-back by default, uncached over the 32-bit PCI hole; a 1 GiB CMB fits only above
    # 4 GiB, where the MTRRs say write-back, so the memory type comes from the kernel's page tables alone
    "mtrr-wb": TopologyConfig(
        smp=1,
        firmware="seabios", nvme=(NvmeConfig(cmb_size_mb=1024),),
        description="SeaBIOS's MTRRs (write-back by default) and a 1 GiB CMB above 4 GiB: only the kernel's own "
                    "page attributes keep the BAR uncached"),
    "switch-slow": TopologyConfig(
        nvme=(NvmeConfig(attach="switch"), NvmeConfig(cmb_size_mb=0, attach="switch", latency_ns=2_000_000_000)),
        description="as switch, but the peer's backend takes 2 s per request: O_DIRECT stays in flight"),
}


@dataclass(frozen=True)
class ProbesConfig:
    # case id patterns (fnmatch, or a substring); empty = every case
    select: tuple[str, ...] = ()
    case_timeout_s: int = 60
    # the design of userspace P2P memory the probes use and are judged against: "auto" (what the built kernel
    # offers: v3 when it has the seed's pci_mmap_p2pmem()), "merged" (sysfs p2pmem/allocate, 6.2+) or "v3"
    semantics: str = "auto"


@dataclass(frozen=True)
class RigConfig:
    cache_dir: str = ""  # "" = $P2PDMA_RIG_CACHE or ~/.cache/p2pdma-rig
    out_dir: str = "out"
    kernel: KernelConfig = KernelConfig()
    image: ImageConfig = ImageConfig()
    machine: MachineConfig = MachineConfig()
    probes: ProbesConfig = ProbesConfig()
    profiles: dict[str, tuple[str, ...]] = field(default_factory=lambda: dict(DEFAULT_PROFILES))
    topologies: dict[str, TopologyConfig] = field(default_factory=lambda: dict(DEFAULT_TOPOLOGIES))
    source_file: str = ""  # the YAML this came from (not a YAML key)

    @property
    def cache_path(self) -> Path:
        raw = self.cache_dir or os.environ.get("P2PDMA_RIG_CACHE") or "~/.cache/p2pdma-rig"
        return Path(raw).expanduser().resolve()

    def machine_for(self, topology: str) -> MachineConfig:
        """The machine of a topology: `default` is machine itself, others replace its CPU and NVMe list."""
        if topology == "default":
            return self.machine
        topo = self.topologies[topology]
        cmdline = " ".join(p for p in (self.machine.kernel_cmdline, topo.kernel_cmdline) if p)
        return dataclasses.replace(self.machine, cpu=topo.cpu or self.machine.cpu, nvme=topo.nvme,
                                   iommu=topo.iommu or self.machine.iommu, kernel_cmdline=cmdline,
                                   firmware=topo.firmware or self.machine.firmware, smp=topo.smp or self.machine.smp)

    @property
    def out_path(self) -> Path:
        p = Path(self.out_dir).expanduser()
        return p if p.is_absolute() else (REPO_ROOT / p)


_NOT_YAML_KEYS = {"source_file"}


class _StrictLoader(yaml.SafeLoader):
    """safe_load, but a key given twice in one mapping is an error (YAML keeps only the last one silently)."""

    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        for key_node, _value in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} appears twice in one mapping (first at line {seen[key] + 1}); "
                    "YAML would silently keep only the last", key_node.start_mark)
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
                              lambda loader, node: loader.construct_mapping(node))


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (tuple, list):
        (inner, *_rest) = typing.get_args(tp)
        return f"list of {_type_name(inner)}"
    if origin is dict:
        return "mapping"
    if dataclasses.is_dataclass(tp):
        return "mapping"
    return getattr(tp, "__name__", str(tp))


def _convert(value: Any, tp: Any, where: str, file: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{file}: '{where}' must be a mapping, got {type(value).__name__}")
        return _build(tp, value, where, file)
    if origin in (tuple, list):
        if not isinstance(value, list):
            raise ConfigError(f"{file}: '{where}' must be a list, got {type(value).__name__}")
        inner = typing.get_args(tp)[0]
        return tuple(_convert(v, inner, f"{where}[{i}]", file) for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{file}: '{where}' must be a mapping, got {type(value).__name__}")
        _k, vt = typing.get_args(tp)
        return {str(k): _convert(v, vt, f"{where}.{k}", file) for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{file}: '{where}' must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{file}: '{where}' must be an integer, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"{file}: '{where}' must be a string, got {value!r}")
        return str(value)
    raise AssertionError(f"unsupported config type {tp}")


def _build(cls: Any, data: dict, prefix: str, file: str) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)} - _NOT_YAML_KEYS
    kwargs = {}
    for key, value in data.items():
        where = f"{prefix}.{key}" if prefix else str(key)
        if key not in fields:
            known = ", ".join(sorted(fields))
            raise ConfigError(f"{file}: unknown key '{where}' (known keys here: {known})")
        kwargs[key] = _convert(value, hints[key], where, file)
    return cls(**kwargs)


# a kconfig line as scripts/kconfig/merge_config.sh reads it: CONFIG_X=value or "# CONFIG_X is not set"
KCONFIG_LINE = re.compile(r'^(CONFIG_[A-Za-z0-9_]+=(?:[ymn]|-?\d+|0x[0-9A-Fa-f]+|"[^"]*")|# CONFIG_[A-Za-z0-9_]+ is not set)$')
# QEMU backs a CMB with host memory (hw/nvme allocates cmb_size_mb of RAM for it)
MAX_CMB_MB = 4096


def kconfig_line_problem(line: str) -> str:
    """'' if `line` is a well-formed fragment line, else what is wrong with it."""
    if KCONFIG_LINE.match(line):
        return ""
    if line.startswith("# CONFIG_"):
        return "a disabled option is written '# CONFIG_FOO is not set'"
    if " " in line:
        return "no spaces: write CONFIG_FOO=y"
    if not line.startswith("CONFIG_"):
        return "options start with CONFIG_ (e.g. CONFIG_DEBUG_VM=y)"
    return "must look like CONFIG_FOO=y, =m, =n, =<number>, =\"string\" or '# CONFIG_FOO is not set'"


def _at_least(file: str, key: str, value: int, low: int, why: str = "") -> None:
    if value < low:
        raise ConfigError(f"{file}: '{key}' must be at least {low}, got {value}" + (f" ({why})" if why else ""))


def _check_machine(file: str, where: str, nvmes: tuple[NvmeConfig, ...], iommu: str, cmdline: str,
                   default_machine: bool) -> None:
    """One machine (machine, or a topology): its NVMe controllers, IOMMU and command line."""
    if iommu not in IOMMUS:
        raise ConfigError(f"{file}: '{where}.iommu' must be intel or virtio (or absent for none), got {iommu!r}")
    if "\n" in cmdline or "\r" in cmdline:
        raise ConfigError(f"{file}: '{where}.kernel_cmdline' has a line break; the kernel command line is one line")
    # every case of the default machine maps p2pmem: it needs a CMB Linux takes (2 MiB or more); a topology may
    # have only a small one, to check that Linux ignores it
    smallest = 2 if default_machine else 1
    if not any(n.cmb_size_mb >= smallest for n in nvmes):
        raise ConfigError(f"{file}: '{where}.nvme' needs at least one NVMe controller with a CMB"
                          + (" of 2 MiB or more (the P2P memory every case maps)" if default_machine else ""))
    subsystems: set[str] = set()
    for i, n in enumerate(nvmes):
        key = f"{where}.nvme[{i}]"
        size = n.cmb_size_mb
        if size != 0 and size & (size - 1):
            raise ConfigError(
                f"{file}: '{key}.cmb_size_mb' is {size}: it must be a power of two, or 0 for no CMB (QEMU requires "
                "a power-of-two BAR; Linux ignores a CMB smaller than 2 MiB). Try 64.")
        if size > MAX_CMB_MB:
            raise ConfigError(f"{file}: '{key}.cmb_size_mb' is {size}: at most {MAX_CMB_MB} (QEMU backs "
                              "the CMB with host memory). Try 64.")
        if n.namespace_mb < 16:
            raise ConfigError(f"{file}: '{key}.namespace_mb' must be at least 16, got {n.namespace_mb}")
        _at_least(file, f"{key}.latency_ns", n.latency_ns, 0, "0 = a real backing file")
        if n.attach not in ATTACH:
            raise ConfigError(f"{file}: '{key}.attach' must be {', '.join(ATTACH)}, got {n.attach!r}")
        if n.attach == "function":
            base = next((j for j in range(i - 1, -1, -1) if nvmes[j].attach != "function"), None)
            if base is None:
                raise ConfigError(f"{file}: '{key}.attach' is function, but no controller comes before it to "
                                  "share its device")
            if i - base > 7:
                raise ConfigError(f"{file}: '{key}.attach': a PCI device has at most 8 functions")
        if n.metadata_bytes not in (0, 8, 16, 64):
            raise ConfigError(f"{file}: '{key}.metadata_bytes' must be 0, 8, 16 or 64, got {n.metadata_bytes}")
        if n.protection not in (0, 1, 2, 3):
            raise ConfigError(f"{file}: '{key}.protection' must be 0 (none), 1, 2 or 3, got {n.protection}")
        if n.protection and n.metadata_bytes < 8:
            raise ConfigError(f"{file}: '{key}.protection' needs metadata_bytes of 8 or more (the protection "
                              "information lives in the metadata)")
        if n.subsystem and not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,31}", n.subsystem):
            raise ConfigError(f"{file}: '{key}.subsystem' must be a short name of a-z, 0-9 and -, got {n.subsystem!r}")
        if n.subsystem and n.subsystem in subsystems and (n.metadata_bytes or n.protection or n.latency_ns):
            raise ConfigError(f"{file}: '{key}': the namespace of subsystem {n.subsystem!r} is defined by its first "
                              "controller; give metadata_bytes, protection and latency_ns there")
        if n.subsystem:
            subsystems.add(n.subsystem)


def _check(cfg: RigConfig, file: str) -> None:
    m = cfg.machine
    if m.accel not in ("auto", "kvm", "tcg"):
        raise ConfigError(f"{file}: 'machine.accel' must be auto, kvm or tcg, got {m.accel!r}")
    _at_least(file, "machine.memory_mb", m.memory_mb, 256)
    host_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20
    if m.memory_mb > host_mb:
        raise ConfigError(f"{file}: 'machine.memory_mb' is {m.memory_mb}, more than this host's {host_mb} MiB")
    _at_least(file, "machine.smp", m.smp, 1)
    if m.smp > 64:
        raise ConfigError(f"{file}: 'machine.smp' must be at most 64, got {m.smp}")
    _at_least(file, "machine.boot_timeout_s", m.boot_timeout_s, 1, "seconds to wait for the guest's SSH")
    _at_least(file, "machine.boot_ahead", m.boot_ahead, 0, "0 boots every VM when its first case comes")
    _at_least(file, "machine.boots_at_once", m.boots_at_once, 1, "VMs booting in the background at the same time")
    if m.firmware not in FIRMWARE:
        raise ConfigError(f"{file}: 'machine.firmware' must be {' or '.join(FIRMWARE)}, got {m.firmware!r}")
    _at_least(file, "probes.case_timeout_s", cfg.probes.case_timeout_s, 1, "seconds before a case's watchdog")
    _at_least(file, "kernel.jobs", cfg.kernel.jobs, 0, "0 = one make job per CPU")
    _at_least(file, "image.size_mb", cfg.image.size_mb, 512, "the guest's root file system")
    for name, topo in cfg.topologies.items():
        if topo.smp < 0 or topo.smp > 64:
            raise ConfigError(f"{file}: 'topologies.{name}.smp' must be between 1 and 64 (or 0 for machine.smp), "
                              f"got {topo.smp}")
        if topo.firmware and topo.firmware not in FIRMWARE:
            raise ConfigError(f"{file}: 'topologies.{name}.firmware' must be {' or '.join(FIRMWARE)} (or absent for "
                              f"machine.firmware), got {topo.firmware!r}")
    machines = [("machine", m.nvme, m.iommu, m.kernel_cmdline)] + [
        (f"topologies.{k}", t.nvme, t.iommu, t.kernel_cmdline) for k, t in cfg.topologies.items()]
    for where, nvmes, iommu, cmdline in machines:
        _check_machine(file, where, nvmes, iommu, cmdline, default_machine=where == "machine")
    if cfg.probes.semantics not in ("auto", "merged", "v3"):
        raise ConfigError(f"{file}: 'probes.semantics' must be auto, merged or v3, got {cfg.probes.semantics!r}")
    if cfg.kernel.profile not in cfg.profiles:
        raise ConfigError(
            f"{file}: kernel profile {cfg.kernel.profile!r} is not defined (profiles: {', '.join(sorted(cfg.profiles))})"
        )
    if not cfg.kernel.source.strip():
        raise ConfigError(f"{file}: 'kernel.source' is empty; use debian:6.12, tarball:PATH or tree:PATH")
    for line in cfg.kernel.kconfig_add:
        problem = kconfig_line_problem(line)
        if problem:
            raise ConfigError(f"{file}: 'kernel.kconfig_add' entry {line!r}: {problem}")


def _as_yaml(obj: Any) -> Any:
    """A dataclass default as the plain YAML data it would be read from (so user entries merge with it)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: _as_yaml(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, tuple):
        return [_as_yaml(v) for v in obj]
    return obj


def load_config(path: Path | str | None = None, overrides: dict | None = None) -> RigConfig:
    """Read a rig.yaml (default: the repo's) and apply dotted-key overrides from the command line."""
    file = Path(path) if path else DEFAULT_CONFIG
    data: dict = {}
    if path is not None or file.exists():
        try:
            text = file.read_text(encoding="utf-8")
        except OSError as e:
            raise ConfigError(f"cannot read config file {file}: {e.strerror}. Pass an existing file with --config.")
        except UnicodeDecodeError as e:
            raise ConfigError(f"{file}: not UTF-8 text (byte {e.start}: {e.object[e.start:e.start + 1]!r}). Fix: save "
                              "it as UTF-8.")
        try:
            loaded = yaml.load(text, Loader=_StrictLoader)
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            ctx = getattr(e, "context_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            if ctx and mark and ctx.line != mark.line:
                where += f" ({getattr(e, 'context', '')} at line {ctx.line + 1})"
            raise ConfigError(f"{file}: malformed YAML{where}: {getattr(e, 'problem', e)}")
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{file}: the top level must be a mapping of keys, got {type(loaded).__name__}")
        data = loaded
    for dotted, value in (overrides or {}).items():
        node = data
        *parents, last = dotted.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    if "topologies" in data and isinstance(data["topologies"], dict):
        data["topologies"] = {**{k: _as_yaml(v) for k, v in DEFAULT_TOPOLOGIES.items()}, **data["topologies"]}
    if "profiles" in data and isinstance(data["profiles"], dict):
        # user profiles add to the built-in ones
        data["profiles"] = {**{k: list(v) for k, v in DEFAULT_PROFILES.items()}, **data["profiles"]}
    cfg = _build(RigConfig, data, "", str(file))
    cfg = dataclasses.replace(cfg, source_file=str(file))
    _check(cfg, str(file))
    return cfg
