"""README.md and docs/*.md: every relative link and #anchor resolves, inside the repository.

Anchors are GitHub's: the heading's text (code, links and emphasis reduced to their words),
lowercased, punctuation dropped, each space a hyphen; a repeated heading gets -1, -2, ...
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")


def _prose(text: str) -> list[tuple[int, str]]:
    """(line number, line) outside fenced code blocks."""
    out, fence = [], None
    for i, line in enumerate(text.splitlines(), 1):
        m = re.match(r"^\s*(`{3,}|~{3,})", line)
        if m and fence is None:
            fence = m.group(1)
            continue
        if m and m.group(1)[0] == fence[0] and len(m.group(1)) >= len(fence):
            fence = None
            continue
        if fence is None:
            out.append((i, line))
    return out


def slug(heading: str) -> str:
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link counts by its text
    text = text.replace("`", "").replace("*", "").strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for _, line in _prose(page.read_text(encoding="utf-8")):
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if m:
            s = slug(m.group(1))
            out.add(s if s not in seen else f"{s}-{seen[s]}")
            seen[s] = seen.get(s, 0) + 1
    return out


def links(page: Path) -> list[tuple[int, str]]:
    found = []
    for i, line in _prose(page.read_text(encoding="utf-8")):
        line = re.sub(r"(`+)(.+?)\1", lambda m: "x" * len(m.group(0)), line)  # code spans are not links
        found += [(i, m.group(1)) for m in LINK.finditer(line)]
    return found


def test_slug_follows_github():
    assert slug("3. Run") == "3-run"
    assert slug("The best checkpoint within [0, T_stop], and the final one") == \
        "the-best-checkpoint-within-0-t_stop-and-the-final-one"
    assert slug("§Rules: the rule API") == "rules-the-rule-api"
    assert slug("A long-horizon study (`tiny-long`)") == "a-long-horizon-study-tiny-long"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_and_anchor_resolves(page):
    bad = []
    for line, target in links(page):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if REPO not in dest.parents and dest != REPO:
            bad.append(f"{line}: {target} leaves the repository")
        elif not dest.exists():
            bad.append(f"{line}: {target}: no such file")
        elif anchor and (dest.suffix != ".md" or anchor not in anchors(dest)):
            bad.append(f"{line}: {target}: no heading with that anchor in {dest.relative_to(REPO)}")
    assert not bad, f"{page.relative_to(REPO)}:\n" + "\n".join(bad)


def test_the_check_finds_broken_links(tmp_path):
    """The checker itself, on a page with one good and three broken links."""
    (tmp_path / "a.md").write_text("# Top\n\n## Two words\n\n```\n[not](a link.md)\n```\n"
                                   "[ok](#two-words) [gone](missing.md) [typo](#two-word) `[code](nope.md)` "
                                   "[up](../outside.md)\n")
    got = [t for _, t in links(tmp_path / "a.md")]
    assert got == ["#two-words", "missing.md", "#two-word", "../outside.md"]
    assert anchors(tmp_path / "a.md") == {"top", "two-words"}


def test_readme_is_a_landing_page():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 250, "README.md is the landing page: move details into docs/"
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    command = "scripts/bootstrap --test && .venv/bin/python -m pytest -q"
    assert f"\n    {command}\n" in readme and f"\n{command}\n" in ci, "`.ci/run` runs the README's test command"
    assert "\n    scripts/bootstrap && .venv/bin/snakemake --cores 2\n" in readme


def test_readme_table_is_the_committed_one():
    """The README's first table of the default run is copied from results/tiny/table.md: a re-run that
    changes those rows must update the README too (the replication table below it is not in table.md)."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("## What the default shows", 1)[1].split("\n## ", 1)[0]
    first = section.split("\n|", 1)[1].split("\n\n", 1)[0] if "\n|" in section else ""
    rows = [ln for ln in ("|" + first).splitlines() if ln.startswith("|") and not ln.startswith("|---")] if first else []
    assert rows, "the README lost its table of the default run"
    committed = (REPO / "results" / "tiny" / "table.md").read_text(encoding="utf-8").splitlines()
    assert [r for r in rows if r not in committed] == []
