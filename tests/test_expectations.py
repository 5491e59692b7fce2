"""Expectations table and verdicts."""
import pytest

from rig.expectations import Expectation, KnownIssue, MessageRules, compare, load_expectations, select_cases
from rig.judge import CaseEvidence, judge_case
from rig.model import SplatRecord
from rig.runner import run_order


def judge(exp, probe_result, problem="", dmesg="", splats=()):
    """The judge on what the runner would have gathered: a probe result, a problem around it, the kernel's log
    and the titles of the case's reports."""
    reports = [SplatRecord("warning", t, False, i, "", 1, exp.case_id) for i, t in enumerate(splats)]
    return judge_case(exp, CaseEvidence(probe_result, problem, dmesg=dmesg, splats=reports), MessageRules())


def test_real_table_loads_and_every_case_names_a_section():
    exps = load_expectations()
    assert len(exps) >= 40
    for e in exps.values():
        assert e.section and e.expect
    known = {e.known_issue.id for e in exps.values() if e.known_issue}
    assert {"p2pmem-not-zeroed", "wp-fault-livelock", "madv-populate-enomem"} <= known


def test_compare_operators():
    assert compare({"a": 1, "b": "EINVAL"}, {"a": 1, "b": "EINVAL", "extra": 5}) == []
    assert compare({"a": {"one_of": ["x", "y"]}}, {"a": "y"}) == []
    assert compare({"a": {"min": 2, "max": 4}}, {"a": 5}) == ["a: expected {'min': 2, 'max': 4}, observed 5"]
    assert compare({"a": True}, {"a": 1}) != []  # a bool is not an int
    assert "not reported" in compare({"a": 1}, {})[0]


EXP = Expectation("mmap.over_available", "1.2", {"mmap": "ENOMEM"}, {"mmap": "OK", "first_touch": "SIGBUS"})


def test_pass_and_fail():
    assert judge(EXP, {"obs": {"mmap": "ENOMEM"}}).verdict == "pass"
    j = judge(EXP, {"obs": {"mmap": "OK"}})
    assert j.verdict == "fail" and j.mismatches == ["mmap: expected 'ENOMEM', observed 'OK'"]


def test_v3_semantics_use_their_own_expectation():
    v3 = for_kernel({EXP.case_id: EXP}, "6.12.117", "v3")[EXP.case_id]
    assert judge(v3, {"obs": {"mmap": "OK", "first_touch": "SIGBUS"}}).verdict == "pass"
    assert judge(v3, {"obs": {"mmap": "ENOMEM"}}).verdict == "fail"
    # and back: the merged expectation is still there
    merged = for_kernel({EXP.case_id: v3}, "6.12.117")[EXP.case_id]
    assert judge(merged, {"obs": {"mmap": "ENOMEM"}}).verdict == "pass"


def test_a_v3_known_issue_counts_only_on_the_v3_design_and_a_merged_one_stays_under_it():
    kernel_bug = KnownIssue("kbug", ("gup.x",), "6.12 bug", "4", {"pinned": 3})
    seed_bug = KnownIssue("seed", ("gup.y",), "GUP should also reject this memory for FOLL_LONGTERM", "4",
                          {"pinned": 8}, semantics="v3")
    exps = {"gup.x": Expectation("gup.x", "4", {"pinned": 0}, None, kernel_bug, declared_issues=(kernel_bug,)),
            "gup.y": Expectation("gup.y", "4", {"pinned": 0}, declared_issues=(seed_bug,)),
            "gup.z": Expectation("gup.z", "4", {"pinned": 0}, skip_v3="no sysfs file on v3")}
    merged, v3 = for_kernel(exps, "6.12.117"), for_kernel(exps, "6.12.117", "v3")
    assert merged["gup.y"].known_issue is None and judge(merged["gup.y"], {"obs": {"pinned": 8}}).verdict == "fail"
    assert judge(v3["gup.y"], {"obs": {"pinned": 8}}).verdict == "xfail"
    assert judge(v3["gup.y"], {"obs": {"pinned": 0}}).verdict == "xpass"
    assert v3["gup.x"].known_issue is kernel_bug  # the series sits on a 6.12 kernel with its bugs
    assert v3["gup.z"].skip == "no sysfs file on v3" and merged["gup.z"].skip == ""
    assert for_kernel(v3, "6.12.117")["gup.y"].known_issue is None


