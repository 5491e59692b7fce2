"""`rig matrix`: every cell of a YAML matrix (kernel sources x profiles x patch sets) as its own `rig run`, in
parallel VMs, one run directory per cell plus matrix.json and a summary table.

Each cell is a separate `rig run` process: its own QEMU, forwarded port, overlay, QMP socket and run
directory, so cells cannot collide; kernel builds of one source are serialised by the cache's locks.
"""
from __future__ import annotations

import itertools
import json
import os
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

from rig.config import REPO_ROOT
from rig.errors import ConfigError
from rig.model import VERDICTS

MATRIX_KEYS = {"kernels", "profiles", "patch_sets", "select", "parallel"}


@dataclass(frozen=True)
class Cell:
    name: str
    source: str
    profile: str
    patches: tuple[str, ...]


@dataclass(frozen=True)
class Matrix:
    cells: tuple[Cell, ...]
    select: tuple[str, ...]
    parallel: int


def _slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", s).strip("-")[:40]


def load_matrix(path: Path) -> Matrix:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"cannot read matrix {path}: {e}")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the matrix must be a mapping (kernels, profiles, patch_sets, select, parallel)")
    unknown = set(data) - MATRIX_KEYS
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {', '.join(sorted(unknown))} (known: {', '.join(sorted(MATRIX_KEYS))})")
    kernels = data.get("kernels", ["debian:6.12"])
    profiles = data.get("profiles", ["default"])
    patch_sets = data.get("patch_sets", [[]])
    for key, value in (("kernels", kernels), ("profiles", profiles), ("patch_sets", patch_sets)):
        if not isinstance(value, list) or not value:
            raise ConfigError(f"{path}: '{key}' must be a non-empty list")
    if not all(isinstance(p, list) for p in patch_sets):
        raise ConfigError(f"{path}: each entry of 'patch_sets' is a list of patch files ([] = no patch)")
    cells = []
    for source, profile, (i, patches) in itertools.product(kernels, profiles, enumerate(patch_sets)):
        resolved = tuple(str((path.parent / p).resolve()) if not Path(p).is_absolute() else p for p in patches)
        tag = "nopatch" if not patches else f"patches{i}"
        cells.append(Cell(f"{_slug(str(source))}-{profile}-{tag}", str(source), str(profile), resolved))
    select = data.get("select", [])
    if not isinstance(select, list) or not all(isinstance(p, str) and p for p in select):
        raise ConfigError(f"{path}: 'select' must be a list of case id patterns, e.g. select: [\"mmap.*\"] "
                          f"(got {select!r}); a manual case is selected only by its exact id")
    parallel = data.get("parallel", max(1, (os.cpu_count() or 2) // 2))
    if isinstance(parallel, bool) or not isinstance(parallel, int) or parallel < 1:
        raise ConfigError(f"{path}: 'parallel' must be a whole number of cells at once (>= 1), got {parallel!r}")
    return Matrix(tuple(cells), tuple(select), max(1, parallel))


def _run_cell(cell: Cell, matrix: Matrix, out: Path, config: str | None) -> dict:
    cmd = [sys.executable, "-m", "rig.cli", "run", "--source", cell.source, "--profile", cell.profile,
           "--out", str(out / cell.name)]
    if config:
        cmd += ["--config", config]
    cmd += [a for p in cell.patches for a in ("--patch", p)]
    cmd += [a for p in matrix.select for a in ("-k", p)]
    started = time.time()
    with open(out / f"{cell.name}.log", "w") as log:
        rc = subprocess.run(cmd, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT).returncode
    results = out / cell.name / "results.json"
    summary = json.loads(results.read_text())["summary"] if results.exists() else {}
    return {**asdict(cell), "exit_code": rc, "summary": summary, "started": started, "ended": time.time(),
            "run_dir": str(out / cell.name), "log": str(out / f"{cell.name}.log")}


def worst_exit(codes: list[int]) -> int:
    for code in (3, 2, 1):
        if code in codes:
            return code
    return 0 if all(c == 0 for c in codes) else 2


def run_matrix(matrix: Matrix, out: Path, config: str | None, parallel: int | None = None) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    workers = parallel or matrix.parallel
    with ThreadPoolExecutor(max_workers=workers) as pool:
        cells = list(pool.map(lambda c: _run_cell(c, matrix, out, config), matrix.cells))
    data = {"parallel": workers, "cells": cells, "exit_code": worst_exit([c["exit_code"] for c in cells])}
    (out / "matrix.json").write_text(json.dumps(data, indent=2) + "\n")
    return data


def matrix_table(data: dict) -> str:
    lines = [f"{'cell':<44}{'exit':>5}" + "".join(f"{c:>7}" for c in VERDICTS)]
    for c in data["cells"]:
        lines.append(f"{c['name'][:43]:<44}{c['exit_code']:>5}" + "".join(f"{c['summary'].get(k, 0):>7}" for k in VERDICTS))
    return "\n".join(lines)
