"""Bad input is named before any work: each case below runs the real `rig` command on an empty cache and must
exit 2 with a short message naming the cause and where it came from (the flag, or the file and key), without a
traceback and without building or extracting anything. (Kconfig symbols need the extracted source:
tests/vm/test_cli.py checks those.)"""
import os
import subprocess
import sys

import pytest

from conftest import DATA, ROOT

RUNS = DATA / "runs"
RUN_A, RUN_B = sorted(p for p in RUNS.iterdir() if p.is_dir())[:2]


def yaml_file(tmp_path, text):
    p = tmp_path / "rig.yaml"
    p.write_text(text)
    return str(p)


def bytes_file(tmp_path, data):
    p = tmp_path / "rig.yaml"
    p.write_bytes(data)
    return str(p)


def matrix_file(tmp_path, text):
    p = tmp_path / "m.yaml"
    p.write_text(text)
    return str(p)


# (id, argv builder given tmp_path, text the error must contain)
CASES = [
    ("unknown topology", lambda t: ["boot", "--topology", "nope"], "unknown topology 'nope' (--topology)"),
    ("missing qemu binary", lambda t: ["run", "-k", "sysfs.published", "--config",
                                       yaml_file(t, "machine:\n  qemu_binary: /nonexistent/qemu\n")],
     "QEMU binary '/nonexistent/qemu' not found"),
    ("unknown cpu flag", lambda t: ["run", "-k", "sysfs.published", "--cpu", "NoSuchCPU"],
     "CPU model 'NoSuchCPU' (--cpu) is not one QEMU"),
    ("unknown cpu in yaml", lambda t: ["run", "-k", "sysfs.published", "--config",
                                       yaml_file(t, "machine:\n  cpu: Skylake-Servr\n")],
     "'machine.cpu') is not one QEMU"),
    ("unknown topology cpu", lambda t: ["boot", "--topology", "odd", "--config",
                                        yaml_file(t, "topologies:\n  odd:\n    cpu: Foo\n")],
     "'topologies.odd.cpu') is not one QEMU"),
    ("misspelt suite", lambda t: ["run", "--config", yaml_file(t, "image:\n  suite: bookwrom\n")],
     "image suite 'bookwrom'"),
    ("misspelt suite, rig image", lambda t: ["image", "--config", yaml_file(t, "image:\n  suite: bookwrom\n")],
     "did you mean bookworm"),
    ("zero case timeout", lambda t: ["run", "--config", yaml_file(t, "probes:\n  case_timeout_s: 0\n")],
     "'probes.case_timeout_s' must be at least 1, got 0"),
    ("negative boot timeout", lambda t: ["run", "--config", yaml_file(t, "machine:\n  boot_timeout_s: -1\n")],
     "'machine.boot_timeout_s' must be at least 1, got -1"),
    ("negative latency", lambda t: ["run", "--config", yaml_file(
        t, "machine:\n  nvme:\n    - {cmb_size_mb: 64, latency_ns: -5}\n")], "latency_ns' must be at least 0, got -5"),
    ("negative jobs", lambda t: ["kernel", "--config", yaml_file(t, "kernel:\n  jobs: -4\n")],
     "'kernel.jobs' must be at least 0, got -4"),
    ("spaces in kconfig flag", lambda t: ["kernel", "--kconfig-add", "CONFIG_DEBUG_VM = y"],
     "--kconfig-add 'CONFIG_DEBUG_VM = y': no spaces"),
    ("half a disabled option", lambda t: ["kernel", "--kconfig-add", "# CONFIG_DEBUG_VM"],
     "--kconfig-add '# CONFIG_DEBUG_VM': a disabled option is written '# CONFIG_FOO is not set'"),
    ("kconfig flag without CONFIG_", lambda t: ["kernel", "--kconfig-add", "DEBUG_VM=y"],
     "--kconfig-add 'DEBUG_VM=y': options start with CONFIG_"),
    ("bad kconfig line in yaml", lambda t: ["kernel", "--config", yaml_file(
        t, "kernel:\n  kconfig_add: ['CONFIG_X = y']\n")], "'kernel.kconfig_add' entry 'CONFIG_X = y': no spaces"),
    ("two machine blocks", lambda t: ["run", "--config", yaml_file(t, "machine:\n  smp: 2\nmachine:\n  smp: 1\n")],
     "key 'machine' appears twice"),
    ("huge cmb", lambda t: ["run", "--config", yaml_file(t, "machine:\n  nvme:\n    - {cmb_size_mb: 1073741824}\n")],
     "at most 4096 (QEMU backs the CMB with host memory)"),
    ("cmb not a power of two", lambda t: ["run", "--config", yaml_file(t, "machine:\n  nvme:\n    - {cmb_size_mb: 48}\n")],
     "must be a power of two"),
    ("unwritable out", lambda t: ["run", "-k", "sysfs.published", "--out", "/proc/x"],
     "cannot write the output directory /proc/x (--out)"),
    ("unwritable diff html", lambda t: ["diff", str(RUN_A), str(RUN_B), "--html", "/nonexistent/d.html"],
     "/nonexistent/d.html"),
    ("matrix parallel word", lambda t: ["matrix", matrix_file(t, "parallel: two\n")],
     "'parallel' must be a whole number of cells at once (>= 1), got 'two'"),
    ("matrix select string", lambda t: ["matrix", matrix_file(t, 'select: "mmap.*"\n')],
     "'select' must be a list of case id patterns"),
    ("unknown profile flag", lambda t: ["run", "--profile", "fast"], "--profile fast: no such kernel profile"),
    ("unknown profile in yaml", lambda t: ["kernel", "--config", yaml_file(t, "kernel:\n  profile: fast\n")],
     "rig.yaml: kernel profile 'fast' is not defined"),
    ("not a patch", lambda t: ["kernel", "--patch", "/etc/passwd"], "is /etc/passwd a patch at all?"),
    ("missing patch", lambda t: ["kernel", "--patch", "/nonexistent.patch"], "--patch /nonexistent.patch: no such file"),
    ("git source", lambda t: ["kernel", "--source", "git:https://example.org/linux.git"],
     "unknown kind 'git'; use debian:VERSION, tarball:PATH or tree:PATH. For a git repository"),
    ("url source", lambda t: ["kernel", "--source", "https://example.org/linux.tar.xz"], "unknown kind 'https'"),
    ("missing tarball", lambda t: ["kernel", "--source", "tarball:/nonexistent.tar.xz"], "does not exist"),
    ("bad accel in yaml", lambda t: ["run", "--config", yaml_file(t, "machine:\n  accel: fast\n")],
     "'machine.accel' must be auto, kvm or tcg"),
    ("tiny memory", lambda t: ["run", "--config", yaml_file(t, "machine:\n  memory_mb: 128\n")],
     "'machine.memory_mb' must be at least 256"),
    ("no cpus", lambda t: ["run", "--config", yaml_file(t, "machine:\n  smp: 0\n")], "'machine.smp' must be at least 1"),
    ("too many cpus", lambda t: ["run", "--config", yaml_file(t, "machine:\n  smp: 1000\n")], "at most 64"),
    ("tiny namespace", lambda t: ["run", "--config", yaml_file(t, "machine:\n  nvme:\n    - {namespace_mb: 8}\n")],
     "namespace_mb' must be at least 16"),
    ("unknown attach", lambda t: ["run", "--config", yaml_file(t, "machine:\n  nvme:\n    - {attach: bus}\n")],
     "attach' must be root, root-port, switch, function"),
    ("unknown firmware", lambda t: ["run", "--config", yaml_file(t, "machine:\n  firmware: uefi\n")],
     "'machine.firmware' must be qboot or seabios"),
    ("negative boot_ahead", lambda t: ["run", "--config", yaml_file(t, "machine:\n  boot_ahead: -1\n")],
     "'machine.boot_ahead' must be at least 0"),
    ("unknown semantics", lambda t: ["run", "--config", yaml_file(t, "probes:\n  semantics: v4\n")],
     "'probes.semantics' must be auto, merged or v3"),
    ("misspelt key", lambda t: ["run", "--config", yaml_file(t, "machin:\n  smp: 2\n")], "unknown key 'machin'"),
    ("malformed yaml", lambda t: ["run", "--config", yaml_file(t, "machine: [\n")], "malformed YAML"),
    ("missing config", lambda t: ["run", "--config", "/nonexistent.yaml"], "cannot read config file"),
    ("no case matches", lambda t: ["run", "-k", "no-such-case-anywhere"], "no case matches"),
    ("unknown race scenario", lambda t: ["race", "--scenario", "no-such"], "unknown race scenario(s) no-such"),
    ("zero race seconds", lambda t: ["race", "--seconds", "0"], "--seconds 0: each scenario needs some time"),
    ("negative race cycles", lambda t: ["race", "--cycles", "-5"], "--cycles -5: a number of unbind/rebind cycles"),
    ("zero hang seconds", lambda t: ["race", "--hang-s", "0"], "--hang-s 0: how long without progress"),
    ("unwritable kcidb", lambda t: ["run", "-k", "sysfs.published", "--kcidb", "/nonexistent/dir/k.json"],
     "--kcidb /nonexistent/dir/k.json: cannot write there"),
    ("misspelt extra package", lambda t: ["run", "-k", "sysfs.published", "--config",
                                          yaml_file(t, "image:\n  extra_packages: [fio, nvmecli-tools]\n")],
     "no Debian bookworm package named nvmecli-tools"),
    ("command line too long", lambda t: ["run", "-k", "sysfs.published", "--config",
                                         yaml_file(t, f"machine:\n  kernel_cmdline: '{'x' * 2100}'\n")],
     "x86 takes 2047 and cuts the rest off silently"),
    ("command line with a newline", lambda t: ["run", "--config", yaml_file(t, 'machine:\n  kernel_cmdline: "a\\nb"\n')],
     "'machine.kernel_cmdline' has a line break"),
    ("out is a run already", lambda t: ["run", "-k", "sysfs.published", "--out", str(RUN_A)],
     "already holds a run (results.json)"),
    ("kcidb url base not a url", lambda t: ["kcidb", str(RUN_A), "-o", str(t / "k.json"), "--url-base", "not a url"],
     "--url-base 'not a url': not an http(s) URL"),
    ("config not utf-8", lambda t: ["run", "--config", bytes_file(t, b"machine:\n  cpu: caf\xe9\n")],
     "not UTF-8 text"),
    ("list nothing matches", lambda t: ["list", "-k", "no-such-case-anywhere"], "no case matches"),
    ("tiny image", lambda t: ["image", "--config", yaml_file(t, "image:\n  size_mb: 10\n")],
     "'image.size_mb' must be at least 512"),
]


