"""Kernel stage: source -> tinyconfig + fragments -> validated .config -> bzImage + UAPI headers -> cache entry.

The O= build directory is a persistent scratch area per source and profile (so ccache and make's own
incremental logic make rebuilds cheap); only the published cache entry kernels/<key>/ is ever trusted, and it
appears atomically once everything in it is complete.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from rig.cache import CacheEntry, digest
from rig.sources import (KernelSource, Patch, PatchRecord, SourceRecord, prepare_tree, read_patches, resolve_source,
                         tree_lock)
from rig.config import REPO_ROOT, RigConfig
from rig.errors import BuildError, ConfigError
from rig.progress import Progress
from rig.records import from_json, to_json

FRAGMENT_DIR = REPO_ROOT / "kernel-config"
# bump when the build recipe below changes in a way that changes the artifacts
RECIPE_VERSION = "2"
# in a build directory: the key of the kernel it was last configured and built for (a build directory is shared
# by every patch set of a source and profile)
KERNEL_STAMP = ".rig-kernel"
TEST_MODULE_DIR = REPO_ROOT / "guest-tests" / "kmod"
TEST_MODULE = "p2pdma_kapi.ko"


@dataclass(frozen=True)
class KernelSpec:
    source: KernelSource
    profile: str
    fragments: tuple[Path, ...]
    kconfig_add: tuple[str, ...]
    cache_root: Path
    jobs: int
    patches: tuple[Patch, ...] = ()


@dataclass(frozen=True)
class FragmentRecord:
    name: str = ""
    file: str = ""
    sha256: str = ""


@dataclass(frozen=True)
class KernelManifest:
    """What a kernel build is (its cache entry's manifest.json, and `kernel` in a run's manifest): in the style
    of tuxmake's build metadata, with the command that repeats it."""

    key: str = ""
    source: SourceRecord = SourceRecord()
    patches: tuple[PatchRecord, ...] = ()
    profile: str = ""
    fragments: tuple[FragmentRecord, ...] = ()
    kconfig_add: tuple[str, ...] = ()
    kernelrelease: str = ""  # make kernelrelease
    # the design of userspace P2P memory it offers (p2pmem_semantics): "merged" (sysfs allocate) or "v3"
    p2pmem_semantics: str = "merged"
    # options a fragment names by their older name, absent from this tree (`# rig-renamed:`)
    renamed_options: tuple[str, ...] = ()
    config_sha256: str = ""
    compiler: str = ""
    build_seconds: float | None = None
    built_at: str = ""
    build_host: str = ""
    build_dir: str = ""
    reproduce: str = ""

    @property
    def patch_subjects(self) -> tuple[str, ...]:
        return tuple(p.subject for p in self.patches)

    def to_json(self) -> dict:
        return to_json(self)

    @classmethod
    def from_json(cls, data: dict, where: str = "kernel manifest") -> "KernelManifest":
        return from_json(cls, data, where)


@dataclass(frozen=True)
class KernelBuild:
    key: str
    path: Path  # the cache entry
    bzimage: Path
    vmlinux: Path
    headers: Path  # usr/include of headers_install
    config: Path
    manifest: KernelManifest
    # the rig's test module (guest-tests/kmod) built against this kernel; None: it could not be built (the
    # `kapi` cases then skip, saying so)
    test_module: Path | None = None


# a symbol only the seed's series (v3 19/20 and its successors) defines: userspace maps P2P memory through a
# driver's mmap (v3 20/20: /dev/nvmeN), where merged kernels have sysfs p2pmem/allocate
V3_SYMBOL = "pci_mmap_p2pmem"


def p2pmem_semantics(system_map: str) -> str:
    """The design of userspace P2P memory a kernel offers, from its System.map: "v3" or "merged"."""
    return "v3" if re.search(rf"^\S+ [tT] {V3_SYMBOL}$", system_map, re.M) else "merged"


def has_dwarf(kernel: KernelBuild) -> bool:
    """file:line in a decoded trace needs the kernel's DWARF (the debug profile has it, the default does not)."""
    return "\nCONFIG_DEBUG_INFO=y" in "\n" + kernel.config.read_text(errors="replace")


