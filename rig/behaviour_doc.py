"""docs/behaviour.md, the behaviour reference the cases cite: its numbered sections, their GitHub anchors and
the text under each. Pure (reads one file)."""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from rig.config import REPO_ROOT

DOC_REL = "docs/behaviour.md"
BEHAVIOUR_DOC = REPO_ROOT / DOC_REL

# "## 1.2 mmap of p2pmem/allocate": a heading that starts with its section number
_HEADING = re.compile(r"^(#{1,6})\s+(\d+(?:\.\d+)*)\.?\s+(.*?)\s*#*\s*$")
_ANY_HEADING = re.compile(r"^#{1,6}\s")


@dataclass(frozen=True)
class Section:
    number: str
    title: str  # the whole heading text, number included
    anchor: str  # GitHub's anchor for the heading
    body: str  # the text up to the next numbered heading


def section_numbers(section: str) -> list[str]:
    """'1.4, 8.1' -> ['1.4', '8.1'] (a case's `section:` value)."""
    return [s.strip() for s in str(section).split(",") if s.strip()]


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"<[^>]+>", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def parse(text: str) -> dict[str, Section]:
    """Numbered sections of the document, in order. Fenced code blocks are not headings."""
    out: dict[str, Section] = {}
    seen: dict[str, int] = {}
    current: tuple[str, str, str] | None = None
    body: list[str] = []
    fenced = False

    def close():
        if current:
            out.setdefault(current[0], Section(current[0], current[1], current[2], "\n".join(body)))

    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        heading = None if fenced else _ANY_HEADING.match(line)
        if heading:
            title = line.lstrip("#").strip()
            anchor = github_anchor(title)
            n = seen.get(anchor, 0)
            seen[anchor] = n + 1
            if n:
                anchor = f"{anchor}-{n}"
            m = _HEADING.match(line)
            if m:
                close()
                current, body = (m.group(2), title, anchor), []
                continue
        body.append(line)
    close()
    return out


@lru_cache(maxsize=4)
def _load(path: str, mtime: float) -> dict[str, Section]:
    return parse(Path(path).read_text())


def sections(path: Path = BEHAVIOUR_DOC) -> dict[str, Section]:
    """The numbered sections of docs/behaviour.md; {} if the file is missing."""
    try:
        return _load(str(path), path.stat().st_mtime)
    except OSError:
        return {}


def link(number: str, path: Path = BEHAVIOUR_DOC) -> str:
    """'docs/behaviour.md#12-mmap-of-p2pmemallocate' for section '1.2' (the bare path if it has no heading)."""
    s = sections(path).get(number)
    return f"{DOC_REL}#{s.anchor}" if s else DOC_REL
