"""The repository explains itself: every Markdown link resolves inside it, nothing points out.

Reads every Markdown file (outside hidden and build folders) and fails on a link or path
that leaves the repository, on a relative link whose target does not exist, and on a
setting of the Settings model that docs/configuration.md does not name.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from backend.config_docs import env_names

ROOT = Path(__file__).resolve().parents[2]
SKIP_DIRS = {"node_modules", "build", "dist", "__pycache__"}
# Inline links and images, [text](target "title"), and reference definitions, [id]: target.
INLINE_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)", re.MULTILINE)
HTML_LINK = re.compile(r"""<(?:a|img)\s[^>]*?(?:href|src)=["']([^"']+)["']""", re.IGNORECASE)
FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)
INLINE_CODE = re.compile(r"`[^`\n]*`")
EXTERNAL = re.compile(r"^[a-z][a-z0-9+.-]*:", re.IGNORECASE)  # http:, https:, mailto:, …
# Paths that leave any clone: the machine's own folders and the documents of the team
# that wrote the service (their names are built here so this file does not contain them).
OUTSIDE = [
    re.compile(r"(?<![\w.])\.\./shared\b"),
    re.compile(r"(?<![\w.])/work/"),
    re.compile(r"(?<![\w/.])/(?:home|Users|tmp)/[\w.-]+/"),
    *(re.compile(rf"\b{name}\.md\b") for name in ("DESIGN", "PIXELLAB", "STYLE")),
]


def _hidden_or_build(path: Path) -> bool:
    parts = path.relative_to(ROOT).parts[:-1]
    return any(part.startswith(".") or part in SKIP_DIRS or part.endswith(".egg-info")
               for part in parts)  # fmt: skip


def markdown_files() -> list[Path]:
    return sorted(path for path in ROOT.rglob("*.md") if not _hidden_or_build(path))


def links(text: str) -> list[str]:
    prose = INLINE_CODE.sub("", FENCE.sub("", text))
    found = INLINE_LINK.findall(prose) + REFERENCE.findall(prose) + HTML_LINK.findall(prose)
    return [target for target in found if target]


def test_there_are_markdown_files() -> None:
    names = {path.relative_to(ROOT).as_posix() for path in markdown_files()}
    assert {"README.md", "docs/design.md", "docs/api.md", "docs/configuration.md",
            "docs/pixellab.md"} <= names  # fmt: skip


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_links_resolve_inside_the_repository(path: Path) -> None:
    problems = []
    for target in links(path.read_text()):
        if EXTERNAL.match(target) or target.startswith("#"):
            continue
        local = target.split("#", 1)[0].split("?", 1)[0]
        if local.startswith("/"):
            problems.append(f"{target}: an absolute path")
            continue
        resolved = (path.parent / local).resolve()
        if not resolved.is_relative_to(ROOT):
            problems.append(f"{target}: outside the repository")
        elif not resolved.exists():
            problems.append(f"{target}: does not exist")
    assert not problems, f"{path.relative_to(ROOT)}: {problems}"


def _repository_texts() -> list[Path]:
    kinds = {".md", ".py", ".toml", ".sh", ".yaml", ".yml", ".lua", ".cfg", ".ini", ".txt"}
    this = Path(__file__).resolve()
    files = [
        path
        for path in ROOT.rglob("*")
        if path.suffix in kinds and path != this and not _hidden_or_build(path) and path.is_file()
    ]
    extra = [ROOT / "Dockerfile", ROOT / ".ci" / "run", ROOT / ".gitignore"]
    return sorted(files + [path for path in extra if path.is_file()])


def test_nothing_points_outside_the_repository() -> None:
    problems = []
    for path in _repository_texts():
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            for pattern in OUTSIDE:
                if pattern.search(line):
                    problems.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()[:100]}")
    assert not problems, "\n".join(problems)


def test_every_setting_is_in_the_configuration_page() -> None:
    page = (ROOT / "docs" / "configuration.md").read_text()
    missing = [name for name in env_names() if f"`{name}`" not in page]
    assert not missing, f"docs/configuration.md does not name {missing}"


def test_the_link_finder_sees_every_form() -> None:
    text = (
        '[a](docs/a.md) ![b](img/b.png "t") <a href="c.md">c</a>\n'
        "[d]: ../d.md\n`[no](code.md)`\n```\n[no](fence.md)\n```\n"
    )
    assert sorted(links(text)) == ["../d.md", "c.md", "docs/a.md", "img/b.png"]
