"""Reports: a run directory -> one self-contained report.html; two run directories -> the cases whose verdict
changed (plain text for a mail, or a page). Reads files, writes files, runs nothing."""
from __future__ import annotations

import json
import re
from collections import Counter
from html import escape
from pathlib import Path

from rig import behaviour_doc
from rig.errors import RigError
from rig.model import FAILING, VERDICTS, splat_standing
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
def load_run(run_dir: Path | str) -> dict:
    """results.json of a run directory, with `manifest` taken from manifest.json when that exists."""
    d = Path(run_dir)
    f = d / "results.json"
    if not f.is_file():
        raise RigError(f"{d}: not a run directory (no results.json)")
    try:
        data = json.loads(f.read_text())
    except (OSError, ValueError) as e:
        raise RigError(f"{f}: unreadable: {e}") from e
    if not isinstance(data, dict) or not isinstance(data.get("cases"), list):
        raise RigError(f"{f}: no case list; not a results.json written by `rig run`")
    m = d / "manifest.json"
    if m.is_file():
        try:
            data["manifest"] = json.loads(m.read_text())
        except ValueError:
            pass
    data.setdefault("manifest", {})
    return data


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


def _chips(summary: dict, cases: list[dict]) -> str:
    """One chip per verdict, each a link: fail and error to their groups at the top of the case table, the
    others to the first case with that verdict."""
    out = []
    for v in VERDICTS:
        if not summary.get(v):
            continue
        first = next((c.get("id") for c in cases if c.get("verdict") == v), None)
        href = f"#{v}" if v in FAILING else (f"#{_anchor(first)}" if first else "")
        tag = f'a href="{_e(href)}"' if href else "span"
        out.append(f'<{tag} class="chip v-{v}">{summary[v]} {v}</{tag.split()[0]}>')
    return "".join(out)


def why(c: dict | None, limit: int = 0) -> list[str]:
    """What explains a case's verdict: its reason, its mismatches, its splats' titles (those the reason does
    not already name). Empty for a pass. With a limit, the last line says how many more there are."""
    if not c or c.get("verdict") == "pass" and not c.get("mismatches"):
        return []
    reason = c.get("reason") or ""
    lines = ([reason] if reason else []) + list(c.get("mismatches") or [])
    lines += [f"splat: {s.get('title')}" for s in c.get("splats") or [] if s.get("title") and s["title"] not in reason]
    if limit and len(lines) > limit:
        lines = lines[:limit - 1] + [f"... and {len(lines) - limit + 1} more (results.json)"]
    return lines


def kernel_facts(m: dict, guest_kernel: str = "") -> list[tuple[str, str]]:
    """The kernel under test, as a reader names it: release, source, profile (and extra options), patches."""
    k = m.get("kernel") or {}
    src = k.get("source") or {}
    where = src.get("path") or src.get("tarball") or src.get("tree") or ""
    source = " ".join(x for x in (
        src.get("kind", ""), src.get("version", ""),
        Path(where).name if src.get("kind") in ("tree", "tarball") and where else "",
        (src.get("git_sha") or "")[:12] + (" (dirty)" if src.get("dirty") else "") if src.get("git_sha") else "") if x)
    profile = (k.get("profile") or "") + "".join(f" +{o}" for o in k.get("kconfig_add") or [])
    subjects = list(dict.fromkeys(p.get("subject") or Path(p.get("file", "")).name for p in k.get("patches") or []))
    patches = ("; ".join(subjects) if subjects else "none") if k else ""
    facts = [("Linux", guest_kernel), ("source", source), ("profile", profile), ("patches", patches)]
    return [(a, b) for a, b in facts if b]


def kernel_line(m: dict, guest_kernel: str = "") -> str:
    facts = kernel_facts(m, guest_kernel)
    return " | ".join(f"{a} {b}" for a, b in facts) if facts else "kernel unknown (no manifest)"


