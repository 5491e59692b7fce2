"""Fragment parsing and the olddefconfig check, on a real .config of the default profile."""
from rig.kernel import FRAGMENT_DIR, dropped_options, parse_fragment

from conftest import DATA

REAL_CONFIG = (DATA / "kernel-6.12.118-default.config").read_text()


def test_parse_fragment():
    w = parse_fragment("# c\nCONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C=\"x y\"\nCONFIG_D=30\n")
    assert w == {"CONFIG_A": "y", "CONFIG_B": None, "CONFIG_C": '"x y"', "CONFIG_D": "30"}


def test_default_profile_fragments_survive_in_the_real_config():
    wanted = {}
    for name in ("tiny-base.config", "p2pdma.config"):
        wanted.update(parse_fragment((FRAGMENT_DIR / name).read_text()))
    assert "CONFIG_PCI_P2PDMA" in wanted
    assert dropped_options(wanted, REAL_CONFIG) == []


def test_dropped_options_are_listed():
    wanted = {"CONFIG_PCI_P2PDMA": "y", "CONFIG_KASAN": "y", "CONFIG_SECRETMEM": None,
              "CONFIG_DEFAULT_HUNG_TASK_TIMEOUT": "30", "CONFIG_NO_SUCH_OPTION": "y"}
    dropped = dropped_options(wanted, REAL_CONFIG)
    assert ("CONFIG_KASAN", "y", "is not set") in dropped
    assert ("CONFIG_SECRETMEM", "is not set", "y") in dropped
    assert ("CONFIG_NO_SUCH_OPTION", "y", "is not set") in dropped
    assert ("CONFIG_DEFAULT_HUNG_TASK_TIMEOUT", "30", "120") in dropped
    assert all(sym != "CONFIG_PCI_P2PDMA" for sym, _, _ in dropped)


def test_every_profile_fragment_exists():
    from rig.config import DEFAULT_PROFILES

    for names in DEFAULT_PROFILES.values():
        for name in names:
            assert (FRAGMENT_DIR / name).is_file(), name


def test_dropped_option_is_explained_by_its_unmet_dependency():
    from rig.kernel import explain_dropped, kconfig_dependencies

    texts = [(DATA / "kconfig" / n).read_text() for n in ("lib-Kconfig.debug", "lib-Kconfig.kasan")]
    deps = kconfig_dependencies(texts)
    assert explain_dropped("CONFIG_DEBUG_VM_PGFLAGS", deps, REAL_CONFIG) == "depends on DEBUG_VM [=n]"
    # KASAN_INLINE sits inside `if KASAN`; the enclosing block counts as a dependency
    assert "KASAN [=n]" in explain_dropped("CONFIG_KASAN_INLINE", deps, REAL_CONFIG)
    assert "no such option" in explain_dropped("CONFIG_NO_SUCH_OPTION", deps, REAL_CONFIG)


def test_manifest_hashes_are_sha256sum_of_the_files(tmp_path):
    """A cache entry's manifest, as an older rig wrote it (truncated digests, the files of whoever built it
    first), is shown with this spec's files and each `sha256` equal to `sha256sum FILE`."""
    import json
    import shutil
    import subprocess

    from rig.config import load_config
    from rig.kernel import kernel_spec, load_build, with_spec_manifest

    from conftest import ROOT

    fix = ROOT / "patches" / "fixes" / "linux-6.12" / "0001-PCI-P2PDMA-Clear-p2pmem-before-mapping-it-to-userspa.patch"
    spec = kernel_spec(load_config(None, {"kernel.patches": [str(fix)], "kernel.profile": "gupfast"}))
    entry = tmp_path / "kernels" / "0123456789abcdef0123"
    entry.mkdir(parents=True)
    shutil.copy(DATA / "kernel-6.12.118-default.config", entry / "config")
    (entry / "manifest.json").write_text(json.dumps({
        "key": entry.name, "profile": "gupfast", "config_sha256": "006460469e243fb3b7d2",
        "fragments": [{"name": "tiny-base.config", "sha256": "7149d5fea605640bee22"}],
        "patches": [{"file": "/elsewhere/fix.patch", "subject": "x", "sha256": "0" * 64}],
        "reproduce": "rig kernel --profile gupfast"}))
    m = with_spec_manifest(load_build(entry), spec).manifest

    def sha256sum(path):
        return subprocess.run(["sha256sum", str(path)], capture_output=True, text=True).stdout.split()[0]

    assert m.config_sha256 == sha256sum(entry / "config")
    assert [f.name for f in m.fragments] == ["tiny-base.config", "p2pdma.config", "gupfast.config"]
    assert all(f.sha256 == sha256sum(f.file) for f in m.fragments)
    assert [(p.file, p.sha256) for p in m.patches] == [(str(fix), sha256sum(fix))]
    assert m.reproduce == f"rig kernel --source debian:6.12 --profile gupfast --patch {fix}"


