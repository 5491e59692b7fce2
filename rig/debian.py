"""Debian's linux-source-<version> packages from Debian's archive, without touching the host's apt.

`debian:<version>` names a kernel Debian packages: `7.3` (the newest linux-source-7.3 in any suite), `7.3.4`
(an upstream version), `7.3~rc7`, or an exact Debian version `7.3.4-1~bpo13+1`. When the host has the package
installed (`make deps` installs linux-source-6.12) and it matches, its /usr/src tarball is used. Otherwise the
rig looks the package up in the suites that carry kernels, with a private apt state under the cache (its own
sources list, lists, archives and dpkg status; signatures are checked against the Debian archive keyring the
host already has), downloads the .deb with `apt-get download` (apt checks its hash against the signed index),
and keeps the package's tarball in an atomic cache entry `debian/<package>_<version>/`.

The host's /etc/apt is only read by apt for its defaults (apt.conf), never written.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from rig.cache import CacheEntry, file_sha256
from rig.errors import BuildError

MIRROR = os.environ.get("P2PDMA_RIG_DEBIAN_MIRROR", "http://deb.debian.org/debian")
SUITES = ("bookworm", "bookworm-backports", "trixie", "trixie-backports", "sid", "experimental")
KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
# lists younger than this are reused (the archive changes daily at most for these packages)
LISTS_MAX_AGE_S = 6 * 3600


# ---------------------------------------------------------------- pure helpers (unit tested)


def _order(c: str) -> int:
    if c == "~":
        return -1
    if c.isdigit():
        return 0
    if c.isalpha():
        return ord(c)
    return ord(c) + 256


def _cmp_part(a: str, b: str) -> int:
    """dpkg's comparison of an upstream version or a Debian revision."""
    while a or b:
        na = re.match(r"\D*", a).group(0)
        nb = re.match(r"\D*", b).group(0)
        a, b = a[len(na):], b[len(nb):]
        for i in range(max(len(na), len(nb))):
            ca = _order(na[i]) if i < len(na) else 0
            cb = _order(nb[i]) if i < len(nb) else 0
            if ca != cb:
                return -1 if ca < cb else 1
        da = re.match(r"\d*", a).group(0)
        db = re.match(r"\d*", b).group(0)
        a, b = a[len(da):], b[len(db):]
        ia, ib = int(da or 0), int(db or 0)
        if ia != ib:
            return -1 if ia < ib else 1
    return 0


def compare_versions(a: str, b: str) -> int:
    """Debian version comparison (epoch, upstream, revision; `~` sorts before anything): -1, 0 or 1."""
    def split(v: str) -> tuple[int, str, str]:
        epoch, _, rest = v.rpartition(":") if ":" in v else ("0", "", v)
        upstream, _, revision = rest.rpartition("-") if "-" in rest else (rest, "", "")
        return int(epoch or 0), upstream, revision

    ea, ua, ra = split(a)
    eb, ub, rb = split(b)
    if ea != eb:
        return -1 if ea < eb else 1
    return _cmp_part(ua, ub) or _cmp_part(ra, rb)


@dataclass(frozen=True, order=True)
class Candidate:
    package: str  # linux-source-7.3
    version: str  # 7.3.4-1~bpo13+1
    suite: str  # trixie-backports

    @property
    def upstream(self) -> str:
        v = self.version.split(":", 1)[-1]
        return v.rsplit("-", 1)[0] if "-" in v else v


def parse_madison(text: str) -> list[Candidate]:
    """`apt-cache madison` lines -> candidates (`pkg | version | mirror suite/component arch Packages`)."""
    out = []
    for line in text.splitlines():
        parts = [p.strip() for p in line.split("|")]
        if len(parts) < 3 or not parts[0].startswith("linux-source-"):
            continue
        where = parts[2].split()
        if len(where) < 2 or where[-1] != "Packages":
            continue  # a Sources line
        suite = where[1].split("/", 1)[0]
        out.append(Candidate(parts[0], parts[1], suite))
    return out


def package_for(spec: str) -> str:
    """`7.3`, `7.3.4`, `7.3~rc7`, `7.3.4-1~bpo13+1` -> `linux-source-7.3`."""
    m = re.match(r"(\d+)\.(\d+)(?=$|[.~+-])", spec)
    if not m:
        raise BuildError(f"debian:{spec}: not a kernel version (expected e.g. debian:7.3, debian:7.3.4 or "
                         "debian:7.3.4-1~bpo13+1)")
    return f"linux-source-{m.group(1)}.{m.group(2)}"


