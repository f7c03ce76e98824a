"""mkdocs hooks: the Datasets section is generated from the same sources as DATASETS.md.

`medmix.publish.datasets_md` writes DATASETS.md from the adapter registry (the summary table) and the
hand-written `docs/datasets/<name>.md`; here the same two make the site's Datasets section, so the
site, DATASETS.md and `medmix sources` cannot disagree, and a new adapter's page needs no nav edit.
"""

from __future__ import annotations

import re
from pathlib import Path

from mkdocs.structure.files import File

from medmix.publish.datasets_md import INTRO, summary_table

DOCS = Path(__file__).resolve().parent
INDEX = "datasets/index.md"


def _pages() -> list[Path]:
    return sorted((DOCS / "datasets").glob("*.md"))


def _title(page: Path) -> str:
    first = page.read_text().splitlines()[0]
    return first.lstrip("#").strip().replace("`", "")


def on_config(config):
    """Expand the nav entry `Datasets: datasets/index.md` into the summary and one page per source."""
    for i, entry in enumerate(config["nav"]):
        if isinstance(entry, dict) and entry.get("Datasets") == INDEX:
            config["nav"][i] = {"Datasets": [{"Summary": INDEX},
                                             *({_title(p): f"datasets/{p.name}"} for p in _pages())]}
    return config


def on_files(files, config):
    """The summary page, written from `medmix.publish.datasets_md` (not a file in docs/)."""
    names = {p.stem for p in _pages()}
    table = re.sub(r"^\| `(\w+)` \|", lambda m: f"| [`{m[1]}`]({m[1]}.md) |" if m[1] in names else m[0],
                   summary_table(), flags=re.M)
    intro = INTRO.replace("# DATASETS", "# Datasets", 1).replace("the sections below it", "the pages of this section")
    files.append(File.generated(config, INDEX, content=f"{intro}\n## Summary\n\n{table}\n"))
    return files


def on_page_markdown(markdown, page, config, files):
    """Source pages start at `##` (they are sections of DATASETS.md); on the site each is a page."""
    if not page.file.src_uri.startswith("datasets/") or page.file.src_uri == INDEX:
        return markdown
    out, fence = [], None
    for line in markdown.splitlines():
        m = re.match(r"^\s*(`{3,}|~{3,})", line)
        if m and (fence is None or m[1].startswith(fence)):
            fence = None if fence else m[1]
        elif fence is None and line.startswith("##"):
            line = line[1:]
        out.append(line)
    return "\n".join(out) + "\n"
