"""Recipes: YAML in, a validated `Recipe` out — before anything is downloaded.

Every problem is reported as `file:line: key: problem; fix`, because a recipe that fails after
two hours of downloads on a typo is the failure users of data tools complain about most.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from medmix.core.errors import RecipeError

TOP_KEYS = {"name", "description", "seed", "target_samples", "shard_rows", "image", "licenses", "dedup",
            "decontaminate", "sources"}
SOURCE_KEYS = {"adapter", "splits", "samples", "weight", "all", "from", "options"}
LICENSE_KEYS = {"accept", "allow_eval"}


@dataclass(frozen=True)
class SourceSpec:
    name: str                      # the mixture-level name (rows' `source`)
    adapter: str                   # registry name of the adapter
    splits: tuple[str, ...]
    mode: str                      # "all" | "samples" | "weight"
    value: float | None            # samples (int) or weight
    from_dir: str | None
    options: dict[str, Any]
    line: int


Fail = Callable[[str, str, str], RecipeError]  # (dotted key, problem, fix) → an error naming file and line


# The three settings sections are frozen dataclasses validated field by field. Field order is the
# order `resolved()` writes them in, and values are kept as written (an int threshold stays an
# int), so the manifest and the recipe hash are the same bytes as when these were plain dicts.


@dataclass(frozen=True)
class ImageSection:
    """`image:` — how every image is normalized (`medmix.imaging.canonical.ImagePolicy` is built from it)."""

    max_side: int | None = 1024
    encode: str = "keep"
    jpeg_quality: int = 90
    frame: str = "middle"
    # identifying text in pixels and text (`medmix.phi`): null = each source's default (quarantine for
    # `local` sources and every DICOM input, off for the registry's published datasets), one mode
    # for every source, or a mapping {source name: mode} (unnamed sources keep their default)
    burned_in_text: str | dict[str, str] | None = None

    @classmethod
    def parse(cls, raw: dict[str, Any], fail: Fail) -> ImageSection:
        mode = raw.get("burned_in_text")
        if mode is False or isinstance(mode, dict):  # YAML 1.1 reads a bare `off` as false
            raw = {**raw, "burned_in_text": "off" if mode is False else
                   {k: "off" if v is False else v for k, v in mode.items()}}
        image = cls(**raw)
        _check_burned_in_text(image.burned_in_text, fail)
        if image.max_side is not None and (not isinstance(image.max_side, int) or image.max_side < 16):
            raise fail("image.max_side", f"{image.max_side!r} is not an integer >= 16", "use e.g. 1024, or null")
        if image.encode not in ("keep", "png", "jpeg"):
            raise fail("image.encode", f"{image.encode!r} is not keep|png|jpeg", "use `encode: keep`")
        if image.frame not in ("middle", "first"):
            raise fail("image.frame", f"{image.frame!r} is not middle|first", "use `frame: middle`")
        if not isinstance(image.jpeg_quality, int) or not 1 <= image.jpeg_quality <= 100:
            raise fail("image.jpeg_quality", f"{image.jpeg_quality!r} is not 1..100", "use e.g. 90")
        return image


@dataclass(frozen=True)
class DedupSection:
    """`dedup:` — which rows count as one (see `medmix.mix.select` for the survivor rule)."""

    exact: bool = True
    image_distance: int | None = 8
    text_threshold: float | None = 0.9
    images: str = "shared"
    priority: tuple[str, ...] | None = ()   # sources whose rows survive a duplicate group first

    @classmethod
    def parse(cls, raw: dict[str, Any], fail: Fail) -> DedupSection:
        priority = raw.get("priority", ())
        if priority is not None and (not isinstance(priority, (list, tuple))
                                     or not all(isinstance(p, str) for p in priority)):
            raise fail("dedup.priority", "must be a list of source names", "use e.g. `priority: [pmc_vqa, rocov2]`")
        dedup = cls(**{**raw, "priority": tuple(priority) if priority is not None else None})
        _check_distance(dedup.image_distance, "dedup.image_distance", fail)
        t = dedup.text_threshold
        if t is not None and (not isinstance(t, (int, float)) or not 0 < t <= 1):
            raise fail("dedup.text_threshold", f"{t!r} is not in (0, 1]",
                       "use e.g. 0.9, or null to turn text near-dup off")
        if dedup.images not in ("shared", "unique"):
            raise fail("dedup.images", f"{dedup.images!r} is not shared|unique", "use `images: shared`")
        if not isinstance(dedup.exact, bool):
            raise fail("dedup.exact", "must be true or false", "use `exact: true`")
        return dedup


@dataclass(frozen=True)
class DecontaminateSection:
    """`decontaminate:` — the evaluation splits no training row may copy, and how a copy is recognised."""

    against: tuple[str, ...] = ()           # `source:split` entries
    image_distance: int | None = 10
    image_correlation: float | None = 0.8   # medmix.mix.image_confirm: the pictures must agree too
    ngram: int = 13

    @classmethod
    def parse(cls, raw: dict[str, Any], fail: Fail) -> DecontaminateSection:
        against = raw.get("against", [])
        if not isinstance(against, list) or not all(isinstance(a, str) and ":" in a for a in against):
            against = None  # reported below, after the fields before it, as before
        decon = cls(**{**raw, "against": tuple(against or ())})
        _check_distance(decon.image_distance, "decontaminate.image_distance", fail)
        c = decon.image_correlation
        if c is not None and (isinstance(c, bool) or not isinstance(c, (int, float)) or not 0 < c <= 1):
            raise fail("decontaminate.image_correlation", f"{c!r} is not in (0, 1]",
                       "use e.g. 0.8, or null to remove every hash match unconfirmed")
        if not isinstance(decon.ngram, int) or decon.ngram < 1:
            raise fail("decontaminate.ngram", f"{decon.ngram!r} is not a positive integer", "use `ngram: 13`")
        if against is None:
            raise fail("decontaminate.against", "must be a list of `source:split` strings",
                       "use e.g. `against: [pathvqa:test, vqa_rad:test]`")
        return decon

    def splits(self) -> list[tuple[str, str]]:
        """(source, split) pairs, in recipe order."""
        return [(item.split(":", 1)[0], item.split(":", 1)[1]) for item in self.against]


IMAGE_KEYS = {f.name for f in fields(ImageSection)}
DEDUP_KEYS = {f.name for f in fields(DedupSection)}
DECON_KEYS = {f.name for f in fields(DecontaminateSection)}


@dataclass(frozen=True)
class Recipe:
    name: str
    path: str
    seed: int
    target_samples: int | None
    shard_rows: int
    image: ImageSection
    accept: tuple[str, ...]
    allow_eval: tuple[str, ...]
    dedup: DedupSection
    decontaminate: DecontaminateSection
    sources: tuple[SourceSpec, ...]
    description: str = ""
    lines: dict[str, int] = field(default_factory=dict, compare=False)

    def resolved(self) -> dict[str, Any]:
        """The recipe as data, with defaults filled in; what the manifest records and hashes."""
        d = asdict(self)
        d.pop("lines")
        d.pop("path")
        for s in d["sources"]:
            s.pop("line")
        if d["image"]["burned_in_text"] is None:
            # the default is left out, so a recipe written before the option hashes as before; what
            # each source ran with is in the manifest's `sources.<name>.deidentification`
            d["image"].pop("burned_in_text")
        return d

    def burned_in_text(self, source: SourceSpec) -> tuple[str, str, str]:
        """(raster images, DICOM images, text columns) modes for one source.

        Defaults: a `local` source is the user's own data, so all three are "quarantine"; a registry
        dataset is published de-identified and its figures legitimately carry panel letters and
        axis text, so only its DICOM inputs (which may carry an overlay) are checked. A mode the
        recipe gives applies to images of any source, and to the text of `local` sources.
        """
        local = source.adapter == "local"
        given = self.image.burned_in_text
        mode = given.get(source.name) if isinstance(given, dict) else given
        if mode is None:
            return ("quarantine", "quarantine", "quarantine") if local else ("off", "quarantine", "off")
        return mode, mode, mode if local else "off"

    def sha256(self) -> str:
        return hashlib.sha256(json.dumps(self.resolved(), sort_keys=True).encode()).hexdigest()

    def base_dir(self) -> Path:
        return Path(self.path).parent


class _Lines:
    """Maps dotted key paths to YAML line numbers (and finds keys given twice) for error messages."""

    def __init__(self, node: yaml.Node | None) -> None:
        self.map: dict[str, int] = {}
        self.dupes: list[tuple[str, int]] = []
        if node is not None:
            self._walk(node, "")

    def _walk(self, node: yaml.Node, prefix: str) -> None:
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                key = f"{prefix}.{k.value}" if prefix else str(k.value)
                if key in self.map:
                    self.dupes.append((key, k.start_mark.line + 1))
                self.map[key] = k.start_mark.line + 1
                self._walk(v, key)
        elif isinstance(node, yaml.SequenceNode):
            for i, v in enumerate(node.value):
                self.map[f"{prefix}[{i}]"] = v.start_mark.line + 1
                self._walk(v, f"{prefix}[{i}]")


def builtin_recipes() -> dict[str, Path]:
    folder = resources.files("medmix") / "recipes"
    return {p.name[:-5]: Path(str(p)) for p in folder.iterdir() if p.name.endswith(".yaml")}


def find_recipe(name_or_path: str | None) -> Path:
    if name_or_path is None:
        name_or_path = "demo"
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.exists():
            raise RecipeError(f"recipe file {path} does not exist")
        return path
    known = builtin_recipes()
    if name_or_path not in known:
        raise RecipeError(f"unknown recipe {name_or_path!r}; built-in recipes: {', '.join(sorted(known))}, "
                          f"or pass a path to a .yaml file")
    return known[name_or_path]


def load_recipe(name_or_path: str | None) -> Recipe:
    path = find_recipe(name_or_path)
    text = path.read_text()
    return parse_recipe(text, str(path))


def parse_recipe(text: str, path: str = "<recipe>") -> Recipe:
    try:
        lines = _Lines(yaml.compose(text))
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else path
        raise RecipeError(f"{where}: not valid YAML: {getattr(exc, 'problem', exc)}") from None

    def fail(key: str, problem: str, fix: str) -> RecipeError:
        line = lines.map.get(key)
        where = f"{path}:{line}" if line else path
        return RecipeError(f"{where}: {key}: {problem}; {fix}")

    for key, line in lines.dupes:
        raise RecipeError(f"{path}:{line}: {key}: given twice; keep one")
    if not isinstance(data, dict):
        raise RecipeError(f"{path}: a recipe is a YAML mapping with at least `name` and `sources`")
    for key in data:
        if key not in TOP_KEYS:
            raise fail(key, "unknown key", f"use one of {sorted(TOP_KEYS)}")
    name = data.get("name")
    if not isinstance(name, str) or not name:
        raise fail("name", "missing or not text", "add `name: my-mixture`")
    seed = data.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise fail("seed", f"{seed!r} is not a non-negative integer", "use e.g. `seed: 0`")
    target = data.get("target_samples")
    if target is not None and (not isinstance(target, int) or isinstance(target, bool) or target <= 0):
        raise fail("target_samples", f"{target!r} is not a positive integer", "use e.g. `target_samples: 3350000`")
    shard_rows = data.get("shard_rows", 2000)
    if not isinstance(shard_rows, int) or shard_rows <= 0:
        raise fail("shard_rows", f"{shard_rows!r} is not a positive integer", "use e.g. `shard_rows: 2000`")

    image = ImageSection.parse(_section(data, "image", IMAGE_KEYS, fail), fail)

    lic = {"accept": [], "allow_eval": [], **_section(data, "licenses", LICENSE_KEYS, fail)}
    for k in ("accept", "allow_eval"):
        if not isinstance(lic[k], list) or not all(isinstance(x, str) for x in lic[k]):
            raise fail(f"licenses.{k}", "must be a list of strings", f"use e.g. `{k}: [CC-BY-NC-SA-4.0]`")

    dedup = DedupSection.parse(_section(data, "dedup", DEDUP_KEYS, fail), fail)
    decon = DecontaminateSection.parse(_section(data, "decontaminate", DECON_KEYS, fail), fail)

    raw_sources = data.get("sources")
    if not isinstance(raw_sources, dict) or not raw_sources:
        raise fail("sources", "missing or empty", "add `sources:` with at least one source")
    specs = []
    modes = set()
    for sname, spec in raw_sources.items():
        key = f"sources.{sname}"
        spec = {} if spec is None else spec
        if not isinstance(spec, dict):
            raise fail(key, "must be a mapping", "use e.g. `{splits: [train], all: true}`")
        for k in spec:
            if k not in SOURCE_KEYS:
                raise fail(f"{key}.{k}", "unknown key", f"use one of {sorted(SOURCE_KEYS)}")
        given = [k for k in ("samples", "weight", "all") if k in spec]
        if len(given) > 1:
            raise fail(f"{key}.{given[1]}", f"both {given[0]!r} and {given[1]!r} given",
                       "keep exactly one of samples / weight / all")
        mode = given[0] if given else "all"
        value: float | None = None
        if mode == "samples":
            value = spec["samples"]
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise fail(f"{key}.samples", f"{value!r} is not a positive integer", "use e.g. `samples: 10000`")
        elif mode == "weight":
            value = spec["weight"]
            if (not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0
                    or not math.isfinite(value)):
                raise fail(f"{key}.weight", f"{value!r} is not a positive number", "use e.g. `weight: 0.2`")
        elif mode == "all" and spec.get("all", True) is not True:
            raise fail(f"{key}.all", "must be true", "use `all: true`, or give samples/weight instead")
        modes.add(mode)
        splits = spec.get("splits", ["train"])
        if isinstance(splits, str):
            splits = [splits]
        if not isinstance(splits, list) or not splits or not all(isinstance(s, str) for s in splits):
            raise fail(f"{key}.splits", "must be a non-empty list of split names", "use e.g. `splits: [train]`")
        options = spec.get("options", {}) or {}
        if not isinstance(options, dict):
            raise fail(f"{key}.options", "must be a mapping", "use e.g. `options: {languages: [en]}`")
        from_dir = spec.get("from")
        if from_dir is not None and not isinstance(from_dir, str):
            raise fail(f"{key}.from", "must be a folder path", "use e.g. `from: /data/quilt1m`")
        specs.append(SourceSpec(str(sname), str(spec.get("adapter", sname)), tuple(splits), mode, value,
                                from_dir, dict(options), lines.map.get(key, 0)))
    if "weight" in modes and target is None:
        raise fail("target_samples", "sources use `weight` but no target_samples is set",
                   "add `target_samples: N` (weights are shares of it)")
    if target is not None and "weight" not in modes:
        raise fail("target_samples", "is set but no source uses `weight`",
                   "give some sources `weight: w`, or drop target_samples")
    if "weight" in modes:
        fixed = sum(int(s.value) for s in specs if s.mode == "samples")
        if fixed > target:
            raise fail("target_samples", f"{target} is smaller than the {fixed} rows fixed by `samples:`",
                       "raise target_samples or lower the samples counts")
    if isinstance(image.burned_in_text, dict):
        for sname in image.burned_in_text:
            if sname not in raw_sources:
                raise fail(f"image.burned_in_text.{sname}", "names no source of this recipe",
                           f"use one of {sorted(raw_sources)}")
    return Recipe(name=name, path=path, seed=seed, target_samples=target, shard_rows=shard_rows, image=image,
                  accept=tuple(lic["accept"]), allow_eval=tuple(lic["allow_eval"]), dedup=dedup,
                  decontaminate=decon, sources=tuple(specs), description=str(data.get("description", "")),
                  lines=dict(lines.map))


def _section(data: dict, name: str, keys: set[str], fail: Fail) -> dict:
    """The keys a section gives (defaults are the section dataclass's), refusing unknown ones."""
    raw = data.get(name) or {}
    if not isinstance(raw, dict):
        raise fail(name, "must be a mapping", f"use keys {sorted(keys)}")
    for k in raw:
        if k not in keys:
            raise fail(f"{name}.{k}", "unknown key", f"use one of {sorted(keys)}")
    return dict(raw)


_PHI_MODES = ("quarantine", "redact", "off")


def _check_burned_in_text(value: Any, fail: Fail) -> None:
    fix = "use `burned_in_text: quarantine` (or redact, off), or a mapping such as `{my_scans: redact}`"
    if value is None:
        return
    if isinstance(value, dict):
        for sname, mode in value.items():
            if mode not in _PHI_MODES:
                raise fail(f"image.burned_in_text.{sname}", f"{mode!r} is not quarantine|redact|off", fix)
    elif value not in _PHI_MODES:
        raise fail("image.burned_in_text", f"{value!r} is not quarantine|redact|off", fix)


def _check_distance(value: Any, key: str, fail: Fail) -> None:
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 16):
        raise fail(key, f"{value!r} is not an integer in 0..16 (bits of a 64-bit perceptual hash)",
                   "use e.g. 4, or null to turn it off")
