"""Kernel sources and patches: which tree a build compiles, and how patches get into it.

Sources: a Debian linux-source package (`debian:6.12`), a kernel tarball (`tarball:PATH` or a path to a
file), or a local tree (`tree:PATH` or a path to a directory). The user's tree is never modified.

Patches (files, a quilt `series` file, or an mbox from `git format-patch`/b4) are applied in a work tree
the rig owns, one per source: a copy of the pristine source for packages and tarballs (`patch -p1`), a git
worktree for git trees (`git am -3`). Every build of that source uses the same work tree and build directory,
so switching patch sets, or walking a series patch by patch, recompiles only what the patches touch.
"""
from __future__ import annotations

import email
import email.policy
import hashlib
import json
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from rig.cache import CacheEntry, digest, file_sha256
from rig.errors import BuildError, ConfigError


@dataclass(frozen=True)
class SourceRecord:
    """A kernel source as a build's manifest keeps it."""

    kind: str = ""  # debian | tarball | tree
    id: str = ""
    path: str = ""
    version: str = ""
    # debian: package, version, suite, debian_patches, note; once fetched: deb, deb_sha256, changelog_head
    debian: dict | None = None
    git_sha: str = ""  # tree
    dirty: bool = False


@dataclass(frozen=True)
class PatchRecord:
    """A patch as a build's manifest keeps it: `sha256` is that of the file it names (what `sha256sum FILE`
    prints); an mbox holds several patches, so each also has the sha256 of its own message (its identity in
    cache keys)."""

    file: str = ""
    index: int = 0
    subject: str = ""
    sha256: str = ""
    message_sha256: str = ""


@dataclass(frozen=True)
class KernelSource:
    kind: str  # debian | tarball | tree
    ident: str  # filesystem-safe identity of the pristine source, part of the cache key
    path: Path  # the package's tarball, the tarball, or the tree
    version: str  # package version, tarball sha256, or git describe
    git_sha: str = ""
    dirty: bool = False
    # for a dirty or non-git tree: what makes this build differ from another of the same tree
    content_id: str = ""
    # debian: package, Debian version, suite it came from, the note that Debian's patches are applied
    debian: dict | None = None

    def manifest(self) -> SourceRecord:
        debian = dict(self.debian) if self.debian else None
        if debian and debian.get("suite") != "installed on the host":
            meta = self.path.parent / "package.json"
            if meta.exists():
                # fetched after this source was resolved: what was downloaded, and Debian's changelog entry
                try:
                    m = json.loads(meta.read_text())
                    debian.update(deb=m.get("deb", ""), deb_sha256=m.get("deb_sha256", ""))
                    debian["changelog_head"] = (self.path.parent / "changelog-head.txt").read_text().strip()
                except (OSError, ValueError):
                    pass
        tree = self.kind == "tree"
        return SourceRecord(self.kind, self.ident, str(self.path), self.version, debian,
                            self.git_sha if tree else "", self.dirty if tree else False)


@dataclass(frozen=True)
class Patch:
    source_file: Path
    index: int  # position in its file (mbox with several messages)
    subject: str
    text: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()

    @property
    def is_mail(self) -> bool:
        return bool(re.search(r"^From: ", self.text, re.M) and re.search(r"^Subject: ", self.text, re.M))

    def name(self) -> str:
        return self.source_file.name + (f"#{self.index + 1}" if self.index else "")

    def manifest(self) -> PatchRecord:
        return PatchRecord(str(self.source_file), self.index, self.subject, file_sha256(self.source_file),
                           self.sha256)


# ---------------------------------------------------------------- sources


def _run(cmd: list[str], cwd: Path | None = None, check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, errors="replace")
    if check and r.returncode != 0:
        raise BuildError(f"{' '.join(cmd)} failed (exit {r.returncode}): {(r.stderr or r.stdout).strip()[-800:]}")
    return r


def _dpkg_version(package: str) -> str | None:
    try:
        out = _run(["dpkg-query", "-W", "-f=${Status}\t${Version}", package], check=False)
    except FileNotFoundError:
        return None
    status, _, version = out.stdout.partition("\t")
    return version if "install ok installed" in status else None


