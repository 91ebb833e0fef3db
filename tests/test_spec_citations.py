"""Every "SPEC §n" cited in the tree (.py, .md, .ts, .mjs) names a section of docs/spec.md that exists.

"SPEC §3" means section 3 of docs/spec.md, "SPEC §3 "Resume"" its subsection
headed *Resume* (docs/spec.md says so at its top). A list such as
``(SPEC §3 "Resume", §6 1012, §7 close)`` cites each of its sections. Links
``spec.md#anchor`` must name an anchor the page defines.
"""

from __future__ import annotations

import pathlib
import re

import attrs
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
SPEC = ROOT / "docs" / "spec.md"
SCANNED = ("wscore", "actors", "sandbox", "loadtests", "tests", "examples", "benchmarks", "docs",
           "clients")
EXTENSIONS = ("*.py", "*.md", "*.ts", "*.mjs")

_SECTION = re.compile(r"^## (\d+)\. (.+)$")
_SUBSECTION = re.compile(r"^### (.+)$")
_ANCHOR = re.compile(r'<a id="([^"]+)"></a>')
#: A citation starts at "SPEC §" and runs to the end of its clause (a closing
#: parenthesis, a full stop, a blank line; 200 characters at most), so the further
#: "§m" of a list are included. A subsection name follows its number on the same line.
_CITATION = re.compile(r"SPEC\s*§")
_CLAUSE_END = re.compile(r"\)|\.\s|\.$|\n\s*\n")
_REF = re.compile(r"(RFC\s*\d+\s*)?§\s*(\d+)(?:\.\d+)?(?:[ \t]*[\"“']([^\s\"”'][^\"”'\n]{0,59})[\"”'])?")
_LINK = re.compile(r"spec\.md#([A-Za-z0-9_-]+)")


@attrs.frozen
class Spec:
    sections: dict[int, str]
    subsections: dict[int, frozenset[str]]
    anchors: frozenset[str]


def parse_spec(text: str) -> Spec:
    sections: dict[int, str] = {}
    subsections: dict[int, set[str]] = {}
    anchors: list[str] = []
    current: int | None = None
    for line in text.splitlines():
        anchors.extend(_ANCHOR.findall(line))
        if m := _SECTION.match(line):
            current = int(m.group(1))
            assert current not in sections, f"§{current} is defined twice"
            sections[current] = m.group(2)
            subsections[current] = set()
        elif (m := _SUBSECTION.match(line)) and current is not None:
            subsections[current].add(m.group(1).strip().lower())
    assert len(anchors) == len(set(anchors)), "an anchor is defined twice"
    return Spec(sections, {n: frozenset(s) for n, s in subsections.items()}, frozenset(anchors))


def citations(text: str) -> list[tuple[int, str | None]]:
    """The (section, subsection name or None) pairs that ``text`` cites."""
    found: list[tuple[int, str | None]] = []
    starts = [m.start() for m in _CITATION.finditer(text)]
    for i, start in enumerate(starts):
        clause = text[start:min(start + 200, *starts[i + 1:i + 2], len(text))]
        end = _CLAUSE_END.search(clause)
        for ref in _REF.finditer(clause[:end.start()] if end else clause):
            if ref.group(1):  # "RFC 6455 §5.2" is another document
                continue
            found.append((int(ref.group(2)), ref.group(3)))
    return found


def unresolved(spec: Spec, cited: list[tuple[int, str | None]]) -> list[str]:
    missing = []
    for number, name in cited:
        if number not in spec.sections:
            missing.append(f"§{number}")
        elif name is not None and name.strip().lower() not in spec.subsections[number]:
            missing.append(f'§{number} "{name}"')
    return missing


def scanned_files() -> list[pathlib.Path]:
    files = [ROOT / "README.md"]
    for top in SCANNED:
        for ext in EXTENSIONS:
            files.extend(p for p in (ROOT / top).rglob(ext)
                         if ".venv" not in p.parts and "node_modules" not in p.parts)
    # This file holds deliberately unresolvable examples (the test that it can fail).
    return sorted(set(files) - {pathlib.Path(__file__).resolve()})


@pytest.fixture(scope="module")
def spec() -> Spec:
    return parse_spec(SPEC.read_text(encoding="utf-8"))


def test_sections_are_numbered_in_order_and_anchored(spec: Spec) -> None:
    assert sorted(spec.sections) == list(range(1, len(spec.sections) + 1))
    text = SPEC.read_text(encoding="utf-8")
    for number in spec.sections:
        # The stable anchor sits right before its heading (a blank line between).
        assert re.search(rf'<a id="s{number}"></a>\n\n## {number}\. ', text), f"§{number} anchor"


def test_every_cited_section_exists(spec: Spec) -> None:
    problems = []
    count = 0
    for path in scanned_files():
        cited = citations(path.read_text(encoding="utf-8"))
        count += len(cited)
        problems += [f"{path.relative_to(ROOT)}: {m}" for m in unresolved(spec, cited)]
    assert problems == []
    assert count > 50  # the scan really sees the tree's citations


def test_the_spec_resolves_its_own_subsection_references(spec: Spec) -> None:
    text = SPEC.read_text(encoding="utf-8")
    own = [(int(m.group(2)), m.group(3)) for m in _REF.finditer(text) if not m.group(1)]
    assert own and unresolved(spec, own) == []


def test_every_spec_link_names_an_anchor(spec: Spec) -> None:
    problems = []
    for path in scanned_files():
        for anchor in _LINK.findall(path.read_text(encoding="utf-8")):
            if anchor not in spec.anchors:
                problems.append(f"{path.relative_to(ROOT)}: spec.md#{anchor}")
    assert problems == []


def test_a_missing_section_or_subsection_is_reported(spec: Spec) -> None:
    cited = citations('as SPEC §42 says (SPEC §3 "Resume", §6 1012, §7 close; SPEC §3 "No such")'
                      " and RFC 6455 §5.2")
    assert cited == [(42, None), (3, "Resume"), (6, None), (7, None), (3, "No such")]
    assert unresolved(spec, cited) == ["§42", '§3 "No such"']
    assert unresolved(parse_spec("## 1. Only\n### Resume\n"), [(1, "resume"), (2, None)]) == ["§2"]
