"""The rig as a user runs it: `rig` commands in subprocesses, on the real kernel and QEMU.
Bad input must give a short error naming the cause, exit 2, and leave the caches intact; QEMU never outlives
the rig."""
import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from rig.config import load_config

from conftest import RIG, ROOT
from conftest import run_rig as rig

pytestmark = pytest.mark.vm

def qemu_pids_for(path):
    """QEMUs started for a run or boot directory: found by the disks their command lines (boot-N/qemu-cmdline.txt)
    name, since the disks live in a temporary directory, not in the run directory."""
    disks = {m for f in Path(path).rglob("qemu-cmdline.txt") for m in re.findall(r"file=(\S+/root\.qcow2)", f.read_text())}
    pids = []
    for disk in disks:
        out = subprocess.run(["pgrep", "-f", f"qemu-system.*{re.escape(disk)}"], capture_output=True, text=True).stdout
        pids += [int(p) for p in out.split()]
    return pids


MAX_RUN_DIR = 20 * 1024 * 1024  # a run directory must stay small enough to upload as a CI artifact


def apparent_size(path) -> int:
    """What `du --apparent-size` counts (sparse NVMe backing files count at their full size)."""
    out = subprocess.run(["du", "-s", "--apparent-size", "--block-size=1", str(path)], capture_output=True, text=True,
                         check=True).stdout
    return int(out.split()[0])


def disk_files(path) -> list[str]:
    return sorted(str(p) for pat in ("*.qcow2", "*.img", "*.tgz", "probe-bin") for p in Path(path).rglob(pat))


def cache_entries():
    root = load_config().cache_path
    return sorted(p.name for kind in ("kernels", "images") for p in (root / kind).iterdir() if p.is_dir())


def test_kernel_print_path_is_cached():
    first = rig("kernel", "--print-path")  # builds on a cold cache
    assert first.returncode == 0, first.stderr
    path = first.stdout.strip().splitlines()[-1]
    assert path.endswith("/bzImage") and os.path.getsize(path) > 1_000_000
    second = rig("kernel", "--print-path")
    assert second.returncode == 0 and second.stdout.strip() == path
    assert "building" not in second.stderr  # second build of the same key: nothing to do


def test_run_selected_cases_writes_the_run_directory(tmp_path):
    out = tmp_path / "run"
    kcidb = tmp_path / "kcidb.json"
    # the default machine's sysfs cases (sysfs.small_cmb_ignored and no_cmb_no_p2pmem need topology features)
    r = rig("run", "-k", "sysfs.[afp]*", "-k", "sysfs.size_available", "-k", "odirect.virtio_blk_read", "--out",
            str(out), "--kcidb", str(kcidb))
    assert r.returncode == 0, r.stdout + r.stderr
    data = json.loads((out / "results.json").read_text())
    ids = [c["id"] for c in data["cases"]]
    assert len(ids) == 7 + 1 and "odirect.virtio_blk_read" in ids and "kernel.console.boot-1" in ids
    assert all(c["verdict"] == "pass" for c in data["cases"])
    for name in ("console.log", "dmesg.txt", "qemu-cmdline.txt", "junit.xml", "ktap.txt", "manifest.json",
                 "report.html"):
        assert (out / name).stat().st_size > 0, name
    assert "cmb_size_mb=64" in (out / "qemu-cmdline.txt").read_text()
    assert "total" in r.stdout and "pass" in r.stdout  # the summary table
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["kernel"]["config_sha256"] and manifest["accel"] in ("tcg", "kvm")
    assert manifest["image"]["key"] and manifest["host"]["cpus"] and manifest["host"]["qemu"]
    assert manifest["rig_version"] and manifest["started"] <= manifest["ended"]
    [cmdline] = manifest["qemu_cmdlines"]  # one boot
    assert "cmb_size_mb=64" in cmdline
    assert manifest["reproduce"] == ("rig run --source debian:6.12 --profile default -k 'sysfs.[afp]*' "
                                     "-k sysfs.size_available -k odirect.virtio_blk_read")
    # uploadable: no disk, overlay, probe binary or bundle; its disks' temporary directory is gone
    assert disk_files(out) == [] and apparent_size(out) < MAX_RUN_DIR
    disks = re.search(r"file=(\S+)/boot-1/root\.qcow2", cmdline).group(1)
    assert not Path(disks).exists() and manifest["disks"] is None
    assert not (tmp_path / "latest").exists()  # --out outside out_dir: no link beside it
    # the KCIDB report, as KernelCI's own package validates it: a test per case and the boot's console
    import kcidb_io

    report = json.loads(kcidb.read_text())
    kcidb_io.schema.V5_3.validate_exactly(report)
    assert [t["path"] for t in report["tests"]] == [f"p2pdma_rig.{c}" for c in ids]
    assert "p2pdma_rig.kernel.console.boot-1" in [t["path"] for t in report["tests"]]