def matches(spec: str, c: Candidate) -> bool:
    """Does a candidate satisfy `debian:<spec>`? The series (`7.3`), an upstream version (`7.3.4` but not
    `7.3.40`), an upstream pre-release (`7.3~rc7`), or the exact Debian version."""
    if c.package != package_for(spec):
        return False
    if spec == c.package.removeprefix("linux-source-") or spec == c.version:
        return True
    return c.upstream == spec


def choose(spec: str, candidates: list[Candidate]) -> Candidate | None:
    """The newest candidate satisfying the spec; ties (the same version in two suites) go to the first suite
    in SUITES order (the most stable one)."""
    fitting = [c for c in candidates if matches(spec, c)]
    if not fitting:
        return None
    best = fitting[0]
    for c in fitting[1:]:
        d = compare_versions(c.version, best.version)
        if d > 0 or (d == 0 and _suite_rank(c.suite) < _suite_rank(best.suite)):
            best = c
    return best


def _suite_rank(suite: str) -> int:
    return SUITES.index(suite) if suite in SUITES else len(SUITES)


def sort_candidates(candidates: list[Candidate]) -> list[Candidate]:
    import functools

    def key(a: Candidate, b: Candidate) -> int:
        return compare_versions(b.version, a.version) or (_suite_rank(a.suite) - _suite_rank(b.suite))

    return sorted(set(candidates), key=functools.cmp_to_key(key))


def format_available(candidates: list[Candidate]) -> str:
    rows = sort_candidates(candidates)
    if not rows:
        return "(none)"
    w = max(len(c.version) for c in rows)
    return "\n".join(f"  debian:{c.upstream:<12} {c.version:<{w}}  {c.suite}" for c in rows)


def sources_list(mirror: str = MIRROR, suites: tuple[str, ...] = SUITES, keyring: Path = KEYRING) -> str:
    return "".join(f"deb [signed-by={keyring}] {mirror} {s} main\n" for s in suites)


# ---------------------------------------------------------------- the private apt state


