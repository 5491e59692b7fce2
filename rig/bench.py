"""`make bench`: measure the speed targets and write BENCHMARKS.md (never asserted inside tests).

Measured: cold kernel build (empty cache and ccache), second build of the same key, cold image build,
boot to SSH (three boots), and a warm `rig run` end to end. BENCH_COLD=0 skips the cold builds (minutes).
"""
from __future__ import annotations

import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rig.config import REPO_ROOT, load_config
from rig.image import build_image, ensure_ssh_key, image_spec
from rig.kernel import build_kernel, kernel_spec
from rig.progress import Progress
from rig.vm import start_vm


def _cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _timed(fn):
    t0 = time.monotonic()
    out = fn()
    return out, time.monotonic() - t0


def main() -> int:
    cold = os.environ.get("BENCH_COLD", "1") != "0"
    cfg = load_config()
    rows: list[tuple[str, str, str]] = []
    if cold:
        tmp = Path(tempfile.mkdtemp(prefix="p2pdma-rig-bench-"))
        try:
            import dataclasses

            cold_cfg = dataclasses.replace(cfg, cache_dir=str(tmp))
            _, t = _timed(lambda: build_kernel(kernel_spec(cold_cfg), Progress("bench kernel")))
            rows.append(("cold kernel build (empty cache and ccache, extraction included)", f"{t:.0f} s", "<= 480 s"))
            _, t = _timed(lambda: build_kernel(kernel_spec(cold_cfg), Progress("bench kernel")))
            rows.append(("second build of the same key", f"{t:.2f} s", "no compiler run"))
            _, t = _timed(lambda: build_image(image_spec(cold_cfg), Progress("bench image")))
            rows.append(("cold guest image build (mmdebstrap + mke2fs)", f"{t:.0f} s", ""))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    kernel = build_kernel(kernel_spec(cfg), Progress("kernel"))
    image = build_image(image_spec(cfg), Progress("image"))
    key = ensure_ssh_key(cfg.cache_path)
    boots = []
    accel = ""
    with tempfile.TemporaryDirectory(prefix="p2pdma-rig-bench-boot-") as d:
        for i in range(3):
            vm = start_vm(cfg.machine, kernel, image, key, Path(d) / f"b{i}")
            try:
                boots.append(vm.ready_s)
                accel = f"{vm.cmd.accel} ({vm.cmd.accel_reason})"
            finally:
                vm.stop()
    rows.append(("boot to SSH (QEMU start to first command), median of 3",
                 f"{statistics.median(boots):.1f} s (min {min(boots):.1f}, max {max(boots):.1f})", "<= 8 s"))
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="p2pdma-rig-bench-run-") as d:
        r = subprocess.run([sys.executable, "-m", "rig.cli", "run", "--out", d], cwd=REPO_ROOT,
                           capture_output=True, text=True)
    t = time.monotonic() - t0
    rows.append((f"warm `rig run`, all cases (kernel and image cached; exit {r.returncode})", f"{t:.1f} s",
                 "<= 90 s"))

    qemu = subprocess.run(["qemu-system-x86_64", "--version"], capture_output=True, text=True).stdout.splitlines()
    lines = [
        "# Benchmarks",
        "",
        "Written by `make bench` (rig/bench.py); figures, not assertions. Re-run after changing the build, boot or",
        "probe path.",
        "",
        f"- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        f"- machine: {_cpu_model()}, {os.cpu_count()} CPUs, "
        f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB, {platform.platform()}",
        f"- QEMU: {qemu[0] if qemu else '?'}; accelerator: {accel}",
        f"- kernel: {kernel.manifest['source']['id']} profile {kernel.manifest['profile']}",
        "",
        "| what | measured | target |",
        "|---|---|---|",
    ]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    (REPO_ROOT / "BENCHMARKS.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
