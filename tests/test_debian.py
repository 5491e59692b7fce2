"""debian:<version> (rig/debian.py): version parsing and ordering, suite lookup on a real `apt-cache madison`
answer recorded from Debian's archive (2026-11-25), and the bad inputs (no tarball, truncated .deb, an
unreachable mirror) leaving nothing in the cache."""
import subprocess

import pytest

from rig import debian
from rig.debian import Candidate, choose, compare_versions, matches, package_for, parse_madison
from rig.errors import BuildError
from rig.kernel import bzimage_release

from conftest import DATA

MADISON = (DATA / "debian" / "madison-2026-11-25.txt").read_text()


def test_compare_versions_like_dpkg():
    pairs = [("7.3.4-1~bpo13+1", "7.3~rc7-1~exp1"), ("7.3.4-1", "7.3.4-1~bpo13+1"), ("6.12.117-1", "6.12.95-1~bpo12+1"),
             ("7.2.13-1", "7.2.12-1~bpo13+1"), ("1:1.0", "9.9"), ("6.12.117-1~deb12u1", "6.12.95-1~bpo12+1")]
    for newer, older in pairs:
        assert compare_versions(newer, older) == 1, (newer, older)
        assert compare_versions(older, newer) == -1
        # and dpkg agrees
        assert subprocess.run(["dpkg", "--compare-versions", newer, "gt", older]).returncode == 0
    assert compare_versions("7.3.4-1", "7.3.4-1") == 0


def test_parse_recorded_madison():
    cands = parse_madison(MADISON)
    assert Candidate("linux-source-7.3", "7.3.4-1~bpo13+1", "trixie-backports") in cands
    assert Candidate("linux-source-7.3", "7.3~rc7-1~exp1", "experimental") in cands
    assert Candidate("linux-source-7.2", "7.2.13-1", "sid") in cands
    assert {c.suite for c in cands} <= set(debian.SUITES)
    assert len(cands) == 12


@pytest.mark.parametrize("spec,version,suite", [
    ("7.3", "7.3.4-1~bpo13+1", "trixie-backports"),  # the newest of the series, not the rc
    ("7.3.4", "7.3.4-1~bpo13+1", "trixie-backports"),
    ("7.3~rc7", "7.3~rc7-1~exp1", "experimental"),
    ("7.3~rc7-1~exp1", "7.3~rc7-1~exp1", "experimental"),
    ("7.2", "7.2.13-1", "sid"),
    ("7.2.11", "7.2.11-1~bpo13+1", "trixie-backports"),
    ("6.12", "6.12.117-1", "trixie"),
    ("6.12.95", "6.12.95-1~bpo12+1", "bookworm-backports"),
])
def test_choose(spec, version, suite):
    c = choose(spec, parse_madison(MADISON))
    assert (c.version, c.suite) == (version, suite)


@pytest.mark.parametrize("spec", ["7.4", "7.3.5", "7.3.40", "6.12.1", "7.3~rc1"])
def test_versions_debian_does_not_have(spec):
    assert choose(spec, parse_madison(MADISON)) is None


def test_upstream_version_is_not_a_prefix_match():
    assert not matches("7.3.4", Candidate("linux-source-7.3", "7.3.40-1", "sid"))
    assert matches("7.3.40", Candidate("linux-source-7.3", "7.3.40-1", "sid"))


def test_package_for():
    assert package_for("7.3") == "linux-source-7.3"
    assert package_for("7.3.4-1~bpo13+1") == "linux-source-7.3"
    assert package_for("6.12~rc7") == "linux-source-6.12"
    for bad in ("latest", "7", "v7.3", ""):
        with pytest.raises(BuildError):
            package_for(bad)


def test_available_listing_names_every_version():
    text = debian.format_available(parse_madison(MADISON))
    lines = text.splitlines()
    assert lines[0].split()[:3] == ["debian:7.3.4", "7.3.4-1~bpo13+1", "trixie-backports"]
    assert len(lines) == 12 and "7.3~rc7-1~exp1" in text


def test_sources_list_uses_the_archive_keyring():
    text = debian.sources_list()
    assert text.count("signed-by=/usr/share/keyrings/debian-archive-keyring.gpg") == len(debian.SUITES)
    assert " experimental main" in text and " trixie-backports main" in text


def test_bzimage_release_from_a_real_header():
    assert bzimage_release((DATA / "bzImage-6.12.117-head.bin").read_bytes()) == "6.12.117"
    assert bzimage_release(b"\0" * 0x400) == ""


# ---------------------------------------------------------------- bad input (no network)


def _deb(tmp_path, name, files: dict[str, bytes]):
    root = tmp_path / f"{name}-root"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN" / "control").write_text(f"Package: {name}\nVersion: 1.0\nArchitecture: all\n"
                                             "Maintainer: t <t@t>\nDescription: test\n")
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    deb = tmp_path / f"{name}.deb"
    subprocess.run(["dpkg-deb", "-Zxz", "--build", str(root), str(deb)], check=True, capture_output=True)
    return deb


def _xz(tmp_path, payload=b"kernel"):
    src = tmp_path / "payload"
    src.mkdir(exist_ok=True)
    (src / "Makefile").write_bytes(payload)
    out = tmp_path / "t.tar.xz"
    subprocess.run(["tar", "-cJf", str(out), "-C", str(tmp_path), "payload"], check=True)
    return out.read_bytes()