class Archive:
    """apt-get/apt-cache with their own state under <cache>/debian-apt/: nothing of the host's apt is written."""

    def __init__(self, cache_root: Path, mirror: str = MIRROR, note=print):
        self.cache_root = cache_root
        self.root = cache_root / "debian-apt"
        self.mirror = mirror
        self.note = note

    def _opts(self) -> list[str]:
        r = self.root
        return [
            "-o", f"Dir::Etc::SourceList={r / 'sources.list'}",
            "-o", "Dir::Etc::SourceParts=/dev/null",
            "-o", "Dir::Etc::Preferences=/dev/null",
            "-o", "Dir::Etc::PreferencesParts=/dev/null",
            "-o", f"Dir::State={r / 'state'}",
            "-o", f"Dir::State::Lists={r / 'lists'}",
            "-o", f"Dir::State::status={r / 'status'}",
            "-o", f"Dir::Cache={r / 'cache'}",
            "-o", "APT::Architecture=amd64",
            "-o", "APT::Architectures=amd64",
            "-o", "Acquire::Languages=none",
            "-o", "Acquire::Retries=2",
            "-o", "APT::Sandbox::User=root",  # the cache under /root is not readable by _apt
        ]

    def _apt(self, tool: str, *args: str, cwd: Path | None = None, timeout: int = 900) -> subprocess.CompletedProcess:
        if not shutil.which(tool):
            raise BuildError(f"{tool} not found: the rig needs apt to fetch Debian's kernel packages")
        try:
            return subprocess.run([tool, *self._opts(), *args], cwd=cwd, capture_output=True, text=True,
                                  errors="replace", timeout=timeout)
        except subprocess.TimeoutExpired:
            raise BuildError(f"{tool} {' '.join(args)} took longer than {timeout} s (network?)")

    def _lock(self):
        return CacheEntry(self.cache_root, "debian-apt-lock", "state").lock()

    def update(self, force: bool = False) -> None:
        if not KEYRING.is_file():
            raise BuildError(f"{KEYRING} is missing: install debian-archive-keyring (the rig checks the archive's "
                             "signatures with it)")
        with self._lock():
            stamp = self.root / "updated"
            want = sources_list(self.mirror)
            src = self.root / "sources.list"
            fresh = (stamp.exists() and time.time() - stamp.stat().st_mtime < LISTS_MAX_AGE_S
                     and src.exists() and src.read_text() == want)
            if fresh and not force:
                return
            for d in ("lists/partial", "cache/archives/partial", "state"):
                (self.root / d).mkdir(parents=True, exist_ok=True)
            (self.root / "status").touch()
            src.write_text(want)
            self.note(f"reading the package lists of {', '.join(SUITES)} from {self.mirror}")
            r = self._apt("apt-get", "-q", "update")
            # apt-get update exits 0 on some failures (W: lines); a missing or unsigned index is an E: or W:
            problems = [ln for ln in (r.stdout + r.stderr).splitlines()
                        if ln.startswith(("E:", "W:", "Err:")) and "Languages" not in ln]
            if r.returncode != 0 or problems:
                raise BuildError("cannot read Debian's package lists (apt-get update with the rig's own apt state "
                                 f"in {self.root}):\n    " + "\n    ".join(problems or [r.stderr.strip()[-600:]]))
            stamp.touch()

    def candidates(self) -> list[Candidate]:
        try:
            self.update()
        except BuildError as e:
            if not (self.root / "updated").exists():
                raise
            # the archive is unreachable but lists from an earlier look-up exist: use them, and say so
            self.note(f"warning: {str(e).splitlines()[0]}; using the package lists of "
                      f"{time.strftime('%Y-%m-%d %H:%M', time.gmtime((self.root / 'updated').stat().st_mtime))} UTC")
        with self._lock():
            names = self._apt("apt-cache", "pkgnames", "linux-source-").stdout.split()
            names = sorted(n for n in names if re.fullmatch(r"linux-source-\d+\.\d+", n))
            if not names:
                return []
            r = self._apt("apt-cache", "madison", *names)
        return parse_madison(r.stdout)

    def download(self, cand: Candidate, dest: Path) -> Path:
        """The .deb of one candidate into dest (apt checks its size and hash against the signed index)."""
        with self._lock():
            r = self._apt("apt-get", "-q", "download", f"{cand.package}={cand.version}", cwd=dest, timeout=3600)
        debs = list(dest.glob("*.deb"))
        if r.returncode != 0 or len(debs) != 1:
            raise BuildError(f"downloading {cand.package} {cand.version} ({cand.suite}) from {self.mirror} failed: "
                             + ((r.stderr or r.stdout).strip()[-800:] or "no .deb written"))
        return debs[0]


def extract_tarball(deb: Path, package: str, dest: Path) -> tuple[Path, str]:
    """usr/src/<package>.tar.xz and the Debian changelog's first entry out of a .deb, into dest.
    A truncated or corrupt .deb, or one without a source tarball, is a BuildError."""
    listing = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(deb)], capture_output=True)
    if listing.returncode != 0:
        raise BuildError(f"{deb.name} is not a readable .deb (truncated or corrupt download?): "
                         f"{listing.stderr.decode(errors='replace').strip()[-400:]}")
    names = subprocess.run(["tar", "-t"], input=listing.stdout, capture_output=True)
    if names.returncode != 0:
        raise BuildError(f"{deb.name}: its data archive is damaged (truncated download?): "
                         f"{names.stderr.decode(errors='replace').strip()[-400:]}")
    members = names.stdout.decode(errors="replace").split()
    want = next((m for m in members if re.fullmatch(rf"\./usr/src/{re.escape(package)}\.tar\.(xz|bz2|gz)", m)), None)
    if want is None:
        raise BuildError(f"{deb.name} holds no kernel source tarball (usr/src/{package}.tar.xz): not a "
                         "linux-source package?")
    changelog = next((m for m in members if m.endswith(f"/doc/{package}/changelog.Debian.gz")), None)
    r = subprocess.run(["tar", "-x", "-C", str(dest), want] + ([changelog] if changelog else []),
                       input=listing.stdout, capture_output=True)
    if r.returncode != 0:
        raise BuildError(f"{deb.name}: extracting {want} failed: {r.stderr.decode(errors='replace').strip()[-400:]}")
    tarball = dest / want
    # the tarball itself must be complete: a truncated .xz stops the kernel build much later otherwise
    t = subprocess.run(["xz", "-t", str(tarball)] if tarball.suffix == ".xz" else ["gzip", "-t", str(tarball)],
                       capture_output=True, text=True)
    if t.returncode != 0:
        raise BuildError(f"{deb.name}: {tarball.name} is damaged: {t.stderr.strip()[-300:]}")
    head = ""
    if changelog:
        z = subprocess.run(["zcat", str(dest / changelog)], capture_output=True, text=True, errors="replace")
        head = z.stdout.split("\n -- ", 1)[0].strip()
    return tarball, head


