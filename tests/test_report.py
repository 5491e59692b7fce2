"""Reports, diffs and junit.xml, fed with real run directories (tests/data/runs/README.md says where each comes
from) and a real console capture with a WARNING splat. Host-only; the Chromium test renders the page for real."""
import argparse
import json
import shutil
import struct
import subprocess
import zlib
from html.parser import HTMLParser
from pathlib import Path

import pytest
import xmlschema
from junitparser import JUnitXml

from rig import cli_report
from rig.console import case_slices, find_splats, splats_in
from rig.errors import RigError
from rig.report import case_order, diff_html, diff_runs, diff_text, write_report
from rig.results import to_junit, write_run
from rig.model import BootRecord, CaseResult, RunManifest, SplatRecord
from rig.records import from_json, to_json
from rig.results import read_run

from conftest import DATA, ROOT

RUNS = DATA / "runs"
FAILED_RUN = RUNS / "20261125-033740-5750"  # 8 pass, 1 fail (mmap.mremap_dontunmap), 2 xfail: exit 1
PASSED_RUN = RUNS / "20261125-033811-3f41"  # 13 pass (mmap.mremap_dontunmap fixed, odirect.*): exit 0
BASE_RUN = RUNS / "base"  # 3 pass, 1 xfail, kernel.console.boot-1 (a newer rig: run_id, sha256 manifests)
REAL_RUNS = [FAILED_RUN, PASSED_RUN, BASE_RUN]
SCHEMA = xmlschema.XMLSchema(DATA / "junit-10.xsd")


def cases_of(run: Path) -> list[dict]:
    return json.loads((run / "results.json").read_text())["cases"]


def manifest(**data) -> RunManifest:
    return from_json(RunManifest, data)


def case(cid, verdict, reason="", dmesg="", mismatches=(), splats=()):
    return CaseResult(id=cid, area=cid.split(".")[0], description=f"{cid} description", section="1.2",
                      verdict=verdict, expected={"mremap": "OK"}, observed={"mremap": "EINVAL"},
                      mismatches=list(mismatches), reason=reason, duration_s=0.25, boot=1, dmesg=dmesg,
                      splats=list(splats))


@pytest.fixture
def warn_run(tmp_path) -> Path:
    """A run directory written by rig.results.write_run from the real WARN capture: one case with the
    WARNING in is_valid_gup_args (its dmesg holds `<TASK>` and `<0f>`), one passing case."""
    text = (DATA / "consoles" / "warn-gup-longterm-p2pdma.log").read_text()
    lines, slices, splats = text.splitlines(), case_slices(text), find_splats(text)
    results = []
    for cid, verdict in (("sysfs.published", "pass"), ("gup.longterm_benchmark_p2p", "fail")):
        sl = slices[cid]
        found = [SplatRecord.of(s, 1, cid) for s in splats_in(splats, sl)]
        reason = "kernel splat: " + "; ".join(s.title for s in found) if found else ""
        results.append(case(cid, verdict, reason, sl.text(lines), splats=found))
    boot = BootRecord(1, "default", tmp_path / "boot-1", 5.2, "tcg", "qemu-system-x86_64 -machine q35 -accel tcg",
                      splats=[SplatRecord.of(s, 1) for s in splats], ended_by="end of run")
    d = tmp_path / "warn-run"
    d.mkdir()
    write_run(d, results, [boot], manifest(kernel={"profile": "default"}, accel="tcg"))
    return d


def real_copy(run: Path, tmp_path: Path) -> Path:
    d = tmp_path / run.name
    shutil.copytree(run, d)
    return d


# ---------------------------------------------------------------- junit.xml against the JUnit schema
def test_fresh_junit_validates_against_the_junit_schema():
    dmesg = "[ 4.79] <TASK>\n[ 4.79] Code: 0f 0b <0f> 0b & \x1b[0m\n[ 4.79] </TASK>"
    results = [case("mmap.ok", "pass"),
               case("mmap.bad", "fail", mismatches=["mremap: expected 'OK', observed 'EINVAL'"], dmesg=dmesg),
               case("gup.lost", "error", reason="the guest stopped answering during the case (QEMU exited)"),
               case("peer.none", "skip", reason="needs topology switch"),
               case("leak.old", "xfail", reason="known issue p2pmem-not-zeroed: <stale> & bytes"),
               case("leak.new", "xpass", reason="known issue p2pmem-not-zeroed did not show")]
    xml = to_junit(results)
    SCHEMA.validate(xml)
    suite = JUnitXml.fromstring(xml)
    suite = next(iter(suite)) if suite._tag == "testsuites" else suite
    kinds = {tc.name: [type(r).__name__ for r in tc.result] for tc in suite}
    assert kinds == {"mmap.ok": [], "mmap.bad": ["Failure"], "gup.lost": ["Error"], "peer.none": ["Skipped"],
                     "leak.old": ["Skipped"], "leak.new": []}