def test_known_issue_xfail_then_xpass():
    issue = KnownIssue("leak", ("leak.x",), "not zeroed", "8.8", {"sees_previous_data": True})
    e = Expectation("leak.x", "8.8", {"sees_previous_data": False}, None, issue)
    assert judge(e, {"obs": {"sees_previous_data": True}}).verdict == "xfail"
    assert judge(e, {"obs": {"sees_previous_data": False}}).verdict == "xpass"


def test_known_issue_is_xfail_only_with_its_signature():
    """A known-issue case still fails on a new wrong behaviour: neither correct nor the known bug."""
    issue = KnownIssue("enomem", ("fault.p",), "madvise_populate ENOMEM", "1.2", {"madvise": "ENOMEM"})
    e = Expectation("fault.p", "1.2", {"madvise": {"one_of": ["EREMOTEIO", "EFAULT"]}}, None, issue)
    assert judge(e, {"obs": {"madvise": "ENOMEM"}}).verdict == "xfail"
    assert judge(e, {"obs": {"madvise": "EFAULT"}}).verdict == "xpass"
    j = judge(e, {"obs": {"madvise": "OK"}})
    assert j.verdict == "fail" and "not the known issue enomem either: madvise: expected 'ENOMEM'" in j.mismatches[1]
    assert judge(e, {"obs": {}}).verdict == "fail"  # a key the probe did not report is not the bug either
    # errors and splats are never hidden behind the known issue
    assert judge(e, {"obs": {"madvise": "ENOMEM"}}, problem="kernel splat: BUG: x").verdict == "fail"
    assert judge(e, None).verdict == "error"


def test_every_known_issue_of_the_real_table_has_a_signature_that_is_not_the_expectation():
    """An issue shown by its observation has a signature the correct behaviour does not satisfy; one shown by the
    kernel reports it leaves (splats) names them instead."""
    for e in load_expectations().values():
        for issue in e.declared_issues:
            if issue.splats:
                assert all(issue.splats), f"{e.case_id}: {issue.id} names an empty report title"
                continue
            sig = issue.signature
            assert sig and compare(e.expect, sig), f"{e.case_id}: signature {sig} satisfies the expectation"


def test_allowed_splats_are_declared_per_case(tmp_path):
    from rig.errors import ConfigError

    e = Expectation("gup.x", "3", {"a": 1}, allow_splats=("WARNING in is_valid_gup_args",))
    assert e.allows("WARNING in is_valid_gup_args")
    assert not e.allows("WARNING in is_valid_gup_args_more") and not e.allows("BUG: KASAN: x")
    p = tmp_path / "e.yaml"
    p.write_text("cases:\n  a.b:\n    section: '1'\n    expect: {a: 1}\n    allow_splats: ['WARNING in (']\n")
    with pytest.raises(ConfigError, match="not a regex"):
        load_expectations(p)
    p.write_text("cases:\n  a.b:\n    section: '1'\n    expect: {a: 1}\n    allow_splats: WARNING\n")
    with pytest.raises(ConfigError, match="allow_splats must be a list of regexes"):
        load_expectations(p)


def test_kernel_messages_at_warning_level_must_be_declared():
    e = Expectation("peer.x", "6", {"a": 1}, dmesg=("cannot be used for peer-to-peer DMA",),
                    allow_dmesg=(r"I/O error, dev nvme\dn1",))
    msgs = ["nvme 0000:00:05.0: cannot be used for peer-to-peer DMA as the client and provider do not share",
            "I/O error, dev nvme1n1, sector 0 op 0x0:(READ) flags 0x4000 phys_seg 1 prio class 0",
            "nvme nvme0: I/O tag 12 (100c) opcode 0x2 (Admin Cmd) QID 0 timeout, reset controller"]
    assert e.unexpected_messages(msgs) == [msgs[2]]


def test_manual_cases_run_only_by_their_exact_id():
    exps = load_expectations()
    manual = {c for c, e in exps.items() if e.manual}
    assert {"peer.unbind_inflight_hung_task", "selftest.warn_gup_longterm"} <= manual
    for patterns in ([], ["unbind"], ["gup"], ["selftest.*"], ["*"], ["peer.unbind_inflight_hung*"]):
        assert not manual & set(select_cases(exps, patterns)), patterns
    assert select_cases(exps, ["selftest.hang"]) == ["selftest.hang"]
    assert "unbind.while_mapped" in select_cases(exps, ["unbind"])


