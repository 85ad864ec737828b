#!/usr/bin/env python3
"""Copy the reference docs into README.md between their markers.

README.md holds the full install guide, the resource reference and the
converter reference (users read the README first), but they are written and
tested in docs/. Each block

    <!-- BEGIN docs/NAME.md -->
    ...
    <!-- END docs/NAME.md -->

is replaced by that file, its headings pushed one level down. `--check` only
reports drift (exit 1), for CI.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
BLOCK = re.compile(r"(<!-- BEGIN (docs/[\w./-]+\.md) -->\n)(.*?)(<!-- END \2 -->)", re.S)


def demote(text: str) -> str:
    out: list[str] = []
    fenced = False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        if not fenced and line.startswith("#"):
            line = "#" + line
        out.append(line)
    return "\n".join(out).rstrip() + "\n"


def render(readme: str) -> str:
    def replace(match: re.Match[str]) -> str:
        body = demote((ROOT / match.group(2)).read_text(encoding="utf-8"))
        # Links relative to docs/ must keep working from the top of the repository.
        body = re.sub(r"\]\((?!https?:|#|/)([^)]+)\)", lambda m: f"](docs/{m.group(1)})", body)
        body = body.replace("](docs/../", "](")
        return match.group(1) + body + match.group(4)

    return BLOCK.sub(replace, readme)


def main(argv: list[str]) -> int:
    current = README.read_text(encoding="utf-8")
    wanted = render(current)
    if "--check" in argv:
        if wanted != current:
            print("README.md is out of date with docs/: run scripts/sync-readme.py", file=sys.stderr)
            return 1
        return 0
    README.write_text(wanted, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
