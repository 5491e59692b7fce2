"""`rig matrix`: cells as parallel VMs on one machine, without collision."""
import json
import re

import pytest

from conftest import ROOT, ZEROING_FIX, run_rig

pytestmark = pytest.mark.vm



def test_two_cells_run_at_once_without_collision(tmp_path):
    matrix = tmp_path / "m.yaml"
    matrix.write_text(f"kernels: ['debian:6.12']\nprofiles: [default]\npatch_sets: [[], ['{ZEROING_FIX}']]\n"
                      "select: ['sysfs.[afp]*', 'leak.data_after_free', 'mmap.shared_1m']\nparallel: 2\n")
    out = tmp_path / "matrix"
    r = run_rig("matrix", matrix, "--out", out, timeout=1800)
    assert r.returncode == 0, r.stdout + r.stderr
    data = json.loads((out / "matrix.json").read_text())
    assert data["parallel"] == 2 and len(data["cells"]) == 2
    a, b = data["cells"]
    # both VMs were up at the same time
    assert a["started"] < b["ended"] and b["started"] < a["ended"]
    ports = set()
    for cell in (a, b):
        run = ROOT / cell["run_dir"]
        cmdline = (run / "qemu-cmdline.txt").read_text()
        ports.update(re.findall(r"hostfwd=tcp:127.0.0.1:(\d+)-:22", cmdline))
        assert cell["summary"].get("fail", 0) == 0 and cell["summary"].get("error", 0) == 0
    assert len(ports) == 2  # each VM its own forwarded port
    verdicts = [{c["id"]: c["verdict"] for c in json.loads((ROOT / cell["run_dir"] / "results.json").read_text())["cases"]}
                for cell in (a, b)]
    assert verdicts[0]["leak.data_after_free"] == "xfail" and verdicts[1]["leak.data_after_free"] == "xpass"
    assert "nopatch" in r.stdout and "patches1" in r.stdout
