"""The docs agree with the code: docs/lake.md with the lake contract, README's size, every relative link
(README.md, docs/, bench/RESULTS.md) and anchor."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

import pytest

from recsys.core.lake import LakeFile
from recsys.core.lake_doc import (
    BEGIN_MARKER,
    END_MARKER,
    generated_section,
    render_contract,
    replace_section,
    zone_order,
)

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
README_MAX_BYTES = 10_240
DOCS = sorted([README, ROOT / "bench" / "RESULTS.md", *(ROOT / "docs").rglob("*.md")])

FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", re.MULTILINE | re.DOTALL)
CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1", re.DOTALL)
LINK = re.compile(r"!?\[(?:[^\]\[]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$", re.MULTILINE)
HEADING = re.compile(r"^\s{0,3}#{1,6}\s+(.*?)\s*#*\s*$", re.MULTILINE)
HTML_ANCHOR = re.compile(r"<a\s+(?:name|id)=\"([^\"]+)\"")


def prose(text: str) -> str:
    """The text without fenced blocks and code spans, where a bracket is no link."""
    return CODE_SPAN.sub("", FENCE.sub("", text))


def links(text: str) -> list[str]:
    """Every link target of a Markdown text, inline and reference-style."""
    body = prose(text)
    return LINK.findall(body) + REFERENCE.findall(body)


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"<[^>]+>", "", heading)
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)  # a link in a heading keeps its text
    text = re.sub(r"[^\w\- ]", "", text.lower())
    return text.replace(" ", "-")


def anchors(text: str) -> set[str]:
    """The anchors a Markdown file offers: its headings' slugs (repeats numbered) and explicit <a> anchors."""
    seen: dict[str, int] = {}
    found = set(HTML_ANCHOR.findall(text))
    for heading in HEADING.findall(FENCE.sub("", text)):
        base = slug(heading)
        count = seen.get(base, 0)
        found.add(base if count == 0 else f"{base}-{count}")
        seen[base] = count + 1
    return found


def test_slug_follows_github() -> None:
    assert slug("Output contract") == "output-contract"
    assert slug("`make run-on`: your own data") == "make-run-on-your-own-data"
    assert slug("Issue 16: the clean and tables rules (2026-12-02)") == "issue-16-the-clean-and-tables-rules-2026-12-02"
    assert anchors("# A\n## A\n```\n# not a heading\n```\n") == {"a", "a-1"}


def test_links_found_outside_code_only() -> None:
    text = "See [data](docs/data.md#split) and `[x](no.md)`.\n```\n[y](nope.md)\n```\n[ref]: docs/lake.md\n"
    assert links(text) == ["docs/data.md#split", "docs/lake.md"]


def test_render_contract_of_a_small_contract() -> None:
    contract = (
        LakeFile("raw", "part-00000.parquet", "raw logs", ("user_id", "ts")),
        LakeFile("raw", "_source.json", "how it was filled", dated=False),
        LakeFile("index", "users.parquet", "ids | indexes", ("user_id", "user_idx"), dated=False),
        LakeFile("recs", "recs.parquet", "top-K", ("user_id", "rank")),
    )
    expected = """| zone | dated partitions | files |
| --- | --- | --- |
| [`raw/`](#raw) | yes | 2 |
| [`index/`](#index) | no | 1 |
| [`eval/`](#eval) | yes | 0 |
| [`recs/`](#recs) | yes | 1 |

### raw

| path | holds | columns |
| --- | --- | --- |
| `raw/ds=D/part-00000.parquet` | raw logs | `user_id`, `ts` |
| `raw/_source.json` | how it was filled | - |

### index

| path | holds | columns |
| --- | --- | --- |
| `index/users.parquet` | ids \\| indexes | `user_id`, `user_idx` |

### eval

No files in the contract.

### recs

| path | holds | columns |
| --- | --- | --- |
| `recs/ds=D/recs.parquet` | top-K | `user_id`, `rank` |
"""
    assert zone_order(contract, ("raw", "eval", "recs")) == ["raw", "index", "eval", "recs"]
    assert render_contract(contract, ("raw", "eval", "recs")) == expected


def test_replace_section_keeps_the_prose() -> None:
    text = f"# Lake\n\nprose\n\n{BEGIN_MARKER}\nold\n{END_MARKER}\n\nafter\n"
    replaced = replace_section(text, "new\n")
    assert replaced == f"# Lake\n\nprose\n\n{BEGIN_MARKER}\n\nnew\n\n{END_MARKER}\n\nafter\n"
    assert generated_section(replaced) == "new\n"
    with pytest.raises(ValueError):
        generated_section("no markers here")


def test_lake_doc_matches_the_contract() -> None:
    """docs/lake.md holds exactly what the contract renders now; regenerate with
    `python -m recsys.core.lake_doc --write docs/lake.md`."""
    committed = generated_section((ROOT / "docs" / "lake.md").read_text(encoding="utf-8"))
    assert committed == render_contract()


def test_readme_is_a_front_door() -> None:
    size = README.stat().st_size
    assert size < README_MAX_BYTES, f"README.md is {size} bytes; the detail belongs in docs/"


@pytest.mark.parametrize("doc", DOCS, ids=lambda path: str(path.relative_to(ROOT)))
def test_relative_links_resolve(doc: Path) -> None:
    broken = []
    for target in links(doc.read_text(encoding="utf-8")):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE):  # http:, https:, mailto:
            continue
        path_part, _, anchor = target.partition("#")
        path = (doc.parent / unquote(path_part)).resolve() if path_part else doc
        if not path.exists():
            broken.append(f"{target}: no file {path}")
            continue
        if anchor and path.suffix == ".md" and unquote(anchor) not in anchors(path.read_text(encoding="utf-8")):
            broken.append(f"{target}: no heading with anchor #{anchor} in {path.name}")
    assert not broken, f"{doc.relative_to(ROOT)}: " + "; ".join(broken)