@pytest.mark.parametrize("run", REAL_RUNS, ids=lambda p: p.name)
def test_real_junit_validates_and_matches_results_json(run):
    SCHEMA.validate(str(run / "junit.xml"))
    tcs = {tc.name: tc for s in JUnitXml.fromfile(str(run / "junit.xml")) for tc in s}
    cases = cases_of(run)
    assert list(tcs) == [c["id"] for c in cases]
    failing = {c["id"] for c in cases if c["verdict"] in ("fail", "error")}
    assert {n for n, tc in tcs.items() if not tc.is_passed and not tc.is_skipped} == failing


# ---------------------------------------------------------------- report.html
class Page(HTMLParser):
    """Collects the case rows, the tags left open, anything that would load from outside the file, the ids and
    the links inside the page."""
    VOID = {"meta", "br", "link", "img", "input", "hr"}

    def __init__(self, text):
        super().__init__()
        self.rows, self.stack, self.external, self.text, self.ids, self.links = [], [], [], [], set(), []
        self.file_links = []  # links the reader may follow (docs/behaviour.md); nothing is loaded
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "tr" and "data-case" in a:
            self.rows.append((a["data-case"], a.get("class", "")))
        if "id" in a:
            assert a["id"] not in self.ids, f"duplicate id {a['id']}"
            self.ids.add(a["id"])
        if tag == "a" and set(a) == {"href"} and a["href"].startswith("file:"):
            self.file_links.append(a["href"])
        elif tag == "a" and (a.get("href") or "").startswith("#"):
            self.links.append((a["href"][1:], a.get("class", "")))
        elif tag in ("script", "link", "img", "iframe") or any(k in ("src", "href") for k in a):
            self.external.append((tag, a))
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes <{self.stack[-1:]}>"
        self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)


@pytest.mark.parametrize("run", REAL_RUNS, ids=lambda p: p.name)
def test_report_of_a_real_run(run, tmp_path):
    d = real_copy(run, tmp_path)
    out = write_report(d)
    assert out == d / "report.html"
    page = Page(out.read_text())
    assert page.stack == [] and page.external == []
    cases = case_order(read_run(run).cases)  # failures, then errors, then the rest by area in run order
    assert [cid for cid, _ in page.rows] == [c.id for c in cases]
    assert [cls for _, cls in page.rows] == [f"case v-{c.verdict}" for c in cases]
    assert all(target in page.ids for target, _ in page.links), "a link to nowhere"
    text = "".join(page.text)
    # the kernel, not the run directory, names the page
    assert "p2pdma-rig: Linux 6.12.117, profile default" in text
    assert "source debian 6.12.117-1~deb12u1 · profile default · patches none" in text
    manifest = json.loads((run / "manifest.json").read_text())
    for fact in (manifest["kernel"]["config_sha256"], manifest["kernel"]["source"]["version"], "guest kernel 6.12.117",
                 manifest["host"]["qemu"], manifest["started"], "nvme,id=nvme0", "docs/behaviour.md § 1.2",
                 "docs/behaviour.md#12-mmap-of-p2pmemallocate"):
        assert fact in text
    for c in cases:
        assert (c.dmesg.splitlines() or [""])[-1] in text  # kernel.console results have no slice
    # each case's sections link to the section's text on the page itself: a CI artifact has no repository
    # beside it, so no file:// link and no absolute path of the machine that wrote it
    assert page.file_links == [] and "file://" not in out.read_text()
    assert ("doc-1-2", "") in page.links and "doc-1-2" in page.ids
    assert "mmap of p2pmem/allocate" in text and "Behaviour sections cited" in text
    # the run's id names it, not its directory
    run_id = read_run(run).manifest.run_id
    assert not run_id or f"run {run_id}" in text


FAILURES_RUN = RUNS / "broken"  # pass, xfail, error (selftest.hang), fail (selftest.leak_mapping), kernel.console