def decode_stacktrace(kernel: KernelBuild, text: str) -> str:
    """The kernel tree's own scripts/decode_stacktrace.sh on `text`, against the build's vmlinux: symbols (and
    file:line with DWARF) for every frame, and the Code: bytes disassembled. "" when the tree or the script is
    gone, or it takes too long."""
    # kbuild links <O>/source to the tree it compiled: the extracted package or tarball, the user's tree, or
    # the rig's patched work tree of it
    tree = (Path(kernel.manifest.build_dir) / "source").resolve()
    script = tree / "scripts" / "decode_stacktrace.sh"
    if not script.exists() or not text.strip():
        return ""
    try:
        r = subprocess.run(["bash", str(script), str(kernel.vmlinux), str(tree)], input=text, capture_output=True,
                           text=True, timeout=120)
    except subprocess.TimeoutExpired:
        return ""
    return r.stdout


# ---------------------------------------------------------------- pure helpers (unit tested)


def parse_fragment(text: str) -> dict[str, str | None]:
    """CONFIG_X=v -> {'CONFIG_X': 'v'}; '# CONFIG_X is not set' -> {'CONFIG_X': None}."""
    wanted: dict[str, str | None] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("# CONFIG_") and line.endswith(" is not set"):
            wanted[line[2:].split()[0]] = None
        elif line.startswith("CONFIG_") and "=" in line:
            sym, val = line.split("=", 1)
            wanted[sym] = val
    return wanted


def dropped_options(wanted: dict[str, str | None], final_config: str) -> list[tuple[str, str, str]]:
    """Options a fragment asked for that olddefconfig did not keep: (symbol, wanted, got)."""
    final = parse_fragment(final_config)
    dropped = []
    for sym, val in wanted.items():
        got = final.get(sym)
        if val is None or val == "n":
            if got not in (None, "n"):
                dropped.append((sym, "is not set", got))
        elif got != val:
            dropped.append((sym, val, "is not set" if got is None else got))
    return dropped


_RENAMED = re.compile(r"^#\s*rig-renamed:\s*(CONFIG_\w+)\s+(?:->\s*)?(CONFIG_\w+)", re.M)


def parse_renames(text: str) -> dict[str, str]:
    """`# rig-renamed: CONFIG_OLD CONFIG_NEW` lines of a fragment: OLD was renamed, or folded into NEW, in
    some kernel version. A tree whose Kconfig has NEW but not OLD does not need OLD; the fragment asks for
    NEW itself (it is checked like any other option)."""
    return {m.group(1): m.group(2) for m in _RENAMED.finditer(text)}


def excuse_renamed(dropped: list[tuple[str, str, str]], renames: dict[str, str], deps: dict[str, list[str]],
                   wanted: dict[str, str | None]) -> tuple[list[tuple[str, str, str]], list[str]]:
    """Split dropped options into the ones still wrong and the ones excused by a rename: an old name the
    tree's Kconfig does not have, whose new name it has and the fragments ask for too."""
    still, excused = [], []
    for sym, want, got in dropped:
        new = renames.get(sym)
        name = sym.removeprefix("CONFIG_")
        if new and name not in deps and new.removeprefix("CONFIG_") in deps and new in wanted:
            excused.append(f"{sym} -> {new}")
        else:
            still.append((sym, want, got))
    return still, excused


_KCONFIG_ENTRY = re.compile(r"^(?:menu)?config\s+(\w+)")
_KCONFIG_DEPENDS = re.compile(r"^\s+depends on\s+(.+?)\s*$")
_KCONFIG_IF = re.compile(r"^if\s+(.+?)\s*$")


def kconfig_dependencies(texts: list[str]) -> dict[str, list[str]]:
    """Symbol (without CONFIG_) -> its `depends on` expressions, including enclosing `if` blocks."""
    deps: dict[str, list[str]] = {}
    for text in texts:
        ifs: list[str] = []
        current = None
        for line in text.splitlines():
            if m := _KCONFIG_ENTRY.match(line):
                current = m.group(1)
                deps.setdefault(current, []).extend(ifs)
            elif m := _KCONFIG_IF.match(line):
                ifs.append(m.group(1))
                current = None
            elif line.startswith("endif"):
                if ifs:
                    ifs.pop()
                current = None
            elif current and (m := _KCONFIG_DEPENDS.match(line)):
                deps[current].append(m.group(1))
            elif line and not line[0].isspace() and not line.startswith("#"):
                current = None
    return deps


