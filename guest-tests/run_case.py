"""Guest-side runner of one case: kmsg markers around it, a watchdog, one JSON line out.

    python3 run_case.py [--timeout S] AREA.NAME

The rig uploads guest-tests/ (with the C probes compiled on the host into bin/) to /root/rig and runs this
over SSH once per case. The markers in the kernel log let the rig cut the case's exact dmesg slice and
attribute console splats to it.
"""
import json
import os
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def kmsg(text):
    try:
        with open("/dev/kmsg", "w") as f:
            f.write(f"p2pdma-rig: {text}\n")
    except OSError:
        pass


def command_for(case_id):
    area, _, name = case_id.partition(".")
    binary = os.path.join(HERE, "bin", area)
    if os.path.exists(binary):
        return [binary, name]
    script = os.path.join(HERE, area + ".py")
    if os.path.exists(script):
        return [sys.executable, script, name]
    return None


def main():
    args = sys.argv[1:]
    timeout = 60.0
    if len(args) == 3 and args[0] == "--timeout":
        timeout = float(args[1])
        args = args[2:]
    if len(args) != 1:
        print("usage: run_case.py [--timeout S] AREA.NAME", file=sys.stderr)
        return 2
    case_id = args[0]
    out = {"id": case_id, "result": None, "rc": None, "signal": None, "timed_out": False, "stderr": ""}
    cmd = command_for(case_id)
    if cmd is None:
        out["stderr"] = f"no probe provides {case_id}"
        print(json.dumps(out))
        return 0
    kmsg(f"begin {case_id}")
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=HERE,
                            start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        # the watchdog: kill the whole process group (probes fork children)
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        out["timed_out"] = True
    out["duration_s"] = round(time.monotonic() - t0, 3)
    kmsg(f"end {case_id}")
    out["rc"] = proc.returncode if proc.returncode >= 0 else None
    out["signal"] = -proc.returncode if proc.returncode < 0 else None
    out["stderr"] = stderr[-4000:]
    for line in reversed(stdout.splitlines()):
        if line.startswith("{"):
            try:
                out["result"] = json.loads(line)
            except ValueError:
                out["stderr"] += f"\nunparsable probe output: {line[:500]}"
            break
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