def test_keep_disks_keeps_them_outside_the_run_directory(tmp_path):
    out = tmp_path / "run"
    r = rig("run", "-k", "sysfs.published", "--out", str(out), "--keep-disks")
    assert r.returncode == 0, r.stdout + r.stderr
    disks = Path(json.loads((out / "manifest.json").read_text())["disks"])
    try:
        assert f"disks kept (--keep-disks): {disks}" in r.stdout
        names = sorted(str(p.relative_to(disks)) for p in disks.rglob("*") if p.is_file())
        # the probes are streamed to the guest (no bundle file) from their cache entry, not from the disks
        assert names == ["boot-1/nvme0.img", "boot-1/root.qcow2"]
        assert disk_files(out) == [] and apparent_size(out) < MAX_RUN_DIR
    finally:
        subprocess.run(["rm", "-rf", str(disks)])


def test_no_case_matches_is_exit_2():
    r = rig("run", "-k", "no-such-case-anywhere")
    assert r.returncode == 2 and "no case matches" in r.stderr


def test_missing_qemu_binary_is_exit_2(tmp_path):
    cfg = tmp_path / "rig.yaml"
    cfg.write_text("machine:\n  qemu_binary: /nonexistent/qemu-system-x86_64\n")
    before = cache_entries()
    r = rig("run", "--config", str(cfg), "-k", "sysfs.published", "--out", str(tmp_path / "o"))
    assert r.returncode == 2
    assert "QEMU binary '/nonexistent/qemu-system-x86_64' not found" in r.stderr
    assert cache_entries() == before


def test_ssh_that_never_comes_up_is_exit_2_with_console(tmp_path):
    cfg = tmp_path / "rig.yaml"
    # a shell as init: the guest lives, but never starts sshd nor prints the ready marker
    cfg.write_text("machine:\n  boot_timeout_s: 20\n  kernel_cmdline: init=/bin/sh\n")
    before = cache_entries()
    r = rig("run", "--config", str(cfg), "-k", "sysfs.published", "--out", str(tmp_path / "o"))
    assert r.returncode == 2, r.stderr
    assert "guest did not boot" in r.stderr and "Last console lines" in r.stderr
    assert "no ready marker within 20s" in r.stderr and "Run /bin/sh as init process" in r.stderr
    assert qemu_pids_for(tmp_path) == []
    assert cache_entries() == before


def test_dropped_kernel_option_is_exit_2_and_named():
    before = cache_entries()
    r = rig("kernel", "--kconfig-add", "CONFIG_DEBUG_VM_PGFLAGS=y", timeout=600)
    assert r.returncode == 2
    assert "CONFIG_DEBUG_VM_PGFLAGS: wanted y, got is not set; depends on DEBUG_VM [=n]" in r.stderr
    r = rig("kernel", "--kconfig-add", "CONFIG_P2PDMA_RIG_NO_SUCH_OPTION=y", timeout=600)
    assert r.returncode == 2
    # found in the extracted tree's Kconfig files, before make runs at all
    assert "do not exist in" in r.stderr and "CONFIG_P2PDMA_RIG_NO_SUCH_OPTION (in --kconfig-add" in r.stderr
    assert cache_entries() == before
    root = load_config().cache_path
    assert not list((root / "kernels").glob("*.tmp-*"))