def explain_dropped(sym: str, deps: dict[str, list[str]], final_config: str) -> str:
    """Why olddefconfig dropped an option: its unmet dependencies, with the values they have."""
    name = sym.removeprefix("CONFIG_")
    if name not in deps:
        return "no such option in this tree's Kconfig (a typo, or removed in this kernel version)"
    values = parse_fragment(final_config)

    def annotate(expr: str) -> str:
        return re.sub(r"\b([A-Z][A-Z0-9_]*[A-Z0-9])\b",
                      lambda m: f"{m.group(1)} [={values.get('CONFIG_' + m.group(1)) or 'n'}]", expr)

    if not deps[name]:
        return "no dependency of its own: a choice, a `select` or a value range decides it"
    return "depends on " + " && ".join(annotate(e) for e in deps[name])


def unknown_symbols(wanted: dict[str, str | None], deps: dict[str, list[str]]) -> list[str]:
    return [sym for sym in wanted if sym.removeprefix("CONFIG_") not in deps]


def check_symbols_exist(src: Path, fragments: list[Path]) -> None:
    """Every option a fragment (or --kconfig-add) names exists in this tree's Kconfig files; checked on the
    extracted source before make, so a typo costs seconds, not a build."""
    deps = kconfig_dependencies(_tree_kconfig_texts(src))
    texts = {f: f.read_text() for f in fragments}
    wanted = {sym: v for t in texts.values() for sym, v in parse_fragment(t).items()}
    renames = {old: new for t in texts.values() for old, new in parse_renames(t).items()}
    # an old name this tree no longer has is fine when the fragments also ask for its new name (rig-renamed)
    excused = {sym for sym, new in renames.items() if new in wanted and new.removeprefix("CONFIG_") in deps}
    bad = [(f, sym) for f, t in texts.items() for sym in unknown_symbols(parse_fragment(t), deps)
           if sym not in excused]
    if bad:
        lines = "\n".join(f"    {sym} (in {'--kconfig-add / kernel.kconfig_add' if f.name == 'rig-kconfig-add.config' else f})"
                          for f, sym in bad)
        raise BuildError(f"{len(bad)} kernel option(s) do not exist in {src}'s Kconfig files (a typo, or "
                         f"renamed or removed in this kernel version):\n{lines}\n  Fix: correct or drop them.")


def _tree_kconfig_texts(src: Path) -> list[str]:
    texts = []
    for root, dirs, files in os.walk(src):
        dirs[:] = [d for d in dirs if d not in (".git", "Documentation", "tools", "samples")]
        texts += [Path(root, f).read_text(errors="replace") for f in files if f.startswith("Kconfig")]
    return texts


# ---------------------------------------------------------------- spec from config


def kernel_spec(cfg: RigConfig, note=None) -> KernelSpec:
    note = note or (lambda m: print(f"[kernel] {m}", file=sys.stderr, flush=True))
    names = cfg.profiles[cfg.kernel.profile]
    fragments = []
    for name in names:
        p = Path(name) if Path(name).is_absolute() else FRAGMENT_DIR / name
        if not p.is_file():
            raise ConfigError(f"profile {cfg.kernel.profile!r} names fragment {name!r}, but {p} does not exist")
        fragments.append(p)
    base = Path(cfg.source_file).parent if cfg.source_file else Path.cwd()
    patch_paths = [Path(p).expanduser() if Path(p).expanduser().is_absolute() else base / p
                   for p in cfg.kernel.patches]
    return KernelSpec(
        source=resolve_source(cfg.kernel.source, base, cfg.cache_path, note),
        profile=cfg.kernel.profile,
        fragments=tuple(fragments),
        kconfig_add=cfg.kernel.kconfig_add,
        cache_root=cfg.cache_path,
        jobs=cfg.kernel.jobs or os.cpu_count() or 1,
        patches=tuple(read_patches(patch_paths)),
    )


def compiler_version() -> str:
    try:
        return subprocess.run(["gcc", "--version"], capture_output=True, text=True).stdout.splitlines()[0]
    except (FileNotFoundError, IndexError):
        raise BuildError("gcc not found. Fix: run `make deps` (installs build-essential).")


