"""Guest-side runner of cases: kmsg markers around each, a watchdog, one JSON line out per case.

    python3 run_case.py [--timeout S] AREA.NAME     one case
    python3 run_case.py --serve                     cases read from stdin, one "TIMEOUT AREA.NAME" per line

The rig uploads guest-tests/ (with the C probes compiled on the host into bin/) to /root/rig and keeps one
`--serve` process per boot over one SSH channel: each case still runs as its own process with its own
watchdog, state check and kmsg markers, but the interpreter and the SSH session start once per boot, not once
per case (under TCG, Python's start alone took about 0.3 s). The markers in the kernel log let the rig cut the
case's exact dmesg slice and attribute console splats to it.
"""
import errno
import glob
import json
import os
import select
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
# the machine as the boot's first case found it; every case must leave it so (tmpfs: gone with the boot)
BASELINE = "/run/p2pdma-rig-baseline.json"
# /dev/kmsg sequence number of the last message a case has seen: what comes after it and before the next case
# (boot, or between two cases) is reported with that next case, so the rig judges the kernel's complaints there
KMSG_SEEN = "/run/p2pdma-rig-kmsg-seq"
STATE_SETTLE_S = 1.5  # a child that exits after the probe returns can still hold a mapping for a moment (ms)


def _read(path):
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def machine_state():
    """What a case must not change: each NVMe function's driver and p2pmem files, and NVMe mounts."""
    state = {}
    for dev in sorted(glob.glob("/sys/bus/pci/devices/*")):
        if not (_read(dev + "/class") or "").startswith("0x0108"):
            continue
        driver = os.path.basename(os.readlink(dev + "/driver")) if os.path.islink(dev + "/driver") else None
        entry = {"driver": driver}
        for name in ("size", "available", "published"):
            entry["p2pmem/" + name] = _read(f"{dev}/p2pmem/{name}")
        state[os.path.basename(dev)] = entry
    with open("/proc/mounts") as f:
        state["nvme mounts"] = sorted(line.split()[1] for line in f if line.startswith("/dev/nvme"))
    return state


def state_changes(baseline, now):
    out = []
    for key in sorted(set(baseline) | set(now)):
        a, b = baseline.get(key), now.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += [f"{key} {k}: {a.get(k)!r} at the start, {b.get(k)!r} now"
                    for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
        elif a != b:
            out.append(f"{key}: {a!r} at the start, {b!r} now")
    return out


def kernel_messages(after_seq):
    """(last sequence number, the kernel's own messages at warning level or worse after `after_seq`) from
    /dev/kmsg, which, unlike the console, carries each message's level. Userspace lines (our markers) are left
    out by their facility."""
    fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
    last, found = after_seq, []
    try:
        while True:
            try:
                record = os.read(fd, 8192).decode("utf-8", "replace")
            except BlockingIOError:
                break
            except OSError as e:
                if e.errno == errno.EPIPE:  # overwritten while we read: go on with the next one
                    continue
                break
            head, _, text = record.partition(";")
            fields = head.split(",")
            prio, seq = int(fields[0]), int(fields[1])
            last = max(last, seq)
            if seq > after_seq and prio >> 3 == 0 and prio & 7 <= 4:
                # the message's first line: kmsg escapes a line break inside one message as \x0a
                found.append(text.split("\n", 1)[0].split("\\x0a", 1)[0])
    finally:
        os.close(fd)
    return last, found


def baseline_state():
    try:
        with open(BASELINE) as f:
            return json.load(f)
    except (OSError, ValueError):
        state = machine_state()
        with open(BASELINE, "w") as f:
            json.dump(state, f)
        return state


def kmsg(text):
    try:
        with open("/dev/kmsg", "w") as f:
            f.write(f"p2pdma-rig: {text}\n")
    except OSError:
        pass


def probe_for(case_id):
    """("binary", path, name) for a compiled probe, ("python", script, name) for a Python one, None if none."""
    area, _, name = case_id.partition(".")
    binary = os.path.join(HERE, "bin", area)
    if os.path.exists(binary):
        return "binary", binary, name
    script = os.path.join(HERE, area + ".py")
    if os.path.exists(script):
        return "python", script, name
    return None


def _fork_python(script, name):
    """A Python probe in a fork of this interpreter (its own session, stdio on pipes): the probe's script runs
    as __main__ there without a second interpreter start (about 0.25 s under TCG). Returns (pid, out, err)."""
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child never returns into the server
        code = 1
        try:
            import runpy  # here, not at the top: the server starts sooner without them (TCG)
            import traceback

            os.setsid()
            devnull = os.open(os.devnull, os.O_RDONLY)
            os.dup2(devnull, 0)  # the server's stdin is the rig's request channel, never the probe's
            os.dup2(out_w, 1)
            os.dup2(err_w, 2)
            for fd in (devnull, out_r, out_w, err_r, err_w):
                os.close(fd)
            sys.stdin = open(0, closefd=False)
            sys.stdout = open(1, "w", buffering=1, closefd=False)
            sys.stderr = open(2, "w", buffering=1, closefd=False)
            os.chdir(HERE)
            sys.argv = [script, name]
            sys.path.insert(0, os.path.dirname(script))
            try:
                runpy.run_path(script, run_name="__main__")
                code = 0
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
            except BaseException:  # noqa: BLE001 - reported on stderr like an uncaught exception
                traceback.print_exc()
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)
    os.close(out_w)
    os.close(err_w)
    return pid, out_r, err_r


