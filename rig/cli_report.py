"""`rig report RUN_DIR`, `rig diff RUN_A RUN_B [--html FILE]` and `rig kcidb RUN_DIR [-o FILE]`. rig/cli.py wires them in:
`add_parsers(sub)` in parser() and HANDLERS.update(cli_report.HANDLERS)."""
from __future__ import annotations

import argparse
from pathlib import Path

from rig.report import diff_html, diff_runs, diff_text, write_report


def add_parsers(subparsers) -> None:
    rep = subparsers.add_parser("report", help="write RUN_DIR/report.html (one self-contained page) and print its path")
    rep.add_argument("run_dir", metavar="RUN_DIR", help="a run directory (out/<run-id>, out/latest)")
    dif = subparsers.add_parser("diff", help="the cases whose verdict changed between two runs "
                                "(exit 0: none, 1: some)")
    dif.add_argument("run_a", metavar="RUN_A", help="the earlier (reference) run directory")
    dif.add_argument("run_b", metavar="RUN_B", help="the later run directory")
    dif.add_argument("--html", metavar="FILE", help="also write the changes as a self-contained HTML page")
    kci = subparsers.add_parser("kcidb", help="write the run as a KCIDB report (KernelCI's schema v5.3: checkout, "
                                "build, a test per case and per boot's kernel.console) for kcidb-submit")
    kci.add_argument("run_dir", metavar="RUN_DIR", help="a run directory")
    kci.add_argument("-o", "--output", metavar="FILE", help="where to write it (default: RUN_DIR/kcidb.json; - = stdout)")
    kci.add_argument("--origin", default="p2pdma_rig", help="the submitting CI system's KCIDB origin (default p2pdma_rig)")
    kci.add_argument("--url-base", metavar="URL",
                     help="where the run directory will be reachable (e.g. the CI artifact): tests then link their "
                     "console log and the report")


def cmd_report(args: argparse.Namespace) -> int:
    print(write_report(args.run_dir))
    return 0


def cmd_diff(args: argparse.Namespace) -> int:
    changes = diff_runs(args.run_a, args.run_b)
    print(diff_text(args.run_a, args.run_b, changes), end="")
    if args.html:
        Path(args.html).write_text(diff_html(args.run_a, args.run_b, changes))
        print(f"html: {args.html}")
    return 1 if changes else 0


def cmd_kcidb(args: argparse.Namespace) -> int:
    import json
    import sys

    from rig.kcidb import to_kcidb, write_kcidb

    if args.output == "-":
        json.dump(to_kcidb(args.run_dir, args.origin, args.url_base), sys.stdout, indent=2)
        print()
    else:
        print(write_kcidb(args.run_dir, args.output or Path(args.run_dir) / "kcidb.json", args.origin, args.url_base))
    return 0


HANDLERS = {"report": cmd_report, "diff": cmd_diff, "kcidb": cmd_kcidb}