# ---------------------------------------------------------------- report sections
def _manifest_html(m: dict, boots: list[dict], guest_kernel: str) -> str:
    k = m.get("kernel") or {}
    src = k.get("source") or {}
    src_text = ": ".join(_e(src.get(x)) for x in ("kind", "id") if src.get(x))
    src_path = src.get("path") or src.get("tarball") or src.get("tree") or ""
    version = " / ".join(_e(v) for v in (guest_kernel and f"guest kernel {guest_kernel}",
                                         src.get("version") and f"source {src['version']}") if v)
    patches = "".join(f"<li>{_e(p.get('subject') or p.get('file'))} <span class='mono muted'>"
                      f"{_e((p.get('sha256') or '')[:16])}</span></li>" for p in k.get("patches") or [])
    frags = ", ".join(_e(f.get("name")) for f in k.get("fragments") or [])
    img = m.get("image") or {}
    pkgs = f'<br><span class="muted">{_e(", ".join(img["packages"]))}</span>' if img.get("packages") else ""
    host = m.get("host") or {}
    accel = m.get("accel") or ", ".join(sorted({b.get("accel", "") for b in boots} - {""}))
    qemu = "".join(
        f"<details><summary>boot {_e(b.get('boot'))} &middot; topology {_e(b.get('topology'))} &middot; "
        f"{_e(b.get('accel'))}" + (f" &middot; ready in {b['ready_s']:.1f} s" if b.get("ready_s") else "")
        + (f" &middot; ended: {_e(b.get('ended_by'))}" if b.get("ended_by") else "")
        + f"</summary>{_pre(b.get('qemu_cmdline', ''))}</details>" for b in boots)
    command = m.get("command")
    rows = [
        ("kernel source", src_text + (f' <span class="mono muted">{_e(src_path)}</span>' if src_path else "")),
        ("kernel version", version),
        ("profile", _e(k.get("profile")) + (f" ({frags})" if frags else "")),
        ("extra options", _e(" ".join(k.get("kconfig_add") or []))),
        ("patches", f"<ol>{patches}</ol>" if patches else ('<span class="muted">none</span>' if k else "")),
        (".config sha256", f'<span class="mono">{_e(k.get("config_sha256"))}</span>' if k.get("config_sha256") else ""),
        ("compiler", _e(k.get("compiler"))),
        ("reproduce kernel", f'<span class="mono">{_e(k.get("reproduce"))}</span>' if k.get("reproduce") else ""),
        ("image", _e(" ".join(str(x) for x in (img.get("suite"), img.get("size_mb") and f"{img['size_mb']} MiB",
                                               img.get("key") and f"key {img['key']}") if x))
         + pkgs),
        ("accelerator", _e(accel)),
        ("semantics", _e(m.get("semantics"))),
        ("host", _e(", ".join(f"{a}: {b}" for a, b in host.items()))),
        ("started", _e(m.get("started"))),
        ("ended", _e(m.get("ended"))),
        ("command", f'<span class="mono">{_e(" ".join(command) if isinstance(command, list) else command)}</span>'
         if command else ""),
        ("reproduce run", f'<span class="mono">{_e(m.get("reproduce"))}</span>' if m.get("reproduce") else ""),
        ("QEMU command line", qemu),
    ]
    return "<h2>Manifest</h2>" + _kv(rows)


def _doc_sections(section: str) -> str:
    """Each of the case's sections as 'docs/behaviour.md § N' with its title and repository-relative anchor;
    a file:// link to this checkout's copy when there is one (a run directory has no path to the repository)."""
    out, doc = [], behaviour_doc.sections()
    for n in behaviour_doc.section_numbers(section):
        s = doc.get(n)
        text = f"{behaviour_doc.DOC_REL} &sect; {_e(n)}"
        if s and behaviour_doc.BEHAVIOUR_DOC.is_file():
            text = f'<a href="{_e(behaviour_doc.BEHAVIOUR_DOC.as_uri())}#{_e(s.anchor)}">{text}</a>'
        if s:
            text += f' {_e(s.title[len(n):].strip())} <span class="mono muted">{_e(behaviour_doc.link(n))}</span>'
        out.append(f"<div>{text}</div>")
    return "".join(out)


def _case_row(c: dict, boots: dict) -> str:
    v = c.get("verdict", "")
    boot = c.get("boot")
    topo = (boots.get(boot) or {}).get("topology")
    mm = "".join(f"<li>{_e(x)}</li>" for x in c.get("mismatches") or [])
    splats = "".join(f"<li>{_e(s.get('title'))}</li>" for s in c.get("splats") or [])
    body = [
        ("expected", _json(c.get("expected"))),
        ("observed", _json(c.get("observed"))),
        ("mismatches", f'<ul class="mm">{mm}</ul>' if mm else ""),
        ("reason", _e(c.get("reason"))),
        ("known issue", _e(c.get("known_issue"))),
        ("splats", f'<ul class="mm">{splats}</ul>' if splats else ""),
        ("dmesg during the case", _pre(c["dmesg"]) if c.get("dmesg") else '<span class="muted">empty</span>'),
        ("doc section", _doc_sections(c["section"]) if c.get("section") else ""),
        ("boot", f"{_e(boot)}" + (f" (topology {_e(topo)})" if topo else "")),
    ]
    inner = "".join(f"<h4>{_e(h)}</h4><div>{b}</div>" for h, b in body if b)
    return (f'<tr class="case v-{_e(v)}" id="{_e(_anchor(c.get("id")))}" data-case="{_e(c.get("id"))}">'
            f'<td class="verdict">{_e(v)}</td>'
            f'<td><details{" open" if v in ("fail", "error") else ""}><summary><code>{_e(c.get("id"))}</code>'
            f'<span class="desc">{_e(c.get("description"))}</span></summary><div class="body">{inner}</div>'
            f'</details></td>'
            f'<td class="num">{_e(c.get("section"))}</td><td class="num">{float(c.get("duration_s") or 0):.3f} s</td>'
            f'<td class="num">{_e(boot)}</td></tr>')


