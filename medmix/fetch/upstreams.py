"""What a source declares it needs fetched: a `Remote` file, a `Manual` file or folder the user
places, or a `Derived` table medmix computes from other files.

Why these live in `fetch`, not beside `Source`: they are the fetcher's input language. The
downloader, the lock and `medmix doctor` read nothing else of an adapter, so keeping them here
lets `fetch` stand below `sources` (tests/package/test_layering.py); `medmix.sources.base`
re-exports them, so an adapter imports everything it declares from one place.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Remote:
    """One upstream file that medmix downloads.

    Either `url` (plain HTTP(S)) or `hf_repo` + `hf_path` (+ `revision`, a commit sha when
    pinned) is set. `sha256`/`size` pin the bytes; None means "not pinned yet" and is recorded
    as such in the manifest (`medmix lock` fills it on a machine with network).
    `extract=True` unpacks a zip/tar safely and hands the adapter the folder instead of the file.
    `splits` limits the file to the splits that need it, so a train-only recipe never downloads
    a test archive.
    """

    name: str
    url: str | None = None
    hf_repo: str | None = None
    hf_path: str | None = None
    revision: str | None = None
    repo_type: str = "dataset"
    sha256: str | None = None
    size: int | None = None
    extract: bool = False
    splits: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if (self.url is None) == (self.hf_repo is None):
            raise ValueError(f"Remote {self.name!r}: set exactly one of url= or hf_repo=")
        if self.hf_repo is not None and not self.hf_path:
            raise ValueError(f"Remote {self.name!r}: hf_repo needs hf_path")

    @property
    def upstream(self) -> str:
        if self.url:
            return self.url
        rev = self.revision or "main"
        return f"hf://{self.repo_type}s/{self.hf_repo}@{rev}/{self.hf_path}"


@dataclass(frozen=True)
class Manual:
    """A file or folder the user must obtain by hand and place under `--from SOURCE=DIR`.

    `name` is the path relative to DIR; `how` says where to get it (URL, form, terms).
    `content_sha256` pins a folder's content (every file's name, size and sha256, as
    `medmix.fetch.fileid.fingerprint(verify=True)` digests it); a lock sets it, like a Remote's sha256.
    """

    name: str
    how: str
    is_dir: bool = False
    extract: bool = False
    splits: tuple[str, ...] | None = None
    content_sha256: str | None = None


@dataclass(frozen=True)
class Derived:
    """A table medmix computes from other upstream files plus small look-ups, then treats like a file.

    Why its own kind: some facts a source needs are not in any one file upstream. PMC-OA's
    per-article licenses live in ~1 KB JSON documents in NCBI's cloud bucket, one per article
    version; medmix fetches only those its rows cite and writes them into one table
    (`medmix.sources._pmc_licenses`). `make` ("module:function") builds it from the already fetched
    `inputs`; `url` is where the look-ups go (shown by `--plan` and checked by `medmix doctor`).
    `medmix lock` pins the table (sha256, size, date) and stores it in the lock (`table`), so a
    rebuild reads it from there and needs no request; a copy under `--from SOURCE=DIR/<name>` is
    used as is (the place for an archived input the builder also accepts, see the adapter).
    """

    name: str
    make: str
    url: str
    inputs: tuple[str, ...] = ()
    sha256: str | None = None
    size: int | None = None
    table: Any = None  # the pinned table itself, from the lock
    splits: tuple[str, ...] | None = None

    @property
    def upstream(self) -> str:
        return self.url


Upstream = Remote | Manual | Derived
