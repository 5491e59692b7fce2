"""Integration tests on the real kernel in real QEMU: one run (pipeline.session, as `rig run` makes it), each
probe case its own test.

Needs the kernel and image caches; the session fixture builds them when missing (minutes on a cold cache).
"""
import pytest

from rig import pipeline
from rig.expectations import load_expectations
from rig.results import summary_table

pytestmark = pytest.mark.vm

EXPECTATIONS = load_expectations()


@pytest.fixture(scope="session")
def run_session():
    """The request `rig run` makes with no flag (every case that is not manual), in out/pytest-<time>; the run
    directory is written when the session ends, as `rig run` writes it."""
    request = pipeline.run_request(flags=pipeline.Flags(), prefix="pytest-", command=("pytest", "tests/vm"))
    with pipeline.session(request) as s:
        yield s
        outcome = s.finish()
        print("\n" + summary_table(outcome.results, outcome.boots) + f"\nrun directory: {outcome.run_dir}")


def test_every_probe_case_has_an_expectation_and_back(run_session):
    from rig import probes as probesmod

    probesmod.check_against(run_session.probe_set.cases, list(EXPECTATIONS))
    assert len(run_session.probe_set.cases) >= 40


class KnownIssueObserved(AssertionError):
    """The kernel showed a known bug with its signature (verdict xfail). Only this is an expected failure:
    an error, a splat or any other wrong behaviour on a known-issue case fails the test."""


# every case but the rig self-tests that break the guest on purpose (tests/vm/test_cli.py runs those)
@pytest.mark.parametrize("case_id", [c for c, e in EXPECTATIONS.items() if not e.manual])
def test_probe(run_session, case_id, request):
    exp = run_session.expectations[case_id]
    if exp.known_issue:
        # XFAIL only when the known bug showed; XPASS (the kernel fixed it) when the case passes
        request.node.add_marker(pytest.mark.xfail(reason=f"{exp.known_issue.id}: {exp.known_issue.reason}",
                                                  raises=KnownIssueObserved, strict=False))
    r = run_session.case(case_id)
    if r.verdict == "skip":
        pytest.skip(r.reason)
    if r.verdict == "error":
        pytest.fail("probe could not run: " + r.failure_text(), pytrace=False)
    assert not r.failing_splats, r.failure_text()
    if r.verdict == "xfail":
        raise KnownIssueObserved(r.failure_text())
    assert r.verdict in ("pass", "xpass"), r.failure_text()


def test_no_kernel_report_outside_the_cases(run_session):
    """Runs last: finishes the run (the last VM retired, its console read to the end, the run directory
    written) and checks every boot's kernel.console result: a WARNING at boot, between cases or after the
    last one fails here."""
    outcome = run_session.finish()
    consoles = [r for r in outcome.results if r.area == "kernel"]
    assert len(consoles) == len(outcome.boots) >= 1
    for r in consoles:
        assert r.verdict == "pass", r.failure_text()