def test_run_order_groups_by_machine_and_shuffles_reproducibly():
    exps = load_expectations()
    ids = select_cases(exps, [])
    plain = run_order(ids, exps, None)
    assert plain == ids  # the table is already grouped by topology
    a, b = run_order(ids, exps, 7), run_order(ids, exps, 7)
    assert a == b and a != plain and sorted(a) == sorted(ids)
    assert run_order(ids, exps, 8) != a
    topologies = [exps[c].topology for c in a]
    assert topologies[0] == "default"
    # each machine's cases stay together: one boot per topology
    assert len([t for i, t in enumerate(topologies) if i == 0 or topologies[i - 1] != t]) == len(set(topologies))


def test_a_probe_that_could_not_run_never_passes():
    assert judge(EXP, None).verdict == "error"
    assert judge(EXP, {"error": "no p2pmem"}).verdict == "error"
    assert judge(EXP, {"skip": "no nullb0"}).verdict == "skip"
    assert judge(EXP, {"obs": {"mmap": "ENOMEM"}}, problem="kernel splat: WARNING in x").verdict == "fail"
    assert judge(EXP, None, problem="watchdog").verdict == "error"


def test_bad_table_is_rejected(tmp_path):
    from rig.errors import ConfigError

    p = tmp_path / "e.yaml"
    p.write_text("cases:\n  nodot:\n    section: '1'\n    expect: {a: 1}\n")
    with pytest.raises(ConfigError, match="area.name"):
        load_expectations(p)
    p.write_text("cases:\n  a.b:\n    expect: {a: 1}\n")
    with pytest.raises(ConfigError, match="section"):
        load_expectations(p)
    p.write_text("cases:\n  a.b:\n    section: '1'\n    expect: {a: 1}\nknown_issues:\n"
                 "  - {id: x, cases: [a.c], reason: r, signature: {a: 2}, seen_in: ['7.3.4']}\n")
    with pytest.raises(ConfigError, match="unknown case a.c"):
        load_expectations(p)
    p.write_text("cases:\n  a.b:\n    section: '1'\n    expect: {a: 1}\nknown_issues:\n"
                 "  - {id: x, cases: [a.b], reason: r}\n")
    with pytest.raises(ConfigError, match="needs a 'signature'"):
        load_expectations(p)


def test_dmesg_expectation():
    e = Expectation("mmap.private", "1.2", {"mmap": "EINVAL"}, dmesg=("attempted private mapping",))
    ok = judge(e, {"obs": {"mmap": "EINVAL"}}, dmesg="[ 1.0] nvme 0000:00:04.0: mmap: fail, attempted private mapping")
    assert ok.verdict == "pass" and ok.expected["dmesg"] == ["attempted private mapping"]
    j = judge(e, {"obs": {"mmap": "EINVAL"}}, dmesg="")
    assert j.verdict == "fail" and "dmesg: expected a line matching" in j.mismatches[0]


def test_readme_lists_every_case():
    from conftest import ROOT

    readme = (ROOT / "README.md").read_text()
    missing = [cid for cid in load_expectations() if f"`{cid}`" not in readme]
    assert not missing, f"README.md does not list: {missing}"


def test_machine_noise_is_allowed_where_the_table_says():
    from rig.expectations import load_message_rules

    rules = load_message_rules()
    boot = ["amd_pstate: the _CPC object is not present in SBIOS or ACPI disabled", "hpet: Lost 3 RTC interrupts",
            "tsc: PIT calibration deviates from HPET: 216301 2594658", "nvme nvme0: failed to allocate CMB"]
    assert rules.unexpected(boot, in_case=False) == ["nvme nvme0: failed to allocate CMB"]
    # a boot-only fact is unexpected inside a case; timing noise is allowed everywhere
    assert rules.unexpected(boot[:3], in_case=True) == [boot[0]]


# ---------------------------------------------------------------- kernel versions (rig list --kernel, rig run)

from rig.errors import ConfigError  # noqa: E402
from rig.expectations import KnownIssue as _KI, Override, for_kernel, kernel_version  # noqa: E402


