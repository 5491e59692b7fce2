"""Probes stage: compile the C probes against the built kernel's UAPI headers, list the cases, upload
guest-tests/ to the guest with the case server that runs them there. Decides no verdict (that is expectations.py)."""
from __future__ import annotations

import io
import json
import shlex
import shutil
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

from rig.cache import CacheEntry, digest
from rig.config import REPO_ROOT
from rig.errors import BuildError, ConfigError, GuestError
from rig.kernel import KernelBuild

GUEST_TESTS = REPO_ROOT / "guest-tests"
GUEST_DIR = "/root/rig"
NOT_PROBES = {"run_case.py"}
# where the guest-side programs (probe.h, rigprobe.py, racer.c) map P2P memory from on each design; they read it
# from P2PDMA_MEMORY
MEMORY_OF = {"merged": "sysfs-allocate", "v3": "nvme-chardev"}
# -s: no symbol table, less to upload to every boot
CFLAGS = ("-O2", "-s", "-Wall", "-Wno-unused-function")


def host_suite() -> str:
    """The Debian release of the host (VERSION_CODENAME of /etc/os-release), whose libc the probes link to."""
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("VERSION_CODENAME="):
                return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return ""


def link_flags(guest_suite: str) -> tuple[str, ...]:
    """Dynamic when the guest image is the host's Debian release (the same libc: 35 KB per probe instead of
    1.1 MB, which every boot uploads); static otherwise, so that a guest with an older libc runs them too."""
    return () if guest_suite and guest_suite == host_suite() else ("-static",)


@dataclass(frozen=True)
class ProbeSet:
    bin_dir: Path
    cases: dict[str, str]  # case id -> description, in file order


@dataclass(frozen=True)
class CaseRun:
    case_id: str
    result: dict | None  # the probe's JSON object ({"id", "obs"|"skip"|"error"})
    problem: str  # what went wrong around the probe ("" if nothing)
    duration_s: float
    stderr: str
    # how the machine differs from its state at the boot's first case after this one, one item each (none =
    # as found): provider driver, p2pmem files and `available`, NVMe mounts (run_case.py reads them)
    state_changes: tuple[str, ...] = ()
    # the kernel's own messages at warning level or worse during the case (from /dev/kmsg, with levels)
    kernel_warnings: tuple[str, ...] = ()
    # the same since the previous case ended (or since boot, for a boot's first case): outside every case
    kernel_warnings_before: tuple[str, ...] = ()


def c_sources(root: Path = GUEST_TESTS) -> list[Path]:
    return sorted(root.glob("*.c"))


def py_sources(root: Path = GUEST_TESTS) -> list[Path]:
    return sorted(p for p in root.glob("*.py") if p.name not in NOT_PROBES)


