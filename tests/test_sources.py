"""Patches and work trees (rig/sources.py) on real patches against a real copy of drivers/pci/p2pdma.c."""
import shutil
import subprocess

import pytest

from rig.errors import BuildError, ConfigError
from rig.sources import KernelSource, WorkTree, read_patches, resolve_source

from conftest import DATA, ROOT

FIX = ROOT / "patches" / "fixes" / "linux-6.12" / "0001-PCI-P2PDMA-Clear-p2pmem-before-mapping-it-to-userspa.patch"
STALE = DATA / "patches" / "0001-PCI-P2PDMA-stale-context.patch"
P2PDMA_C = DATA / "p2pdma-6.12.117.c"


def test_single_patch_subject_and_hash():
    [p] = read_patches([FIX])
    assert p.subject == "[PATCH] PCI/P2PDMA: Clear p2pmem before mapping it to userspace"
    assert len(p.sha256) == 64 and p.is_mail


def test_mbox_and_series(tmp_path):
    mbox = tmp_path / "series.mbox"
    mbox.write_text(FIX.read_text() + "\n" + STALE.read_text())
    patches = read_patches([mbox])
    assert [p.index for p in patches] == [0, 1]
    assert "stale context" not in patches[0].subject and "older tree" in patches[1].subject
    (tmp_path / "a.patch").write_text(FIX.read_text())
    (tmp_path / "series").write_text("# quilt series\na.patch -p1\n\n")
    assert [p.sha256 for p in read_patches([tmp_path / "series"])] == [read_patches([FIX])[0].sha256]


def test_not_a_patch(tmp_path):
    (tmp_path / "empty").write_text("# nothing\n")
    with pytest.raises(ConfigError, match="neither a patch, an mbox nor a series file"):
        read_patches([tmp_path / "empty"])
    with pytest.raises(ConfigError, match="does not exist"):
        read_patches([tmp_path / "missing.patch"])


def _tree(tmp_path):
    tree = tmp_path / "linux"
    (tree / "drivers/pci").mkdir(parents=True)
    shutil.copy(P2PDMA_C, tree / "drivers/pci/p2pdma.c")
    src = KernelSource("tarball", "test-tree", tree, "x")
    return tree, WorkTree(src, tmp_path / "cache", tree)


def test_apply_then_revert_in_place(tmp_path):
    tree, wt = _tree(tmp_path)
    original = (tree / "drivers/pci/p2pdma.c").read_text()
    wt.checkout(read_patches([FIX]), note=lambda m: None)
    patched = (tree / "drivers/pci/p2pdma.c").read_text()
    assert "memset(kaddr, 0, len);" in patched and wt.state()["applied"]
    wt.checkout(read_patches([FIX]), note=lambda m: None)  # already applied: nothing to do
    assert (tree / "drivers/pci/p2pdma.c").read_text() == patched
    wt.checkout([], note=lambda m: None)
    assert (tree / "drivers/pci/p2pdma.c").read_text() == original and wt.state()["applied"] == []


def test_a_patch_that_does_not_apply_names_file_and_hunk_and_leaves_the_tree_pristine(tmp_path):
    tree, wt = _tree(tmp_path)
    original = (tree / "drivers/pci/p2pdma.c").read_text()
    with pytest.raises(BuildError) as e:
        wt.checkout(read_patches([FIX, STALE]), note=lambda m: None)
    msg = str(e.value)
    assert "0001-PCI-P2PDMA-stale-context.patch" in msg
    assert "drivers/pci/p2pdma.c: hunk #1 (at line 103) does not apply" in msg
    assert (tree / "drivers/pci/p2pdma.c").read_text() == original  # the fix applied before it is undone too
    assert not list(tree.rglob("*.rej")) and not list(tree.rglob("*.orig"))


def test_git_tree_source_identity(tmp_path):
    tree = tmp_path / "linux"
    tree.mkdir()
    (tree / "Makefile").write_text("# kernel\n")
    (tree / "Kconfig").write_text("# kconfig\n")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(tree)]
    subprocess.run(git + ["init", "-q"], check=True)
    subprocess.run(git + ["add", "-A"], check=True)
    subprocess.run(git + ["commit", "-qm", "base"], check=True)
    clean = resolve_source(f"tree:{tree}")
    assert clean.kind == "tree" and not clean.dirty and len(clean.git_sha) == 40
    (tree / "Makefile").write_text("# changed\n")
    dirty = resolve_source(str(tree))
    assert dirty.dirty and dirty.version.endswith("-dirty") and dirty.content_id
    with pytest.raises(ConfigError, match="is not a kernel tree"):
        resolve_source(f"tree:{tmp_path}")


def sha256sum(path) -> str:
    """What `sha256sum FILE` prints, from the real tool."""
    return subprocess.run(["sha256sum", str(path)], capture_output=True, text=True, check=True).stdout.split()[0]


def test_manifest_sha256_is_that_of_the_file_it_names(tmp_path):
    mbox = tmp_path / "series.mbox"
    mbox.write_text(FIX.read_text() + "\n" + STALE.read_text())
    entries = [p.manifest() for p in read_patches([mbox, FIX])]
    assert [(e.file, e.index) for e in entries] == [(str(mbox), 0), (str(mbox), 1), (str(FIX), 0)]
    for e in entries:
        assert e.sha256 == sha256sum(e.file)
    # each message of the mbox keeps its own identity
    assert entries[0].message_sha256 != entries[1].message_sha256
    assert entries[2].message_sha256 == entries[2].sha256
