"""Data flows one way: config -> kernel -> image -> VM -> probes -> results -> report, then the callers. Every
import inside rig/ (module level or in a function) points to a module earlier in LAYERS."""
import ast

from conftest import ROOT

LAYERS = ["errors", "records", "progress", "cache", "config", "behaviour_doc", "debian", "sources", "kernel", "image",
          "qemu", "vm", "console", "model", "expectations", "judge", "probes", "validate", "session", "runner", "race",
          "results", "report", "kcidb", "cli_report", "pipeline", "matrix", "bench", "cli"]


def rig_imports(path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "rig":
            found |= ({a.name for a in node.names} if node.module == "rig" else {node.module.split(".")[1]})
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("rig.")}
    return found - {"__version__", path.stem}


def test_every_module_has_a_layer():
    assert sorted(p.stem for p in (ROOT / "rig").glob("*.py") if p.stem != "__init__") == sorted(LAYERS)


def test_no_module_imports_one_downstream_of_it():
    upward = [f"{p.stem} imports {m}" for p in (ROOT / "rig").glob("*.py") if p.stem != "__init__"
              for m in rig_imports(p) if LAYERS.index(m) > LAYERS.index(p.stem)]
    assert not upward, upward