@pytest.mark.parametrize("argv,needle", [pytest.param(a, n, id=i) for i, a, n in CASES])
def test_bad_input_is_exit_2_before_any_work(tmp_path, argv, needle):
    cache = tmp_path / "cache"
    env = dict(os.environ, P2PDMA_RIG_CACHE=str(cache))
    args = [str(a) for a in argv(tmp_path)]
    if args[0] in ("run", "boot", "race", "series") and "--out" not in args:
        args += ["--out", str(tmp_path / "out")]
    r = subprocess.run([sys.executable, "-m", "rig.cli", *args], cwd=ROOT, capture_output=True, text=True,
                       env=env, timeout=60)
    assert r.returncode == 2, f"exit {r.returncode}\n{r.stdout}\n{r.stderr}"
    assert needle in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) <= 4, r.stderr
    built = [p.name for kind in ("kernels", "images", "src", "build") for p in (cache / kind).glob("*")]
    assert built == [], f"work was done before the error: {built}"


def test_there_are_at_least_30_bad_inputs():
    assert len(CASES) >= 30


def test_kvm_where_it_cannot_run_is_refused(tmp_path):
    """--accel kvm on a host without usable KVM (here: /dev/kvm opens, the CPU has neither vmx nor svm)."""
    from rig.qemu import kvm_usable

    if kvm_usable()[0]:
        pytest.skip("KVM works on this host")
    env = dict(os.environ, P2PDMA_RIG_CACHE=str(tmp_path / "cache"))
    r = subprocess.run([sys.executable, "-m", "rig.cli", "run", "-k", "sysfs.published", "--accel", "kvm", "--out",
                        str(tmp_path / "out")], cwd=ROOT, capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 2 and "accel kvm (--accel), but" in r.stderr and "Fix: --accel tcg" in r.stderr, r.stderr
