"""`rig matrix`: every cell of a YAML matrix (kernel sources x profiles x patch sets) as its own run
(rig.pipeline.run), in parallel VMs, one run directory per cell plus matrix.json and a summary table.

Every cell's request is made, and so checked, before any cell starts. Cells run in threads of this process,
each with its own QEMUs, forwarded ports, overlays, QMP sockets, run directory and log; kernel builds of one
source are serialised by the cache's locks (flock: one per open file, so threads exclude each other too). The
threads are daemons: a Ctrl-C ends the process, and every QEMU dies with it (PR_SET_PDEATHSIG).
"""
from __future__ import annotations

import itertools
import json
import os
import re
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

from rig import pipeline
from rig.errors import ConfigError, EXIT_HARNESS, RigError
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
    config_file: str | None = None  # the rig YAML every cell uses


def _slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", s).strip("-")[:40]


def load_matrix(path: Path, config_file: str | None = None) -> Matrix:
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
    return Matrix(tuple(cells), tuple(select), max(1, parallel), config_file)


def cell_request(cell: Cell, matrix: Matrix, out: Path) -> pipeline.RunRequest:
    flags = pipeline.Flags(source=cell.source, profile=cell.profile, patches=cell.patches, select=matrix.select)
    return pipeline.run_request(matrix.config_file, flags, out / cell.name, command=("rig", "matrix", cell.name))


def _run_cell(cell: Cell, request: pipeline.RunRequest, out: Path) -> dict:
    started = time.time()
    with open(out / f"{cell.name}.log", "w") as log:
        try:
            outcome = pipeline.run(request, stream=log)
            rc, summary, reproduce = outcome.exit_code, outcome.record.summary, outcome.reproduce
        except RigError as e:
            log.write(f"rig: error: {e}\n")
            rc, summary, reproduce = e.exit_code, {}, ""
        except Exception as e:  # noqa: BLE001 - one broken cell is that cell's exit 2, not the matrix's end
            log.write(f"rig: internal error: {e.__class__.__name__}: {e}\n")
            rc, summary, reproduce = EXIT_HARNESS, {}, ""
    return {**asdict(cell), "exit_code": rc, "summary": summary, "started": started, "ended": time.time(),
            "run_dir": str(request.run_dir), "log": str(out / f"{cell.name}.log"), "reproduce": reproduce}


def worst_exit(codes: list[int]) -> int:
    for code in (3, 2, 1):
        if code in codes:
            return code
    return 0 if all(c == 0 for c in codes) else 2


def run_matrix(matrix: Matrix, out: Path, parallel: int | None = None) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    requests = [cell_request(c, matrix, out) for c in matrix.cells]  # every cell checked before any runs
    workers = parallel or matrix.parallel
    slots = threading.Semaphore(workers)
    cells: list[dict | None] = [None] * len(requests)

    def cell(i: int) -> None:
        with slots:
            cells[i] = _run_cell(matrix.cells[i], requests[i], out)

    threads = [threading.Thread(target=cell, args=(i,), name=f"cell-{c.name}", daemon=True)
               for i, c in enumerate(matrix.cells)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    data = {"parallel": workers, "cells": cells, "exit_code": worst_exit([c["exit_code"] for c in cells])}
    (out / "matrix.json").write_text(json.dumps(data, indent=2) + "\n")
    return data


def matrix_table(data: dict) -> str:
    lines = [f"{'cell':<44}{'exit':>5}" + "".join(f"{c:>7}" for c in VERDICTS)]
    for c in data["cells"]:
        lines.append(f"{c['name'][:43]:<44}{c['exit_code']:>5}" + "".join(f"{c['summary'].get(k, 0):>7}" for k in VERDICTS))
    return "\n".join(lines)
