"""README.md and docs/*.md: every relative link and anchor resolves (GitHub's anchors) and
every table renders (as many cells in the header as in the delimiter row)."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Dict, List, Set, Tuple

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

_FENCE = re.compile(r"^\s*(```|~~~)")
_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1")
_DELIMITER_CELL = re.compile(r"^\s*:?-+:?\s*$")


def prose_lines(text: str) -> List[Tuple[int, str]]:
    """``(line number, line)`` of the lines outside fenced code blocks."""
    out, fenced = [], False
    for n, line in enumerate(text.splitlines(), 1):
        if _FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            out.append((n, line))
    return out


def github_anchor(heading: str) -> str:
    """GitHub's anchor of a heading's text: markup and punctuation dropped (``-`` and ``_``
    kept), lower case, each space a ``-``."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link: its text
    text = text.replace("`", "").strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> Set[str]:
    """Every anchor of a markdown file (repeated headings get ``-1``, ``-2``, ... as on GitHub)."""
    seen: Dict[str, int] = {}
    out = set()
    for _, line in prose_lines(path.read_text()):
        m = re.match(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$", line)
        if not m:
            continue
        base = github_anchor(m.group(2))
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    out |= set(re.findall(r'<a\s+(?:name|id)="([^"]+)"', path.read_text()))
    return out


def links(path: Path) -> List[Tuple[int, str]]:
    """``(line number, target)`` of the inline links and images outside code."""
    out = []
    for n, line in prose_lines(path.read_text()):
        for m in _LINK.finditer(_CODE_SPAN.sub("", line)):
            out.append((n, m.group(1)))
    return out


def broken_links(path: Path) -> List[str]:
    """The relative links of ``path`` whose file or anchor does not exist."""
    bad = []
    for n, target in links(path):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE):  # http:, https:, mailto:, ...
            continue
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        if not dest.exists():
            bad.append(f"{path.name}:{n}: {target} (no such file)")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            bad.append(f"{path.name}:{n}: {target} (no such anchor in {dest.name})")
    return bad


def table_cells(row: str) -> int:
    """The cells of a table row: split at ``|`` outside code spans, not ``\\|``; the outer
    pipes open and close the row."""
    text = _CODE_SPAN.sub(lambda m: "x" * len(m.group(0)), row.strip())
    parts = re.split(r"(?<!\\)\|", text)
    if parts and not parts[0].strip():
        parts = parts[1:]
    if parts and not parts[-1].strip():
        parts = parts[:-1]
    return len(parts)


def broken_tables(path: Path) -> List[str]:
    """The tables of ``path`` whose header row and delimiter row differ in cell count."""
    lines = prose_lines(path.read_text())
    bad = []
    for (n, head), (m, delim) in zip(lines, lines[1:]):
        if m != n + 1 or "|" not in head or "-" not in delim or "|" not in delim:
            continue
        cells = [c for c in re.split(r"(?<!\\)\|", delim.strip().strip("|"))]
        if not all(_DELIMITER_CELL.match(c) for c in cells):
            continue
        if table_cells(head) != table_cells(delim):
            bad.append(f"{path.name}:{n}: {table_cells(head)} header cells, {table_cells(delim)} in the delimiter row")
    return bad


def test_the_checks_find_what_they_look_for(tmp_path):
    doc = tmp_path / "a.md"
    doc.write_text("# Results on `../shared/data/x-mini`\n\n## Same\n\n## Same\n\n"
                   "[ok](#results-on-shareddatax-mini) [ok](#same-1) [bad](#results-on-sharedatax-mini)\n"
                   "[missing](b.md) ![img](a.md) [web](https://example.com/x)\n\n"
                   "| a | b `x|y` |\n|---|---|\n\n| a | b |\n|---|---|---|\n\n```\n[no](nowhere.md)\n```\n")
    assert broken_links(doc) == ["a.md:7: #results-on-sharedatax-mini (no such anchor in a.md)",
                                 "a.md:8: b.md (no such file)"]
    assert broken_tables(doc) == ["a.md:13: 2 header cells, 3 in the delimiter row"]


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.name)
def test_every_relative_link_and_anchor_resolves(path):
    assert not broken_links(path), "\n".join(broken_links(path))


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.name)
def test_every_table_renders(path):
    assert not broken_tables(path), "\n".join(broken_tables(path))
