"""README.md: short, its relative links resolve, its code as written, and the two commands a new user pastes.

The reference pages live in docs/ and the README links to them; nothing copies
docs/ into it any more. The README once embedded them with a script that
rewrote every `](x)` into `](docs/x)`, code spans included, and so printed
patterns such as `^[a-z0-9](docs/[-a-z0-9]*[a-z0-9])?$`: `rewritten_code` finds
that, and `split_markdown` is what tells code from prose for both checks.
"""

from __future__ import annotations

import re
from pathlib import Path

from tests.helpers import REPO_ROOT

README = REPO_ROOT / "README.md"
MAX_LINES = 200

_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_BACKTICKS = re.compile(r"`+")
_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+[\"'(][^)]*)?\)")
_REFERENCE = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?([^\s>]+)>?", re.M)
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def _inline(paragraph: str, code: list[str]) -> str:
    """The paragraph with each code span (any run of backticks up to the same run) replaced."""
    out: list[str] = []
    pos = 0
    while (opening := _BACKTICKS.search(paragraph, pos)) is not None:
        run = len(opening.group())
        closing = re.compile(rf"(?<!`)`{{{run}}}(?!`)").search(paragraph, opening.end())
        if closing is None:  # a lone run of backticks is literal text
            out.append(paragraph[pos : opening.end()])
            pos = opening.end()
            continue
        out.append(paragraph[pos : opening.start()])
        code.append(paragraph[opening.end() : closing.start()])
        out.append("code")
        pos = closing.end()
    out.append(paragraph[pos:])
    return "".join(out)


def _unfenced(text: str, code: list[str]) -> str:
    """The text with each fenced block's lines blank, its content appended to `code`."""
    prose: list[str] = []
    fence: str | None = None
    block: list[str] = []
    for line in text.splitlines():
        if fence is None:
            opening = _FENCE.match(line)
            if opening:
                fence = opening.group(1)
                block = []
                prose.append("")
            else:
                prose.append(line)
        elif re.fullmatch(rf" {{0,3}}{re.escape(fence[0])}{{{len(fence)},}}\s*", line):
            code.append("\n".join(block))
            fence = None
            prose.append("")
        else:
            block.append(line)
            prose.append("")
    if fence is not None:  # an unclosed fence runs to the end of the document
        code.append("\n".join(block))
    return "\n".join(prose)


def split_markdown(text: str) -> tuple[str, list[str]]:
    """(the prose, with code spans replaced by a word and fenced blocks by blank lines; the code)."""
    code: list[str] = []
    # Code spans do not cross a blank line (the end of a paragraph).
    paragraphs = re.split(r"(\n[ \t]*\n)", _unfenced(text, code))
    return "".join(_inline(p, code) for p in paragraphs), code


