"""Every shell and Python snippet in README.md and docs/ runs, or says next to it why it can't.

Why our own runner instead of pytest-markdown-docs: the snippets are a user's session after
command (1), so they need the built demo mixture in the working folder, Python fences of one page
share their names (a page is read top to bottom), and bash fences must run too. A fence is
skipped only by an HTML comment on the line right above it, which the reader sees in the source
and the test reports:

    <!-- snippet: skip, needs a GPU -->

Each page runs in its own temp folder holding a copy of the demo mixture (`demo-mixture`), built
once per session with command (1)'s `medmix build --out demo-mixture`.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RUN_LANGS = {"bash": "bash", "sh": "bash", "shell": "bash", "python": "python", "py": "python"}
SKIP = re.compile(r"^<!--\s*snippet:\s*skip,\s*(?P<reason>\S.*?)\s*-->$")
FENCE = re.compile(r"^(?P<indent> *)(?P<ticks>`{3,}|~{3,})\s*(?P<info>[^`]*)$")


@dataclass(frozen=True)
class Snippet:
    page: Path
    line: int          # 1-based line of the opening fence
    lang: str          # "bash" | "python"
    code: str
    skip: str | None   # the reason, when marked

    @property
    def id(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def snippets(page: Path) -> list[Snippet]:
    """The runnable fences of one Markdown page, in order (fences of other languages are ignored)."""
    lines = page.read_text().splitlines()
    out: list[Snippet] = []
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, ticks = m["indent"], m["ticks"]
        lang = m["info"].split()[0].strip("{.").lower() if m["info"].split() else ""
        body, j = [], i + 1
        while j < len(lines) and not lines[j].strip().startswith(ticks):
            body.append(lines[j][len(indent):] if lines[j].startswith(indent) else lines[j])
            j += 1
        if j == len(lines):
            raise AssertionError(f"{page}:{i + 1}: a ``` fence is never closed; close it")
        if lang in RUN_LANGS:
            above = lines[i - 1].strip() if i else ""
            marked = SKIP.match(above)
            out.append(Snippet(page, i + 1, RUN_LANGS[lang], "\n".join(body) + "\n",
                               marked["reason"] if marked else None))
        i = j + 1
    return out


ALL = [s for p in pages() for s in snippets(p)]
BY_PAGE: dict[Path, list[Snippet]] = {}
for _s in ALL:
    BY_PAGE.setdefault(_s.page, []).append(_s)


@pytest.fixture(scope="session")
def demo_mixture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """README command (1)'s build, once per session."""
    where = tmp_path_factory.mktemp("demo")
    subprocess.run(["medmix", "build", "--out", "demo-mixture", "--cache", str(where / "cache")], cwd=where,
                   check=True, capture_output=True, env=_env())
    return where / "demo-mixture"


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env["PATH"] = os.pathsep.join((str(Path(sys.executable).parent), env.get("PATH", "")))
    return env


@pytest.fixture(scope="module")
def page_state() -> dict[Path, tuple[Path, dict]]:
    """Per page: its working folder and the namespace its Python fences share."""
    return {}


def test_snippets_found() -> None:
    """The collector sees the fences (an empty list would pass every test below vacuously)."""
    assert any(s.page.name == "README.md" and s.lang == "bash" for s in ALL)
    assert any(s.page.parent.name == "docs" and s.lang == "python" for s in ALL)


def test_skip_markers_name_a_reason() -> None:
    """A marker that does not parse would silently turn a skip into a run (or the reverse)."""
    for page in pages():
        for n, line in enumerate(page.read_text().splitlines(), 1):
            if "snippet:" in line and line.strip().startswith("<!--"):
                assert SKIP.match(line.strip()), f"{page}:{n}: write `<!-- snippet: skip, REASON -->`"


@pytest.mark.parametrize("snippet", ALL, ids=lambda s: s.id)
def test_snippet(snippet: Snippet, demo_mixture: Path, page_state: dict, tmp_path_factory: pytest.TempPathFactory,
                 monkeypatch: pytest.MonkeyPatch) -> None:
    if snippet.skip:
        pytest.skip(f"{snippet.id}: {snippet.skip}")
    if snippet.page not in page_state:
        work = tmp_path_factory.mktemp(snippet.page.stem)
        shutil.copytree(demo_mixture, work / "demo-mixture")
        page_state[snippet.page] = (work, {"__name__": "__snippet__"})
    work, namespace = page_state[snippet.page]
    if snippet.lang == "bash":
        proc = subprocess.run(["bash", "-euo", "pipefail", "-c", snippet.code], cwd=work, env=_env(),
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, f"{snippet.id} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    else:
        import datasets  # medmix.load's cache goes to the page's folder, never the user's ~/.cache

        monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", work / ".hf-datasets")
        monkeypatch.chdir(work)
        exec(compile(snippet.code, snippet.id, "exec"), namespace)  # the docs' own code, run as a reader would


def test_collector_reads_languages_markers_and_indents(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("\n".join([
        "```bash", "echo run", "```",
        "<!-- snippet: skip, needs a GPU -->", "```python", "import torch", "```",
        "```yaml", "a: 1", "```",
        "- item", "  ```py", "  x = 1", "  ```",
        "````text", "```bash", "not a fence of its own", "```", "````",
    ]) + "\n")
    got = [(s.line, s.lang, s.code, s.skip) for s in snippets(page)]
    assert got == [(1, "bash", "echo run\n", None), (5, "python", "import torch\n", "needs a GPU"),
                   (12, "python", "x = 1\n", None)]
    page.write_text("```bash\necho never closed\n")
    with pytest.raises(AssertionError, match="never closed"):
        snippets(page)


def test_readme_links_resolve() -> None:
    """README sits outside the mkdocs site, so `mkdocs build --strict` does not check its links."""
    text = (ROOT / "README.md").read_text()
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
    local = [t for t in targets if "://" not in t]
    assert local, "README links to no docs page"
    missing = [t for t in local if not (ROOT / t).exists()]
    assert not missing, f"README.md links to missing files: {missing}"
