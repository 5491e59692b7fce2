"""Keep what a real `rig run` observed, case by case, for tests/test_observations.py:
`python tests/data/observations/record.py out/<run>` writes <kernelrelease>-<profile>.json here,
<kernelrelease>-<profile>-v3.json for a kernel with the seed's v3 design (each case's observation and the kernel
log of its case and the titles of its kernel reports, nothing judged)."""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
from rig.results import read_run  # noqa: E402

run = read_run(Path(sys.argv[1]).parent if sys.argv[1].endswith(".json") else sys.argv[1])
kernel = run.manifest.kernel
# a case whose probe died on a kernel report (a known issue's Oops) has no observation but its reports
cases = {c.id: {"observed": c.observed, "dmesg": c.dmesg, "splats": [s.title for s in c.splats]} for c in run.cases
         if not c.id.startswith("kernel.console") and (c.observed is not None or c.splats)}
semantics = run.manifest.semantics or "merged"
suffix = "" if semantics == "merged" else f"-{semantics}"
out = Path(__file__).parent / f"{kernel.kernelrelease}-{kernel.profile}{suffix}.json"
out.write_text(json.dumps({"kernelrelease": kernel.kernelrelease, "profile": kernel.profile, "semantics": semantics,
                           "patches": list(kernel.patch_subjects), "source": kernel.source.id, "cases": cases},
                          indent=1, sort_keys=True) + "\n")
print(f"{out}: {len(cases)} cases")
