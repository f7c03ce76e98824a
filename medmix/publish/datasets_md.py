"""DATASETS.md is generated: a summary table from the registry + one hand-written section per
source from docs/datasets/<name>.md, so the table can never disagree with the adapters.

    python -m medmix.publish.datasets_md > DATASETS.md
"""

from __future__ import annotations

from pathlib import Path

from medmix.core.licenses import terms
from medmix.sources import registry

ROOT = Path(__file__).resolve().parents[2]

INTRO = """# DATASETS

Every source medmix can build from: what it is, its license and what that allows, how medmix
fetches it, the adapter's choices, and the traps. The summary table is generated from the adapter
registry (`medmix sources --json` gives the same as JSON); the sections below it are maintained in
`docs/datasets/<name>.md`. Regenerate with `python -m medmix.publish.datasets_md > DATASETS.md` (a test checks it).

## How `openmedq-3.35m` was reconstructed

The OpenMedQ paper (MIDL 2026) says only "14 datasets totaling ~3.35M pretraining samples spanning
pathology, radiology, microscopy, and text-only clinical QA"; its dataset table and code could not
be read when medmix was written. The 14 sources of `recipes/openmedq-3.35m.yaml` are **our
reconstruction** from the abstract and the literature, not the paper's list. MicroVQA (a benchmark
with a canary string) was replaced by PubMedVision alignment VQA, which also fills the volume to
exactly `target_samples` after dedup. If the paper's table becomes available, the recipe changes;
the registry format does not. `recipes/openmedq-open.yaml` keeps only rows whose license allows
commercial use and redistribution.

Row counts marked approximate are upstream's published figures, not counted by medmix; a build's
`manifest.json` has the real counts.
"""


FORMAT_NOTE = """**format**: *real bytes* means the adapter's reader was checked on files cut from a public
copy of the upstream data (the link is the repository at the commit read; the fixture and its
`PROVENANCE` are in `tests/fixtures/real/<source>/`, and a test reads them through the adapter).
*documentation only* means no public copy of the files could be found, so the reader follows the
upstream documentation, which has been wrong before (see issue 22): check the first build's
quarantine of such a source before trusting its counts.
"""


def format_cell(cls: type) -> str:
    """The summary table's `format` cell: the provenance link, or why there is none."""
    if cls.format_status() != "real bytes":
        return cls.format_status()
    links = ", ".join(f"[{r.repo}@{r.commit[:7]}]({r.url})" for r in cls.real_bytes)
    return f"real bytes: {links}"


def summary_table() -> str:
    lines = ["| source | domain | tasks | license | allows | rows (declared) | evaluation | format |",
             "|---|---|---|---|---|---|---|---|"]
    for name, cls in registry().items():
        if name == "local":
            continue
        rows = " · ".join(f"{k} {v:,}" if v else f"{k} ?" for k, v in cls.splits.items())
        ev = "benchmark" if cls.benchmark else ", ".join(sorted(cls.eval_splits)) or "—"
        allows = "per row (see section)" if cls.per_row_license else terms(cls.license).summary()
        tasks = ", ".join(cls.tasks)
        lines.append(f"| `{name}` | {cls.domain} | {tasks} | {cls.license} | {allows} | {rows} | {ev} | "
                     f"{format_cell(cls)} |")
    return "\n".join(lines)


def datasets_markdown() -> str:
    parts = [INTRO, "## Summary\n", summary_table(), "", FORMAT_NOTE]
    for doc in sorted((ROOT / "docs" / "datasets").glob("*.md")):
        parts += [doc.read_text().rstrip(), ""]
    return "\n".join(parts).rstrip() + "\n"


if __name__ == "__main__":
    print(datasets_markdown(), end="")