def test_kernel_version_parsing():
    assert kernel_version("7.3.4") == (7, 3, 4)
    assert kernel_version("6.12.117") == (6, 12, 117)
    assert kernel_version("7.3.0-rc7") == (7, 3, 0) == kernel_version("7.3~rc7") == kernel_version("7.3")
    assert kernel_version("6.12.117-dirty") < kernel_version("7.0") < kernel_version("7.3.4")
    with pytest.raises(ValueError):
        kernel_version("linux")


def _case(**kw):
    ov = (Override("odirect.p", "7.0", "block: split", "bios no longer mix", {"read": "OK"}, (), ()),
          Override("odirect.p", "7.5", "later", "again", {"read": "EAGAIN"}))
    return {"odirect.p": Expectation("odirect.p", "2", {"read": "EIO"}, dmesg=("Invalid Use",), overrides=ov, **kw)}


def test_override_chosen_by_version():
    assert for_kernel(_case(), "6.12.117")["odirect.p"].expect == {"read": "EIO"}
    e = for_kernel(_case(), "7.3.4")["odirect.p"]
    assert e.expect == {"read": "OK"} and e.dmesg == () and e.override.commit == "block: split"
    assert for_kernel(_case(), "7.0.0-rc1")["odirect.p"].expect == {"read": "OK"}
    assert for_kernel(_case(), "7.5.1")["odirect.p"].expect == {"read": "EAGAIN"}
    assert for_kernel(_case(), "")["odirect.p"].expect == {"read": "EIO"}
    j = judge(for_kernel(_case(), "7.3.4")["odirect.p"], {"obs": {"read": "OK"}})
    assert j.verdict == "pass" and "7.0 and later" in j.reason and "block: split" in j.reason


def test_known_issue_versions():
    regression = _KI("einval", ("peer.x",), "EINVAL", "6", {"read": "EINVAL"}, ("7.3.4",), since="7.0",
                     since_change="blk-mq dma iterator")
    fixed = _KI("leak", ("peer.x",), "leak", "6", {"read": "EINVAL"}, ("6.12.117", "7.3.4"), fixed_in="7.4",
                fix_commit="PCI/P2PDMA: zero")
    for issue, release, active in [(regression, "6.12.117", False), (regression, "7.3.4", True),
                                   (fixed, "7.3.4", True), (fixed, "7.4.0", False), (fixed, "6.12.117", True)]:
        exps = {"peer.x": Expectation("peer.x", "6", {"read": "EREMOTEIO"}, known_issue=issue)}
        e = for_kernel(exps, release)["peer.x"]
        assert (e.known_issue is issue) is active, (issue.id, release)
        assert (e.inactive_issue is issue) is not active
    assert regression.status("7.3.4") == "known issue, still present in 7.3.4 (seen in 7.3.4)"
    assert fixed.status("7.4.2") == "fixed in 7.4 (PCI/P2PDMA: zero)"
    e = for_kernel({"peer.x": Expectation("peer.x", "6", {"read": "EREMOTEIO"}, known_issue=regression)}, "6.12.117")
    assert judge(e["peer.x"], {"obs": {"read": "EINVAL"}}).verdict == "fail"  # not an excuse before 7.0
    e = for_kernel({"peer.x": Expectation("peer.x", "6", {"read": "EREMOTEIO"}, known_issue=regression)}, "7.3.4")
    j = judge(e["peer.x"], {"obs": {"read": "EINVAL"}})
    assert j.verdict == "xfail" and "still present in 7.3.4" in j.reason
    # applied twice (a series step) gives the same answer
    assert for_kernel(for_kernel(e, "6.12.117"), "7.3.4")["peer.x"].known_issue is regression


def test_real_table_for_both_kernels():
    exps = load_expectations()
    old, new = for_kernel(exps, "6.12.117"), for_kernel(exps, "7.3.4")
    for cid, e in exps.items():
        assert old[cid].override is None, cid  # 6.12 is judged by the base table
        if new[cid].override:
            assert new[cid].override.commit and new[cid].override.reason
    for e in exps.values():
        if e.known_issue:
            assert e.known_issue.seen_in
    assert all(kernel_version(v) for e in exps.values() if e.known_issue for v in e.known_issue.seen_in)