def build_key(spec: KernelSpec) -> str:
    parts = [RECIPE_VERSION, spec.source.ident, compiler_version()]
    for f in spec.fragments:
        # what the fragment asks for, not its comments: rewording a comment rebuilds nothing
        parts += [f.name, repr(sorted(parse_fragment(f.read_text()).items()))]
    parts += list(spec.kconfig_add)
    if spec.patches:
        parts += ["patches"] + [p.sha256 for p in spec.patches]
    if spec.source.kind != "debian":
        parts += [spec.source.version, spec.source.content_id]
    return digest(*parts)


# ---------------------------------------------------------------- the build


class _Make:
    """Runs make in the source tree with the rig's environment, logging everything to one file."""

    def __init__(self, src: Path, out: Path, log: Path, cache_root: Path):
        self.src, self.out, self.log = src, out, log
        self.env = dict(os.environ)
        # ccache without CCACHE_BASEDIR: rewriting paths to relative ones would defeat the kernel's
        # -fmacro-prefix-map and print WARN locations as ../../src/.../mm/gup.c instead of mm/gup.c. The build
        # directory is stable per source and profile, so absolute paths still hit.
        self.env.pop("CCACHE_BASEDIR", None)
        self.env.update(
            CCACHE_DIR=str(cache_root / "ccache"),
            KBUILD_BUILD_USER="p2pdma-rig",
            KBUILD_BUILD_HOST="rig",
        )
        self.cc = "ccache gcc" if shutil.which("ccache") else "gcc"

    def run(self, *targets: str, jobs: int = 1, progress: Progress | None = None, what: str = "") -> None:
        cmd = ["make", f"O={self.out}", f"CC={self.cc}", f"-j{jobs}", *targets]
        tail: deque[str] = deque(maxlen=25)
        with open(self.log, "a") as log:
            log.write(f"\n$ {' '.join(cmd)}\n")
            log.flush()
            proc = subprocess.Popen(
                cmd, cwd=self.src, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                errors="replace",
            )
            assert proc.stdout
            n = 0
            for line in proc.stdout:
                log.write(line)
                tail.append(line.rstrip())
                n += 1
                if progress:
                    progress.update(f"{what} {n} steps  {line.strip()[:70]}")
            rc = proc.wait()
        if rc != 0:
            last = "\n".join("    " + line for line in tail)
            raise BuildError(f"kernel build failed: make {' '.join(targets)} exited {rc}. Last lines:\n{last}\n"
                             f"  full log: {self.log}")

    def output(self, *targets: str) -> str:
        """stdout of a quick make target (e.g. `-s kernelrelease`)."""
        r = subprocess.run(["make", f"O={self.out}", *targets], cwd=self.src, env=self.env, capture_output=True,
                           text=True, errors="replace")
        if r.returncode != 0:
            raise BuildError(f"make {' '.join(targets)} failed: {r.stderr.strip()[-400:]}")
        return r.stdout.strip().splitlines()[-1] if r.stdout.strip() else ""

    def merge(self, fragments: list[Path]) -> None:
        cmd = ["scripts/kconfig/merge_config.sh", "-m", "-O", str(self.out), str(self.out / ".config"),
               *map(str, fragments)]
        with open(self.log, "a") as log:
            log.write(f"\n$ {' '.join(cmd)}\n")
            log.flush()
            rc = subprocess.run(cmd, cwd=self.src, env=self.env, stdout=log, stderr=subprocess.STDOUT).returncode
        if rc != 0:
            raise BuildError(f"merge_config.sh failed (exit {rc}); full log: {self.log}")


# host tools a kernel option needs at build time, beyond the compiler (kernel-config/tiny-base.config asks LZ4)
OPTION_TOOLS = {"CONFIG_KERNEL_LZ4": "lz4", "CONFIG_KERNEL_ZSTD": "zstd"}


def wanted_options(fragment_texts: list[str]) -> dict[str, str | None]:
    """What the fragments ask for, merged in order (a later fragment wins, as merge_config.sh does)."""
    wanted: dict[str, str | None] = {}
    for text in fragment_texts:
        wanted.update(parse_fragment(text))
    return wanted


def missing_build_tools(spec: KernelSpec) -> list[str]:
    """`tool (for OPTION=y)` for each host tool an option of the spec's fragments or --kconfig-add needs and
    PATH lacks."""
    wanted = wanted_options([f.read_text() for f in spec.fragments] + ["\n".join(spec.kconfig_add)])
    return [f"{tool} (for {sym}=y)" for sym, tool in OPTION_TOOLS.items()
            if wanted.get(sym) == "y" and not shutil.which(tool)]


