"""rig.yaml parsing: defaults, and errors that name the key and the file."""
import subprocess
import sys

import re

import pytest

from rig.config import load_config
from rig.errors import ConfigError

from conftest import ROOT


def write(tmp_path, text):
    p = tmp_path / "rig.yaml"
    p.write_text(text)
    return p


def test_repo_default_config_is_valid():
    cfg = load_config()
    assert cfg.kernel.source == "debian:6.12"
    assert cfg.machine.nvme[0].cmb_size_mb == 64
    assert cfg.kernel.profile in cfg.profiles


def test_empty_file_gives_defaults(tmp_path):
    cfg = load_config(write(tmp_path, ""))
    assert cfg.machine.accel == "auto" and cfg.machine.nvme[0].cmb_size_mb == 64


def test_unknown_key_names_key_and_file(tmp_path):
    p = write(tmp_path, "machine:\n  nvme:\n    - cmb_size: 64\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert "machine.nvme[0].cmb_size" in str(e.value) and str(p) in str(e.value)


def test_wrong_type_names_key(tmp_path):
    with pytest.raises(ConfigError, match=r"'machine.memory_mb' must be an integer"):
        load_config(write(tmp_path, "machine:\n  memory_mb: lots\n"))
    with pytest.raises(ConfigError, match=r"'machine.nvme' must be a list"):
        load_config(write(tmp_path, "machine:\n  nvme: 64\n"))


def test_no_cmb_at_all(tmp_path):
    with pytest.raises(ConfigError, match=r"'machine.nvme' needs at least one NVMe controller with a CMB"):
        load_config(write(tmp_path, "machine:\n  nvme:\n    - cmb_size_mb: 0\n"))


def test_topologies_builtin_and_user(tmp_path):
    cfg = load_config(write(tmp_path, "topologies:\n  mine:\n    cpu: EPYC\n    nvme:\n      - attach: root-port\n"))
    assert {"switch", "rootbus-intel", "rootbus-amd", "switch-slow", "mine"} <= set(cfg.topologies)
    m = cfg.machine_for("mine")
    assert m.cpu == "EPYC" and m.nvme[0].attach == "root-port" and m.memory_mb == cfg.machine.memory_mb
    assert cfg.machine_for("default") is cfg.machine
    with pytest.raises(ConfigError, match="attach' must be root, root-port, switch, function"):
        load_config(write(tmp_path, "topologies:\n  bad:\n    nvme:\n      - attach: bridge\n"))


@pytest.mark.parametrize("size", [3, 48, 100])
def test_impossible_cmb_size(tmp_path, size):
    with pytest.raises(ConfigError, match=r"cmb_size_mb' is %d: it must be a power of two" % size):
        load_config(write(tmp_path, f"machine:\n  nvme:\n    - cmb_size_mb: {size}\n"))


def test_a_cmb_linux_ignores_only_on_a_machine_of_its_own(tmp_path):
    """1 MiB is a CMB QEMU makes and Linux skips: not for the default machine, whose cases all map p2pmem."""
    with pytest.raises(ConfigError, match=r"'machine.nvme' needs at least one NVMe controller with a CMB of 2 MiB"):
        load_config(write(tmp_path, "machine:\n  nvme:\n    - cmb_size_mb: 1\n"))
    cfg = load_config(write(tmp_path, "topologies:\n  tiny:\n    nvme:\n      - cmb_size_mb: 1\n"))
    assert cfg.topologies["tiny"].nvme[0].cmb_size_mb == 1


@pytest.mark.parametrize("yaml_text, message", [
    ("machine:\n  iommu: amd\n", "'machine.iommu' must be intel or virtio"),
    ("topologies:\n  t:\n    kernel_cmdline: \"a\\nb\"\n", "'topologies.t.kernel_cmdline' has a line break"),
    ("machine:\n  nvme:\n    - {attach: function}\n", "no controller comes before it"),
    ("machine:\n  nvme:\n    - {metadata_bytes: 4}\n", "'machine.nvme[0].metadata_bytes' must be 0, 8, 16 or 64"),
    ("machine:\n  nvme:\n    - {protection: 1}\n", "'machine.nvme[0].protection' needs metadata_bytes of 8"),
    ("machine:\n  nvme:\n    - {subsystem: A_B}\n", "'machine.nvme[0].subsystem' must be a short name"),
    ("machine:\n  nvme:\n    - {subsystem: s}\n    - {subsystem: s, metadata_bytes: 8}\n",
     "the namespace of subsystem 's' is defined by its first controller"),
])
def test_machine_shapes_checked(tmp_path, yaml_text, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(write(tmp_path, yaml_text))


def test_malformed_yaml_gives_line(tmp_path):
    with pytest.raises(ConfigError, match=r"malformed YAML at line 3, column 1 \(while parsing a flow sequence at line 2\)"):
        load_config(write(tmp_path, "machine:\n  accel: [tcg\n"))


def test_unknown_profile(tmp_path):
    with pytest.raises(ConfigError, match="profile 'fast' is not defined"):
        load_config(write(tmp_path, "kernel:\n  profile: fast\n"))


def test_user_profiles_extend_builtin(tmp_path):
    cfg = load_config(write(tmp_path, "profiles:\n  mine: [tiny-base.config]\nkernel:\n  profile: mine\n"))
    assert "default" in cfg.profiles and cfg.profiles["mine"] == ("tiny-base.config",)


def test_overrides_from_command_line(tmp_path):
    cfg = load_config(write(tmp_path, ""), {"machine.accel": "tcg", "probes.select": ["mmap"]})
    assert cfg.machine.accel == "tcg" and cfg.probes.select == ("mmap",)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "nope.yaml")


@pytest.mark.parametrize("text,needle", [
    ("machine: [\n", "malformed YAML"),
    ("machine:\n  nvme:\n    - cmb_size_mb: 3\n", "power of two"),
    ("bogus: 1\n", "unknown key 'bogus'"),
])
def test_cli_bad_config_exits_2(tmp_path, text, needle):
    p = write(tmp_path, text)
    r = subprocess.run([sys.executable, "-m", "rig.cli", "run", "--config", str(p)], cwd=ROOT,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, r.stderr
    assert needle in r.stderr and len(r.stderr.splitlines()) <= 3


def test_matrix_file(tmp_path):
    from rig.matrix import load_matrix, worst_exit

    m = tmp_path / "m.yaml"
    m.write_text("profiles: [default, debug]\npatch_sets: [[], [p.patch]]\nselect: [mmap]\nparallel: 3\n")
    mx = load_matrix(m)
    assert [c.name for c in mx.cells] == ["debian-6.12-default-nopatch", "debian-6.12-default-patches1",
                                          "debian-6.12-debug-nopatch", "debian-6.12-debug-patches1"]
    assert mx.cells[1].patches == (str(tmp_path / "p.patch"),) and mx.parallel == 3 and mx.select == ("mmap",)
    m.write_text("profile: [default]\n")
    with pytest.raises(ConfigError, match="unknown key"):
        load_matrix(m)
    m.write_text('select: "mmap.*"\n')  # a string is not split into characters (which selects everything)
    with pytest.raises(ConfigError, match="'select' must be a list of case id patterns"):
        load_matrix(m)
    assert worst_exit([0, 1, 3]) == 3 and worst_exit([0, 0]) == 0 and worst_exit([1, 2]) == 2
    from rig.matrix import load_matrix as lm
    from conftest import ROOT

    assert len(lm(ROOT / "matrices" / "nightly.yaml").cells) == 4