def test_extract_good_deb(tmp_path):
    deb = _deb(tmp_path, "linux-source-9.9", {"usr/src/linux-source-9.9.tar.xz": _xz(tmp_path)})
    dest = tmp_path / "out"
    dest.mkdir()
    tarball, head = debian.extract_tarball(deb, "linux-source-9.9", dest)
    assert tarball.name == "linux-source-9.9.tar.xz" and tarball.is_file()


def test_deb_without_source_tarball(tmp_path):
    deb = _deb(tmp_path, "linux-source-9.9", {"usr/share/doc/linux-source-9.9/README": b"hi"})
    with pytest.raises(BuildError, match="no kernel source tarball"):
        debian.extract_tarball(deb, "linux-source-9.9", tmp_path)


def test_truncated_deb(tmp_path):
    deb = _deb(tmp_path, "linux-source-9.9", {"usr/src/linux-source-9.9.tar.xz": _xz(tmp_path, b"x" * 200000)})
    data = deb.read_bytes()
    deb.write_bytes(data[: len(data) // 2])
    with pytest.raises(BuildError, match="truncated|damaged|corrupt"):
        debian.extract_tarball(deb, "linux-source-9.9", tmp_path)


def test_damaged_tarball_inside_a_good_deb(tmp_path):
    xz = _xz(tmp_path, bytes(range(256)) * 4000)
    deb = _deb(tmp_path, "linux-source-9.9", {"usr/src/linux-source-9.9.tar.xz": xz[: len(xz) // 2]})
    dest = tmp_path / "out"
    dest.mkdir()
    with pytest.raises(BuildError, match="damaged"):
        debian.extract_tarball(deb, "linux-source-9.9", dest)


def test_unreachable_mirror_is_a_clean_error(tmp_path):
    archive = debian.Archive(tmp_path, mirror="http://127.0.0.1:9/debian", note=lambda m: None)
    with pytest.raises(BuildError, match="cannot read Debian's package lists"):
        archive.update()
    assert not (tmp_path / "debian").exists()  # no source entry, half-made or not
    assert not (tmp_path / "debian-apt" / "updated").exists()  # the next call tries again


def test_unknown_version_names_the_ones_debian_has(tmp_path, monkeypatch):
    monkeypatch.setattr(debian.Archive, "candidates", lambda self: parse_madison(MADISON))
    with pytest.raises(BuildError) as e:
        debian.fetch("7.4", tmp_path, note=lambda m: None)
    msg = str(e.value)
    assert "has no linux-source-7.4" in msg and "7.3.4-1~bpo13+1" in msg and "7.2.13-1" in msg
    assert not (tmp_path / "debian").exists()


def test_failed_download_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(debian.Archive, "candidates", lambda self: parse_madison(MADISON))

    def fail(self, cand, dest):
        (dest / "partial.deb").write_bytes(b"!<arch>\n")  # apt died half-way
        raise BuildError("downloading linux-source-7.3 failed: 404  Not Found")

    monkeypatch.setattr(debian.Archive, "download", fail)
    with pytest.raises(BuildError, match="404"):
        debian.fetch("7.3", tmp_path, note=lambda m: None)
    assert [p.name for p in (tmp_path / "debian").iterdir() if not p.name.startswith(".")] == []


def test_truncated_download_leaves_no_entry(tmp_path, monkeypatch):
    """fetch() end to end with the download replaced by a truncated .deb: exit-2 error, no cache entry."""
    monkeypatch.setattr(debian.Archive, "candidates", lambda self: parse_madison(MADISON))
    work = tmp_path / "work"
    work.mkdir()
    deb = _deb(work, "linux-source-7.3", {"usr/src/linux-source-7.3.tar.xz": _xz(work, bytes(range(256)) * 4000)})
    data = deb.read_bytes()

    def truncated(self, cand, dest):
        out = dest / "linux-source-7.3_7.3.4-1~bpo13+1_all.deb"
        out.write_bytes(data[: len(data) * 2 // 3])
        return out

    monkeypatch.setattr(debian.Archive, "download", truncated)
    cache = tmp_path / "cache"
    with pytest.raises(BuildError) as e:
        debian.fetch("7.3", cache, note=lambda m: None)
    assert e.value.exit_code == 2
    assert [p.name for p in (cache / "debian").iterdir() if not p.name.startswith(".")] == []


def test_unreachable_mirror_with_earlier_lists_uses_them(tmp_path, monkeypatch):
    archive = debian.Archive(tmp_path, mirror="http://127.0.0.1:9/debian", note=lambda m: notes.append(m))
    notes: list[str] = []
    (tmp_path / "debian-apt").mkdir()
    (tmp_path / "debian-apt" / "updated").touch()
    import os
    os.utime(tmp_path / "debian-apt" / "updated", (0, 0))  # stale: update() tries the mirror and fails
    monkeypatch.setattr(debian.Archive, "_apt", lambda self, tool, *a, **k: subprocess.CompletedProcess(
        [tool], 1 if a[-1] == "update" else 0, stdout=MADISON if "madison" in a else "linux-source-7.3\n",
        stderr="E: Failed to fetch"))
    cands = archive.candidates()
    assert Candidate("linux-source-7.3", "7.3.4-1~bpo13+1", "trixie-backports") in cands
    assert any("using the package lists of 1970-01-01" in n for n in notes)
