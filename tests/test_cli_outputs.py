"""What `rig run` leaves besides the results, host-only: the reproduce line and the `latest` links."""
import os
import shlex

from rig.cli import _flags, parser
from rig.config import load_config
from rig.kernel import kernel_spec
from rig.pipeline import link_latest as _link_latest, load_run_config, run_request

from conftest import ROOT

FIX = ROOT / "patches" / "fixes" / "linux-6.12" / "0001-PCI-P2PDMA-Clear-p2pmem-before-mapping-it-to-userspa.patch"


def reproduce(*argv: str, command: str = "run") -> str:
    args = parser().parse_args(["run", *argv])
    request = run_request(args.config, _flags(args), args.out, args.shuffle, args.keep_disks, args.kcidb)
    return shlex.join(request.reproduce(kernel_spec(request.config), command))


def test_the_reproduce_line_repeats_every_option_that_changed_the_run(tmp_path):
    cfg_file = tmp_path / "rig.yaml"
    cfg_file.write_text("machine:\n  memory_mb: 2048\n")
    argv = ["--config", str(cfg_file), "--profile", "gupfast", "--kconfig-add", "CONFIG_DEBUG_VM=y",
            "--patch", str(FIX.relative_to(ROOT)), "--accel", "tcg", "--cpu", "EPYC", "--semantics", "v3",
            "-k", "mmap.*", "-k", "leak", "--shuffle", "7", "--out", str(tmp_path / "o"), "--keep-disks",
            "--kcidb", str(tmp_path / "k.json")]
    cwd = os.getcwd()
    os.chdir(ROOT)  # the patch is given relative to the current directory
    try:
        line = reproduce(*argv)
    finally:
        os.chdir(cwd)
    assert line == shlex.join([
        "rig", "run", "--config", str(cfg_file), "--source", "debian:6.12", "--profile", "gupfast",
        "--kconfig-add", "CONFIG_DEBUG_VM=y", "--patch", str(FIX), "--accel", "tcg", "--cpu", "EPYC",
        "--semantics", "v3", "-k", "mmap.*", "-k", "leak", "--shuffle", "7"])
    # a fixed point: the line run again reproduces itself (output options are not part of it)
    assert reproduce(*shlex.split(line)[2:]) == line


def test_the_reproduce_line_of_a_default_run_and_settings_from_the_config(tmp_path):
    assert reproduce("-k", "sysfs.published") == "rig run --source debian:6.12 --profile default -k sysfs.published"
    cfg_file = tmp_path / "rig.yaml"
    cfg_file.write_text("machine:\n  cpu: Nehalem\nprobes:\n  semantics: v3\n  select: [unbind]\n")
    assert reproduce("--config", str(cfg_file)) == (
        f"rig run --config {cfg_file} --source debian:6.12 --profile default --cpu Nehalem --semantics v3 -k unbind")


def test_latest_links_stay_inside_the_output_directory(tmp_path):
    out = tmp_path / "out"
    cfg_file = tmp_path / "rig.yaml"
    cfg_file.write_text(f"out_dir: {out}\n")
    cfg = load_config(cfg_file)
    first, second = out / "20261125-033740-5750", out / "nightly" / "default"
    for d in (first, second):
        d.mkdir(parents=True)
    assert _link_latest(cfg, first, "latest") == out / "latest"
    assert os.readlink(out / "latest") == first.name and (out / "latest").resolve() == first
    assert _link_latest(cfg, second, "latest") == out / "latest"  # replaced, relative
    assert os.readlink(out / "latest") == "nightly/default"
    elsewhere = tmp_path / "x"
    elsewhere.mkdir()
    assert _link_latest(cfg, elsewhere, "latest") is None  # --out outside out_dir: no link, anywhere
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "rig.yaml", "x"]
    assert os.readlink(out / "latest") == "nightly/default"
    assert sorted(p.name for p in out.iterdir()) == ["20261125-033740-5750", "latest", "nightly"]


def test_rig_ssh_takes_config_and_dir():
    args = parser().parse_args(["ssh", "--config", "x.yaml", "--dir", "out/boot-1", "--", "uname", "-r"])
    assert (args.config, args.dir, args.cmd) == ("x.yaml", "out/boot-1", ["--", "uname", "-r"])


def test_rig_ssh_looks_for_the_boot_in_the_configured_output_directory(tmp_path, capsys):
    from rig.cli import main

    cfg_file = tmp_path / "rig.yaml"
    cfg_file.write_text(f"out_dir: {tmp_path / 'elsewhere'}\n")
    assert main(["ssh", "--config", str(cfg_file)]) == 2
    assert f"{tmp_path / 'elsewhere' / 'latest-boot' / 'ssh.json'} missing" in capsys.readouterr().err


def test_one_reproduce_line_for_run_series_and_race(tmp_path):
    """The kernel and the machine are in every command's reproduce line (a race on 7.3 with a patch rebuilds
    that kernel); only run and series judge a selection and a design."""
    args = parser().parse_args(["run", "--source", "debian:6.12", "--profile", "gupfast", "--cpu", "EPYC",
                                "--patch", str(FIX), "-k", "mmap.*", "--out", str(tmp_path / "o")])
    request = run_request(args.config, _flags(args), args.out)
    spec = kernel_spec(request.config)
    kernel = ["--source", "debian:6.12", "--profile", "gupfast", "--patch", str(FIX), "--cpu", "EPYC"]
    assert request.reproduce(spec, "series", ["s.mbox"]) == ["rig", "series", *kernel, "-k", "mmap.*", "s.mbox"]
    assert request.reproduce(spec, "race", ["--seed", "7"]) == ["rig", "race", *kernel, "--seed", "7"]
    cfg = load_run_config(None, _flags(args))
    assert cfg.kernel.profile == "gupfast" and cfg.machine.cpu == "EPYC"