def _safe(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", s)


def resolve_source(source: str, base_dir: Path | None = None, cache_root: Path | None = None,
                   note=print) -> KernelSource:
    kind, sep, arg = source.partition(":")
    if not sep or kind not in ("debian", "tarball", "tree"):
        kind, arg = "", source
    if kind == "debian":
        return _debian_source(arg, cache_root, note)
    path = Path(arg).expanduser()
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    path = path.resolve()
    if not path.exists():
        raise ConfigError(f"kernel source {source!r}: {path} does not exist")
    if kind == "tarball" or (not kind and path.is_file()):
        if not path.is_file():
            raise ConfigError(f"kernel source {source!r}: {path} is not a file")
        sha = file_sha256(path)
        return KernelSource("tarball", _safe(f"tarball-{path.name}-{sha[:12]}"), path, sha)
    if not (path / "Makefile").is_file() or not (path / "Kconfig").is_file():
        raise ConfigError(f"kernel source {source!r}: {path} is not a kernel tree (no Makefile and Kconfig)")
    tree_id = _safe(f"tree-{path.name}-{digest(str(path))[:8]}")
    if (path / ".git").exists():
        sha = _run(["git", "rev-parse", "HEAD"], cwd=path).stdout.strip()
        describe = _run(["git", "describe", "--always", "--dirty"], cwd=path).stdout.strip()
        status = _run(["git", "status", "--porcelain", "--untracked-files=normal"], cwd=path).stdout
        dirty = bool(status.strip())
        content = ""
        if dirty:
            diff = _run(["git", "diff", "HEAD", "--binary"], cwd=path).stdout
            content = digest(diff, status)
        return KernelSource("tree", tree_id, path, describe, sha, dirty, content)
    # a plain directory has no cheap identity: every build runs make (incremental in its build directory)
    return KernelSource("tree", tree_id, path, "plain directory", "", True, f"plain-{time.time_ns()}")


def _debian_source(spec: str, cache_root: Path | None, note) -> KernelSource:
    """debian:<version>: the host's installed linux-source package when it is that version (no download),
    else the package from Debian's archive (rig.debian), fetched once into the cache."""
    from rig import debian

    package = debian.package_for(spec)
    installed = _dpkg_version(package)
    tarball = Path(f"/usr/src/{package}.tar.xz")
    if installed and tarball.exists() and debian.matches(spec, debian.Candidate(package, installed, "installed")):
        return KernelSource("debian", _safe(f"debian-{package}_{installed}"), tarball, installed,
                            debian={"package": package, "version": installed, "suite": "installed on the host",
                                    **_DEBIAN_NOTE})
    if cache_root is None:
        raise BuildError(f"kernel source package {package} is not installed ({tarball} missing)")
    # which version only: the download waits until a build needs the tree (`rig kernel --print-key` is cheap)
    c = debian.resolve(spec, cache_root, note)
    entry = debian.entry_for(c, cache_root)
    info = {"package": c.package, "version": c.version, "suite": c.suite, "mirror": debian.MIRROR, **_DEBIAN_NOTE}
    try:
        meta = json.loads((entry.path / "package.json").read_text())
        info.update(deb=meta.get("deb", ""), deb_sha256=meta.get("deb_sha256", ""))
        info["changelog_head"] = (entry.path / "changelog-head.txt").read_text().strip()
    except (OSError, ValueError):
        pass
    return KernelSource("debian", _safe(f"debian-{c.package}_{c.version}"), entry.path / f"{c.package}.tar.xz",
                        c.version, debian=info)


_DEBIAN_NOTE = {
    "debian_patches": True,
    "note": "Debian's linux-source package: the upstream release with Debian's own kernel patches applied "
            "(debian/patches of the linux source package); not a pristine upstream tree",
}


# ---------------------------------------------------------------- patches


_MBOX_FROM = re.compile(r"^From [0-9a-f]{40} |^From \S+@?\S* +\w{3} \w{3} ", re.M)


def _split_mbox(text: str) -> list[str]:
    starts = [m.start() for m in _MBOX_FROM.finditer(text)]
    if not starts:
        return [text]
    starts.append(len(text))
    return [text[a:b] for a, b in zip(starts, starts[1:]) if text[a:b].strip()]


def _subject(text: str, fallback: str) -> str:
    msg = email.message_from_string(text.split("\n\n", 1)[0] + "\n\n", policy=email.policy.default)
    subject = str(msg.get("Subject") or "").strip()
    return " ".join(subject.split()) or fallback


def _looks_like_patch(text: str) -> bool:
    return bool(re.search(r"^--- \S", text, re.M) and re.search(r"^\+\+\+ \S", text, re.M))


def read_patches(paths: list[Path]) -> list[Patch]:
    """Patch files, mboxes and quilt series files -> patches in application order."""
    out: list[Patch] = []
    for path in paths:
        if not path.is_file():
            raise ConfigError(f"patch {path} does not exist")
        text = path.read_text(errors="replace")
        if _looks_like_patch(text):
            for i, msg in enumerate(_split_mbox(text)):
                out.append(Patch(path.resolve(), i, _subject(msg, path.name), msg))
            continue
        # a quilt series file: one patch per line, relative to the series file, '#' comments
        entries = [(n, ln.split("#", 1)[0].split()) for n, ln in enumerate(text.splitlines(), 1)]
        names = [(n, e[0]) for n, e in entries if e]
        if not names:
            raise ConfigError(f"{path} is neither a patch, an mbox nor a series file (no diff, no patch names)")
        for n, name in names:
            if not (path.parent / name).is_file():
                raise ConfigError(f"{path} has no diff, so it was read as a quilt series file, but its line {n} "
                                  f"names {name!r}, which is not a file next to it: is {path} a patch at all?")
        out += read_patches([path.parent / n for _, n in names])
    return out


# ---------------------------------------------------------------- work trees


def tree_lock(cache_root: Path, source: KernelSource):
    """Held for a whole prepare + build: the work tree and its build directories are one per source."""
    return CacheEntry(cache_root, "trees", source.ident).lock()


def _pristine(source: KernelSource, cache_root: Path, note) -> Path:
    """The unmodified source: the user's tree as it is, or the package/tarball extracted once."""
    if source.kind == "tree":
        return source.path
    entry = CacheEntry(cache_root, "src", source.ident)
    if source.kind == "debian" and not entry.exists() and not source.path.exists():
        # a package from Debian's archive, not downloaded yet
        from rig import debian

        info = source.debian or {}
        debian.fetch(info.get("version", source.version), cache_root, note,
                     debian.Candidate(info.get("package", ""), source.version, info.get("suite", "")))
    with entry.lock():
        if not entry.exists():
            note(f"extracting {source.path}")
            with entry.building() as tmp:
                _run(["tar", "-xf", str(source.path), "-C", str(tmp), "--strip-components=1"])
    return entry.path


def _touched_files(patch: Patch) -> list[str]:
    files = set()
    for m in re.finditer(r"^(?:---|\+\+\+) (?:[ab]/)?(\S+)", patch.text, re.M):
        if m.group(1) != "/dev/null":
            files.add(m.group(1))
    return sorted(files)


def _patch_failure(patch: Patch, work: Path, output: str) -> BuildError:
    """Name the patch, the file and the hunk that did not apply."""
    dry = subprocess.run(["patch", "-p1", "--dry-run", "--batch", "--forward"], cwd=work, input=patch.text,
                         capture_output=True, text=True)
    details = []
    current = ""
    for line in (dry.stdout + dry.stderr).splitlines():
        m = re.match(r"(?:patching|checking) file (\S+)", line)
        if m:
            current = m.group(1)
        m = re.match(r"Hunk #(\d+) FAILED at (\d+)", line)
        if m:
            details.append(f"{current}: hunk #{m.group(1)} (at line {m.group(2)}) does not apply")
        if "can't find file to patch" in line or "No file to patch" in line:
            details.append(f"a file it patches does not exist: {line.strip()}")
    if not details:
        details = [ln.strip() for ln in output.splitlines() if ln.strip()][-5:]
    return BuildError(f"patch {patch.source_file} ({patch.subject!r}) does not apply:\n    "
                      + "\n    ".join(details) + "\n  Fix: rebase the patch onto this kernel, or drop it.")


class WorkTree:
    """A tree the rig patches in place, quilt-style: before a patch touches a file, the original is saved
    under <cache>/trees/<id>/orig/, so going back to the pristine source restores just those files (with a
    fresh mtime, so make rebuilds what used them). A git worktree is reset with git instead."""

    def __init__(self, source: KernelSource, cache_root: Path, path: Path, git: bool = False):
        self.source = source
        self.path = path
        self.meta = cache_root / "trees" / source.ident
        self.orig = self.meta / "orig"
        self.state_file = self.meta / "state.json"
        self.git = git

    def state(self) -> dict:
        try:
            return json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return {"applied": [], "backed_up": {}}

    def _save(self, state: dict) -> None:
        self.meta.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state))
        os.replace(tmp, self.state_file)

    def _revert(self, state: dict) -> dict:
        if self.git:
            _run(["git", "-C", str(self.path), "reset", "-q", "--hard", self.source.git_sha])
            _run(["git", "-C", str(self.path), "clean", "-q", "-fd"])
        else:
            for rel, existed in state.get("backed_up", {}).items():
                dst = self.path / rel
                if existed:
                    shutil.copyfile(self.orig / rel, dst)
                    os.utime(dst)
                elif dst.exists():
                    dst.unlink()
            shutil.rmtree(self.orig, ignore_errors=True)
        state = {"applied": [], "backed_up": {}}
        self._save(state)
        return state

    def _back_up(self, patch: Patch, state: dict) -> None:
        for rel in _touched_files(patch):
            if rel in state["backed_up"]:
                continue
            src = self.path / rel
            if src.exists():
                (self.orig / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, self.orig / rel)
            state["backed_up"][rel] = src.exists()
        # saved before patching: a rig killed half-way through a patch can still go back to pristine
        self._save(state)

    def checkout(self, patches: list[Patch], note) -> Path:
        """Make the tree exactly pristine + patches, applying only what is not applied yet."""
        state = self.state()
        want = [p.sha256 for p in patches]
        applied = state.get("applied", [])
        if applied != want[: len(applied)]:
            state = self._revert(state)
        for patch in patches[len(state["applied"]):]:
            note(f"applying {patch.name()}: {patch.subject}")
            if self.git and patch.is_mail:
                r = subprocess.run(["git", "-c", "user.name=p2pdma-rig", "-c", "user.email=rig@localhost", "am",
                                    "-3", "--keep-cr"], cwd=self.path, input=patch.text, capture_output=True,
                                   text=True)
                if r.returncode != 0:
                    subprocess.run(["git", "am", "--abort"], cwd=self.path, capture_output=True)
            else:
                if not self.git:
                    self._back_up(patch, state)
                r = subprocess.run(["patch", "-p1", "--batch", "--forward", "--no-backup-if-mismatch", "--reject-file=-"],
                                   cwd=self.path, input=patch.text, capture_output=True, text=True)
            if r.returncode != 0:
                err = _patch_failure(patch, self.path, r.stdout + r.stderr)
                self._revert(state)
                raise err
            state["applied"].append(patch.sha256)
            self._save(state)
        return self.path


