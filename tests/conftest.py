import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"
sys.path.insert(0, str(ROOT))

RIG = [sys.executable, "-m", "rig.cli"]
# the fix the rig ships: flips leak.data_after_free from XFAIL to XPASS
ZEROING_FIX = ROOT / "patches" / "0001-PCI-P2PDMA-Clear-p2pmem-before-mapping-it-to-userspa.patch"


def run_rig(*args, timeout: float = 900) -> subprocess.CompletedProcess:
    """The `rig` command as a user runs it, from the repository root, output captured."""
    return subprocess.run(RIG + [str(a) for a in args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)
