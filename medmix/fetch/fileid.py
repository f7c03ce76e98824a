"""What a local input *is*, for cache keys: a fingerprint of a folder or file a source reads.

Why: the normalize cache names a unit's output by a hash of everything that determines it. A
downloaded file is named by its sha256, but a folder the user points at (`adapter: local`,
`--from quilt1m=DIR`) has no such name: before this module its key held only the source name and
options, so a fixed label, a removed image or a different folder under the same source name
silently got the old rows back (issue 11, part 1).

A fingerprint covers, for every file under the folder: its path relative to the folder, its size
and its modification time (ns), plus a sha256 of the content for metadata-like files (text tables,
JSON; these are edited in place, sometimes by tools that keep the mtime, and they are small next to
the images), and for every file when `verify=True` (`medmix build --verify`: for a folder that was
copied with `cp -p`/`rsync -t` over changed bytes of the same size). The resolved folder path is
part of it, so two folders under one source name never share a key.

Cost, measured on the 2-core dev machine: 10,001 files (20.8 MB, one 0.8 MB metadata.csv) take
0.18 s to fingerprint, 0.37 s with `verify=True`; `--verify` on a 100 GB folder costs what reading
100 GB costs, which is why it is a flag.

The mtime belongs in the *cache key* only: the manifest records `files`/`bytes`/`content_sha256`
(a hash of paths, sizes and content hashes where computed), which are equal for equal folders on
any machine.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from medmix.core.writer import sha256_file

# Rows fed to the digests at once: per-file `update` calls and `json.dumps` were half the
# fingerprint's time (3.6 of 6.8 s for 177k files); formatted rows joined 4,096 at a time cost ~1 s.
_FEED_ROWS = 4096
# Files whose content is always hashed: the tables and labels a source reads rows from.
METADATA_SUFFIXES = frozenset({".csv", ".tsv", ".jsonl", ".json", ".txt", ".yaml", ".yml", ".xml", ".parquet"})


def scan_tree(root: str, descend: Callable[[str, os.DirEntry], bool]) -> Iterator[tuple[str, os.DirEntry]]:
    """(path relative to `root`, `os.DirEntry`) of every entry below `root` that `descend(rel,
    entry)` does not enter; folders it enters are walked, unreadable ones skipped. One
    `os.scandir` per folder and no Path objects: the one walk of the fingerprint and the `local`
    adapter, which differ only in which folders they enter."""
    stack = [("", root)]
    while stack:
        prefix, folder = stack.pop()
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for entry in entries:
            rel = prefix + entry.name
            try:
                inside = descend(rel, entry)
            except OSError:
                continue
            if inside:
                stack.append((rel + "/", entry.path))
            else:
                yield rel, entry


def _files(root: Path) -> list[tuple[str, int, int]]:
    """(relative POSIX path, size, mtime in ns) of every regular file under `root` (symlinks
    followed), sorted by relative path. One `os.stat` per file, `os.scandir` entries (their path
    is already joined) and no `pathlib` objects; the full path is rebuilt only for the files whose
    content is hashed.

    Measured: at 104,034 files (the `--scale 0.03` rehearsal's upstream) the pathlib version took
    3.1-3.2 s and os.walk with one stat 1.25-1.38 s. At 3.70M files (the full rehearsal) the fetch
    stage took 149-160 s and peaked at 1.7 GB on the driver, most of it a `stat_result` kept per
    file (~200 B each); three plain values a file keep PMC-OA's 1.65M files in ~0.4 GB."""
    found: list[tuple[str, int, int]] = []
    linked: list[str] = []

    def descend(rel: str, entry: os.DirEntry) -> bool:
        if entry.is_dir():  # follows symlinks
            if entry.is_symlink():
                linked.append(rel + "/")
            return True
        return False

    for rel, entry in scan_tree(str(root), descend):
        try:
            st = entry.stat()  # follows symlinks, as is_file() did
        except OSError:
            continue  # a dangling link is not a file
        if stat.S_ISREG(st.st_mode):
            found.append((rel, st.st_size, st.st_mtime_ns))
    found.sort(key=lambda item: item[0])
    _LAST.clear()  # only the latest folder's: it is the one whose adapter cuts units next
    _LAST[str(root)] = (found, tuple(linked))
    return found


# The listing `fingerprint` made last: (files, prefixes of folders reached through a symlink)
_LAST: dict[str, tuple[list[tuple[str, int, int]], tuple[str, ...]]] = {}


def take_listing(root: Path) -> tuple[list[tuple[str, int, int]], tuple[str, ...]] | None:
    """The listing the last `fingerprint` of `root` made, handed over once (None if another folder
    was fingerprinted since). Why: the local adapter cuts a folder into units by its files and
    sizes right after the fetch stage fingerprinted it; listing 3.70M files a second time was
    about half of the full rehearsal's 109-148 s fetch stage. It is also the very listing the
    unit keys were made from."""
    return _LAST.pop(str(Path(root).resolve()), None)


def fingerprint(path: Path, *, verify: bool = False) -> dict[str, Any]:
    """Fingerprint a folder (every file under it) or a single file.

    Returns `{"path", "files", "bytes", "content_sha256", "key"}`: `key` (a sha256) changes when
    any file is added, removed, renamed, resized, touched or (for hashed files) edited, or when
    the resolved path changes; `content_sha256` leaves out the path and the mtimes, for the manifest.
    Both digests are fed row by row, the same bytes `json.dumps` of the whole row lists gave (a
    test checks them against that form), so no second list of every file's row is held: at 3.70M
    files those lists were ~0.7 GB of the driver's fetch-stage peak.
    """
    root = Path(path).resolve()
    if root.is_file():
        st = root.stat()
        items = [("", st.st_size, st.st_mtime_ns)]
    else:
        items = _files(root)
    key = hashlib.sha256(b"[" + _json(str(root)) + b",[")
    content = hashlib.sha256(b"[")
    key_rows: list[str] = []
    content_rows: list[str] = []
    total = 0
    for n, (rel, size, mtime) in enumerate(items):
        hashed = verify or os.path.splitext(rel or root.name)[1].lower() in METADATA_SUFFIXES
        digest = '"' + sha256_file(root / rel if rel else root) + '"' if hashed else "null"
        name = _json_str(rel)
        sep = "," if n else ""
        key_rows.append(f"{sep}[{name},{size},{mtime},{digest}]")
        content_rows.append(f"{sep}[{name},{size},{digest}]")
        total += size
        if len(key_rows) >= _FEED_ROWS:
            key.update("".join(key_rows).encode())
            content.update("".join(content_rows).encode())
            key_rows.clear()
            content_rows.clear()
    key.update("".join(key_rows).encode() + b"]]")
    content.update("".join(content_rows).encode() + b"]")
    return {
        "path": str(root),
        "files": len(items),
        "bytes": total,
        "content_sha256": content.hexdigest(),
        "key": key.hexdigest(),
    }


def _json_str(s: str) -> str:
    """`json.dumps(s)`: quoted as is when nothing needs escaping (printable ASCII without quotes
    or backslashes, every name a generator writes), else through `json` itself."""
    if s.isascii() and s.isprintable() and '"' not in s and "\\" not in s:
        return '"' + s + '"'
    return json.dumps(s)


def _json(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()
