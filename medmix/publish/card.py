"""The Hub dataset card (README.md) of a pushed mixture: YAML metadata + a license-aware body.

Why generated, never hand-written: the card is the only license notice most users read, so it must
be computed from the rows actually uploaded (per-row licenses, exclusions) and from the manifest
(how the mixture was built), and it must say plainly what the data may and may not be used for.
The card is a pure function of its inputs (no dates, no paths, no secrets), so pushing the same
mixture twice gives the same README bytes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from medmix import __version__
from medmix.core.licenses import LicenseTerms, terms

# License ids the Hub's `license:` metadata accepts (https://huggingface.co/docs/hub/repositories-licenses).
HUB_LICENSES = frozenset({
    "apache-2.0", "mit", "openrail", "bigscience-openrail-m", "creativeml-openrail-m", "bigscience-bloom-rail-1.0",
    "bigcode-openrail-m", "afl-3.0", "artistic-2.0", "bsl-1.0", "bsd", "bsd-2-clause", "bsd-3-clause",
    "bsd-3-clause-clear", "c-uda", "cc", "cc0-1.0", "cc-by-2.0", "cc-by-2.5", "cc-by-3.0", "cc-by-4.0", "cc-by-sa-3.0",
    "cc-by-sa-4.0", "cc-by-nc-2.0", "cc-by-nc-3.0", "cc-by-nc-4.0", "cc-by-nd-4.0", "cc-by-nc-nd-3.0",
    "cc-by-nc-nd-4.0", "cc-by-nc-sa-2.0", "cc-by-nc-sa-3.0", "cc-by-nc-sa-4.0", "cdla-sharing-1.0",
    "cdla-permissive-1.0", "cdla-permissive-2.0", "wtfpl", "ecl-2.0", "epl-1.0", "epl-2.0", "etalab-2.0", "eupl-1.1",
    "eupl-1.2", "agpl-3.0", "gfdl", "gpl", "gpl-2.0", "gpl-3.0", "lgpl", "lgpl-2.1", "lgpl-3.0", "isc", "lppl-1.3c",
    "ms-pl", "mpl-2.0", "odc-by", "odbl", "openrail++", "osl-3.0", "postgresql", "ofl-1.1", "ncsa", "unlicense",
    "zlib", "pddl", "unknown", "other",
})
# SPDX ids whose Hub spelling is not simply the lower-cased id.
SPDX_TO_HUB = {"ODC-By-1.0": "odc-by", "ODbL-1.0": "odbl", "PDDL-1.0": "pddl"}
# medmix task → Hub task_categories
TASK_CATEGORIES = {
    "caption": ("image-to-text",),
    "vqa": ("visual-question-answering",),
    "mcqa": ("multiple-choice", "question-answering"),
    "qa": ("question-answering",),
    "classification": ("image-classification",),
}
SIZE_CATEGORIES = ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
                   (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M"), (1_000_000_000, "100M<n<1B"))


def hub_license(spdx: str) -> str:
    """SPDX id → the Hub's license id; `other` for LicenseRefs and anything the Hub does not list."""
    hub = SPDX_TO_HUB.get(spdx, spdx.lower())
    return hub if hub in HUB_LICENSES else "other"


def size_category(n: int) -> str:
    for limit, label in SIZE_CATEGORIES:
        if n < limit:
            return label
    return "n>1T"


@dataclass
class SourceInfo:
    """What the card says about one source; from its adapter class, or a stand-in for local folders."""

    name: str
    adapter: str
    title: str
    homepage: str | None
    citation: str
    declared_license: str
    redistributable: bool
    known_adapter: bool = True  # False: built by an adapter this medmix does not have (nothing can be confirmed)


@dataclass
class CardInputs:
    repo_id: str
    manifest: Mapping[str, Any]
    manifest_sha256: str
    stats: Mapping[str, Any]              # medmix.publish.stats figures of the rows being pushed (+ "manifest")
    sources: Mapping[str, SourceInfo]
    configs: Mapping[str, str]            # config name → data_files glob; "default" first
    excluded: Mapping[str, int] = field(default_factory=dict)   # source → rows dropped at push
    forced: Mapping[str, int] = field(default_factory=dict)     # source → non-redistributable rows pushed anyway
    # `medmix export` writes this same card beside files that are not a Hub repository: its own
    # "## Loading" text (Markdown), and the flag and verb of its forced-inclusion notice
    usage: str | None = None
    force_flag: str = "--force-nonredistributable"
    action: str = "pushed"


