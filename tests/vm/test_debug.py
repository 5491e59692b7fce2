"""The debug profile (KASAN, lockdep, DEBUG_VM, DEBUG_ATOMIC_SLEEP...) on the cases where its detectors matter
most: every path that takes and drops page and pgmap references or locks at unbind and bind (unbind, usage,
inject), mapped and pinned P2P memory (mmap's refcount and fork cases, gup's pins), and the kernel's records
(state), the in-kernel API (kapi). On this kernel a report that the default kernel would not print (a KASAN use-after-free, a lockdep
splat, a sleep in atomic context, a bad page state) fails its case; a clean kernel passes. The nightly job runs
the whole suite on this profile (.github/workflows/nightly.yml). The first run builds the debug kernel (about
15 minutes cold on 2 cores)."""
import pytest

from conftest import run_pipeline

pytestmark = pytest.mark.vm

SUBSET = ["unbind.*", "usage.*", "inject.*", "state.*", "mmap.fork_refcount", "mmap.concurrent_first_touch",
          "mmap.partial_munmap", "gup.pin_basic_unpin_refcount", "gup.pin_longterm_p2p_refused",
          "odirect.dio_refcount_restored", "peer.switch_dio", "kapi.*"]


@pytest.mark.timeout(3600)
def test_the_debug_profile_passes_its_subset(tmp_path):
    r = run_pipeline(tmp_path / "debug", profile="debug", select=SUBSET)
    cases = r.data["cases"]
    assert r.data["manifest"]["kernel"]["profile"] == "debug"
    assert len([c for c in cases if not c["id"].startswith("kernel.")]) >= 30
    bad = [f"{c['id']}: {c['verdict']} {c['reason']}" for c in cases if c["verdict"] not in ("pass", "xfail")]
    assert r.exit_code == 0 and not bad, "\n".join(bad) + "\n" + r.summary[-3000:]
