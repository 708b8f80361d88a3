"""The documents point only at files the repository holds."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
#: A Markdown document named anywhere, e.g. ``benchmarks/RESULTS.md``.
MD_MENTION = re.compile(r"[\w./-]+\.md\b")
#: The target of a Markdown link, anchor dropped: ``[text](benchmarks/RESULTS.md#w1)``.
MD_LINK = re.compile(r"\]\(([^)#\s]+)[^)]*\)")


def tracked_text_files() -> list[Path]:
    names = subprocess.run(
        ["git", "ls-files", "*.py", "*.md", "*.toml", "Makefile"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return [ROOT / name for name in names]


def dangling(path: Path) -> list[str]:
    """Documents mentioned or linked in `path` that exist neither beside it nor at the root."""
    text = path.read_text()
    named = set(MD_MENTION.findall(text))
    if path.suffix == ".md":
        named |= {t for t in MD_LINK.findall(text) if "://" not in t}
    return sorted(
        name for name in named if not ((path.parent / name).exists() or (ROOT / name).exists())
    )


def test_every_document_named_in_the_repository_exists() -> None:
    files = tracked_text_files()
    assert ROOT / "README.md" in files
    missing = {str(p.relative_to(ROOT)): names for p in files if (names := dangling(p))}
    assert missing == {}
