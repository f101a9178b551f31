"""The README stays a five-minute read and the documentation stays connected: README.md has at
most 250 lines, every docs/ page is listed in it, every relative link in README.md and docs/*.md
reaches an existing file (and heading, for #anchors), and every repository path and test the
pages name exists."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from tests.helpers import REPO

README = REPO / "README.md"
DOCS = REPO / "docs"
PAGES = [README, *sorted(DOCS.glob("*.md"))]
README_MAX_LINES = 250  # issue 18: a newcomer reads it in five minutes

LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
# A repository path in backticks: framework/..., tests/..., conf/..., recipes/..., bench/...,
# docs/...; optionally followed by ::test_name (pytest's node id; [params] ignored).
REPO_PATH = re.compile(
    r"`((?:framework|tests|conf|recipes|bench|docs)/[\w./-]*)(?:::(\w+)(?:\[[^\]`]*\])?)?`"
)
# A test named on its own after one with its file in the same paragraph: `::test_name`.
BARE_TEST = re.compile(r"`::(\w+)(?:\[[^\]`]*\])?`")


def prose_lines(page: Path) -> list[str]:
    """The page's lines outside fenced code blocks (code may show shell or YAML comments)."""
    lines, fenced = [], False
    for line in page.read_text().splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        lines.append("" if fenced else line)
    return lines


def anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens, repeats
    numbered -1, -2, ..."""
    seen: dict[str, int] = {}
    found = set()
    for line in prose_lines(page):
        heading = re.match(r"#{1,6} (.+)", line)
        if not heading:
            continue
        slug = re.sub(r"[^\w\- ]", "", heading.group(1).strip().lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        found.add(slug if count == 0 else f"{slug}-{count}")
    return found


def relative_links(page: Path) -> list[str]:
    targets = []
    for line in prose_lines(page):
        targets += [t for t in LINK.findall(line) if not re.match(r"[a-z]+:", t)]
    return targets


def test_readme_is_at_most_250_lines() -> None:
    count = len(README.read_text().splitlines())
    assert count <= README_MAX_LINES, f"README.md has {count} lines; move depth into docs/"


def test_every_docs_page_is_listed_in_the_readme_and_exists() -> None:
    linked = {
        (README.parent / target.split("#")[0]).resolve()
        for target in relative_links(README)
        if target.startswith("docs/")
    }
    pages = {page.resolve() for page in DOCS.glob("*.md")}
    assert not linked - pages, f"README links to missing docs pages: {sorted(linked - pages)}"
    assert not pages - linked, f"docs pages the README does not list: {sorted(pages - linked)}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_relative_link_resolves(page: Path) -> None:
    broken = []
    for target in relative_links(page):
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f"{target}: no file {file}")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            broken.append(f"{target}: no heading with anchor #{anchor} in {file.name}")
    assert not broken, f"{page.name}: " + "; ".join(broken)


def _test_names(file: Path) -> set[str]:
    tree = ast.parse(file.read_text())
    return {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}


def _made_by_a_make_target(path: str) -> bool:
    """A folder git ignores because a script fills it (bench/wheels/ by bench/gpu_wheels.sh):
    named in the docs, absent from a clean clone."""
    ignored = (REPO / ".gitignore").read_text().splitlines()
    return "/" + path.rstrip("/") + "/" in ignored


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_named_paths_and_tests_exist(page: Path) -> None:
    """A page that names `tests/x.py::test_y` or `framework/x.py` names something real (the
    layout moves; the pages must move with it)."""
    missing = []
    last_file = None  # a bare `::test_name` belongs to the last file named in its paragraph
    for line in prose_lines(page):
        if not line.strip():
            last_file = None
        for match in re.finditer(f"{REPO_PATH.pattern}|{BARE_TEST.pattern}", line):
            path, test, bare = match.group(1), match.group(2), match.group(3)
            if path:
                target = REPO / path.rstrip("/")
                if not target.exists() and not _made_by_a_make_target(path):
                    missing.append(path)
                    continue
                last_file = target if target.suffix == ".py" else None
            name = test or bare
            if name and (last_file is None or name not in _test_names(last_file)):
                missing.append(f"{last_file.relative_to(REPO) if last_file else '?'}::{name}")
    assert not missing, f"{page.name} names what does not exist: {missing}"