def _user_tree_copy(source: KernelSource, cache_root: Path, note) -> tuple[Path, bool]:
    """Where patches on a user's tree are applied: a git worktree of its HEAD, or a copy of a plain tree."""
    work = cache_root / "trees" / source.ident / "work"
    git = (source.path / ".git").exists()
    if not work.exists():
        work.parent.mkdir(parents=True, exist_ok=True)
        if git:
            _run(["git", "-C", str(source.path), "worktree", "prune"])
            _run(["git", "-C", str(source.path), "worktree", "add", "--detach", "--force", str(work),
                  source.git_sha])
        else:
            note(f"copying {source.path} into {work} (the rig never patches your tree)")
            tmp = work.with_name("work.tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            _run(["cp", "-a", str(source.path), str(tmp)])
            os.rename(tmp, work)
    return work, git


def prepare_tree(source: KernelSource, patches: list[Patch], cache_root: Path, note=print) -> Path:
    """The directory to build from, with exactly `patches` applied. Caller holds tree_lock()."""
    if source.kind == "tree":
        if not patches:
            return source.path  # built out of tree (O=), never written to
        work, git = _user_tree_copy(source, cache_root, note)
        return WorkTree(source, cache_root, work, git).checkout(patches, note)
    # a package or tarball: extracted once into the cache, then patched in place (and reverted) there
    tree = _pristine(source, cache_root, note)
    return WorkTree(source, cache_root, tree).checkout(patches, note)