GROUP_TITLE = {"fail": "Failed", "error": "Errors (the case could not run or the guest was lost)"}


def case_order(cases: list[dict]) -> list[dict]:
    """The order of the report's case table: failures, then errors, then the rest by area in run order."""
    return [c for v in FAILING for c in cases if c.get("verdict") == v] + [
        c for c in cases if c.get("verdict") not in FAILING]


def _failures_html(cases: list[dict]) -> str:
    """Right under the counts: every failure and error, what explains it, a link to its row."""
    bad = [c for c in case_order(cases) if c.get("verdict") in FAILING]
    if not bad:
        return ""
    items = "".join(
        f'<li><a href="#{_e(_anchor(c.get("id")))}"><code>{_e(c.get("id"))}</code></a> '
        f'<b class="v-{_e(c.get("verdict"))}" style="color:var(--fg)">{_e(str(c.get("verdict")).upper())}</b> '
        f'<span class="why">{_e("; ".join(why(c, 3)))}</span></li>' for c in bad)
    return f'<ul class="first">{items}</ul>'


def _cases_html(cases: list[dict], boots: list[dict]) -> str:
    by_boot = {b.get("boot"): b for b in boots}
    groups: list[tuple[str, str, str, list[dict]]] = []  # (tbody id, row class, title html, cases)
    for v in FAILING:
        cs = [c for c in cases if c.get("verdict") == v]
        if cs:
            groups.append((v, f"area group v-{v}", _e(f"{GROUP_TITLE[v]} ({len(cs)})"), cs))
    areas: dict[str, list[dict]] = {}
    for c in cases:
        if c.get("verdict") not in FAILING:
            areas.setdefault(c.get("area") or str(c.get("id", "")).split(".")[0], []).append(c)
    for area, cs in areas.items():
        n = Counter(c.get("verdict") for c in cs)
        counts = ", ".join(f"{n[v]} {v}" for v in VERDICTS if n[v])
        groups.append((f"area-{area}", "area", f'{_e(area)}<span class="n">{_e(counts)}</span>', cs))
    bodies = "".join(
        f'<tbody id="{_e(gid)}"><tr class="{cls}"><th colspan="5">{title}</th></tr>'
        + "".join(_case_row(c, by_boot) for c in cs) + "</tbody>" for gid, cls, title, cs in groups)
    return (f'<h2 id="cases">Cases ({len(cases)})</h2><table class="cases"><thead><tr><th class="verdict">verdict'
            f'</th><th>case <span class="muted">(click for details)</span></th><th class="num sect">&sect;</th>'
            f'<th class="num time">time</th><th class="num">boot</th></tr></thead>{bodies}</table>')


def _splats_html(data: dict) -> str:
    seen, items = set(), []
    owner = {(c.get("boot"), s.get("line")): c.get("id") for c in data["cases"] for s in c.get("splats") or []}
    for s in data.get("splats") or []:
        seen.add((s.get("boot"), s.get("line")))
        items.append((s, s.get("boot"), owner.get((s.get("boot"), s.get("line")))))
    for c in data["cases"]:
        for s in c.get("splats") or []:
            if (c.get("boot"), s.get("line")) not in seen:
                items.append((s, c.get("boot"), c.get("id")))
    if not items:
        return '<h2>Kernel splats</h2><p class="muted">None: no WARNING, BUG, Oops, KASAN, hung task or panic.</p>'
    out = [f"<h2>Kernel splats ({len(items)})</h2>"]
    for s, boot, cid in items:
        where = f"boot {_e(boot)}" + (f", during <code>{_e(cid)}</code>" if cid else ", outside any case")
        if s.get("decoded"):
            trace = (f'<div class="muted">decoded by the tree&#39;s scripts/decode_stacktrace.sh against vmlinux'
                     f'{": " + _e(s["decoded_note"]) if s.get("decoded_note") else ""}</div>{_pre(s["decoded"])}')
        else:
            trace = _pre(s.get("text", ""))
        standing = splat_standing(s.get("allowed", False), s.get("known_issue", ""))
        out.append(f'<div class="splat"><h3>{_e(s.get("title"))}</h3><div class="muted">{_e(s.get("kind"))}'
                   f'{" (fatal)" if s.get("fatal") else ""}{_e(standing)} &middot; {where}</div>{trace}</div>')
    return "".join(out)


