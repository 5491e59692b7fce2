"""Keep what a real `rig run` observed, case by case, for tests/test_observations.py:
`python tests/data/observations/record.py out/<run>/results.json` writes <kernelrelease>-<profile>.json here,
<kernelrelease>-<profile>-v3.json for a kernel with the seed's v3 design (each case's observation and the kernel
log of its case, nothing judged)."""
import json
import sys
from pathlib import Path

run = json.loads(Path(sys.argv[1]).read_text())
kernel = run["manifest"]["kernel"]
cases = {c["id"]: {"observed": c["observed"], "dmesg": c["dmesg"]} for c in run["cases"]
         if not c["id"].startswith("kernel.console") and c["observed"] is not None}
semantics = run["manifest"].get("semantics") or "merged"
suffix = "" if semantics == "merged" else f"-{semantics}"
out = Path(__file__).parent / f"{kernel['kernelrelease']}-{kernel['profile']}{suffix}.json"
out.write_text(json.dumps({"kernelrelease": kernel["kernelrelease"], "profile": kernel["profile"],
                           "semantics": semantics, "patches": [p["subject"] for p in kernel.get("patches", [])],
                           "source": kernel["source"]["id"], "cases": cases}, indent=1, sort_keys=True) + "\n")
print(f"{out}: {len(cases)} cases")
