"""Pure parts of the inner loop: which VMs to boot ahead, how the probes are linked, the QEMU firmware."""
from pathlib import Path

from rig.config import MachineConfig
from rig.expectations import Expectation, load_expectations
from rig.probes import host_suite, link_flags
from rig.qemu import build_command
from rig.runner import run_order, upcoming_boots


def _exp(cid, topology="default", host_action="", skip=""):
    return Expectation(cid, "1.1", {}, topology=topology, host_action=host_action, skip=skip)


def test_the_vms_to_boot_ahead_are_the_topology_changes_still_to_come():
    exps = {c.case_id: c for c in [_exp("a.1"), _exp("a.2"), _exp("b.1", "switch"), _exp("c.1", "rootbus-amd"),
                                   _exp("d.1", "hotplug", host_action="device_del nvme0"),
                                   _exp("d.2", "hotplug", host_action="device_del nvme0"), _exp("e.1")]}
    ids = list(exps)
    assert upcoming_boots(ids, 0, exps) == ["switch", "rootbus-amd", "hotplug", "hotplug", "default"]
    assert upcoming_boots(ids, 2, exps) == ["rootbus-amd", "hotplug", "hotplug", "default"]
    # a host action always ends its VM: the next case on the same topology needs a fresh one
    assert upcoming_boots(ids, 4, exps) == ["hotplug", "default"]
    assert upcoming_boots(ids, 6, exps) == []


def test_a_case_skipped_on_the_design_boots_nothing():
    exps = {c.case_id: c for c in [_exp("a.1"), _exp("b.1", "switch", skip="not on v3"), _exp("a.2")]}
    assert upcoming_boots(list(exps), 0, exps) == []


def test_the_real_table_boots_each_topology_once_in_table_order():
    exps = load_expectations()
    ids = [c for c in run_order(list(exps), exps, None) if not exps[c].manual]
    ahead = upcoming_boots(ids, 0, exps)
    assert ahead[0] == "switch" and "default" not in ahead and len(ahead) == len(set(ahead))


def test_probes_link_dynamically_only_for_a_guest_of_the_hosts_release():
    suite = host_suite()
    assert suite  # Debian 12 says bookworm
    assert link_flags(suite) == ()
    assert link_flags("trixie" if suite != "trixie" else "bookworm") == ("-static",)
    assert link_flags("") == ("-static",)


def test_qboot_is_the_default_firmware_and_seabios_stays_available():
    def argv(machine):
        return build_command(machine, accel=("tcg", "test"), bzimage=Path("bz"), root_overlay=Path("r.qcow2"),
                             nvme=[], ssh_port=2222, qmp_socket=Path("q.sock"), cmdline="x").argv

    assert "qboot.rom" in argv(MachineConfig())
    assert "-bios" not in argv(MachineConfig(firmware="seabios"))


def test_the_server_bootstrap_unpacks_the_bundle_from_stdin_then_serves_the_cases_that_follow(tmp_path):
    """SERVE_BOOTSTRAP as the guest runs it (python3 -S -c), on the host's Python: the length line, the tar and
    the first request arrive in one write, so the interpreter must not lose the request it read ahead."""
    import io
    import subprocess
    import sys
    import tarfile

    from rig.probes import SERVE_BOOTSTRAP, SERVING

    server = ("import sys\nfrom helper import WORD\nassert sys.argv[1:] == ['--serve']\n"
              "for line in sys.stdin:\n    print(WORD, line.strip(), flush=True)\n")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, text in (("run_case.py", server), ("helper.py", "WORD = 'served'\n")):
            info = tarfile.TarInfo(name)
            info.size = len(text.encode())
            tar.addfile(info, io.BytesIO(text.encode()))
    data = buf.getvalue()
    dest = tmp_path / "rig"
    dest.mkdir()
    r = subprocess.run([sys.executable, "-S", "-u", "-c", SERVE_BOOTSTRAP, str(dest)],
                       input=f"{len(data)}\n".encode() + data + b"60 sysfs.published\n60 mmap.shared_1m\n",
                       capture_output=True, timeout=30)
    assert r.returncode == 0, r.stderr.decode()
    assert r.stdout.decode().splitlines() == [SERVING, "served 60 sysfs.published", "served 60 mmap.shared_1m"]
    assert (dest / "helper.py").exists()


def test_the_test_module_travels_with_the_probes_and_is_part_of_their_key(tmp_path):
    import dataclasses

    from rig.kernel import KernelBuild, KernelManifest
    from rig.probes import compile_probes, probes_key

    root = tmp_path / "guest-tests"
    root.mkdir()
    (root / "one.c").write_text("int main(void) { return 0; }\n")
    ko = tmp_path / "p2pdma_kapi.ko"
    ko.write_bytes(b"\x7fELF module")
    k = KernelBuild("k", tmp_path, tmp_path / "bz", tmp_path / "vmlinux", tmp_path / "include", tmp_path / "config",
                    KernelManifest(key="k"))
    with_module = dataclasses.replace(k, test_module=ko)
    compile_probes(with_module, tmp_path / "bin", root=root, link=())
    assert sorted(p.name for p in (tmp_path / "bin").iterdir()) == ["one", "p2pdma_kapi.ko"]
    assert probes_key(k, (), root) != probes_key(with_module, (), root)
