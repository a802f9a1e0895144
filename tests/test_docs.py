"""The documentation's shape: README.md fits in a sitting, its quick start is the two commands CI
runs, and every relative link and #anchor in README.md and docs/*.md resolves."""

import re

import pytest
from helpers import REPO

MAX_README_LINES = 300
QUICK_START = ["pip install -e '.[test]' && python -m train", "python -m pytest"]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def prose(text: str) -> list[str]:
    """The lines of a Markdown text outside fenced code blocks."""
    lines, fenced = [], False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif not fenced:
            lines.append(line)
    return lines


def slug(heading: str) -> str:
    """A heading's anchor as GitHub makes it: lower case, punctuation dropped, spaces -> -."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip().strip("#").strip())
    return re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")


def anchors(text: str) -> set[str]:
    """Every anchor a page's headings give (a repeated slug gets -1, -2, ... as on GitHub)."""
    seen: dict[str, int] = {}
    out = set()
    for line in prose(text):
        if re.match(r"#{1,6} ", line):
            base = slug(line)
            n = seen.get(base, 0)
            seen[base] = n + 1
            out.add(base if n == 0 else f"{base}-{n}")
    return out


def test_readme_fits_in_a_sitting():
    lines = len((REPO / "README.md").read_text().splitlines())
    assert lines <= MAX_README_LINES, f"README.md: {lines} lines; move a topic to docs/"


def test_quick_start_is_the_two_commands_ci_runs():
    text = (REPO / "README.md").read_text()
    section = text[text.index("## Quick start"):]
    block = section[section.index("```bash\n") + len("```bash\n"):]
    assert block[:block.index("```")].splitlines() == QUICK_START
    ci = (REPO / ".ci" / "run").read_text().splitlines()
    assert all(any(line.startswith(command) for line in ci) for command in QUICK_START)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_every_link_resolves(page):
    broken = []
    for line in prose(page.read_text()):
        for target in LINK.findall(re.sub(r"`[^`]*`", "", line)):
            if re.match(r"[a-z]+:", target):
                continue  # https:, mailto:: not checked offline
            path, _, anchor = target.partition("#")
            dest = (page.parent / path).resolve() if path else page
            if not dest.exists():
                broken.append(f"{target}: no such file")
            elif anchor and dest.suffix == ".md" and anchor not in anchors(dest.read_text()):
                broken.append(f"{target}: no heading with that anchor")
    assert broken == []


def test_slug_is_githubs():
    assert slug("## Huber versus MSE: why write a Huber loss at all") == \
        "huber-versus-mse-why-write-a-huber-loss-at-all"
    assert slug("### msrun on one node (8 NPUs, or CPU workers)") == \
        "msrun-on-one-node-8-npus-or-cpu-workers"
    assert slug("## The `--resume` flag") == "the---resume-flag"
    assert anchors("# A\n```\n# not a heading\n```\n## A\n") == {"a", "a-1"}
