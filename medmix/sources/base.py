"""The source contract: what an adapter declares, and the one function it writes.

An adapter is a short, declarative subclass of `Source`: identity (name, homepage, BibTeX,
SPDX license, domain, tasks), the upstream files (`Remote` for HTTP or the Hugging Face Hub,
`Manual` for registration-gated files the user places with `--from SOURCE=DIR`), which splits
are evaluation benchmarks, and `read()`, which turns local raw files into `Record`s.

Everything else is shared code and never appears in an adapter: downloading, checksums,
extraction, image decoding and normalization, hashing, validation, quarantine, Parquet writing.
Why so strict: 14+ adapters written by different people stay reviewable only if each is a page
of mapping code, and a fix to (say) DICOM windowing reaches every source at once.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from medmix.core.modality import canonical as canonical_modality
from medmix.fetch.upstreams import Derived, Manual, Remote, Upstream

__all__ = ["Bad", "Derived", "Manual", "RealBytes", "Record", "Remote", "Source", "Unit", "Upstream"]


@dataclass(frozen=True)
class RealBytes:
    """Where the adapter's format was checked against real upstream bytes.

    Why it exists: three of nine adapters once passed their tests on fixtures that imitated the
    documentation and failed on the real files. An adapter that declares `RealBytes` has a test
    fixture cut from the files named here (a public repository that mirrors, samples or loads
    the dataset), with a `PROVENANCE` file beside it; one that declares none is "from
    documentation only", and `medmix sources` says so.
    `repo` is `owner/name` on GitHub, `commit` the 40-hex commit read, `paths` the files in it.
    """

    repo: str
    commit: str
    paths: tuple[str, ...]
    note: str = ""

    def __post_init__(self) -> None:
        if len(self.commit) != 40 or any(c not in "0123456789abcdef" for c in self.commit):
            raise ValueError(f"RealBytes {self.repo!r}: commit must be 40 lowercase hex digits, got {self.commit!r}")
        if not self.paths:
            raise ValueError(f"RealBytes {self.repo!r}: name at least one path read")

    @property
    def citation(self) -> str:
        """`owner/name@commit:path[, path…]`, the form PROVENANCE files and `medmix sources` use."""
        return f"{self.repo}@{self.commit}:{', '.join(self.paths)}"

    @property
    def url(self) -> str:
        """The repository tree at the commit read, for a reader who wants to look for themselves."""
        return f"https://github.com/{self.repo}/tree/{self.commit}"

    def describe(self) -> dict[str, Any]:
        return {"repo": self.repo, "commit": self.commit, "paths": list(self.paths), "note": self.note,
                "citation": self.citation, "url": self.url}


def short_upstream(upstream: str) -> str:
    """`host` and file name on two lines, for a table cell; `medmix sources --json` keeps the full URL.

    Why: at 80 columns a full Zenodo or Hub URL folds into a column ten lines tall; the host says
    who serves the file and the file name says which one, which is what a reader scans for.
    """
    from urllib.parse import urlsplit

    if upstream.startswith("manual: "):
        return upstream
    if upstream.startswith("hf://"):
        rest = upstream[len("hf://"):]
        host, path = "hf.co", rest.split("@", 1)[-1].split("/", 1)[-1]
    else:
        parts = urlsplit(upstream)
        host, path = parts.netloc, parts.path
    name = path.rstrip("/").rsplit("/", 1)[-1]
    if len(name) > 32:  # hash-named shards and archives: both ends say which file it is
        name = f"{name[:12]}…{name[-14:]}"
    return f"{host}\n{name}" if name else host


@dataclass(frozen=True)
class Unit:
    """An independent, idempotent piece of work: one slice of one split of one source.

    Its output is named by `key()`, a hash of everything that determines the output bytes, so
    finished units are never redone and the same units can run on any machine or engine.
    `args` must be JSON-serializable (e.g. {"file": "train-00003.parquet"} or {"part": 2, "of": 8}).
    """

    source: str
    split: str
    part: str = "0"
    args: Mapping[str, Any] = field(default_factory=dict)

    def key(self, salt: Mapping[str, Any]) -> str:
        payload = {"unit": dataclasses.asdict(self) | {"args": dict(self.args)}, "salt": dict(salt)}
        blob = json.dumps(payload, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:32]


@dataclass
class Record:
    """What an adapter yields for one sample, before shared normalization.

    `image` may be raw bytes (any Pillow format or DICOM), a `Path` to such a file, or None for
    text-only rows. A `Path` that does not exist becomes a quarantined row, not a crash.
    Fields left None fall back to the source's declarations (task, modality, license).
    """

    native_id: str
    answer: str | None
    question: str | None = None
    options: list[str] | None = None
    context: str | None = None
    image: bytes | Path | None = None
    image_name: str | None = None
    task: str | None = None
    modality: str | None = None
    license: str | None = None
    domain: str | None = None
    meta: dict[str, Any] | None = None


@dataclass
class Bad:
    """A row the adapter could not read (malformed line, missing field); quarantined and counted."""

    native_id: str | None
    reason: str
    file: str | None = None


class Source:
    """Base class of every adapter. Subclasses set the class attributes and implement `read`."""

    name: ClassVar[str]
    title: ClassVar[str]
    homepage: ClassVar[str]
    citation: ClassVar[str]
    license: ClassVar[str]
    domain: ClassVar[str]
    tasks: ClassVar[tuple[str, ...]]
    modality: ClassVar[str | None] = None
    # split name → expected rows after the adapter's own filters (None where unknown).
    splits: ClassVar[Mapping[str, int | None]] = {}
    # splits that are evaluation benchmarks: refused in pretraining recipes unless overridden.
    eval_splits: ClassVar[frozenset[str]] = frozenset()
    # the whole source is a benchmark (e.g. carries a canary string).
    benchmark: ClassVar[bool] = False
    # license terms beyond the SPDX id (e.g. gated "no redistribution" agreements).
    redistributable: ClassVar[bool] = True
    # rows carry their own license (e.g. PMC-OA: the article's); `license` is then the fallback
    # for rows whose license is unknown, and the recipe's accept list filters rows, not the source.
    per_row_license: ClassVar[bool] = False
    files: ClassVar[tuple[Upstream, ...]] = ()
    # bumped when the adapter's output for the same inputs changes; part of every unit key.
    version: ClassVar[str] = "1"
    notes: ClassVar[str] = ""
    # the real upstream bytes the adapter's fixture was cut from; () means "from documentation only".
    real_bytes: ClassVar[tuple[RealBytes, ...]] = ()
    # False for an adapter that reads the user's own files: there is no upstream format to check.
    upstream_format: ClassVar[bool] = True

    def __init__(self, **options: Any) -> None:
        unknown = set(options) - set(self.option_names())
        if unknown:
            raise TypeError(f"source {self.name!r} takes no option(s) {sorted(unknown)}; "
                            f"it takes {sorted(self.option_names())}")
        self.options = dict(options)

    @classmethod
    def option_names(cls) -> tuple[str, ...]:
        """Recipe-level options this adapter accepts (e.g. SLAKE's `languages`)."""
        return ()

    def files_for(self, splits: tuple[str, ...]) -> tuple[Upstream, ...]:
        return tuple(f for f in self.files if f.splits is None or set(f.splits) & set(splits))

    def units(self, split: str, files: Mapping[str, Path]) -> list[Unit]:
        """Cut a split into work units. The default is one unit per split; large sources
        override this (one unit per upstream shard, or N slices of a big JSON)."""
        return [Unit(self.name, split)]

    def read(self, unit: Unit, files: Mapping[str, Path]) -> Iterator[Record | Bad]:
        """Yield the unit's samples as `Record`s (or `Bad` for rows that cannot be read).

        `files` maps each `Remote.name` / `Manual.name` to a local path (a folder for
        extracted archives). Raise only for problems that make the whole unit wrong.
        """
        raise NotImplementedError

    # -- descriptive helpers used by `medmix sources` and the plan ----------------------------
    @classmethod
    def format_status(cls) -> str:
        """"real bytes", "documentation only", or "not applicable" (the user's own files)."""
        if not cls.upstream_format:
            return "not applicable"
        return "real bytes" if cls.real_bytes else "documentation only"

    @classmethod
    def describe(cls) -> dict[str, Any]:
        return {
            "name": cls.name,
            "title": cls.title,
            "license": cls.license,
            "domain": cls.domain,
            "modality": canonical_modality(cls.modality),  # what its rows will carry
            "tasks": list(cls.tasks),
            "homepage": cls.homepage,
            "citation": cls.citation.strip(),
            "splits": dict(cls.splits),
            "eval_splits": sorted(cls.eval_splits),
            "benchmark": cls.benchmark,
            "redistributable": cls.redistributable,
            "per_row_license": cls.per_row_license,
            "manual": any(isinstance(f, Manual) for f in cls.files),
            "upstream": [f"manual: {f.name}" if isinstance(f, Manual) else f.upstream for f in cls.files],
            "format": cls.format_status(),
            "real_bytes": [r.describe() for r in cls.real_bytes],
        }