def test_bad_overrides_rejected(tmp_path):
    p = tmp_path / "e.yaml"
    base = "cases:\n  a.b:\n    section: '1'\n    expect: {a: 1}\n"
    for body, msg in [
        ("version_overrides:\n  - {case: a.c, since: '7.0', commit: c, reason: r, expect: {a: 2}}\n", "unknown case a.c"),
        ("version_overrides:\n  - {case: a.b, since: '7.0', reason: r, expect: {a: 2}}\n", "needs 'commit'"),
        ("version_overrides:\n  - {case: a.b, since: later, commit: c, reason: r}\n", "needs 'since'"),
        ("version_overrides:\n  - {case: a.b, since: '7.0', commit: c, reason: r, expct: {}}\n", "unknown key"),
        ("known_issues:\n  - {id: x, cases: [a.b], reason: r, signature: {a: 2}}\n", "needs 'seen_in'"),
        ("known_issues:\n  - {id: x, cases: [a.b], reason: r, signature: {a: 2}, seen_in: ['7.3.4'], fixed_in: '7.4'}\n",
         "go together"),
    ]:
        p.write_text(base + body)
        with pytest.raises(ConfigError, match=msg):
            load_expectations(p)


def test_rig_list_kernel_shows_what_applies(capsys):
    from rig.cli import main

    assert main(["list", "--kernel", "7.3", "-k", "preadv_ram_then_p2pmem", "-k", "rootbus_intel"]) == 0
    out = capsys.readouterr().out
    assert '"read": "OK", "read_bytes": 8192' in out and "since 6.17:" in out
    assert "known issue, still present in 7.3" in out and "p2p-unreachable-einval" in out
    assert main(["list", "--kernel", "6.12.117", "-k", "preadv_ram_then_p2pmem", "-k", "rootbus_intel"]) == 0
    out = capsys.readouterr().out
    assert '{"read": "EIO"}' in out and "not in 6.12.117: the bug came with 6.17" in out
    assert main(["list", "--kernel", "banana"]) == 2


def test_a_case_failed_by_its_surroundings_still_shows_its_mismatches():
    # peer.rootbus_opteron_dio on 7.3.4: failed by undeclared kernel messages, and EINVAL where EREMOTEIO is expected
    j = judge(EXP, {"obs": {"mmap": "EINVAL"}}, problem="unexpected kernel message(s) at warning level or worse: 'x'")
    assert j.verdict == "fail" and j.reason.startswith("unexpected kernel message")
    assert j.mismatches == ["mmap: expected 'ENOMEM', observed 'EINVAL'"]


# ---- a known issue shown by kernel reports, of one variant of a series (with_patch): recorded consoles of
# patches/seed-v3/series-refcounts-as-posted (tests/data/consoles/README.md)
AS_POSTED = ("[PATCH 4/4] PCI/P2PDMA: take no dev_pagemap references at the first fault, as v3 posted",)


def _case_splats(log: str, case_id: str) -> tuple[str, ...]:
    from conftest import DATA
    from rig.console import case_slices, find_splats, splats_in

    text = (DATA / "consoles" / log).read_text()
    return tuple(s.title for s in splats_in(find_splats(text), case_slices(text)[case_id]))


def test_a_patch_keyed_issue_counts_only_on_a_kernel_built_with_that_patch():
    table = load_expectations()
    posted = for_kernel(table, "6.12.117", "v3", AS_POSTED)
    assert posted["peer.unbind_during_peer_dio"].known_issue.id == "seed-v3-unbind-frees-held-pages"
    assert posted["unbind.while_mapped"].known_issue.id == "seed-v3-unbind-refcount-underflow"
    # the default series (no such patch) and the merged kernel: the cases pass there, nothing is excused
    for e in (for_kernel(table, "6.12.117", "v3", ("[PATCH 2/3] PCI/P2PDMA: introduce pci_mmap_p2pmem()",)),
              for_kernel(table, "6.12.117", "merged", AS_POSTED)):
        assert e["peer.unbind_during_peer_dio"].known_issue is None and e["unbind.while_mapped"].known_issue is None
    # the other v3 issues stay on the variant
    assert posted["mmap.concurrent_first_touch"].known_issue.id == "seed-v3-first-fault-race"


