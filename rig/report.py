"""Reports: a run directory -> one self-contained report.html; two run directories -> the cases whose verdict
changed (plain text for a mail, or a page). Reads files, writes files, runs nothing."""
from __future__ import annotations

import json
import re
from collections import Counter
from html import escape
from pathlib import Path

from rig import behaviour_doc
from rig.judge import console_case_id
from rig.model import FAILING, VERDICTS, BootRecord, CaseResult, RunManifest, RunRecord
from rig.results import read_run
EXIT_MEANING = {0: "every case passed", 1: "a case failed or could not run", 2: "harness or configuration error",
                3: "the guest kernel crashed", 130: "interrupted"}

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;margin:0;color:#1f2328;
  background:#f6f8fa}
main{max-width:1200px;margin:0 auto;padding:20px 24px 40px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 10px;border-bottom:1px solid #d0d7de;
  padding-bottom:4px}
.sub{color:#57606a;margin:0 0 14px}
code,pre,.mono{font-family:ui-monospace,"DejaVu Sans Mono",Menlo,Consolas,monospace;font-size:12.5px}
pre{background:#fff;border:1px solid #d0d7de;border-radius:6px;padding:8px 10px;margin:6px 0;
  white-space:pre-wrap;overflow-wrap:anywhere;max-height:420px;overflow:auto}
.chips{display:flex;flex-wrap:wrap;gap:8px;align-items:center}
.chip{border-radius:14px;padding:3px 12px;font-weight:600;border:1px solid transparent}
.exit{margin-left:auto;font-weight:600;padding:4px 12px;border-radius:6px;color:#fff}
.exit.ok{background:#1a7f37}.exit.bad{background:#cf222e}
table.cases{table-layout:fixed}
table{border-collapse:collapse;width:100%;background:#fff;border:1px solid #d0d7de}
th,td{text-align:left;vertical-align:top;padding:5px 10px;border-bottom:1px solid #eaeef2}
th{background:#f0f3f6;font-weight:600}
table.kv th{width:170px;background:#f6f8fa;font-weight:600}
tr.area th{background:#e9edf2;font-size:13px}
tr.area .n{font-weight:400;color:#57606a;margin-left:8px}
th.verdict{width:64px}td.verdict{font-weight:700;text-transform:uppercase;font-size:12px}
td.num,th.num{text-align:right;white-space:nowrap;width:64px}th.time{width:80px}th.sect{width:96px}
summary{cursor:pointer}
summary .desc{color:#57606a;margin-left:8px}
details .body{margin:8px 0 4px 14px}
details .body h4{margin:10px 0 2px;font-size:12px;text-transform:uppercase;color:#57606a}
ul.mm{margin:2px 0;padding-left:20px}
.v-pass{--bg:#eef8f0;--fg:#1a7f37}.v-fail{--bg:#fdecea;--fg:#cf222e}.v-xfail{--bg:#fff5e0;--fg:#9a6700}
.v-xpass{--bg:#eef2ff;--fg:#4c44c9}.v-skip{--bg:#f2f3f5;--fg:#6e7781}.v-error{--bg:#fbe7f3;--fg:#a0115d}
.v-none{--bg:#fff;--fg:#6e7781}
tr.case{background:var(--bg)}
tr.case td.verdict,td.verdict[class*="v-"]{color:var(--fg);background:var(--bg);border-left:4px solid var(--fg)}
.chip{background:var(--bg);color:var(--fg);border-color:var(--fg);text-decoration:none}a.chip:hover{filter:brightness(.95)}
tr.case:target td,tbody:target tr.group th{outline:2px solid #0969da;outline-offset:-2px}
tr.group th{font-size:13px;color:var(--fg);background:var(--bg)}
.kernel{font-size:15px;margin:2px 0 8px}.kernel b{font-weight:600}
ul.first{margin:10px 0 0;padding:8px 12px 8px 30px;background:#fff;border:1px solid #cf222e;border-left-width:4px;
  border-radius:6px}ul.first li{margin:2px 0}ul.first .why{color:#57606a}
table.diff{max-width:none}table.diff td.why{font-size:12.5px;color:#57606a}table.diff td.why ul{margin:0;padding-left:16px}
.splat{background:#fff;border:1px solid #cf222e;border-left-width:4px;border-radius:6px;padding:8px 12px;
  margin:10px 0}
.splat h3{margin:0 0 4px;font-size:14px;color:#cf222e}
.bars{background:#fff;border:1px solid #d0d7de;border-radius:6px;padding:10px 12px}
.bar{display:grid;grid-template-columns:290px 1fr 70px;gap:8px;align-items:center;height:19px}
.bar .lbl{overflow:hidden;text-overflow:ellipsis;white-space:nowrap;font-size:12.5px}
.bar .track{background:#f0f3f6;border-radius:3px;height:12px}
.bar .fill{background:var(--fg);height:12px;border-radius:3px;min-width:2px}
.bar .val{text-align:right;font-size:12px;color:#57606a}
.muted{color:#6e7781}
"""


# ---------------------------------------------------------------- reading
def _guest_kernel(run_dir: Path) -> str:
    """The release the guest booted, from the first lines of the console ("Linux version 6.12.117 ...")."""
    for f in [run_dir / "console.log", *sorted(run_dir.glob("boot-*/console.log"))]:
        if f.is_file():
            with f.open(errors="replace") as fh:
                for _, line in zip(range(50), fh):
                    m = re.search(r"Linux version (\S+)", line)
                    if m:
                        return m.group(1)
    return ""


# ---------------------------------------------------------------- html helpers
def _e(x) -> str:
    return escape("" if x is None else str(x))


def _pre(text) -> str:
    return f"<pre>{_e(text)}</pre>"


def _json(x) -> str:
    return _pre(json.dumps(x, indent=2)) if x not in (None, {}, []) else '<span class="muted">none</span>'


def _kv(rows: list[tuple[str, str]]) -> str:
    """Two-column table; values are already HTML."""
    return '<table class="kv">' + "".join(f"<tr><th>{_e(k)}</th><td>{v}</td></tr>" for k, v in rows if v) + "</table>"


def _page(title: str, body: str) -> str:
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"><title>{_e(title)}</title>'
            f"<style>{CSS}</style></head><body><main>{body}</main></body></html>\n")


def _anchor(case_id: str) -> str:
    return f"case-{case_id}"


def _chips(summary: dict, cases: list[CaseResult]) -> str:
    """One chip per verdict, each a link: fail and error to their groups at the top of the case table, the
    others to the first case with that verdict."""
    out = []
    for v in VERDICTS:
        if not summary.get(v):
            continue
        first = next((c.id for c in cases if c.verdict == v), None)
        href = f"#{v}" if v in FAILING else (f"#{_anchor(first)}" if first else "")
        tag = f'a href="{_e(href)}"' if href else "span"
        out.append(f'<{tag} class="chip v-{v}">{summary[v]} {v}</{tag.split()[0]}>')
    return "".join(out)


def why(c: CaseResult | None, limit: int = 0) -> list[str]:
    """What explains a case's verdict: its reason, its mismatches, its splats' titles (those the reason does
    not already name). Empty for a pass. With a limit, the last line says how many more there are."""
    if not c or c.verdict == "pass" and not c.mismatches:
        return []
    lines = ([c.reason] if c.reason else []) + list(c.mismatches)
    lines += [f"splat: {s.title}" for s in c.splats if s.title and s.title not in c.reason]
    if limit and len(lines) > limit:
        lines = lines[:limit - 1] + [f"... and {len(lines) - limit + 1} more (results.json)"]
    return lines


def kernel_facts(m: RunManifest, guest_kernel: str = "") -> list[tuple[str, str]]:
    """The kernel under test, as a reader names it: release, source, profile (and extra options), patches."""
    k, src = m.kernel, m.kernel.source
    source = " ".join(x for x in (
        src.kind, src.version, Path(src.path).name if src.kind in ("tree", "tarball") and src.path else "",
        src.git_sha[:12] + (" (dirty)" if src.dirty else "") if src.git_sha else "") if x)
    profile = k.profile + "".join(f" +{o}" for o in k.kconfig_add)
    subjects = list(dict.fromkeys(p.subject or Path(p.file).name for p in k.patches))
    patches = ("; ".join(subjects) if subjects else "none") if k.key else ""
    facts = [("Linux", guest_kernel), ("source", source), ("profile", profile), ("patches", patches)]
    return [(a, b) for a, b in facts if b]


def kernel_line(m: RunManifest, guest_kernel: str = "") -> str:
    facts = kernel_facts(m, guest_kernel)
    return " | ".join(f"{a} {b}" for a, b in facts) if facts else "kernel unknown (no manifest)"


# ---------------------------------------------------------------- report sections
def _manifest_html(m: RunManifest, boots: list[BootRecord], guest_kernel: str) -> str:
    k, src, img = m.kernel, m.kernel.source, m.image
    src_text = ": ".join(_e(x) for x in (src.kind, src.id) if x)
    version = " / ".join(_e(v) for v in (guest_kernel and f"guest kernel {guest_kernel}",
                                         src.version and f"source {src.version}") if v)
    patches = "".join(f"<li>{_e(p.subject or p.file)} <span class='mono muted'>{_e(p.sha256[:16])}</span></li>"
                      for p in k.patches)
    frags = ", ".join(_e(f.name) for f in k.fragments)
    pkgs = f'<br><span class="muted">{_e(", ".join(img["packages"]))}</span>' if img.get("packages") else ""
    accel = m.accel or ", ".join(sorted({b.accel for b in boots} - {""}))
    qemu = "".join(
        f"<details><summary>boot {_e(b.boot)} &middot; topology {_e(b.topology)} &middot; {_e(b.accel)}"
        + (f" &middot; ready in {b.ready_s:.1f} s" if b.ready_s else "")
        + (f" &middot; ended: {_e(b.ended_by)}" if b.ended_by else "")
        + f"</summary>{_pre(b.qemu_cmdline)}</details>" for b in boots)
    mono = lambda text: f'<span class="mono">{_e(text)}</span>' if text else ""  # noqa: E731
    rows = [
        ("run id", mono(m.run_id)),
        ("kernel source", src_text + (f' <span class="mono muted">{_e(src.path)}</span>' if src.path else "")),
        ("kernel version", version),
        ("profile", _e(k.profile) + (f" ({frags})" if frags else "")),
        ("extra options", _e(" ".join(k.kconfig_add))),
        ("patches", f"<ol>{patches}</ol>" if patches else ('<span class="muted">none</span>' if k.key else "")),
        (".config sha256", mono(k.config_sha256)),
        ("compiler", _e(k.compiler)),
        ("reproduce kernel", mono(k.reproduce)),
        ("image", _e(" ".join(str(x) for x in (img.get("suite"), img.get("size_mb") and f"{img['size_mb']} MiB",
                                               img.get("key") and f"key {img['key']}") if x))
         + pkgs),
        ("accelerator", _e(accel)),
        ("semantics", _e(m.semantics)),
        ("host", _e(", ".join(f"{a}: {b}" for a, b in m.host.items()))),
        ("started", _e(m.started)),
        ("ended", _e(m.ended)),
        ("command", mono(" ".join(m.command))),
        ("reproduce run", mono(m.reproduce)),
        ("QEMU command line", qemu),
    ]
    return "<h2>Manifest</h2>" + _kv(rows)


def _doc_anchor(number: str) -> str:
    return "doc-" + number.replace(".", "-")


def _doc_sections(section: str) -> str:
    """Each of the case's sections as 'docs/behaviour.md § N' with its title, a link to the section's text
    further down this page (the report stands alone: a CI artifact has no repository beside it) and the
    section's path in the repository."""
    out, doc = [], behaviour_doc.sections()
    for n in behaviour_doc.section_numbers(section):
        s = doc.get(n)
        text = f"{behaviour_doc.DOC_REL} &sect; {_e(n)}"
        if s:
            text = (f'<a href="#{_e(_doc_anchor(n))}">{text}</a> {_e(s.title[len(n):].strip())} '
                    f'<span class="mono muted">{_e(behaviour_doc.link(n))}</span>')
        out.append(f"<div>{text}</div>")
    return "".join(out)


def _cited_sections_html(cases: list[CaseResult]) -> str:
    """The text of every docs/behaviour.md section the cases cite, once, in section order."""
    doc = behaviour_doc.sections()
    cited = dict.fromkeys(n for c in cases for n in behaviour_doc.section_numbers(c.section) if n in doc)
    if not cited:
        return ""
    order = [n for n in doc if n in cited]
    items = "".join(f'<details class="doc" id="{_e(_doc_anchor(n))}"><summary><b>&sect; {_e(doc[n].title)}</b>'
                    f'</summary>{_pre(doc[n].body.strip())}</details>' for n in order)
    return f"<h2>Behaviour sections cited ({len(order)}, from {behaviour_doc.DOC_REL})</h2>{items}"


def _case_row(c: CaseResult, boots: dict[int, BootRecord]) -> str:
    v = c.verdict.value
    topo = boots[c.boot].topology if c.boot in boots else ""
    mm = "".join(f"<li>{_e(x)}</li>" for x in c.mismatches)
    splats = "".join(f"<li>{_e(s.title)}{_e(s.standing_note)}</li>" for s in c.splats)
    body = [
        ("expected", _json(c.expected)),
        ("observed", _json(c.observed)),
        ("mismatches", f'<ul class="mm">{mm}</ul>' if mm else ""),
        ("reason", _e(c.reason)),
        ("known issue", _e(c.known_issue)),
        ("splats", f'<ul class="mm">{splats}</ul>' if splats else ""),
        ("dmesg during the case", _pre(c.dmesg) if c.dmesg else '<span class="muted">empty</span>'),
        ("doc section", _doc_sections(c.section) if c.section else ""),
        ("boot", f"{_e(c.boot)}" + (f" (topology {_e(topo)})" if topo else "")),
    ]
    inner = "".join(f"<h4>{_e(h)}</h4><div>{b}</div>" for h, b in body if b)
    return (f'<tr class="case v-{_e(v)}" id="{_e(_anchor(c.id))}" data-case="{_e(c.id)}">'
            f'<td class="verdict">{_e(v)}</td>'
            f'<td><details{" open" if v in ("fail", "error") else ""}><summary><code>{_e(c.id)}</code>'
            f'<span class="desc">{_e(c.description)}</span></summary><div class="body">{inner}</div>'
            f'</details></td>'
            f'<td class="num">{_e(c.section)}</td><td class="num">{c.duration_s:.3f} s</td>'
            f'<td class="num">{_e(c.boot)}</td></tr>')


GROUP_TITLE = {"fail": "Failed", "error": "Errors (the case could not run or the guest was lost)"}


def case_order(cases: list[CaseResult]) -> list[CaseResult]:
    """The order of the report's case table: failures, then errors, then the rest by area in run order."""
    return [c for v in FAILING for c in cases if c.verdict == v] + [c for c in cases if c.verdict not in FAILING]


def _failures_html(cases: list[CaseResult]) -> str:
    """Right under the counts: every failure and error, what explains it, a link to its row."""
    bad = [c for c in case_order(cases) if c.verdict in FAILING]
    if not bad:
        return ""
    items = "".join(
        f'<li><a href="#{_e(_anchor(c.id))}"><code>{_e(c.id)}</code></a> '
        f'<b class="v-{_e(c.verdict.value)}" style="color:var(--fg)">{_e(c.verdict.upper())}</b> '
        f'<span class="why">{_e("; ".join(why(c, 3)))}</span></li>' for c in bad)
    return f'<ul class="first">{items}</ul>'


def _cases_html(cases: list[CaseResult], boots: list[BootRecord]) -> str:
    by_boot = {b.boot: b for b in boots}
    groups: list[tuple[str, str, str, list[CaseResult]]] = []  # (tbody id, row class, title html, cases)
    for v in FAILING:
        cs = [c for c in cases if c.verdict == v]
        if cs:
            groups.append((v, f"area group v-{v}", _e(f"{GROUP_TITLE[v]} ({len(cs)})"), cs))
    areas: dict[str, list[CaseResult]] = {}
    for c in cases:
        if c.verdict not in FAILING:
            areas.setdefault(c.area or c.id.split(".")[0], []).append(c)
    for area, cs in areas.items():
        n = Counter(c.verdict.value for c in cs)
        counts = ", ".join(f"{n[v]} {v}" for v in VERDICTS if n[v])
        groups.append((f"area-{area}", "area", f'{_e(area)}<span class="n">{_e(counts)}</span>', cs))
    bodies = "".join(
        f'<tbody id="{_e(gid)}"><tr class="{cls}"><th colspan="5">{title}</th></tr>'
        + "".join(_case_row(c, by_boot) for c in cs) + "</tbody>" for gid, cls, title, cs in groups)
    return (f'<h2 id="cases">Cases ({len(cases)})</h2><table class="cases"><thead><tr><th class="verdict">verdict'
            f'</th><th>case <span class="muted">(click for details)</span></th><th class="num sect">&sect;</th>'
            f'<th class="num time">time</th><th class="num">boot</th></tr></thead>{bodies}</table>')


def _splats_html(run: RunRecord) -> str:
    seen, items = set(), []
    owner = {(c.boot, s.line): c.id for c in run.cases for s in c.splats}
    for s in run.splats:
        seen.add((s.boot, s.line))
        items.append((s, s.boot, owner.get((s.boot, s.line))))
    for c in run.cases:
        for s in c.splats:
            if (c.boot, s.line) not in seen:
                items.append((s, c.boot, c.id))
    if not items:
        return '<h2>Kernel splats</h2><p class="muted">None: no WARNING, BUG, Oops, KASAN, hung task or panic.</p>'
    out = [f"<h2>Kernel splats ({len(items)})</h2>"]
    for s, boot, cid in items:
        where = f"boot {_e(boot)}" + (f", during <code>{_e(cid)}</code>" if cid else ", outside any case")
        if s.decoded:
            trace = (f'<div class="muted">decoded by the tree&#39;s scripts/decode_stacktrace.sh against vmlinux'
                     f'{": " + _e(s.decoded_note) if s.decoded_note else ""}</div>{_pre(s.decoded)}')
        else:
            trace = _pre(s.text)
        out.append(f'<div class="splat"><h3>{_e(s.title)}</h3><div class="muted">{_e(s.kind)}'
                   f'{" (fatal)" if s.fatal else ""}{_e(s.standing_note)} &middot; {where}</div>{trace}</div>')
    return "".join(out)


def _durations_html(cases: list[CaseResult]) -> str:
    if not cases:
        return ""
    longest = max(c.duration_s for c in cases) or 1.0
    total = sum(c.duration_s for c in cases)
    bars = []
    for c in sorted(cases, key=lambda c: -c.duration_s):
        bars.append(f'<div class="bar v-{_e(c.verdict.value)}"><span class="lbl mono" title="{_e(c.id)}">'
                    f'{_e(c.id)}</span><span class="track"><span class="fill" style="display:block;'
                    f'width:{100 * c.duration_s / longest:.1f}%"></span></span><span class="val">'
                    f'{c.duration_s:.3f} s</span></div>')
    return (f'<h2>Durations <span class="muted" style="font-weight:400">(total {total:.2f} s, longest first)'
            f'</span></h2><div class="bars">{"".join(bars)}</div>')


def render_report(run_dir: Path | str) -> str:
    d = Path(run_dir)
    run = read_run(d)
    cases, boots, m = run.cases, run.boots, run.manifest
    summary = run.summary or dict(Counter(c.verdict.value for c in cases))
    code = run.exit_code
    exit_html = (f'<span class="exit {"ok" if code == 0 else "bad"}">exit code {_e(code)}: '
                 f'{_e(EXIT_MEANING.get(code, "unknown"))}</span>')
    guest = _guest_kernel(d)
    facts = dict(kernel_facts(m, guest))
    run_id = m.run_id or d.resolve().name  # a run of an older rig has no id: its directory's name
    title = ", ".join(x for x in (f"Linux {facts['Linux']}" if facts.get("Linux") else facts.get("source", ""),
                                 facts.get("profile") and f"profile {facts['profile']}") if x) or run_id
    kernel = " &middot; ".join(f"{_e(a)} <b>{_e(b)}</b>" for a, b in kernel_facts(m, guest) if a != "Linux")
    header = (f"<h1>p2pdma-rig: {_e(title)}</h1>"
              + (f'<p class="kernel">{kernel}</p>' if kernel else "")
              + f'<p class="sub">run <code>{_e(run_id)}</code> &middot; {len(cases)} cases &middot; '
              f'{len(boots)} boot(s)'
              + (f" &middot; {_e(m.started)} &ndash; {_e(m.ended)}" if m.started else "")
              + f'</p><div class="chips">{_chips(summary, cases)}{exit_html}</div>' + _failures_html(cases))
    body = (header + _cases_html(cases, boots) + _splats_html(run) + _durations_html(cases)
            + _manifest_html(m, boots, guest) + _cited_sections_html(cases))
    return _page(f"p2pdma-rig {title} ({run_id})", body)


def write_report(run_dir: Path | str) -> Path:
    """Write <run_dir>/report.html (self-contained: inline CSS, no script, no external resource)."""
    out = Path(run_dir) / "report.html"
    out.write_text(render_report(run_dir))
    return out


# ---------------------------------------------------------------- diffs
def diff_runs(run_a: Path | str, run_b: Path | str) -> list[dict]:
    """Cases whose verdict differs between two runs, in run A's order then run B's; a case present in one run
    only counts as changed, with verdict "-" on the other side (but for a boot's clean console). Each change
    carries what explains each side's verdict (`why_a`, `why_b`: reason, mismatches, splats; empty for a pass
    or an absent case)."""
    ca = {c.id: c for c in read_run(run_a).cases}
    cb = {c.id: c for c in read_run(run_b).cases}
    out = []
    for i in list(ca) + [i for i in cb if i not in ca]:
        a, b = ca.get(i), cb.get(i)
        va, vb = (a.verdict.value if a else "-"), (b.verdict.value if b else "-")
        # boots are numbered as they come (a machine booted ahead and not used, a second boot after a crash):
        # a clean console of a boot the other run did not number so is no change of verdict
        if i.startswith(console_case_id(0)[:-1]) and {va, vb} == {"pass", "-"}:
            continue
        if va != vb:
            out.append({"id": i, "verdict_a": va, "verdict_b": vb, "why_a": why(a), "why_b": why(b)})
    return out


def _run_facts(run: Path | str) -> tuple[str, str]:
    """(the run's counts line, its kernel line)."""
    record = read_run(run)
    s = record.summary
    counts = " ".join(f"{v}:{s[v]}" for v in VERDICTS if s.get(v))
    return (f"{run}  ({len(record.cases)} cases, {counts}, exit {record.exit_code})",
            kernel_line(record.manifest, _guest_kernel(Path(run))))


WHY_LINES = 4  # per side and change in the text table; results.json has them all


def diff_text(run_a: Path | str, run_b: Path | str, changes: list[dict] | None = None) -> str:
    """A plain table of the changed cases, for a terminal or a mail: both runs and their kernels, then each
    change with what explains it on each side (A's and B's reason or mismatches)."""
    changes = diff_runs(run_a, run_b) if changes is None else changes
    lines = []
    for label, run in (("A", run_a), ("B", run_b)):
        counts, kernel = _run_facts(run)
        lines += [f"{label}: {counts}", f"   kernel: {kernel}"]
    lines.append("")
    if not changes:
        return "\n".join(lines + ["no case changed verdict"]) + "\n"
    w = max(len("case"), *(len(c["id"]) for c in changes))
    lines.append(f"{'case':<{w}}  {'A':<6} B")
    lines.append("-" * (w + 15))
    for c in changes:
        lines.append(f"{c['id']:<{w}}  {c['verdict_a']:<6} {c['verdict_b']}")
        for side in ("a", "b"):
            ws = c.get(f"why_{side}") or []
            if len(ws) > WHY_LINES:
                ws = ws[:WHY_LINES - 1] + [f"... and {len(ws) - WHY_LINES + 1} more (results.json)"]
            lines += [f"    {side.upper()} {c[f'verdict_{side}']}: {x}".rstrip() for x in ws]
    lines.append(f"{len(changes)} case(s) changed verdict")
    return "\n".join(lines) + "\n"


def diff_html(run_a: Path | str, run_b: Path | str, changes: list[dict] | None = None) -> str:
    """The same as diff_text, as a self-contained page: verdict cells coloured as in report.html."""
    changes = diff_runs(run_a, run_b) if changes is None else changes
    runs = []
    for label, run in (("A", run_a), ("B", run_b)):
        counts, kernel = _run_facts(run)
        runs.append(f'<tr><th>{label}</th><td class="mono">{_e(counts)}</td></tr>'
                    f'<tr><th>{label}: kernel</th><td>{_e(kernel)}</td></tr>')
    head = f'<table class="kv">{"".join(runs)}</table>'

    def cell(v: str) -> str:
        return f'<td class="verdict v-{_e(v) if v in VERDICTS else "none"}">{_e(v)}</td>'

    def explain(ws: list[str]) -> str:
        return f'<td class="why"><ul>{"".join(f"<li>{_e(x)}</li>" for x in ws)}</ul></td>' if ws else \
            '<td class="why"></td>'

    if changes:
        rows = "".join(f'<tr class="change" data-case="{_e(c["id"])}" id="{_e(_anchor(c["id"]))}">'
                       f'<td><code>{_e(c["id"])}</code></td>{cell(c["verdict_a"])}{cell(c["verdict_b"])}'
                       f'{explain(c.get("why_a") or [])}{explain(c.get("why_b") or [])}</tr>' for c in changes)
        table = (f'<h2>{len(changes)} case(s) changed verdict</h2><table class="cases diff"><thead><tr>'
                 f'<th style="width:30%">case</th><th class="verdict">A</th><th class="verdict">B</th>'
                 f'<th>why A</th><th>why B</th></tr></thead><tbody>{rows}</tbody></table>')
    else:
        table = "<h2>No case changed verdict</h2>"
    return _page("p2pdma-rig diff", "<h1>p2pdma-rig: verdict changes</h1>" + head + table)
