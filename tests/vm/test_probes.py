"""Integration tests on the real kernel in real QEMU: one VM for the session, each probe case its own test.

Needs the kernel and image caches; the session fixture builds them when missing (minutes on a cold cache).
"""
import time

import pytest

from rig import probes as probesmod
from rig.config import load_config
from rig.expectations import for_kernel, load_expectations
from rig.image import build_image, ensure_ssh_key, image_spec
from rig.kernel import build_kernel, kernel_spec
from rig.progress import Progress
from rig.results import summary_table, write_run
from rig.runner import Suite

pytestmark = pytest.mark.vm

EXPECTATIONS = load_expectations()


@pytest.fixture(scope="session")
def stack():
    cfg = load_config()
    kernel = build_kernel(kernel_spec(cfg), Progress("kernel"))
    image = build_image(image_spec(cfg), Progress("image"))
    return cfg, kernel, image, ensure_ssh_key(cfg.cache_path)


@pytest.fixture(scope="session")
def probe_set(stack, tmp_path_factory):
    _cfg, kernel, image, _key = stack
    return probesmod.prepare(kernel, tmp_path_factory.mktemp("probes"), guest_suite=image.recipe.get("suite", ""))


@pytest.fixture(scope="session")
def suite(stack, probe_set):
    cfg, kernel, image, key = stack
    run_dir = cfg.out_path / ("pytest-" + time.strftime("%Y%m%d-%H%M%S"))
    run_dir.mkdir(parents=True)
    # the expectations of the kernel that was built (its make kernelrelease), as `rig run` chooses them
    s = Suite(cfg, kernel, image, key, run_dir, for_kernel(EXPECTATIONS, kernel.manifest["kernelrelease"]), probe_set)
    yield s
    s.close()
    write_run(run_dir, s.results, s.boots, {"kernel": kernel.manifest, "image": image.recipe, "via": "pytest"})
    print("\n" + summary_table(s.results) + f"\nrun directory: {run_dir}")


def test_every_probe_case_has_an_expectation_and_back(probe_set):
    probesmod.check_against(probe_set.cases, list(EXPECTATIONS))
    assert len(probe_set.cases) >= 40


class KnownIssueObserved(AssertionError):
    """The kernel showed a known bug with its signature (verdict xfail). Only this is an expected failure:
    an error, a splat or any other wrong behaviour on a known-issue case fails the test."""


# every case but the rig self-tests that break the guest on purpose (tests/vm/test_cli.py runs those)
@pytest.mark.parametrize("case_id", [c for c, e in EXPECTATIONS.items() if not e.manual])
def test_probe(suite, case_id, request):
    exp = suite.expectations[case_id]
    if exp.known_issue:
        # XFAIL only when the known bug showed; XPASS (the kernel fixed it) when the case passes
        request.node.add_marker(pytest.mark.xfail(reason=f"{exp.known_issue.id}: {exp.known_issue.reason}",
                                                  raises=KnownIssueObserved, strict=False))
    r = suite.run_one(case_id)
    if r.verdict == "skip":
        pytest.skip(r.reason)
    if r.verdict == "error":
        pytest.fail("probe could not run: " + r.failure_text(), pytrace=False)
    assert not r.failing_splats, r.failure_text()
    if r.verdict == "xfail":
        raise KnownIssueObserved(r.failure_text())
    assert r.verdict in ("pass", "xpass"), r.failure_text()


def test_no_kernel_report_outside_the_cases(suite):
    """Runs last: retires the last VM (its console read to the end) and checks every boot's kernel.console
    result: a WARNING at boot, between cases or after the last one fails here."""
    suite.close()
    consoles = [r for r in suite.results if r.area == "kernel"]
    assert len(consoles) == len(suite.boots) >= 1
    for r in consoles:
        assert r.verdict == "pass", r.failure_text()