def build_kernel(spec: KernelSpec, progress: Progress | None = None) -> KernelBuild:
    progress = progress or Progress("kernel")
    return with_test_module(spec, _kernel(spec, progress), progress)


def _kernel(spec: KernelSpec, progress: Progress) -> KernelBuild:
    key = build_key(spec)
    entry = CacheEntry(spec.cache_root, "kernels", key)
    if entry.exists():
        return with_spec_manifest(load_build(entry.path), spec)
    missing = missing_build_tools(spec)
    if missing:
        raise ConfigError(f"building this kernel needs {', '.join(missing)}, not found. Fix: run `make deps` "
                          "(installs the Debian package lz4 and the others).")
    with entry.lock():
        if entry.exists():  # another rig built it while we waited
            return with_spec_manifest(load_build(entry.path), spec)
        started = time.time()
        with tree_lock(spec.cache_root, spec.source):
            return with_spec_manifest(_build_locked(spec, key, entry, started, progress), spec)


def fragments_manifest(spec: KernelSpec) -> tuple[FragmentRecord, ...]:
    return tuple(FragmentRecord(f.name, str(f), hashlib.sha256(f.read_bytes()).hexdigest()) for f in spec.fragments)


def with_spec_manifest(build: KernelBuild, spec: KernelSpec) -> KernelBuild:
    """The build's manifest as this invocation sees it. A cache entry is shared by every spec with its key
    (same contents), but its manifest.json names the files of whoever built it first, and entries built by
    older rigs hold truncated digests: the files (patches, fragments) and the command are this spec's, and
    every `sha256` is that of the file it names (`sha256sum FILE`), the .config's that of the entry's config."""
    m = dataclasses.replace(build.manifest, patches=tuple(p.manifest() for p in spec.patches),
                            fragments=fragments_manifest(spec), source=spec.source.manifest(),
                            reproduce=reproduce_command(spec))
    if build.config.is_file():
        m = dataclasses.replace(m, config_sha256=hashlib.sha256(build.config.read_bytes()).hexdigest())
    return dataclasses.replace(build, manifest=m)


def _test_module_sources() -> list[Path]:
    """The module's sources, not what a build by hand left next to them."""
    return sorted(p for p in TEST_MODULE_DIR.iterdir() if p.suffix in (".c", ".h") or p.name == "Kbuild")


def test_module_key(kernel_key: str) -> str:
    """What the module is built from: its sources and the kernel."""
    return digest(kernel_key, *(part for p in _test_module_sources() for part in (p.name, p.read_bytes())))


def with_test_module(spec: KernelSpec, build: KernelBuild, progress: Progress) -> KernelBuild:
    """The build with the rig's test module (guest-tests/kmod) built against it, from the cache entry
    kmods/<key>/ or built now in the kernel's build directory (about 2 s; the kernel again first, incrementally,
    if the directory last built another patch set or was built by an older rig without its modules' symbols).
    A module that does not build is noted and left out: the `kapi` cases skip, saying so."""
    entry = CacheEntry(spec.cache_root, "kmods", test_module_key(build.key))
    if not entry.exists():
        try:
            with entry.lock():
                if not entry.exists():
                    with tree_lock(spec.cache_root, spec.source):
                        _build_test_module(spec, build.key, entry, progress)
        except BuildError as e:
            progress.note(f"the test module {TEST_MODULE} was not built (the kapi cases will skip): {e}")
            return build
    return dataclasses.replace(build, test_module=entry.path / TEST_MODULE)


def _build_test_module(spec: KernelSpec, key: str, entry: CacheEntry, progress: Progress) -> None:
    log = spec.cache_root / "logs" / f"kmod-{entry.path.name}.log"
    src, out, make = _open_build_dir(spec, log, progress)
    log.write_text(f"p2pdma-rig test module {TEST_MODULE} for kernel {key}\n")
    stamp = out / KERNEL_STAMP
    if not stamp.exists() or stamp.read_text() != key or not (out / "Module.symvers").exists():
        progress.note(f"the build directory {out} holds another kernel: building kernel {key} there again "
                      f"for its test module (log: {log})")
        _configure_and_make(spec, key, src, out, make, progress)
    with entry.building() as tmp:
        mod_src = tmp / "src"
        mod_src.mkdir()
        for f in _test_module_sources():  # exactly what the key hashed
            shutil.copy2(f, mod_src / f.name)
        make.run(f"M={mod_src}", "modules", progress=progress, what=TEST_MODULE)
        shutil.move(str(mod_src / TEST_MODULE), str(tmp / TEST_MODULE))
        shutil.rmtree(mod_src)
    progress.done(f"test module {TEST_MODULE} built")


