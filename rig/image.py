"""Guest image stage: images/ recipe -> mmdebstrap root -> ext4 disk in the cache; and the rig's SSH key.

The disk is cached under a hash of the recipe (package list, init, sshd drop-in, suite, size, mmdebstrap
script). Boots never write to it: the VM stage puts a qcow2 overlay on top.
"""
from __future__ import annotations

import fcntl
import os

import json
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from rig.cache import CacheEntry, digest
from rig.config import REPO_ROOT, RigConfig
from rig.errors import BuildError
from rig.progress import Progress

RECIPE_DIR = REPO_ROOT / "images"
RECIPE_FILES = ("packages.txt", "rig-init", "sshd_config")
RECIPE_VERSION = "1"


@dataclass(frozen=True)
class ImageSpec:
    suite: str
    packages: tuple[str, ...]
    size_mb: int
    cache_root: Path


@dataclass(frozen=True)
class GuestImage:
    key: str
    disk: Path  # raw ext4, read-only for the rig
    recipe: dict


@dataclass(frozen=True)
class SshKey:
    private: Path
    public_b64: str  # the base64 blob of the ed25519 public key


def read_packages(text: str) -> list[str]:
    return [ln.split("#", 1)[0].strip() for ln in text.splitlines() if ln.split("#", 1)[0].strip()]


def image_spec(cfg: RigConfig) -> ImageSpec:
    packages = read_packages((RECIPE_DIR / "packages.txt").read_text()) + list(cfg.image.extra_packages)
    return ImageSpec(cfg.image.suite, tuple(packages), cfg.image.size_mb, cfg.cache_path)


def _tool_version(cmd: list[str]) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True).stdout.strip()
    except FileNotFoundError:
        return ""


def _tool_identity(name: str) -> str:
    """The tool's own bytes, hashed: what `--version` says, without starting it (mmdebstrap is a Perl script
    that takes 0.12 s to say its version, on every run)."""
    path = shutil.which(name)
    return digest(Path(path).read_bytes()) if path else ""


def image_key(spec: ImageSpec) -> str:
    parts = [RECIPE_VERSION, spec.suite, str(spec.size_mb), ",".join(spec.packages), _tool_identity("mmdebstrap")]
    parts += [(RECIPE_DIR / f).read_text() for f in RECIPE_FILES]
    return digest(*parts)


def _run(cmd: list[str], log: Path, what: str) -> None:
    with open(log, "a") as f:
        f.write(f"\n$ {' '.join(cmd)}\n")
        f.flush()
        rc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT).returncode
    if rc != 0:
        tail = "\n".join("    " + ln for ln in log.read_text().splitlines()[-20:])
        raise BuildError(f"guest image build failed: {what} exited {rc}. Last lines:\n{tail}\n  full log: {log}")


def build_image(spec: ImageSpec, progress: Progress | None = None) -> GuestImage:
    progress = progress or Progress("image")
    for tool in ("mmdebstrap", "mke2fs"):
        if not shutil.which(tool):
            raise BuildError(f"{tool} not found. Fix: run `make deps` (installs mmdebstrap and e2fsprogs).")
    key = image_key(spec)
    entry = CacheEntry(spec.cache_root, "images", key)
    if not entry.exists():
        with entry.lock():
            if not entry.exists():
                _build(spec, key, entry, progress)
    recipe = json.loads((entry.path / "recipe.json").read_text())
    return GuestImage(key=key, disk=entry.path / "root.img", recipe=recipe)


def _build(spec: ImageSpec, key: str, entry: CacheEntry, progress: Progress) -> None:
    logs = spec.cache_root / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log = logs / f"image-{key}.log"
    log.write_text(f"p2pdma-rig image build {key}\n")
    progress.note(f"building guest image {key} with mmdebstrap ({spec.suite}, log: {log})")
    started = time.time()
    with entry.building() as tmp:
        root = tmp / "root"
        hooks = [
            f'copy-in {RECIPE_DIR / "rig-init"} /sbin',
            f'copy-in {RECIPE_DIR / "sshd_config"} /etc/ssh/sshd_config.d',
            'mv "$1/etc/ssh/sshd_config.d/sshd_config" "$1/etc/ssh/sshd_config.d/rig.conf"',
            'chmod 755 "$1/sbin/rig-init"',
            'echo p2pdma-rig-guest > "$1/etc/hostname"',
            'mkdir -p "$1/root/rig" "$1/sys/kernel/debug"',
        ]
        cmd = ["mmdebstrap", "--variant=minbase", "--include=" + ",".join(spec.packages)]
        cmd += [a for h in hooks for a in ("--customize-hook", h)]
        cmd += [spec.suite, str(root)]
        progress.update("mmdebstrap (about a minute)")
        _run(cmd, log, "mmdebstrap")
        progress.update("mke2fs")
        _run(["mke2fs", "-q", "-t", "ext4", "-L", "rigroot", "-d", str(root), str(tmp / "root.img"),
              f"{spec.size_mb}M"], log, "mke2fs")
        shutil.rmtree(root)
        recipe = {
            "key": key, "suite": spec.suite, "packages": list(spec.packages), "size_mb": spec.size_mb,
            "mmdebstrap": _tool_version(["mmdebstrap", "--version"]),
            "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "build_seconds": round(time.time() - started, 1),
        }
        (tmp / "recipe.json").write_text(json.dumps(recipe, indent=2) + "\n")
    progress.done(f"guest image {key} built")


def ensure_ssh_key(cache_root: Path) -> SshKey:
    """One ed25519 key pair per cache, generated with `cryptography` (a paramiko dependency): no ssh-keygen."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    d = cache_root / "ssh"
    priv, pub = d / "id_ed25519", d / "id_ed25519.pub"
    if not (priv.exists() and pub.exists()):
        d.mkdir(parents=True, exist_ok=True)
        # several rigs may start at once on a new cache: one generates, the others wait and read its pair
        with open(d / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not (priv.exists() and pub.exists()):
                key = Ed25519PrivateKey.generate()
                tmp_priv, tmp_pub = d / f".id.tmp-{os.getpid()}", d / f".id.pub.tmp-{os.getpid()}"
                tmp_priv.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                       serialization.PrivateFormat.OpenSSH,
                                                       serialization.NoEncryption()))
                tmp_priv.chmod(0o600)
                tmp_pub.write_bytes(key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                                                  serialization.PublicFormat.OpenSSH)
                                    + b" p2pdma-rig\n")
                tmp_priv.rename(priv)  # the private key first: a pair is complete once the public one exists
                tmp_pub.rename(pub)
    blob = pub.read_text().split()[1]
    return SshKey(private=priv, public_b64=blob)