def _cell(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ").strip()


def _table(header: list[str], rows: list[list[Any]], right: set[int] = frozenset()) -> str:
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join("---:" if i in right else "---" for i in range(len(header))) + "|"]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _pct(n: int, total: int) -> str:
    return f"{100 * n / total:.1f}%" if total else "-"


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9.]+", "-", text.lower()).strip("-")


def _yes(flag: bool) -> str:
    return "yes" if flag else "**no**"


def metadata(inp: CardInputs) -> dict[str, Any]:
    """The YAML header: what the Hub indexes (license, tasks, size, language) and the configs it loads."""
    rows = inp.stats["rows"]
    spdx = sorted(rows["by_license"])
    licenses = sorted({hub_license(s) for s in spdx})
    meta: dict[str, Any] = {"pretty_name": f"medmix: {inp.manifest['recipe'].get('name', 'mixture')}",
                            "license": licenses}
    others = [s for s in spdx if hub_license(s) == "other"]
    if others:
        meta["license_name"] = _slug(others[0]) if len(others) == 1 else "multiple-see-dataset-card"
        homepages = {info.homepage for info in inp.sources.values()
                     if info.homepage and any(lic in others for lic in rows["by_source_license"].get(info.name, {}))}
        if len(others) == 1 and len(homepages) == 1:
            meta["license_link"] = homepages.pop()
    meta["language"] = ["en"] + (["zh"] if rows.get("rows_with_han_script") else [])
    meta["task_categories"] = sorted({c for t in rows["by_task"] for c in TASK_CATEGORIES.get(t, ())})
    meta["size_categories"] = [size_category(rows["total"])]
    meta["tags"] = ["medical", "biomedical", "medmix", "vision-language"] + sorted(rows["by_domain"])
    configs = []
    for name, glob in inp.configs.items():
        entry: dict[str, Any] = {"config_name": name, "data_files": [{"split": "train", "path": glob}]}
        if name == "default":
            entry["default"] = True
        configs.append(entry)
    if configs:  # an export is not a Hub repository: no configs to list
        meta["configs"] = configs
    return meta


def _license_rows(inp: CardInputs) -> tuple[list[list[Any]], dict[str, list[tuple[str, str, int]]]]:
    """The per-(source, license) table, and the rows that restrict use, grouped by restriction."""
    rows = inp.stats["rows"]
    table, flags = [], {"non-commercial": [], "no-derivatives": [], "unknown": [], "no-redistribution": []}
    for source, per_license in rows["by_source_license"].items():
        info = inp.sources.get(source)
        for lic, n in per_license.items():
            t: LicenseTerms = terms(lic)
            redistribution = t.redistribution and (info.redistributable if info else False)
            unknown = "unknown"
            table.append([source, f"`{lic}`", f"{n:,}", _yes(t.commercial) if t.known else unknown,
                          _yes(redistribution) if t.known else unknown, _yes(t.derivatives) if t.known else unknown,
                          "yes" if t.share_alike else "no", t.summary()])
            if not t.known:
                flags["unknown"].append((source, lic, n))
            if t.known and not t.commercial:
                flags["non-commercial"].append((source, lic, n))
            if t.known and not t.derivatives:
                flags["no-derivatives"].append((source, lic, n))
            if not redistribution:
                flags["no-redistribution"].append((source, lic, n))
    return table, flags


def _listing(items: list[tuple[str, str, int]]) -> str:
    return ", ".join(f"{s} (`{lic}`, {n:,} rows)" for s, lic, n in items)