def compile_probes(kernel: KernelBuild, bin_dir: Path, root: Path = GUEST_TESTS, link: tuple[str, ...] = ("-static",)
                   ) -> None:
    """Binaries for the guest (it has no compiler), linked as `link` says (link_flags); the UAPI headers of the
    kernel under test come first."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    for src in c_sources(root):
        out = bin_dir / src.stem
        cmd = ["gcc", *CFLAGS, *link, "-I", str(kernel.headers), "-I", str(root), "-o", str(out), str(src)]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            raise BuildError(f"probe {src.name} does not compile:\n{r.stderr[-3000:]}\n  command: {shlex.join(cmd)}")
    if kernel.test_module:  # kapi.c loads it from its own directory
        shutil.copy2(kernel.test_module, bin_dir / kernel.test_module.name)


def list_cases(bin_dir: Path, root: Path = GUEST_TESTS) -> dict[str, str]:
    cases: dict[str, str] = {}
    commands = [[str(bin_dir / src.stem), "--list"] for src in c_sources(root)]
    commands += [[sys.executable, str(src), "--list"] for src in py_sources(root)]
    for cmd in commands:
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            raise BuildError(f"{' '.join(cmd)} failed: {r.stderr.strip()}")
        for line in r.stdout.splitlines():
            obj = json.loads(line)
            cases[obj["id"]] = obj["description"]
    return cases


def probes_key(kernel: KernelBuild, link: tuple[str, ...], root: Path = GUEST_TESTS) -> str:
    """What the compiled probes and their case list depend on: every probe source and header, the kernel's
    UAPI headers (its build key), its test module (its cache entry) and the compiler."""
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix in (".c", ".h", ".py")
                   and "__pycache__" not in p.parts)
    gcc = subprocess.run(["gcc", "--version"], capture_output=True, text=True).stdout.splitlines()[:1]
    return digest(kernel.key, str(kernel.test_module), *gcc, *CFLAGS, *link, *(part for p in files for part in (str(p.relative_to(root)), p.read_bytes())))


def prepare(kernel: KernelBuild, work: Path, cache_root: Path | None = None, guest_suite: str = "") -> ProbeSet:
    """The probes compiled against this kernel's headers for a guest image of `guest_suite`, and their case
    list; with `cache_root`, taken from (or published to) <cache>/probes/<key>/, so an unchanged set is not
    compiled again (about 2 s of gcc)."""
    link = link_flags(guest_suite)
    if cache_root is None:
        bin_dir = work / "probe-bin"
        compile_probes(kernel, bin_dir, link=link)
        return ProbeSet(bin_dir, list_cases(bin_dir))
    entry = CacheEntry(cache_root, "probes", probes_key(kernel, link))
    with entry.lock():
        if not entry.exists():
            with entry.building() as tmp:
                compile_probes(kernel, tmp / "bin", link=link)
                (tmp / "cases.json").write_text(json.dumps(list_cases(tmp / "bin"), indent=1) + "\n")
    return ProbeSet(entry.path / "bin", json.loads((entry.path / "cases.json").read_text()))


def check_against(cases: dict[str, str], expected_ids: list[str]) -> None:
    """Every probe case needs an expectation and every expectation a probe case: no silent gaps."""
    missing = [c for c in cases if c not in expected_ids]
    orphans = [c for c in expected_ids if c not in cases]
    if missing or orphans:
        parts = []
        if missing:
            parts.append("cases without an expectation: " + ", ".join(missing))
        if orphans:
            parts.append("expectations without a probe case: " + ", ".join(orphans))
        raise ConfigError("guest-tests/expectations.yaml and the probes disagree: " + "; ".join(parts))


def bundle(probes: ProbeSet, root: Path = GUEST_TESTS) -> bytes:
    """What the guest runs: run_case.py, the Python probes and their library, the compiled probes in bin/ (the C
    sources and the expectations stay on the host: fewer files for the guest to write under TCG)."""
    buf = io.BytesIO()
    # not compressed: gunzip under TCG costs the guest more than the bigger transfer over the SSH channel
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for p in sorted(root.rglob("*.py")):
            if p.is_file() and "__pycache__" not in p.parts:
                tar.add(p, arcname=str(p.relative_to(root)))
        for p in sorted(probes.bin_dir.iterdir()):
            tar.add(p, arcname=f"bin/{p.name}")
    return buf.getvalue()


_bundles: dict[str, bytes] = {}  # bin_dir -> its bundle: made once per run, not once per boot

# The guest's first Python of the boot unpacks the bundle it reads from stdin (a length line, then the tar)
# into GUEST_DIR and becomes run_case.py --serve: upload and server start are one SSH exec and one interpreter
# start (each exec costs about 0.12 s under TCG, a cold interpreter 0.45 s).
SERVE_BOOTSTRAP = (
    "import io, runpy, sys, tarfile\n"
    "dest, src = sys.argv[1], sys.stdin.buffer\n"
    "size = int(src.readline())\n"
    "tarfile.open(fileobj=io.BytesIO(src.read(size))).extractall(dest)\n"
    "print('p2pdma-rig: serving', flush=True)\n"
    "sys.argv, sys.path[0] = [dest + '/run_case.py', '--serve'], dest\n"
    "runpy.run_path(sys.argv[0], run_name='__main__')\n"
)
SERVING = "p2pdma-rig: serving"


class CaseServer:
    """The guest's `run_case.py --serve` for one boot: cases go in one line each over one SSH channel, results
    come back one JSON line each. Each case still runs as its own process there (watchdog, state check, kmsg
    markers); what is saved is an SSH exec and a Python start per case. `memory` is where the probes map P2P
    memory from: sysfs-allocate (p2pmem/allocate) or nvme-chardev (/dev/nvmeN, the seed's v3).

    start() uploads guest-tests/ with the compiled probes (as a plain tar: gzip costs the guest more under TCG
    than the bytes it saves) on the same exec that starts the server, and returns once the server is up."""

    def __init__(self, vm, probes: ProbeSet, memory: str = "sysfs-allocate"):
        self.vm, self.probes, self.memory = vm, probes, memory
        self._stream = None

    def start(self, timeout_s: float = 60) -> "CaseServer":
        key = str(self.probes.bin_dir)
        if key not in _bundles:
            _bundles[key] = bundle(self.probes)
        data = _bundles[key]
        self._stream = self.vm.stream(f"rm -rf {GUEST_DIR} && mkdir -p {GUEST_DIR} && "
                                      f"P2PDMA_MEMORY={shlex.quote(self.memory)} exec python3 -S -u -c "
                                      f"{shlex.quote(SERVE_BOOTSTRAP)} {GUEST_DIR}")
        said: list[str] = []
        try:
            self._stream.send(f"{len(data)}\n".encode() + data)
            while (line := self._stream.read_line(timeout_s)) != SERVING:
                said.append(line)
        except GuestError as e:
            self.close()
            raise GuestError(f"unpacking the probes and starting the case server in the guest failed: {e} "
                             + " ".join(said)[-500:]) from e
        return self

    def run(self, case_id: str, timeout_s: float, during=None) -> CaseRun:
        """Run one case. Raises GuestError if the guest stops answering (the server is then gone: the VM is
        not to be used any more). `during` runs on the host while the case runs (Expectation.host_action)."""
        if self._stream is None:
            self.start()
        try:
            self._stream.send_line(f"{timeout_s:g} {case_id}")
            if during is not None:
                during()
            # the case's own watchdog fires at timeout_s; the rest is the state check and its settling
            line = self._stream.read_line(timeout_s + 30)
            while not line.startswith("{"):  # a stray line on the channel (stderr of the server itself)
                line = self._stream.read_line(timeout_s + 30)
        except BaseException:
            self.close()
            raise
        return case_run(case_id, json.loads(line), timeout_s)

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None


def case_run(case_id: str, out: dict, timeout_s: float) -> CaseRun:
    """run_case.py's JSON object for one case -> CaseRun, with what went wrong around the probe."""
    problem = ""
    if out.get("timed_out"):
        problem = f"watchdog: the probe ran longer than {timeout_s:g}s and was killed"
    elif out.get("signal"):
        problem = f"the probe died from signal {out['signal']}"
    elif out.get("result") is None:
        problem = f"the probe printed no result (exit {out.get('rc')}): {out.get('stderr', '').strip()[-300:]}"
    return CaseRun(case_id, out.get("result"), problem, float(out.get("duration_s") or 0.0),
                   out.get("stderr", ""), tuple(out.get("state_changed") or ()),
                   tuple(out.get("kernel_warnings") or ()), tuple(out.get("kernel_warnings_before") or ()))
