"""The README and docs/: links that lead somewhere, no orphaned page, a short README that opens
with the two commands, and settings tables that name only settings that exist.

Everything here reads files of the checkout; nothing reaches the network (external links are not
followed). The configuration reference itself is checked by test_config_reference.py."""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

import pytest

from incident_detector import config_reference
from incident_detector.config import Settings

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
CONFIGURATION = DOCS / "configuration.md"
PAGES = sorted([README, *DOCS.glob("*.md")])

FENCE = re.compile(r"^\s{0,3}(`{3,}|~{3,})")
HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
CODE_SPAN = re.compile(r"(`+)(.+?)\1")
MARKDOWN_LINK = re.compile(
    r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HTML_LINK = re.compile(r"<(?:a|img)\b[^>]*?\b(?:href|src)=\"([^\"]+)\"", re.IGNORECASE)
EXTERNAL = re.compile(r"^[a-z][a-z0-9+.-]*:", re.IGNORECASE)  # http:, https:, mailto:, ...


def prose_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) outside fenced code blocks."""
    lines, fence = [], None
    for number, line in enumerate(text.splitlines(), start=1):
        match = FENCE.match(line)
        if match:
            marker = match.group(1)
            if fence is None:
                fence = marker[0] * 3
            elif marker.startswith(fence):
                fence = None
            continue
        if fence is None:
            lines.append((number, line))
    return lines


def heading_text(raw: str) -> str:
    """The heading as GitHub renders it to text: no code marks, emphasis, links or HTML."""
    text = CODE_SPAN.sub(lambda m: m.group(2).strip(), raw)
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", text)
    text = re.sub(r"<[^>]+>", "", text)
    return text.replace("*", "")


def slug(text: str) -> str:
    """GitHub's anchor for a heading's text (github-slugger): lower case, punctuation and
    symbols dropped, each space a hyphen."""
    kept = "".join(char for char in text.lower()
                   if char in " -_" or unicodedata.category(char)[0] in "LNM")
    return kept.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    found = set()
    for _, line in prose_lines(path.read_text(encoding="utf-8")):
        match = HEADING.match(line)
        if not match:
            continue
        base = slug(heading_text(match.group(2)))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def links(path: Path) -> list[tuple[int, str]]:
    """(line number, target) of every Markdown and HTML link and image outside code."""
    found = []
    for number, line in prose_lines(path.read_text(encoding="utf-8")):
        line = CODE_SPAN.sub("", line)
        for pattern in (MARKDOWN_LINK, HTML_LINK):
            found.extend((number, match.group(1)) for match in pattern.finditer(line))
    return found


def resolve(page: Path, target: str) -> tuple[Path, str]:
    """The file a link leads to (the page itself for ``#anchor``), and its anchor or ""."""
    file_part, _, anchor = target.partition("#")
    destination = (page.parent / file_part).resolve() if file_part else page
    return destination, anchor


def local_links() -> list[tuple[Path, int, str]]:
    return [(page, number, target) for page in PAGES for number, target in links(page)
            if not EXTERNAL.match(target)]


# --- the helpers themselves -------------------------------------------------------------------

@pytest.mark.parametrize(("heading", "expected"), [
    ("High availability", "high-availability"),
    ("Guarantees, and their limits", "guarantees-and-their-limits"),
    ("Rules: how urgent, and what to do (`RULES_FILE`)",
     "rules-how-urgent-and-what-to-do-rules_file"),
    ("`GET /api/changes/stream`: Server-Sent Events", "get-apichangesstream-server-sent-events"),
    ("Incidents of kind `change`", "incidents-of-kind-change"),
    ("Seconds, not a poll: the fast lane", "seconds-not-a-poll-the-fast-lane"),
    ("Remediation install (`k8s/remediation/`)", "remediation-install-k8sremediation"),
    ("What *it* does", "what-it-does"),
    ("Coût & délai", "coût--délai"),
])
def test_slugs_are_githubs(heading: str, expected: str) -> None:
    assert slug(heading_text(heading)) == expected


def test_repeated_headings_get_numbered_anchors(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("# Title\n\n## Settings\n\n```\n# not a heading\n```\n\n## Settings\n")
    assert anchors(page) == {"title", "settings", "settings-1"}


def test_links_in_code_are_not_links(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("See [a](a.md) and `[b](b.md)`.\n\n```\n[c](c.md)\n```\n"
                    '<img alt="x" src="d.png" width="2">\n![e](e.png "title")\n')
    assert [target for _, target in links(page)] == ["a.md", "d.png", "e.png"]


# --- the pages ----------------------------------------------------------------------------------

def test_every_relative_link_leads_to_a_file_of_the_checkout() -> None:
    broken = []
    for page, number, target in local_links():
        destination, _ = resolve(page, target)
        if not destination.is_relative_to(ROOT) or not destination.exists():
            broken.append(f"{page.relative_to(ROOT)}:{number}: {target}")
    assert not broken, "links to nothing:\n" + "\n".join(broken)


def test_every_anchor_names_a_heading_of_its_page() -> None:
    broken = []
    for page, number, target in local_links():
        destination, anchor = resolve(page, target)
        if anchor and destination.suffix == ".md" and destination.exists():
            if anchor not in anchors(destination):
                broken.append(f"{page.relative_to(ROOT)}:{number}: {target} "
                              f"(no heading of {destination.relative_to(ROOT)} has that anchor)")
    assert not broken, "anchors that match no heading:\n" + "\n".join(broken)


def test_every_docs_page_is_linked_from_the_readme() -> None:
    linked = {resolve(README, target)[0] for _, target in links(README)
              if not EXTERNAL.match(target)}
    orphans = [page.relative_to(ROOT) for page in DOCS.glob("*.md") if page not in linked]
    assert not orphans, f"docs pages the README does not link to: {orphans}"


def test_every_screenshot_is_shown_somewhere() -> None:
    shown = {resolve(page, target)[0] for page, _, target in local_links()}
    unshown = [png.relative_to(ROOT) for png in (DOCS / "screenshots").glob("*.png")
               if png not in shown]
    assert not unshown, f"screenshots no page shows: {unshown}"


def test_the_readme_is_short_and_opens_with_the_two_commands() -> None:
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 300
    first_block = re.search(r"^```[a-z]*\n(.*?)^```", text, re.MULTILINE | re.DOTALL)
    assert first_block is not None
    commands = [line.split("#")[0].strip() for line in first_block.group(1).splitlines()]
    assert commands[:2] == ["make demo", "make test"]


def settings_named_in_tables(page: Path) -> list[tuple[int, str]]:
    """The variables of every table whose first column is ``variable`` or ``setting``."""
    named, in_table = [], False
    for number, line in prose_lines(page.read_text(encoding="utf-8")):
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if not line.lstrip().startswith("|"):
            in_table = False
        elif not in_table:
            in_table = cells[0].lower() in {"variable", "setting"}
        elif not set(cells[0]) <= set("-: "):
            named.extend((number, name) for name in re.findall(r"`([A-Z][A-Z0-9_]+)`", cells[0]))
    return named


def test_every_setting_a_page_lists_exists() -> None:
    known = {config_reference.env_name(name, field)
             for name, field in Settings.model_fields.items()}
    unknown = [f"{page.relative_to(ROOT)}:{number}: {name}" for page in PAGES
               for number, name in settings_named_in_tables(page) if name not in known]
    assert not unknown, "settings tables name variables Settings does not have:\n" + \
        "\n".join(unknown)