def _durations_html(cases: list[dict]) -> str:
    if not cases:
        return ""
    longest = max(float(c.get("duration_s") or 0) for c in cases) or 1.0
    total = sum(float(c.get("duration_s") or 0) for c in cases)
    bars = []
    for c in sorted(cases, key=lambda c: -float(c.get("duration_s") or 0)):
        d = float(c.get("duration_s") or 0)
        bars.append(f'<div class="bar v-{_e(c.get("verdict"))}"><span class="lbl mono" title="{_e(c.get("id"))}">'
                    f'{_e(c.get("id"))}</span><span class="track"><span class="fill" style="display:block;'
                    f'width:{100 * d / longest:.1f}%"></span></span><span class="val">{d:.3f} s</span></div>')
    return (f'<h2>Durations <span class="muted" style="font-weight:400">(total {total:.2f} s, longest first)'
            f'</span></h2><div class="bars">{"".join(bars)}</div>')


def render_report(run_dir: Path | str) -> str:
    d = Path(run_dir)
    data = load_run(d)
    cases, boots, m = data["cases"], data.get("boots") or [], data["manifest"]
    summary = data.get("summary") or dict(Counter(c.get("verdict") for c in cases))
    code = data.get("exit_code")
    exit_html = (f'<span class="exit {"ok" if code == 0 else "bad"}">exit code {_e(code)}: '
                 f'{_e(EXIT_MEANING.get(code, "unknown"))}</span>' if code is not None else "")
    guest = _guest_kernel(d)
    facts = dict(kernel_facts(m, guest))
    title = ", ".join(x for x in (f"Linux {facts['Linux']}" if facts.get("Linux") else facts.get("source", ""),
                                 facts.get("profile") and f"profile {facts['profile']}") if x) or d.resolve().name
    kernel = " &middot; ".join(f"{_e(a)} <b>{_e(b)}</b>" for a, b in kernel_facts(m, guest) if a != "Linux")
    header = (f"<h1>p2pdma-rig: {_e(title)}</h1>"
              + (f'<p class="kernel">{kernel}</p>' if kernel else "")
              + f'<p class="sub">run <code>{_e(d.resolve().name)}</code> &middot; {len(cases)} cases &middot; '
              f'{len(boots)} boot(s)'
              + (f" &middot; {_e(m['started'])} &ndash; {_e(m.get('ended', ''))}" if m.get("started") else "")
              + f'</p><div class="chips">{_chips(summary, cases)}{exit_html}</div>' + _failures_html(cases))
    body = (header + _cases_html(cases, boots) + _splats_html(data) + _durations_html(cases)
            + _manifest_html(m, boots, guest))
    return _page(f"p2pdma-rig {title} ({d.resolve().name})", body)


def write_report(run_dir: Path | str) -> Path:
    """Write <run_dir>/report.html (self-contained: inline CSS, no script, no external resource)."""
    out = Path(run_dir) / "report.html"
    out.write_text(render_report(run_dir))
    return out


# ---------------------------------------------------------------- diffs
def diff_runs(run_a: Path | str, run_b: Path | str) -> list[dict]:
    """Cases whose verdict differs between two runs, in run A's order then run B's; a case present in one run
    only counts as changed, with verdict "-" on the other side. Each change carries what explains each side's
    verdict (`why_a`, `why_b`: reason, mismatches, splats; empty for a pass or an absent case)."""
    ca = {c["id"]: c for c in load_run(run_a)["cases"]}
    cb = {c["id"]: c for c in load_run(run_b)["cases"]}
    out = []
    for i in list(ca) + [i for i in cb if i not in ca]:
        a, b = ca.get(i), cb.get(i)
        va, vb = (a or {}).get("verdict", "-"), (b or {}).get("verdict", "-")
        if va != vb:
            out.append({"id": i, "verdict_a": va, "verdict_b": vb, "why_a": why(a), "why_b": why(b)})
    return out


def _run_facts(run: Path | str) -> tuple[str, str]:
    """(the run's counts line, its kernel line)."""
    data = load_run(run)
    s = data.get("summary") or {}
    counts = " ".join(f"{v}:{s[v]}" for v in VERDICTS if s.get(v))
    return (f"{run}  ({len(data['cases'])} cases, {counts}, exit {data.get('exit_code')})",
            kernel_line(data["manifest"], _guest_kernel(Path(run))))


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