def test_report_puts_failures_and_errors_first_and_links_them_from_the_chips(tmp_path):
    page = Page(write_report(real_copy(FAILURES_RUN, tmp_path)).read_text())
    assert [cid for cid, _ in page.rows][:2] == ["selftest.leak_mapping", "selftest.hang"]
    chips = {href: cls for href, cls in page.links if "chip" in cls}
    assert chips == {"fail": "chip v-fail", "error": "chip v-error", "case-sysfs.published": "chip v-pass",
                     "case-leak.data_after_free": "chip v-xfail"}
    # the list under the counts: each failure and error, linked to its row, with what explains it
    listed = [href for href, cls in page.links if not cls and href.startswith("case-")]
    assert listed == ["case-selftest.leak_mapping", "case-selftest.hang"]
    assert {"fail", "error", "case-selftest.leak_mapping", "case-selftest.hang"} <= page.ids
    text = "".join(page.text)
    assert "selftest.hang ERROR watchdog: the probe ran longer than 5s and was killed" in text
    assert "Failed (1)" in text and "Errors (the case could not run or the guest was lost) (1)" in text


def test_report_names_the_patched_kernel(warn_run, tmp_path):
    d = real_copy(BASE_RUN, tmp_path)
    m = json.loads((d / "manifest.json").read_text())
    from rig.sources import read_patches

    fix = ROOT / "patches" / "fixes" / "linux-6.12" / "0001-PCI-P2PDMA-Clear-p2pmem-before-mapping-it-to-userspa.patch"
    m["kernel"]["patches"] = to_json([p.manifest() for p in read_patches([fix])])
    m["kernel"]["kconfig_add"] = ["CONFIG_DEBUG_VM=y"]
    (d / "manifest.json").write_text(json.dumps(m))
    text = "".join(Page(write_report(d).read_text()).text)
    assert "p2pdma-rig: Linux 6.12.117, profile default +CONFIG_DEBUG_VM=y" in text
    assert "patches [PATCH] PCI/P2PDMA: Clear p2pmem before mapping it to userspace" in text


def test_report_escapes_dmesg_and_shows_the_splat(warn_run):
    html = write_report(warn_run).read_text()
    page = Page(html)
    assert page.stack == [] and [cid for cid, _ in page.rows] == ["gup.longterm_benchmark_p2p", "sysfs.published"]
    assert "[    4.790342]  &lt;TASK&gt;" in html and "<TASK>" not in html
    assert "&lt;0f&gt; 0b c3" in html
    text = "".join(page.text)
    assert "Kernel splats (1)" in text and "during gup.longterm_benchmark_p2p" in text
    assert "WARNING in is_valid_gup_args" in text and "pin_user_pages+0x32/0x67" in text
    assert "exit code 1" in text


def test_report_shows_the_decoded_trace(tmp_path):
    """The splat as the runner stores it: raw text plus the real decode_stacktrace.sh output of that capture
    (recorded against the default kernel, which has no DWARF, hence the note)."""
    text = (DATA / "consoles" / "warn-gup-longterm-p2pdma.log").read_text()
    decoded = (DATA / "consoles" / "warn-gup-longterm-p2pdma.decoded.txt").read_text()
    splat = SplatRecord.of(find_splats(text)[0], 1, "gup.longterm_benchmark_p2p", decoded=decoded,
                           decoded_note="no DWARF: use --profile debug")
    failed = case("gup.longterm_benchmark_p2p", "fail", "kernel splat: WARNING in is_valid_gup_args", splats=[splat])
    d = tmp_path / "run"
    d.mkdir()
    write_run(d, [failed], [], manifest(kernel={"profile": "default"}))
    html = write_report(d).read_text()
    assert "ud2\t\t&lt;-- trapping instruction" in html and "Code starting with the faulting instruction" in html
    assert "decode_stacktrace.sh against vmlinux: no DWARF: use --profile debug" in html
    # and junit.xml carries it in the failure text, for a CI that only shows JUnit
    [tc] = [tc for suite in JUnitXml.fromfile(str(d / "junit.xml")) for tc in suite]
    [failure] = tc.result
    assert "decoded trace of WARNING in is_valid_gup_args" in failure.text
    assert "<-- trapping instruction" in failure.text


def test_not_a_run_directory(tmp_path):
    with pytest.raises(RigError, match="no results.json"):
        write_report(tmp_path)


# ---------------------------------------------------------------- the page in a real browser
CHROMIUM = shutil.which("chromium")


def chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    profile = tmp_path / "chromium-profile"
    return subprocess.run(
        ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={profile}", *args], capture_output=True, text=True, timeout=120)


def png_pixels(path: Path, max_rows: int) -> tuple[int, int, set[bytes]]:
    """Width, height and the distinct colors (RGB) of the first max_rows rows of an 8-bit RGB or RGBA PNG,
    with the standard library only (zlib + struct, PNG filters undone)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, ihdr = 8, b"", None
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + n]
        if kind == b"IHDR":
            ihdr = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + n
    width, height, depth, ctype, _, _, interlace = ihdr
    assert depth == 8 and ctype in (2, 6) and interlace == 0, ihdr
    bpp = 3 if ctype == 2 else 4
    raw, stride = zlib.decompress(idat), width * bpp
    rows, prev = [], bytes(stride)
    for y in range(min(height, max_rows)):
        f, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b, c = prev[i], prev[i - bpp] if i >= bpp else 0
            if f == 1:
                line[i] = (line[i] + a) & 0xFF
            elif f == 2:
                line[i] = (line[i] + b) & 0xFF
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 0xFF
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF
        rows.append(bytes(line))
        prev = line
    return width, height, {r[i:i + 3] for r in rows for i in range(0, stride, bpp)}


SHOTS = ROOT / "out" / "test-screenshots"  # kept for a person to look at (out/ is not committed)


def screenshot(tmp_path: Path, page: Path, name: str, height: int) -> tuple[int, int, set[bytes]]:
    png = tmp_path / f"{name}.png"
    r = chromium(tmp_path, f"--screenshot={png}", f"--window-size=1280,{height}", page.as_uri())
    assert png.is_file() and png.stat().st_size > 10_000, r.stderr[-2000:]
    SHOTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(png, SHOTS / png.name)
    return png_pixels(png, height)


def rgb(hex_color: str) -> bytes:
    return bytes.fromhex(hex_color.lstrip("#"))


# the verdicts' background and text colours of rig/report.py's CSS
BG = {"pass": "#eef8f0", "fail": "#fdecea", "xfail": "#fff5e0", "error": "#fbe7f3"}
FG = {"pass": "#1a7f37", "fail": "#cf222e", "xfail": "#9a6700", "error": "#a0115d"}


@pytest.mark.skipif(not CHROMIUM, reason="chromium is not installed (Debian package chromium; make test installs it)")
def test_report_header_failures_and_chips_in_headless_chromium(tmp_path):
    """The first screen a reader sees: the kernel in the title, the coloured chips, the failures and errors
    listed and their rows at the top of the table, each verdict in its colour. Chromium's DOM keeps every
    link's target."""
    page = write_report(real_copy(FAILURES_RUN, tmp_path))
    width, height, colors = screenshot(tmp_path, page, "report-failures-first", 900)
    assert (width, height) == (1280, 900)
    for v in ("pass", "fail", "xfail", "error"):  # chips (and rows) in their verdict's colours
        assert rgb(BG[v]) in colors and rgb(FG[v]) in colors, v
    dom = chromium(tmp_path, "--dump-dom", page.as_uri())
    rendered = Page(dom.stdout)
    assert [cid for cid, _ in rendered.rows][:2] == ["selftest.leak_mapping", "selftest.hang"]
    assert rendered.links and all(target in rendered.ids for target, _ in rendered.links)
    assert "p2pdma-rig: Linux 6.12.117, profile default" in "".join(rendered.text)


@pytest.mark.skipif(not CHROMIUM, reason="chromium is not installed (Debian package chromium; make test installs it)")
def test_diff_page_colours_its_verdict_cells_in_headless_chromium(tmp_path):
    """Diff rows are tr.change, not tr.case: their verdict cells must still get their colours."""
    page = tmp_path / "diff.html"
    page.write_text(diff_html(FAILED_RUN, PASSED_RUN))
    _, _, colors = screenshot(tmp_path, page, "diff-verdicts", 900)
    for v in ("pass", "fail", "xfail"):
        assert rgb(BG[v]) in colors and rgb(FG[v]) in colors, v
    text = "".join(Page(chromium(tmp_path, "--dump-dom", page.as_uri()).stdout).text)
    assert "mremap: expected 'OK', observed 'EINVAL'" in text and text.count("Linux 6.12.117") == 2


@pytest.mark.skipif(not CHROMIUM, reason="chromium is not installed (Debian package chromium; make test installs it)")
def test_report_renders_in_headless_chromium(warn_run, tmp_path):
    d = real_copy(FAILED_RUN, tmp_path)
    for run in (d, warn_run):
        page = write_report(run)
        png = tmp_path / f"{run.name}.png"
        r = chromium(tmp_path, f"--screenshot={png}", "--window-size=1280,2000", page.as_uri())
        assert png.is_file() and png.stat().st_size > 10_000, r.stderr[-2000:]
        width, height, colors = png_pixels(png, 400)
        assert (width, height) == (1280, 2000)
        assert len(colors) > 50, f"the screenshot looks blank: {len(colors)} colors in the top 400 rows"
        dom = chromium(tmp_path, "--dump-dom", page.as_uri())
        assert dom.returncode == 0, dom.stderr[-2000:]
        rendered = Page(dom.stdout).rows
        assert [cid for cid, _ in rendered] == [c.id for c in case_order(read_run(run).cases)]


# ---------------------------------------------------------------- diffs
ONLY_A = ["mmap.mremap_shrink", "mmap.mremap_move", "mmap.madv_dontfork", "mmap.madv_wipeonfork", "mmap.madv_free",
          "mmap.madv_remove", "mmap.map_populate", "mmap.map_locked", "fault.madv_populate_read",
          "fault.madv_populate_write"]


def test_diff_of_two_real_runs():
    changes = diff_runs(FAILED_RUN, PASSED_RUN)
    by_id = {c["id"]: (c["verdict_a"], c["verdict_b"]) for c in changes}
    assert by_id["mmap.mremap_dontunmap"] == ("fail", "pass")
    assert {i for i, (a, b) in by_id.items() if b == "-"} == set(ONLY_A)
    assert {i for i, (a, b) in by_id.items() if a == "-"} == {c["id"] for c in cases_of(PASSED_RUN)} - {
        "mmap.mremap_dontunmap"}
    assert len(changes) == 1 + 10 + 12
    assert [c["id"] for c in changes][:3] == ["mmap.mremap_shrink", "mmap.mremap_move", "mmap.mremap_dontunmap"]
    assert diff_runs(FAILED_RUN, FAILED_RUN) == []


def test_diff_text_and_html():
    text = diff_text(FAILED_RUN, PASSED_RUN)
    assert "mmap.mremap_dontunmap               fail   pass" in text
    kernel = "   kernel: Linux 6.12.117 | source debian 6.12.117-1~deb12u1 | profile default | patches none"
    assert text.splitlines()[1] == text.splitlines()[3] == kernel  # A's kernel, B's kernel
    # every change says what explains it, on each side that has something to say
    after = text.split("mmap.mremap_dontunmap               fail   pass\n", 1)[1].splitlines()
    assert after[:4] == ["    A fail: mremap: expected 'OK', observed 'EINVAL'",
                         "    A fail: available_delta: expected 0, not reported by the probe",
                         "    A fail: data_kept: expected True, not reported by the probe",
                         "    A fail: ... and 3 more (results.json)"]
    assert "    A xfail: known issue madv-populate-enomem: GUP returns -EREMOTEIO" in text
    assert "odirect.xfs_file                    -      pass" in text and "23 case(s) changed verdict" in text
    assert all(line == line.rstrip() for line in text.splitlines())
    assert "no case changed verdict" in diff_text(PASSED_RUN, PASSED_RUN)
    page = Page(diff_html(FAILED_RUN, PASSED_RUN))
    assert page.stack == [] and page.external == [] and len(page.rows) == 23
    assert [cid for cid, _ in page.rows] == [c["id"] for c in diff_runs(FAILED_RUN, PASSED_RUN)]
    html = diff_html(FAILED_RUN, PASSED_RUN)
    assert '<td class="verdict v-fail">fail</td><td class="verdict v-pass">pass</td>' in html
    assert "<li>mremap: expected &#x27;OK&#x27;, observed &#x27;EINVAL&#x27;</li>" in html
    assert html.count("Linux 6.12.117 | source debian 6.12.117-1~deb12u1 | profile default | patches none") == 2


PATCHED_RUN = RUNS / "patched"  # base's cases on the kernel with the shipped zeroing fix: leak.data_after_free xpass


def test_diff_of_two_kernels_names_both_and_explains_the_change():
    text = diff_text(BASE_RUN, PATCHED_RUN)
    lines = text.splitlines()
    assert lines[1] == "   kernel: Linux 6.12.117 | source debian 6.12.117-1~deb12u1 | profile default | patches none"
    assert lines[3] == ("   kernel: Linux 6.12.117 | source debian 6.12.117-1~deb12u1 | profile default | patches "
                        "[PATCH] PCI/P2PDMA: Clear p2pmem before mapping it to userspace")
    assert lines[5:] == [
        "case                  A      B",
        "-----------------------------------",
        "leak.data_after_free  xfail  xpass",
        "    A xfail: known issue p2pmem-not-zeroed: p2pmem_alloc_mmap() hands out genalloc memory without clearing "
        "it, so a new mapper reads the previous owner's bytes (cross-process information leak).",
        "    A xfail: sees_previous_data: expected False, observed True",
        "    B xpass: known issue p2pmem-not-zeroed did not show: the kernel may fix it",
        "1 case(s) changed verdict"]
    html = diff_html(BASE_RUN, PATCHED_RUN)
    assert '<td class="verdict v-xfail">xfail</td><td class="verdict v-xpass">xpass</td>' in html
    assert "<li>known issue p2pmem-not-zeroed did not show: the kernel may fix it</li>" in html


def test_report_of_the_patched_kernel_names_its_patch(tmp_path):
    text = "".join(Page(write_report(real_copy(PATCHED_RUN, tmp_path)).read_text()).text)
    assert "p2pdma-rig: Linux 6.12.117, profile default" in text
    assert "patches [PATCH] PCI/P2PDMA: Clear p2pmem before mapping it to userspace" in text


def test_diff_explains_errors_and_failures_of_the_later_run():
    changes = {c["id"]: c for c in diff_runs(BASE_RUN, FAILURES_RUN)}
    assert set(changes) == {"selftest.hang", "selftest.leak_mapping"}
    assert changes["selftest.hang"]["why_b"] == ["watchdog: the probe ran longer than 5s and was killed"]
    assert changes["selftest.hang"]["why_a"] == []  # not in run A
    text = diff_text(BASE_RUN, FAILURES_RUN)
    assert "selftest.hang          -      error\n    B error: watchdog: the probe ran longer than 5s" in text
    assert "    B fail: the case left the machine changed: 0000:00:04.0 p2pmem/available" in text

def rig(*argv: str) -> int:
    """What rig/cli.py does with these two commands: parse, call the handler, RigError -> message and exit 2."""
    ap = argparse.ArgumentParser(prog="rig")
    cli_report.add_parsers(ap.add_subparsers(dest="command", required=True))
    args = ap.parse_args(argv)
    try:
        return cli_report.HANDLERS[args.command](args)
    except RigError as e:
        print(f"rig: error: {e}")
        return e.exit_code


def test_cli_exit_codes_and_output(tmp_path, capsys):
    assert rig("diff", str(PASSED_RUN), str(PASSED_RUN)) == 0
    assert "no case changed verdict" in capsys.readouterr().out
    html = tmp_path / "diff.html"
    assert rig("diff", str(FAILED_RUN), str(PASSED_RUN), "--html", str(html)) == 1
    out = capsys.readouterr().out
    assert "mmap.mremap_dontunmap               fail   pass" in out and f"html: {html}" in out
    assert len(Page(html.read_text()).rows) == 23
    assert rig("diff", str(FAILED_RUN), str(tmp_path)) == 2
    assert capsys.readouterr().out == f"rig: error: {tmp_path}: not a run directory (no results.json)\n"
    d = real_copy(PASSED_RUN, tmp_path)
    assert rig("report", str(d)) == 0
    assert capsys.readouterr().out == f"{d / 'report.html'}\n" and (d / "report.html").is_file()
    assert rig("report", str(tmp_path / "missing")) == 2


def test_a_clean_console_of_a_boot_numbered_otherwise_is_no_change(tmp_path):
    """Two runs of one kernel may number their boots differently (a machine booted ahead and not used): a boot's
    passing console on one side only is no verdict change; a failing one is."""
    renumbered = tmp_path / "renumbered"
    shutil.copytree(BASE_RUN, renumbered)
    data = json.loads((renumbered / "results.json").read_text())
    [console] = [c for c in data["cases"] if c["id"] == "kernel.console.boot-1"]
    console["id"] = "kernel.console.boot-7"
    (renumbered / "results.json").write_text(json.dumps(data))
    assert diff_runs(BASE_RUN, renumbered) == []
    console["verdict"], console["reason"] = "fail", "kernel splat outside the cases: WARNING in x (outside every case)"
    (renumbered / "results.json").write_text(json.dumps(data))
    assert [(c["id"], c["verdict_a"], c["verdict_b"]) for c in diff_runs(BASE_RUN, renumbered)] == [
        ("kernel.console.boot-7", "-", "fail")]