def build_dir(spec: KernelSpec) -> Path:
    """One build directory per source and profile (incremental rebuilds, also across patch sets); ad-hoc
    options get their own; a user's tree and the rig's patched copy of it are different trees."""
    variant = spec.profile + (f"-{digest(*spec.kconfig_add)[:8]}" if spec.kconfig_add else "")
    if spec.source.kind == "tree" and spec.patches:
        variant += "-patched"
    return spec.cache_root / "build" / spec.source.ident / variant


def _configure_and_make(spec: KernelSpec, key: str, src: Path, out: Path, make: "_Make", progress: Progress
                        ) -> tuple[str, list[str]]:
    """tinyconfig + the spec's fragments, checked, then bzImage and the UAPI headers in `out`; marks `out` as
    holding kernel `key` (the spec's build_key). Returns the final .config and the options excused as renamed."""
    fragments = list(spec.fragments)
    if spec.kconfig_add:
        extra = out / "rig-kconfig-add.config"
        extra.write_text("\n".join(spec.kconfig_add) + "\n")
        fragments.append(extra)
    check_symbols_exist(src, fragments)  # before any compiler runs (tinyconfig builds the kconfig tools)
    make.run("tinyconfig")
    make.merge(fragments)
    make.run("olddefconfig")
    wanted = wanted_options([f.read_text() for f in fragments])
    final_config = (out / ".config").read_text()
    dropped = dropped_options(wanted, final_config)
    renamed: list[str] = []
    if dropped:
        deps = kconfig_dependencies(_tree_kconfig_texts(src))
        renames: dict[str, str] = {}
        for f in fragments:
            renames.update(parse_renames(f.read_text()))
        dropped, renamed = excuse_renamed(dropped, renames, deps, wanted)
    if dropped:
        lines = "\n".join(f"    {sym}: wanted {want}, got {got}; {explain_dropped(sym, deps, final_config)}"
                          for sym, want, got in dropped)
        raise BuildError(
            f"{len(dropped)} kernel option(s) asked for by the fragments were dropped by olddefconfig "
            f"(an unmet dependency or a typo):\n{lines}\n  Fix the fragment(s): "
            + ", ".join(str(f) for f in fragments)
        )
    # modules too: their Module.symvers is what the test module links against (with_test_module)
    make.run("bzImage", "modules", jobs=spec.jobs, progress=progress, what="bzImage")
    make.run("headers_install", f"INSTALL_HDR_PATH={out / 'rig-headers'}", progress=progress, what="headers")
    (out / KERNEL_STAMP).write_text(key)
    return final_config, renamed


def _open_build_dir(spec: KernelSpec, log: Path, progress: Progress) -> tuple[Path, Path, "_Make"]:
    """The tree with the spec's patches and its build directory (emptied if an older recipe built it), with
    make logging to `log`. Caller holds tree_lock()."""
    src = prepare_tree(spec.source, list(spec.patches), spec.cache_root, progress.note)
    out = build_dir(spec)
    stamp = out / ".rig-recipe"
    if out.exists() and (not stamp.exists() or stamp.read_text() != RECIPE_VERSION):
        # objects built by an older recipe (other compiler flags) must not be reused
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    stamp.write_text(RECIPE_VERSION)
    log.parent.mkdir(parents=True, exist_ok=True)
    return src, out, _Make(src, out, log, spec.cache_root)