def _hub_loading(inp: CardInputs) -> list[str]:
    """The card's "Loading" section for a Hub repository laid out by `medmix push`."""
    out = ["## Loading", "", "```python", "from datasets import load_dataset", "",
            f'mixture = load_dataset("{inp.repo_id}", split="train")  # every row once, grouped by source']
    first_source = next((c for c in inp.configs if c != "default"), None)
    if first_source:
        out.append(f'one = load_dataset("{inp.repo_id}", "{first_source}", split="train")  # config = a source name')
    out += ["```", "", ("Images decode to PIL images; `options` holds multiple-choice options, `meta` a JSON "
                        "string of source-specific fields."), "",
            ("Each data file holds the rows of one source (`data/<source>/train-*.parquet`): the per-source configs "
             "list their own folder and the default config lists them all, so no image is stored twice. The default "
             "config therefore reads source after source (sorted by name; the build's order within a source): "
             "shuffle it (`mixture.shuffle(seed=0)`) before training on it as a mixture."), ""]
    return out


def body(inp: CardInputs) -> str:
    m, rows, man = inp.manifest, inp.stats["rows"], inp.stats["manifest"]
    total = rows["total"]
    recipe = m["recipe"]
    name = recipe.get("name", "mixture")
    out: list[str] = [f"# medmix: {name}", ""]
    if recipe.get("description"):
        out += [recipe["description"], ""]
    out += [(f"A medical vision-language pretraining mixture of **{total:,} rows** from "
             f"**{len(rows['by_source'])} source(s)**, built reproducibly by medmix {m.get('medmix_version', '?')} "
             f"from the recipe `{name}`. Every row carries its source, split, domain, task and its own license id."),
            ""]

    table, flags = _license_rows(inp)
    sum_flag = {k: sum(n for _, _, n in v) for k, v in flags.items()}
    notices = []
    if sum_flag["non-commercial"]:
        notices.append(f"> **Non-commercial content.** {sum_flag['non-commercial']:,} rows "
                       f"({_pct(sum_flag['non-commercial'], total)}) are under licenses that do **not** allow "
                       f"commercial use: {_listing(flags['non-commercial'])}. The mixture as a whole may only be used "
                       f"for non-commercial purposes unless you drop those rows (filter on the `license` column or "
                       f"load only the per-source configs you may use).")
    if sum_flag["no-derivatives"]:
        notices.append(f"> **No-derivatives content.** {sum_flag['no-derivatives']:,} rows may not be distributed in "
                       f"modified form: {_listing(flags['no-derivatives'])}.")
    if sum_flag["unknown"]:
        notices.append(f"> **Licenses to review.** {sum_flag['unknown']:,} rows carry license ids whose terms medmix "
                       f"does not know: {_listing(flags['unknown'])}. Review them before any use.")
    if inp.forced:
        notices.append(f"> **WARNING: content whose terms forbid redistribution was {inp.action} on explicit "
                       f"request** (`{inp.force_flag}`): "
                       + ", ".join(f"{s} ({n:,} rows)" for s, n in sorted(inp.forced.items()))
                       + ". The uploader states they hold the rights to share it; if you are not entitled to it, "
                         "do not download or use these rows.")
    if inp.excluded:
        notices.append("> **Rows left out of this upload** because their source or license forbids redistribution "
                       "(`--exclude-nonredistributable`): "
                       + ", ".join(f"{s} ({n:,} rows)" for s, n in sorted(inp.excluded.items()))
                       + ". Rebuild the recipe locally with `medmix build` to get them.")
    if notices:
        out += ["\n>\n".join(notices), ""]

    if inp.usage is not None:
        out += ["## Loading", "", inp.usage.rstrip(), ""]
    else:
        out += _hub_loading(inp)

    out += ["## Composition", ""]
    comp = []
    for source, n in rows["by_source"].items():
        info = inp.sources.get(source)
        title = info.title if info else source
        link = f"[{title}]({info.homepage})" if info and info.homepage else title
        tasks = ", ".join(rows["by_source_task"].get(source, {}))
        lics = ", ".join(f"`{lic}`" for lic in rows["by_source_license"].get(source, {}))
        comp.append([f"`{source}`", link, tasks, lics, f"{n:,}", _pct(n, total)])
    out += [_table(["config", "source", "tasks", "license(s)", "rows", "share"], comp, {4, 5}), ""]
    for key, label in (("by_domain", "domain"), ("by_task", "task")):
        cells = [[k, f"{v:,}", _pct(v, total)] for k, v in rows[key].items()]
        out += [_table([label, "rows", "share"], cells, {1, 2}), ""]
    img = inp.stats.get("images", {})
    if img.get("rows"):
        w, h = img["width"], img["height"]
        out += [(f"{img['rows']:,} rows carry an image; width p5/p50/p95 = {w['p5']}/{w['p50']}/{w['p95']} px, "
                 f"height {h['p5']}/{h['p50']}/{h['p95']} px."), ""]

    out += ["## Licenses", "",
            ("Each row's `license` column holds its SPDX id (or a `LicenseRef-` for terms that are not SPDX "
             "licenses). What each allows, per source:"), "",
            _table(["source", "license", "rows", "commercial use", "redistribution", "derivatives", "share-alike",
                    "terms"], table, {2}), "",
            ("Attribution: cite every source you use (BibTeX below) and keep the per-row license ids with any "
             "derivative you share. Share-alike licenses require derivatives under the same terms."), ""]

    out += ["## How it was built", "",
            _table(["", ""], [["recipe", f"`{name}`"], ["recipe sha256", f"`{m['recipe_sha256']}`"],
                              ["medmix version", f"`{m.get('medmix_version', '?')}`"],
                              ["schema version", f"`{m.get('schema_version', '?')}`"],
                              ["manifest sha256", f"`{inp.manifest_sha256}`"],
                              ["card written by", f"medmix {__version__}"]]), "",
            (f"`manifest.json` (in this repository) records the resolved recipe, every upstream file and its "
             f"checksum, and the per-source counts below. Rebuild locally with `medmix build --recipe {name}`; the "
             f"recipe sha256 identifies the exact recipe."), ""]

    out += ["### Deduplication, decontamination and quarantine", ""]
    funnel = []
    for source, s in man["sources"].items():
        c = s["counts"]
        funnel.append([f"`{source}`", *[f"{c.get(k, 0):,}" for k in ("read", "quarantined", "license_filtered",
                                                                      "duplicates", "contaminated", "available",
                                                                      "selected")], f"{c.get('epochs', 0):g}"])
    out += [_table(["source", "read", "quarantined", "license not accepted", "duplicates", "contaminated", "available",
                    "selected", "epochs"], funnel, set(range(1, 9))), ""]
    t = man["totals"]
    out.append(f"{t['duplicates']:,} duplicate rows were removed (exact and near duplicates, "
               f"settings in the recipe's `dedup`) and {t['contaminated']:,} rows overlapping evaluation sets were "
               f"removed (recipe `decontaminate`).")
    if man["decontamination"]:
        out += ["", _table(["evaluation set (match)", "training rows removed"],
                           [[k, f"{v:,}"] for k, v in man["decontamination"].items()], {1})]
    q = man["quarantine"]
    if q["rows"]:
        out += ["", f"{q['rows']:,} input rows were quarantined (unreadable or invalid); the most frequent reasons:",
                "",
                _table(["reason", "rows"], [[r, f"{n:,}"] for r, n in q["top_reasons"]], {1})]
    out.append("")
    out += ["<details><summary>Resolved recipe</summary>", "", "```yaml",
            yaml.safe_dump(recipe, sort_keys=True, allow_unicode=True).rstrip(), "```", "", "</details>", ""]

    out += ["## Citations", "", "Cite each source you use:", ""]
    for source in rows["by_source"]:
        info = inp.sources.get(source)
        citation = info.citation.strip() if info else ""
        out.append(f"**{source}**" + (f" ({info.title})" if info and info.title != source else ""))
        if citation:
            out += ["", "```bibtex", citation, "```", ""]
        elif info and info.adapter == "local":
            out += ["", "No citation: a local source added by the mixture's author.", ""]
        else:
            out += ["", "No citation recorded by its adapter.", ""]
    return "\n".join(out).rstrip() + "\n"


def render_card(inp: CardInputs) -> str:
    """README.md text: `---` YAML `---` then the body."""
    header = yaml.safe_dump(metadata(inp), sort_keys=False, allow_unicode=True, width=1000)
    return f"---\n{header}---\n\n{body(inp)}"