def _run_process(probe, timeout):
    """(stdout, stderr, returncode, timed_out) of a probe (probe_for) in its own session; killed with its whole
    process group (probes fork children) after `timeout` seconds."""
    kind, path, name = probe
    if kind == "python":  # fork, no exec
        pid, out_fd, err_fd = _fork_python(path, name)
    else:
        proc = subprocess.Popen([path, name], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, cwd=HERE, start_new_session=True)
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
            return stdout, stderr, proc.returncode, False
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            stdout, stderr = proc.communicate()
            return stdout, stderr, proc.returncode, True
    chunks, chunks_done = {out_fd: [], err_fd: []}, {}
    deadline = time.monotonic() + timeout
    timed_out = False
    while chunks and not timed_out:
        ready, _, _ = select.select(list(chunks), [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            timed_out = True
            break
        for fd in ready:
            data = os.read(fd, 65536)
            if data:
                chunks[fd].append(data)
            else:
                os.close(fd)
                chunks_done[fd] = chunks.pop(fd)
    if timed_out:
        os.killpg(pid, signal.SIGKILL)
        for fd, parts in chunks.items():
            chunks_done[fd] = parts
            os.close(fd)
    _, status = os.waitpid(pid, 0)
    rc = os.waitstatus_to_exitcode(status)
    text = {fd: b"".join(parts).decode("utf-8", "replace") for fd, parts in chunks_done.items()}
    return text.get(out_fd, ""), text.get(err_fd, ""), rc, timed_out


def run_one(case_id, timeout):
    """Run one case in its own process group; the JSON object the rig reads."""
    out = {"id": case_id, "result": None, "rc": None, "signal": None, "timed_out": False, "stderr": ""}
    probe = probe_for(case_id)
    if probe is None:
        out["stderr"] = f"no probe provides {case_id}"
        return out
    baseline = baseline_state()
    seen = int(_read(KMSG_SEEN) or -1)
    seq, out["kernel_warnings_before"] = kernel_messages(seen)
    kmsg(f"begin {case_id}")
    t0 = time.monotonic()
    stdout, stderr, returncode, out["timed_out"] = _run_process(probe, timeout)  # with the watchdog
    out["duration_s"] = round(time.monotonic() - t0, 3)
    settle = time.monotonic() + STATE_SETTLE_S
    while True:
        changed = state_changes(baseline, machine_state())
        if not changed or time.monotonic() > settle:
            break
        time.sleep(0.1)
    out["state_changed"] = changed
    end_seq, out["kernel_warnings"] = kernel_messages(seq)
    out["kernel_warnings"] = out["kernel_warnings"][-50:]
    out["kernel_warnings_before"] = out["kernel_warnings_before"][-50:]
    with open(KMSG_SEEN, "w") as f:
        f.write(str(end_seq))
    kmsg(f"end {case_id}")
    out["rc"] = returncode if returncode >= 0 else None
    out["signal"] = -returncode if returncode < 0 else None
    out["stderr"] = stderr[-4000:]
    for line in reversed(stdout.splitlines()):
        if line.startswith("{"):
            try:
                out["result"] = json.loads(line)
            except ValueError:
                out["stderr"] += f"\nunparsable probe output: {line[:500]}"
            break
    return out


def serve():
    """One case per stdin line ("TIMEOUT AREA.NAME"), one JSON line back per case; ends at EOF."""
    for line in sys.stdin:
        parts = line.split()
        if len(parts) != 2:
            print(json.dumps({"id": None, "result": None, "stderr": f"bad request line {line.strip()!r}"}), flush=True)
            continue
        print(json.dumps(run_one(parts[1], float(parts[0]))), flush=True)
    return 0


def main():
    args = sys.argv[1:]
    if args == ["--serve"]:
        return serve()
    timeout = 60.0
    if len(args) == 3 and args[0] == "--timeout":
        timeout = float(args[1])
        args = args[2:]
    if len(args) != 1:
        print("usage: run_case.py [--timeout S] AREA.NAME | --serve", file=sys.stderr)
        return 2
    print(json.dumps(run_one(args[0], timeout)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