def test_the_recorded_reports_of_the_refcounts_as_posted_series_are_its_known_issues():
    table = for_kernel(load_expectations(), "6.12.117", "v3", AS_POSTED)
    peer = _case_splats("seed-v3-refcounts-as-posted-peer-dio.log", "peer.unbind_during_peer_dio")
    assert peer == ("kernel BUG in gen_pool_destroy", "BUG: unable to handle kernel paging request in bio_first_folio")
    j = judge(table["peer.unbind_during_peer_dio"], None, "the probe died from signal 9; kernel splat: "
              + "; ".join(peer), splats=peer)
    assert j.verdict == "xfail" and "seed-v3-unbind-frees-held-pages" in j.reason and "refcounts" in j.reason
    mapped = _case_splats("seed-v3-refcounts-as-posted-while-mapped.log", "unbind.while_mapped")
    assert mapped == ("WARNING in percpu_ref_switch_to_atomic_rcu",)
    j = judge(table["unbind.while_mapped"], None, "the guest stopped answering during the case", splats=mapped)
    assert j.verdict == "xfail"
    # the same reports on the default series are an ERROR: there the case is no known issue
    default = for_kernel(load_expectations(), "6.12.117", "v3")
    assert judge(default["peer.unbind_during_peer_dio"], None, "kernel splat: x", splats=peer).verdict == "error"


def test_a_report_the_issue_does_not_name_is_still_a_failure_and_no_report_is_an_xpass():
    issue = _KI("i", ("peer.x",), "why", "1", splats=("kernel BUG in gen_pool_destroy",))
    e = Expectation("peer.x", "1", {"read": "OK"}, known_issue=issue)
    other = ("kernel BUG in gen_pool_destroy", "KASAN: use-after-free in bio_endio")
    assert judge(e, None, "kernel splat: ...", splats=other).verdict == "error"
    assert judge(e, {"obs": {"read": "OK"}}, "kernel splat: ...", splats=other[1:]).verdict == "fail"
    assert judge(e, {"obs": {"read": "OK"}}).verdict == "xpass"
    # no report and a wrong answer: neither the correct behaviour nor the known bug
    j = judge(e, {"obs": {"read": "EIO"}})
    assert j.verdict == "fail" and "none of its kernel reports" in " ".join(j.mismatches)


def test_a_splat_issue_needs_no_signature_but_an_issue_needs_one_or_the_other(tmp_path):
    import yaml

    base = {"cases": {"peer.x": {"section": "1", "expect": {"read": "OK"}}}}
    ok = {**base, "known_issues": [{"id": "i", "cases": ["peer.x"], "splats": ["kernel BUG in .*"],
                                    "with_patch": "as v3 posted", "reason": "r", "seen_in": ["6.12.117"]}]}
    (tmp_path / "ok.yaml").write_text(yaml.safe_dump(ok))
    assert load_expectations(tmp_path / "ok.yaml")["peer.x"].declared_issues[0].with_patch == "as v3 posted"
    bad = {**base, "known_issues": [{"id": "i", "cases": ["peer.x"], "reason": "r", "seen_in": ["6.12.117"]}]}
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(bad))
    with pytest.raises(ConfigError, match="'splats'"):
        load_expectations(tmp_path / "bad.yaml")


def test_a_known_issue_of_an_option_counts_only_on_a_kernel_that_sets_it():
    """The real table's nvme-reset-freeze-lockdep: lockdep (CONFIG_PROVE_LOCKING, profile debug) reports it, so
    on the default kernel the case keeps its plain expectation, and 7.x (fixed) has it inactive."""
    table = load_expectations()
    lockdep = frozenset({"CONFIG_PROVE_LOCKING", "CONFIG_KASAN"})
    case = "nvme.function_reset_while_mapped"
    assert for_kernel(table, "6.12.118")[case].known_issue is None
    assert for_kernel(table, "6.12.118", config=lockdep)[case].known_issue.id == "nvme-reset-freeze-lockdep"
    on_73 = for_kernel(table, "7.3.4", config=lockdep)[case]
    assert on_73.known_issue is None and on_73.inactive_issue.id == "nvme-reset-freeze-lockdep"
    # its report makes the case XFAIL on 6.12 debug, as judged by the runner
    j = judge(for_kernel(table, "6.12.118", config=lockdep)[case], {"obs": {}},
              splats=("WARNING: lock held when returning to user space!",))
    assert j.verdict == "xfail"