def _anchor(heading: str) -> str:
    """GitHub's anchor for a heading's text (ASCII headings)."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def broken_links(text: str, base: Path, root: Path = REPO_ROOT) -> list[str]:
    """Relative links (outside code) whose file is missing or outside `root`, and `#anchors` with no heading."""
    prose, _ = split_markdown(text)
    unfenced = _unfenced(text, [])
    headings = {_anchor(m.group(1)) for m in re.finditer(r"^#{1,6}\s+(.*?)\s*#*\s*$", unfenced, re.M)}
    broken: list[str] = []
    for target in [*_LINK.findall(prose), *_REFERENCE.findall(prose)]:
        if _SCHEME.match(target):
            continue
        path, _, fragment = target.partition("#")
        path = path.split("?", 1)[0]
        if not path:
            if _anchor(fragment) not in headings:
                broken.append(target)
            continue
        resolved = (root / path.lstrip("/")) if path.startswith("/") else (base / path)
        resolved = resolved.resolve()
        if not resolved.is_relative_to(root.resolve()) or not resolved.exists():
            broken.append(target)
    return broken


def rewritten_code(text: str) -> list[str]:
    """Code spans and fenced blocks holding `](docs/`: a link rewrite that reached into code."""
    _, code = split_markdown(text)
    return [c for c in code if "](docs/" in c]


# --- the checks themselves, on samples ---------------------------------------------------------

# A row of the old README's resource reference, as the link rewrite left it.
CORRUPTED = (
    "| `spec.storage.secretName` | string |  |  | max length 253; pattern "
    "`^[a-z0-9](docs/[-a-z0-9]*[a-z0-9])?(\\.[a-z0-9](docs/[-a-z0-9]*[a-z0-9])?)*$` | A Secret. |\n"
)


def test_split_markdown_tells_code_from_prose() -> None:
    text = (
        "See [a](a.md) and `x](b)` and ``a `tick` ](c)`` here.\n"
        "\n"
        "```yaml\n"
        "link: [no](fenced.md)\n"
        "```\n"
        "~~~~\n"
        "```\n"
        "still code\n"
        "~~~~\n"
        "A lone ` backtick, [d](d.md).\n"
    )
    prose, code = split_markdown(text)
    assert code == ["link: [no](fenced.md)", "```\nstill code", "x](b)", "a `tick` ](c)"]
    assert _LINK.findall(prose) == ["a.md", "d.md"]


def test_a_rewritten_code_span_is_found() -> None:
    assert rewritten_code(CORRUPTED) == [
        "^[a-z0-9](docs/[-a-z0-9]*[a-z0-9])?(\\.[a-z0-9](docs/[-a-z0-9]*[a-z0-9])?)*$"
    ]
    assert rewritten_code("``double ](docs/x) span``\n") == ["double ](docs/x) span"]
    assert rewritten_code("```\n[x](docs/y.md)\n```\n") == ["[x](docs/y.md)"]


def test_the_same_pattern_as_written_and_real_links_pass() -> None:
    fine = "pattern `^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`, see [docs/install.md](docs/install.md).\n"
    assert rewritten_code(fine) == []
    assert broken_links(fine, REPO_ROOT) == []


def test_broken_links_are_found() -> None:
    text = (
        "# Title\n"
        "[ok](docs/install.md#uninstall) [gone](docs/missing.md) [out](../elsewhere/x.md)\n"
        "[top](#title) [nowhere](#no-such-heading) [web](https://example.com/x.md)\n"
        "`[in code](docs/missing.md)`\n"
    )
    assert broken_links(text, REPO_ROOT) == ["docs/missing.md", "../elsewhere/x.md", "#no-such-heading"]


# --- README.md ---------------------------------------------------------------------------------


def test_readme_is_short() -> None:
    lines = README.read_text(encoding="utf-8").count("\n")
    assert lines < MAX_LINES, f"README.md has {lines} lines; the reference belongs in docs/"


def test_readme_relative_links_resolve() -> None:
    assert broken_links(README.read_text(encoding="utf-8"), README.parent) == []


def test_readme_code_is_as_written() -> None:
    assert rewritten_code(README.read_text(encoding="utf-8")) == []


def test_readme_links_every_docs_page() -> None:
    readme = README.read_text(encoding="utf-8")
    prose, _ = split_markdown(readme)
    linked = {(README.parent / t.partition("#")[0]).resolve() for t in _LINK.findall(prose)}
    pages = sorted(REPO_ROOT.glob("docs/*.md"))
    assert pages
    assert [p.name for p in pages if p.resolve() not in linked] == []


def test_readme_has_the_sandbox_and_test_commands() -> None:
    readme = README.read_text(encoding="utf-8")
    assert "ascend-mlops sandbox run examples/flowers" in readme
    assert "bash .ci/run" in readme
    assert 'python -m pytest -m "not slow"' in readme
    ci = (REPO_ROOT / ".ci" / "run").read_text(encoding="utf-8")
    # .ci/run must run the test command the README names.
    assert "python -m pytest" in readme and "python -m pytest" in ci
