"""The documentation as a reader meets it: links that resolve, a short README, no commit hashes.

Relative links in README.md, docs/ and the guides beside the code must point at a file or folder inside the
repository (a link to a file outside a clone is dead). README.md is a manual of at most 300 lines. History
belongs in ``git log``, so no token of README.md or docs/ may name a commit of this repository.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
GUIDES = [
    "sites/DEPLOY.md",
    "sites/README.md",
    "server/README.md",
    "poc/README.md",
    "benchmarks/README.md",
    "jobs/README.md",
]
MAX_README_LINES = 300

# [text](target) or [text](target "title"); images ![alt](target) too. Code spans are removed first.
LINK = re.compile(r"\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)
CODE_SPAN = re.compile(r"`[^`\n]*`")
EXTERNAL = ("http://", "https://", "mailto:")
# 7 to 40 lowercase hex characters with at least one digit and one letter a-f, not part of a longer word.
HEX_TOKEN = re.compile(r"(?<!\w)(?=[0-9a-f]*[0-9])(?=[0-9a-f]*[a-f])[0-9a-f]{7,40}(?!\w)")


def _doc_files() -> list[Path]:
    return [README, *sorted(DOCS.rglob("*.md"))]


def _linked_files() -> list[Path]:
    return [*_doc_files(), *(ROOT / guide for guide in GUIDES if (ROOT / guide).exists())]


def _name(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def _prose(text: str) -> str:
    """The text without fenced code blocks and code spans, where brackets are not links."""
    return CODE_SPAN.sub("", FENCE.sub("", text))


def test_docs_folder_exists() -> None:
    assert DOCS.is_dir() and any(DOCS.glob("*.md")), "docs/ holds the manual's pages"


@pytest.mark.parametrize("doc", _linked_files(), ids=_name)
def test_relative_links_resolve_inside_the_repository(doc: Path) -> None:
    broken = []
    for target in LINK.findall(_prose(doc.read_text(encoding="utf-8"))):
        if target.startswith(EXTERNAL) or target.startswith("#"):
            continue
        path = target.split("#", 1)[0]
        resolved = (doc.parent / path).resolve()
        if not resolved.is_relative_to(ROOT.resolve()):
            broken.append(f"{target} (outside the repository)")
        elif not resolved.exists():
            broken.append(f"{target} (no such file or folder)")
    assert not broken, f"{_name(doc)}: broken links: {', '.join(broken)}"


def test_readme_is_a_short_manual() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= MAX_README_LINES, (
        f"README.md has {len(lines)} lines (at most {MAX_README_LINES}): move detail into docs/"
    )


def _is_commit(token: str) -> bool:
    result = subprocess.run(
        ["git", "cat-file", "-e", f"{token}^{{commit}}"],
        cwd=ROOT,
        capture_output=True,
        check=False,
    )
    return result.returncode == 0


@pytest.mark.parametrize("doc", _doc_files(), ids=_name)
def test_no_commit_hash(doc: Path) -> None:
    if not (ROOT / ".git").exists() or shutil.which("git") is None:
        pytest.skip("not a git checkout: commit hashes cannot be recognised")
    tokens = sorted(set(HEX_TOKEN.findall(doc.read_text(encoding="utf-8"))))
    commits = [token for token in tokens if _is_commit(token)]
    assert not commits, f"{_name(doc)} names commits {commits}: history belongs in git log, not in the docs"
