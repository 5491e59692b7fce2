import io
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"
sys.path.insert(0, str(ROOT))

RIG = [sys.executable, "-m", "rig.cli"]
# the fix the rig ships: flips leak.data_after_free from XFAIL to XPASS
ZEROING_FIX = ROOT / "patches" / "fixes" / "linux-6.12" / "0001-PCI-P2PDMA-Clear-p2pmem-before-mapping-it-to-userspa.patch"


def run_rig(*args, timeout: float = 900) -> subprocess.CompletedProcess:
    """The `rig` command as a user runs it, from the repository root, output captured."""
    return subprocess.run(RIG + [str(a) for a in args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)


@dataclass
class InProcessRun:
    """A run made by pipeline.run() in this process, as `rig run` makes it: the outcome, results.json read back,
    its progress lines and the summary `rig run` prints."""

    outcome: object
    data: dict
    log: str
    summary: str

    @property
    def exit_code(self) -> int:
        return self.outcome.exit_code


def run_pipeline(out, config=None, **flags) -> InProcessRun:
    """`rig run` without the subprocess: a RunRequest from `flags` (pipeline.Flags fields: source, patches,
    profile, select...), pipeline.run(), the run directory read back."""
    from rig import pipeline
    from rig.results import summary_table

    flags = {k: tuple(str(x) for x in v) if isinstance(v, (list, tuple)) else str(v) for k, v in flags.items()}
    log = io.StringIO()
    outcome = pipeline.run(pipeline.run_request(str(config) if config else None, pipeline.Flags(**flags), out),
                           stream=log)
    data = json.loads((Path(out) / "results.json").read_text())
    return InProcessRun(outcome, data, log.getvalue(), summary_table(outcome.results, outcome.boots))


# The probe cases of tests/vm/test_probes.py run in a shuffled order (grouped by machine, as `rig run --shuffle`
# does), so every `make test` is also an isolation check. The seed is printed in the header;
# P2PDMA_RIG_SHUFFLE=SEED repeats an order, P2PDMA_RIG_SHUFFLE=off keeps the table's order.


def _seed() -> int | None:
    raw = os.environ.get("P2PDMA_RIG_SHUFFLE", "")
    if raw == "off":
        return None
    return int(raw) if raw else int(time.strftime("%Y%m%d"))


def pytest_report_header(config):
    seed = _seed()
    return f"probe cases: {'table order' if seed is None else f'shuffled, seed {seed} (P2PDMA_RIG_SHUFFLE={seed} repeats it)'}"


def pytest_collection_modifyitems(config, items):
    seed = _seed()
    probes = [i for i in items if i.nodeid.startswith("tests/vm/test_probes.py::test_probe[")]
    if seed is None or not probes:
        return
    from rig.expectations import load_expectations
    from rig.runner import run_order

    by_id = {i.callspec.params["case_id"]: i for i in probes}
    order = run_order(list(by_id), load_expectations(), seed)
    first = items.index(probes[0])
    rest = [i for i in items if i not in by_id.values()]
    items[:] = rest[:first] + [by_id[c] for c in order] + rest[first:]