def test_renamed_option_holds_on_both_kernels():
    """7.x folded PROC_SYSCTL into SYSCTL: the fragment's `rig-renamed` line excuses the old name on a tree
    whose Kconfig lacks it (real fs/proc/Kconfig of 6.12.117 and 7.3.4, real 7.3.4 .config of the fragments);
    a real typo is still reported with its cause."""
    from rig.kernel import (FRAGMENT_DIR, dropped_options, excuse_renamed, explain_dropped, kconfig_dependencies,
                            parse_fragment, parse_renames)

    wanted = {}
    renames = {}
    for name in ("tiny-base.config", "p2pdma.config", "gupfast.config"):
        text = (FRAGMENT_DIR / name).read_text()
        wanted.update(parse_fragment(text))
        renames.update(parse_renames(text))
    assert renames == {"CONFIG_PROC_SYSCTL": "CONFIG_SYSCTL"}
    final = (DATA / "kernel-7.3.4-gupfast.config").read_text()
    new = kconfig_dependencies([(DATA / "kconfig" / "fs-proc-Kconfig-7.3.4").read_text()])
    old = kconfig_dependencies([(DATA / "kconfig" / "fs-proc-Kconfig-6.12.117").read_text()])
    assert "PROC_SYSCTL" in old and "PROC_SYSCTL" not in new and "SYSCTL" in new
    dropped = dropped_options(wanted, final)
    assert dropped == [("CONFIG_PROC_SYSCTL", "y", "is not set")]
    assert "no such option" in explain_dropped("CONFIG_PROC_SYSCTL", new, final)
    still, excused = excuse_renamed(dropped, renames, new, wanted)
    assert still == [] and excused == ["CONFIG_PROC_SYSCTL -> CONFIG_SYSCTL"]
    # on 6.12 the old name exists: a drop there is not excused (it would be a real problem)
    still, excused = excuse_renamed(dropped, renames, {**old, "SYSCTL": []}, wanted)
    assert still == dropped and excused == []
    # a typo is not a rename
    typo = [("CONFIG_PROC_SYSCTLL", "y", "is not set")]
    assert excuse_renamed(typo, renames, new, wanted)[0] == typo


def test_the_p2pmem_design_is_read_from_the_kernels_system_map():
    """Excerpts of real System.map files (the p2pdma.c symbols): the seed series' kernel defines
    pci_mmap_p2pmem (T), a merged kernel does not; a __ksymtab_ entry alone (r) does not count."""
    from rig.kernel import p2pmem_semantics

    v3 = (DATA / "systemmap" / "6.12.117-seed-v3.excerpt").read_text()
    merged = (DATA / "systemmap" / "7.3.4.excerpt").read_text()
    assert p2pmem_semantics(v3) == "v3"
    assert p2pmem_semantics(merged) == "merged"
    only_ksymtab = "\n".join(line for line in v3.splitlines() if not line.endswith(" T pci_mmap_p2pmem"))
    assert "__ksymtab_pci_mmap_p2pmem" in only_ksymtab and p2pmem_semantics(only_ksymtab) == "merged"


def test_a_kernel_option_that_needs_a_host_tool_is_named_before_the_build(tmp_path, monkeypatch):
    import dataclasses

    from rig.config import load_config
    from rig.kernel import kernel_spec, missing_build_tools

    spec = kernel_spec(load_config())
    assert "CONFIG_KERNEL_LZ4" in parse_fragment((FRAGMENT_DIR / "tiny-base.config").read_text())
    monkeypatch.setenv("PATH", str(tmp_path))  # no lz4, no zstd
    assert missing_build_tools(spec) == ["lz4 (for CONFIG_KERNEL_LZ4=y)"]
    zstd = dataclasses.replace(spec, kconfig_add=("CONFIG_KERNEL_ZSTD=y",))
    assert missing_build_tools(zstd) == ["lz4 (for CONFIG_KERNEL_LZ4=y)", "zstd (for CONFIG_KERNEL_ZSTD=y)"]


def _cached_kernel(tmp_path, spec):
    import json
    import shutil

    from rig.kernel import load_build

    entry = tmp_path / "kernels" / "0123456789abcdef0123"
    entry.mkdir(parents=True)
    shutil.copy(DATA / "kernel-6.12.118-default.config", entry / "config")
    (entry / "manifest.json").write_text(json.dumps({"key": entry.name, "profile": "default"}))
    return load_build(entry)


def test_the_test_module_comes_from_its_cache_entry_keyed_by_kernel_and_module_source(tmp_path, monkeypatch):
    """An unchanged module for an unchanged kernel is not built again; a kernel or a module source that changes
    is another entry."""
    import dataclasses

    from rig import kernel as kmod
    from rig.config import load_config
    from rig.progress import Progress

    spec = dataclasses.replace(kmod.kernel_spec(load_config()), cache_root=tmp_path)
    build = _cached_kernel(tmp_path, spec)
    key = kmod.test_module_key(build.key)
    assert key != kmod.test_module_key("another kernel")
    built = []
    monkeypatch.setattr(kmod, "_build_test_module", lambda *a: built.append(a))
    ko = tmp_path / "kmods" / key / kmod.TEST_MODULE
    ko.parent.mkdir(parents=True)
    ko.write_bytes(b"\x7fELF")
    assert kmod.with_test_module(spec, build, Progress("t")).test_module == ko and not built

    src = tmp_path / "kmod"
    src.mkdir()
    (src / "p2pdma_kapi.c").write_text("/* changed */\n")
    monkeypatch.setattr(kmod, "TEST_MODULE_DIR", src)
    assert kmod.test_module_key(build.key) != key


def test_a_test_module_that_does_not_build_is_noted_and_left_out(tmp_path, monkeypatch):
    import dataclasses
    import io

    from rig import kernel as kmod
    from rig.config import load_config
    from rig.errors import BuildError
    from rig.progress import Progress

    spec = dataclasses.replace(kmod.kernel_spec(load_config()), cache_root=tmp_path)
    build = _cached_kernel(tmp_path, spec)

    def fails(*a):
        raise BuildError("kernel build failed: make M=... modules exited 2")

    monkeypatch.setattr(kmod, "_build_test_module", fails)
    out = io.StringIO()
    assert kmod.with_test_module(spec, build, Progress("kernel", out)).test_module is None
    assert "p2pdma_kapi.ko was not built (the kapi cases will skip): kernel build failed" in out.getvalue()
    assert not (tmp_path / "kmods" / kmod.test_module_key(build.key)).exists()