@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
def test_qemu_never_outlives_the_rig(tmp_path, how):
    out = tmp_path / "boot"
    proc = subprocess.Popen(RIG + ["boot", "--out", str(out)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 180
        seen = ""
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            seen += line
            if "VM up" in line or not line:
                break
        assert "VM up" in seen, seen
        assert qemu_pids_for(out), "QEMU should be running while the rig is"
        disks = Path(re.search(r"file=(\S+)/root\.qcow2", (out / "qemu-cmdline.txt").read_text()).group(1))
        assert (disks / "root.qcow2").is_file() and disk_files(out) == []  # the disks, outside the boot directory
        if how == signal.SIGINT:  # while it is up: `rig ssh` reaches the guest booted by `rig boot`
            r = rig("ssh", "--dir", str(out), "--", "uname", "-r", timeout=60)
            assert r.returncode == 0 and r.stdout.startswith("6.12"), r.stdout + r.stderr
        proc.send_signal(how)
        proc.wait(timeout=60)
        for _ in range(50):
            if not qemu_pids_for(out):
                break
            time.sleep(0.2)
        assert qemu_pids_for(out) == []
        if how == signal.SIGKILL:  # nothing runs after SIGKILL: its disks stay in the temporary directory
            subprocess.run(["rm", "-rf", str(disks)])
        assert not disks.exists()
    finally:
        if proc.poll() is None:
            proc.kill()


def _results(out):
    data = json.loads((out / "results.json").read_text())
    return data, {c["id"]: c for c in data["cases"]}


def test_a_crashing_case_fails_alone_and_the_run_goes_on_in_a_fresh_vm(tmp_path):
    out = tmp_path / "run"
    r = rig("run", "-k", "selftest.kernel_panic", "-k", "selftest.warn_gup_longterm", "--out", str(out))
    assert r.returncode == 3, r.stdout + r.stderr  # the guest kernel crashed
    data, cases = _results(out)
    panic = cases["selftest.kernel_panic"]
    assert panic["verdict"] == "error" and panic["boot"] == 1
    assert [s["title"] for s in panic["splats"]] == ["kernel panic: sysrq triggered crash"]
    assert "Kernel panic" in (out / "boot-1" / "console.log").read_text()
    warn = cases["selftest.warn_gup_longterm"]
    assert warn["boot"] == 2  # a fresh VM after the crash
    # the WARN detector: a real WARN_ON_ONCE through gup_test, titled and attributed to its case
    assert warn["verdict"] == "fail" and [s["title"] for s in warn["splats"]] == ["WARNING in is_valid_gup_args"]
    assert "mm/gup.c" in warn["dmesg"]
    # its trace went through the tree's decode_stacktrace.sh against vmlinux, into results.json and junit.xml
    assert "<-- trapping instruction" in warn["splats"][0]["decoded"]
    assert "CONFIG_DEBUG_INFO off" in warn["splats"][0]["decoded_note"]
    assert "decoded trace of WARNING in is_valid_gup_args" in (out / "junit.xml").read_text()
    assert [b["boot"] for b in data["boots"]] == [1, 2]
    # both reports were judged in their cases: nothing left for the boots' own results
    assert cases["kernel.console.boot-1"]["verdict"] == "pass"
    assert cases["kernel.console.boot-2"]["verdict"] == "pass"


WARN_AT_BOOT = ROOT / "tests" / "data" / "mutations" / "warn-at-provider-probe.patch"


def test_a_warning_at_boot_fails_the_run(tmp_path):
    """A WARNING while the provider's probe sets up the pool, before any case: the cases pass, the run fails."""
    out = tmp_path / "run"
    r = rig("run", "--patch", WARN_AT_BOOT, "-k", "sysfs.published", "--out", str(out), timeout=1500)
    assert r.returncode == 1, r.stdout + r.stderr
    _data, cases = _results(out)
    assert cases["sysfs.published"]["verdict"] == "pass"
    console = cases["kernel.console.boot-1"]
    assert console["verdict"] == "fail"
    assert [s["title"] for s in console["splats"]] == ["WARNING in pci_p2pdma_add_resource"]
    assert console["splats"][0]["owner"] == "" and "<-- trapping instruction" in console["splats"][0]["decoded"]
    assert "outside every case" in console["reason"]
    assert "SPLAT (boot 1, outside every case): WARNING in pci_p2pdma_add_resource" in r.stdout
    assert "kernel.console.boot-1" in (out / "junit.xml").read_text()


def test_a_case_that_leaves_the_machine_changed_fails_and_the_next_gets_a_fresh_vm(tmp_path):
    from rig.expectations import load_expectations
    from rig.runner import run_order

    pair, exps = ["mmap.all_available", "selftest.leak_mapping"], load_expectations()
    seed = next(n for n in range(100) if run_order(pair, exps, n)[0] == "selftest.leak_mapping")  # leak first
    out = tmp_path / "run"
    r = rig("run", "-k", pair[1], "-k", pair[0], "--shuffle", seed, "--out", str(out))
    assert r.returncode == 1, r.stdout + r.stderr
    _data, cases = _results(out)
    leak = cases["selftest.leak_mapping"]
    assert leak["verdict"] == "fail" and "left the machine changed" in leak["reason"]
    assert "p2pmem/available" in leak["reason"]
    # the next case needs the whole pool: it runs in a fresh VM and passes
    assert cases["mmap.all_available"]["boot"] == 2 and cases["mmap.all_available"]["verdict"] == "pass"


def test_a_hanging_case_is_killed_by_its_watchdog(tmp_path):
    cfg = tmp_path / "rig.yaml"
    cfg.write_text("probes:\n  case_timeout_s: 5\n")
    out = tmp_path / "run"
    r = rig("run", "--config", str(cfg), "-k", "selftest.hang", "-k", "sysfs.published", "--out", str(out))
    assert r.returncode == 1, r.stdout + r.stderr
    _data, cases = _results(out)
    assert cases["selftest.hang"]["verdict"] == "error" and "watchdog" in cases["selftest.hang"]["reason"]
    assert cases["sysfs.published"]["verdict"] == "pass"
    assert cases["sysfs.published"]["boot"] == cases["selftest.hang"]["boot"]  # the guest itself was fine


def test_manual_cases_only_by_their_exact_id():
    r = rig("list")
    assert r.returncode == 0 and "selftest.kernel_panic" in r.stdout and "manual" in r.stdout
    r = rig("list", "-k", "unbind")
    assert r.returncode == 0 and "unbind.while_mapped" in r.stdout
    assert "peer.unbind_inflight_hung_task" not in r.stdout  # manual: a substring does not select it
    r = rig("list", "-k", "gup")
    assert "selftest.warn_gup_longterm" not in r.stdout and "gup.pin_fast_p2p" in r.stdout
