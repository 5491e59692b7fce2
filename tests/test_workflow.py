"""The nightly GitHub Actions workflow: actionlint finds nothing, and the structure that matters is there.

actionlint checks the workflow syntax, the expressions, the inputs of the known actions and, through shellcheck,
every `run:` script. `make test` installs both (actionlint from the test extras into .venv, shellcheck from
Debian), so a missing one fails here with the fix instead of skipping. A deliberately broken copy of the workflow
proves that the linter really runs and reports.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
WORKFLOW = ROOT / ".github" / "workflows" / "nightly.yml"


def _actionlint() -> list[str]:
    venv_bin = Path(sys.executable).parent / "actionlint"
    exe = str(venv_bin) if venv_bin.exists() else shutil.which("actionlint")
    shellcheck = shutil.which("shellcheck")
    missing = [what for what, found in (("actionlint (pip: the test extras)", exe),
                                        ("shellcheck (apt: shellcheck)", shellcheck)) if not found]
    assert not missing, f"not installed: {', '.join(missing)}; run `make test-deps`"
    return [exe, "-no-color", "-oneline", f"-shellcheck={shellcheck}"]


def _lint(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([*_actionlint(), str(path)], cwd=ROOT, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def wf() -> dict:
    return yaml.safe_load(WORKFLOW.read_text())


@pytest.fixture(scope="module")
def job(wf) -> dict:
    jobs = wf["jobs"]
    assert set(jobs) == {"rig", "race"}, f"the run (one job per matrix cell) and the race, got {list(jobs)}"
    return jobs["rig"]


def test_race_job_hunts_on_the_debug_profile_for_a_fixed_budget(wf):
    race = wf["jobs"]["race"]
    steps = race["steps"]
    run = _one(_runs(steps, ".venv/bin/rig race "), "runs `rig race`")
    assert "--profile debug" in run["run"] and "--seconds" in run["run"] and "--seed" in run["run"]
    assert "set +e" in run["run"], "the race's exit code must not stop the upload"
    assert float(race["env"]["RACE_SECONDS"]) > 0
    key = _one(_runs(steps, "rig kernel --print-key"), "prints the kernel cache key")
    assert "--profile debug" in key["run"]
    upload = _one(_uses(steps, "actions/upload-artifact"), "uploads the race directory")
    assert _expr(upload["if"]) == "always()"
    assert f"steps.{run['id']}.outputs.exit_code" in str(steps[-1].get("env", {})) and "exit" in steps[-1]["run"]


@pytest.fixture(scope="module")
def steps(job) -> list[dict]:
    return job["steps"]


def _uses(steps: list[dict], action: str) -> list[dict]:
    return [s for s in steps if s.get("uses", "").split("@")[0] == action]


def _runs(steps: list[dict], text: str) -> list[dict]:
    return [s for s in steps if text in s.get("run", "")]


def _one(found: list[dict], what: str) -> dict:
    assert len(found) == 1, f"expected one step that {what}, found {len(found)}"
    return found[0]


def _rig_run(steps: list[dict]) -> dict:
    return _one(_runs(steps, ".venv/bin/rig run "), "runs `rig run`")


def _expr(value: str) -> str:
    """`${{ x }}` -> `x` (an `if:` may be written either way)."""
    value = value.strip()
    if value.startswith("${{") and value.endswith("}}"):
        value = value[3:-2].strip()
    return value


def test_actionlint_clean():
    proc = _lint(WORKFLOW.relative_to(ROOT))
    assert proc.returncode == 0, f"actionlint exit {proc.returncode}:\n{proc.stdout}{proc.stderr}"


def test_actionlint_reports_a_broken_copy(tmp_path):
    """Three kinds of mistake actionlint must see: an expression naming a step that does not exist, an unknown
    key, and a shell bug (shellcheck SC2086) in a `run:` script."""
    text = WORKFLOW.read_text()
    wf_dir = tmp_path / ".github" / "workflows"
    wf_dir.mkdir(parents=True)
    broken = text.replace("runs-on:", "runs_on_typo: x\n    runs-on:", 1) + (
        "      - name: broken on purpose\n"
        "        run: echo ${{ steps.no_such_step.outputs.x }}; f=\"a b\"; ls $f\n")
    (wf_dir / "broken.yml").write_text(broken)
    proc = _lint(wf_dir / "broken.yml")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "no_such_step" in proc.stdout, proc.stdout
    assert "runs_on_typo" in proc.stdout, proc.stdout
    assert "SC2086" in proc.stdout, proc.stdout


def test_triggers(wf):
    # PyYAML (YAML 1.1) reads the key `on` as the boolean True
    on = wf.get("on", wf.get(True))
    assert isinstance(on, dict), f"`on:` should be a mapping, got {on!r}"
    assert "workflow_dispatch" in on
    crons = [entry["cron"] for entry in on["schedule"]]
    assert crons and all(len(c.split()) == 5 for c in crons), crons


def test_matrix_over_profiles_in_debian_container(job):
    strategy = job["strategy"]
    assert strategy["fail-fast"] is False
    assert {"default", "gupfast"} <= set(strategy["matrix"]["profile"])
    # both kernels are cells: Debian 12's 6.12 and mainline's 7.3 from Debian's archive
    assert {"6.12", "7.3"} <= set(strategy["matrix"]["kernel"])
    assert job["env"]["SOURCE"] == "debian:${{ matrix.kernel }}"
    assert job["container"]["image"] == "debian:12"
    assert "--privileged" in job["container"]["options"]


def test_deps_and_rig_run(steps):
    apt = _one(_runs(steps, "apt-get install"), "installs the bootstrap packages")
    packages = set(apt["run"].split("apt-get install", 1)[1].replace("\\", " ").split())
    assert {"make", "python3", "python3-venv", "sudo", "git"} <= packages, packages
    names = [s.get("uses", "").split("@")[0] or s.get("run", "") for s in steps]
    i_checkout = names.index("actions/checkout")
    i_deps = next(i for i, s in enumerate(steps) if s.get("run", "").strip() == "make deps")
    run = _rig_run(steps)
    assert i_checkout < i_deps < steps.index(run)
    assert "--profile" in run["run"] and "--out" in run["run"] and '--source "$SOURCE"' in run["run"]
    # the rig's exit code must not stop the report, the summary and the upload
    assert run.get("continue-on-error") is True or "set +e" in run["run"]
    assert any(".venv/bin/rig report" in s.get("run", "") for s in steps)


def test_cache_keyed_on_the_rig_kernel_key(steps):
    key_step = _one(_runs(steps, "rig kernel --print-key"), "prints the kernel cache key")
    assert "--profile" in key_step["run"] and '--source "$SOURCE"' in key_step["run"]
    restore = _one([s for s in steps if s.get("uses", "").startswith("actions/cache")
                    and s.get("uses", "").split("@")[0] != "actions/cache/save"], "restores the cache")
    assert "~/.cache/p2pdma-rig" in restore["with"]["path"]
    key = restore["with"]["key"]
    assert f"steps.{key_step['id']}.outputs." in key, key
    assert "hashFiles('images/**'" in key, key
    assert "matrix.kernel" in key and "matrix.profile" in key, key
    assert steps.index(key_step) < steps.index(restore) < steps.index(_rig_run(steps))
    if restore["uses"].split("@")[0] == "actions/cache/restore":
        save = _one(_uses(steps, "actions/cache/save"), "saves the cache")
        assert save["with"]["path"] == restore["with"]["path"]
        assert save["with"]["key"] in (key, f"${{{{ steps.{restore['id']}.outputs.cache-primary-key }}}}")


def test_previous_run_and_summary(steps):
    find = _one(_runs(steps, "gh run list"), "finds the previous run")
    assert "--workflow nightly.yml" in find["run"] and "databaseId" in find["run"]
    download = _one(_uses(steps, "actions/download-artifact"), "downloads the previous run")
    assert download.get("continue-on-error") is True, "a missing previous artifact must not fail the job"
    assert f"steps.{find['id']}.outputs." in download["with"]["run-id"]
    assert "github-token" in download["with"]
    summary = _one(_runs(steps, "GITHUB_STEP_SUMMARY"), "writes the job summary")
    assert "rig diff" in summary["run"] and "no previous run" in summary["run"]
    assert "^area" in summary["run"], "the summary table goes in too"


def test_upload_always_and_fail_with_rig_exit_code(steps, job):
    upload = _one(_uses(steps, "actions/upload-artifact"), "uploads the run directory")
    assert _expr(upload["if"]) == "always()"
    assert "matrix.profile" in upload["with"]["name"] and "matrix.kernel" in upload["with"]["name"]
    assert upload["with"]["path"] in ("${{ env.RUN_DIR }}", job["env"]["RUN_DIR"])
    run = _rig_run(steps)
    assert '--out "$RUN_DIR"' in run["run"] or job["env"]["RUN_DIR"] in run["run"]
    last = steps[-1]
    assert f"steps.{run['id']}.outputs.exit_code" in str(last.get("env", {})) + last.get("run", "")
    assert "exit" in last["run"]