def _build_locked(spec: KernelSpec, key: str, entry: CacheEntry, started: float, progress: Progress) -> KernelBuild:
    log = spec.cache_root / "logs" / f"kernel-{key}.log"
    src, out, make = _open_build_dir(spec, log, progress)
    log.write_text(f"p2pdma-rig kernel build {key}\n")
    progress.note(f"building {spec.source.ident}" + (f" + {len(spec.patches)} patch(es)" if spec.patches else "")
                  + f" profile {spec.profile} in {out} (log: {log})")

    final_config, renamed = _configure_and_make(spec, key, src, out, make, progress)
    release = make.output("-s", "kernelrelease")
    seconds = round(time.time() - started, 1)

    with entry.building() as tmp:
        shutil.copy2(out / "arch/x86/boot/bzImage", tmp / "bzImage")
        shutil.copy2(out / "vmlinux", tmp / "vmlinux")
        shutil.copy2(out / "System.map", tmp / "System.map")
        shutil.copy2(out / ".config", tmp / "config")
        shutil.copytree(out / "rig-headers/include", tmp / "include")
        manifest = KernelManifest(
            key=key, source=spec.source.manifest(), patches=tuple(p.manifest() for p in spec.patches),
            profile=spec.profile, fragments=fragments_manifest(spec), kconfig_add=tuple(spec.kconfig_add),
            kernelrelease=release,
            p2pmem_semantics=p2pmem_semantics((out / "System.map").read_text(errors="replace")),
            renamed_options=tuple(renamed), config_sha256=hashlib.sha256(final_config.encode()).hexdigest(),
            compiler=compiler_version(), build_seconds=seconds,
            built_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), build_host=platform.node(),
            build_dir=str(out), reproduce=reproduce_command(spec),
        ).to_json()
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    progress.done(f"kernel {key} built")
    return load_build(entry.path)


def menuconfig(spec: KernelSpec) -> int:
    """Interactive: the tree's menuconfig on the rig's build directory of this source and profile."""
    with tree_lock(spec.cache_root, spec.source):
        src = prepare_tree(spec.source, list(spec.patches), spec.cache_root)
        return subprocess.run(["make", f"O={build_dir(spec)}", "menuconfig"], cwd=src).returncode


def reproduce_command(spec: KernelSpec) -> str:
    if spec.source.kind != "debian":
        source = f"{spec.source.kind}:{spec.source.path}"
    elif (spec.source.debian or {}).get("suite", "installed on the host") == "installed on the host":
        source = "debian:" + spec.source.path.name.removeprefix("linux-source-").removesuffix(".tar.xz")
    else:  # fetched from the archive: the exact Debian version
        source = f"debian:{spec.source.version}"
    args = ["rig", "kernel", "--source", source, "--profile", spec.profile]
    args += [a for x in spec.kconfig_add for a in ("--kconfig-add", x)]
    patch_files = dict.fromkeys(p.source_file for p in spec.patches)  # an mbox once, not once per message
    args += [a for f in patch_files for a in ("--patch", str(f))]
    return shlex.join(args)


def bzimage_release(data: bytes) -> str:
    """The kernel release (`make kernelrelease`) a bzImage carries: the x86 boot protocol's setup header
    holds at 0x20e the offset (from 0x200) of the version string `<release> (<user>@<host>) #1 ...`."""
    if len(data) < 0x210 or data[0x202:0x206] != b"HdrS":
        return ""
    off = int.from_bytes(data[0x20E:0x210], "little") + 0x200
    raw = data[off:off + 256].split(b"\0", 1)[0].decode(errors="replace")
    return raw.split(" ", 1)[0] if raw else ""


def load_build(path: Path) -> KernelBuild:
    manifest = json.loads((path / "manifest.json").read_text())
    if not manifest.get("kernelrelease"):
        # a build from before the manifest recorded it: the bzImage's header knows it
        try:
            with open(path / "bzImage", "rb") as f:
                manifest["kernelrelease"] = bzimage_release(f.read(0x8000))
        except OSError:
            manifest["kernelrelease"] = ""
    if "p2pmem_semantics" not in manifest:  # a build from before the manifest recorded it
        try:
            manifest["p2pmem_semantics"] = p2pmem_semantics((path / "System.map").read_text(errors="replace"))
        except OSError:
            pass  # KernelManifest's default
    src = manifest.get("source") or {}
    deb = src.get("debian")
    if isinstance(deb, dict) and not deb.get("deb_sha256"):
        # a package fetched by an older rig: what its cache entry says about the download
        try:
            meta = json.loads((Path(src["path"]).parent / "package.json").read_text())
            deb.update(deb=meta.get("deb", ""), deb_sha256=meta.get("deb_sha256", ""))
        except (OSError, ValueError, KeyError):
            pass
    return KernelBuild(
        key=manifest["key"], path=path, bzimage=path / "bzImage", vmlinux=path / "vmlinux",
        headers=path / "include", config=path / "config",
        manifest=KernelManifest.from_json(manifest, str(path / "manifest.json")),
    )