@dataclass(frozen=True)
class Fetched:
    candidate: Candidate
    tarball: Path
    changelog_head: str  # the Debian changelog's newest entry
    deb_sha256: str = ""


def resolve(spec: str, cache_root: Path, note=print) -> Candidate:
    """Which package version `debian:<spec>` means (reads the package lists; downloads nothing)."""
    package = package_for(spec)
    # an exact version already fetched needs no look-up (offline rebuilds of what the cache holds)
    for entry in sorted((cache_root / "debian").glob(f"{package}_*")) if (cache_root / "debian").is_dir() else []:
        try:
            meta = json.loads((entry / "package.json").read_text())
        except (OSError, ValueError):
            continue
        if meta.get("version") == spec:
            return Candidate(meta["package"], meta["version"], meta["suite"])
    cands = Archive(cache_root, note=note).candidates()
    cand = choose(spec, cands)
    if cand is None:
        raise BuildError(f"debian:{spec}: Debian's archive ({', '.join(SUITES)}) has no {package} of that version. "
                         f"It has:\n{format_available(cands)}")
    return cand


def entry_for(cand: Candidate, cache_root: Path) -> CacheEntry:
    return CacheEntry(cache_root, "debian", re.sub(r"[^A-Za-z0-9._+~-]", "_", f"{cand.package}_{cand.version}"))


def fetch(spec: str, cache_root: Path, note=print, cand: Candidate | None = None) -> Fetched:
    """The package for `debian:<spec>`, downloaded and unpacked once into the cache (atomically)."""
    cand = cand or resolve(spec, cache_root, note)
    archive = Archive(cache_root, note=note)
    entry = entry_for(cand, cache_root)
    with entry.lock():
        if not entry.exists():
            note(f"downloading {cand.package} {cand.version} ({cand.suite})")
            with entry.building() as tmp:
                dl = tmp / "download"
                dl.mkdir()
                deb = archive.download(cand, dl)
                tarball, head = extract_tarball(deb, cand.package, tmp)
                shutil.move(str(tarball), tmp / tarball.name)
                for cl in tmp.glob("usr/share/doc/*/changelog.Debian.gz"):
                    shutil.move(str(cl), tmp / "changelog.Debian.gz")
                (tmp / "changelog-head.txt").write_text(head + "\n")
                (tmp / "package.json").write_text(json.dumps({
                    "package": cand.package, "version": cand.version, "suite": cand.suite, "deb": deb.name,
                    "deb_sha256": file_sha256(deb), "mirror": archive.mirror}, indent=2) + "\n")
                shutil.rmtree(dl)
                shutil.rmtree(tmp / "usr", ignore_errors=True)
    tarball = next(entry.path.glob(f"{cand.package}.tar.*"))
    head = (entry.path / "changelog-head.txt").read_text().strip()
    try:
        deb_sha = json.loads((entry.path / "package.json").read_text()).get("deb_sha256", "")
    except (OSError, ValueError):
        deb_sha = ""
    return Fetched(cand, tarball, head, deb_sha)


def available_report(cache_root: Path, note=print) -> str:
    """What `rig kernel --available` prints: every linux-source version in the suites, and the host's."""
    cands = Archive(cache_root, note=note).candidates()
    host = []
    r = subprocess.run(["dpkg-query", "-W", "-f=${Package}\t${Version}\t${Status}\n", "linux-source-*"],
                       capture_output=True, text=True)
    for line in r.stdout.splitlines():
        pkg, _, rest = line.partition("\t")
        version, _, status = rest.partition("\t")
        if "install ok installed" in status and re.fullmatch(r"linux-source-\d+\.\d+", pkg):
            host.append(f"  debian:{pkg.removeprefix('linux-source-'):<12} {version}  (installed on this host: "
                        "used without a download)")
    return (f"Kernel sources Debian's archive carries ({MIRROR}; {', '.join(SUITES)}); use --source "
            "debian:<version> with a series (7.3), an upstream version (7.3.4, 7.3~rc7) or an exact Debian "
            f"version:\n{format_available(cands)}" + ("\n" + "\n".join(host) if host else ""))
