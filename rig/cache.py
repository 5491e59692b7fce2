"""Content-addressed cache entries with atomic publish.

An entry is a directory <root>/<kind>/<key>/ that exists only once complete: it is built in a sibling
temporary directory and renamed into place, so a build killed half-way leaves a '.tmp-*' directory that is
never mistaken for a valid entry (and is swept on the next build of that key). A file lock per key keeps two
rigs started at once from building the same thing twice.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
from pathlib import Path
from typing import Iterator


def digest(*parts: bytes | str) -> str:
    h = hashlib.sha256()
    for p in parts:
        data = p.encode() if isinstance(p, str) else p
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()[:20]


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes, read in 1 MiB blocks (a kernel .deb is 167 MB)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class CacheEntry:
    def __init__(self, root: Path, kind: str, key: str):
        self.base = root / kind
        self.key = key
        self.path = self.base / key

    def exists(self) -> bool:
        return self.path.is_dir()

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        self.base.mkdir(parents=True, exist_ok=True)
        with open(self.base / f".{self.key}.lock", "w") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    @contextlib.contextmanager
    def building(self) -> Iterator[Path]:
        """Yield an empty temporary directory; on success it becomes the entry, on any error it is removed."""
        self.base.mkdir(parents=True, exist_ok=True)
        for stale in self.base.glob(f"{self.key}.tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
        tmp = self.base / f"{self.key}.tmp-{os.getpid()}"
        tmp.mkdir()
        try:
            yield tmp
            os.rename(tmp, self.path)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
