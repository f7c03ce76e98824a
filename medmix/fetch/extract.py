"""Unpacking upstream archives without trusting them.

Why not `ZipFile.extractall` / `TarFile.extractall`: an archive from the internet can write
outside its folder (`../`, absolute paths, links pointing out), create devices, or expand a few
KB into terabytes (headers lie about sizes). medmix refuses all of that with an error naming the
archive and the member, counts the bytes it actually decompresses, and publishes the folder
only once it is complete (extract into a temp folder, then rename), so a crash never leaves a
half-extracted folder that a later run would take for a finished one.

Links are never created on disk. A link whose target stays inside the archive is materialized
(a hard link or copy of that file), because real symlinks turn every later path check into a
race against the links already written (the tarfile CVEs of 2023-2025 are all that race).
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import os
import posixpath
import shutil
import stat
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from medmix.core.errors import MedmixError, UnsafeArchiveError
from medmix.core.writer import publish_dir

CHUNK = 1 << 20
_SINGLE_FILE = {  # magic bytes → (opener, suffixes dropped from the output name)
    b"\x1f\x8b": (gzip.open, (".gz", ".gzip")),
    b"BZh": (bz2.open, (".bz2",)),
    b"\xfd7zXZ\x00": (lzma.open, (".xz",)),
}


@dataclass
class _Budget:
    """Byte and member limits for one archive, charged as bytes are really written."""

    archive: Path
    max_member_bytes: int
    max_total_bytes: int
    max_members: int
    total: int = 0
    members: int = 0

    def member(self, name: str) -> None:
        self.members += 1
        if self.members > self.max_members:
            raise UnsafeArchiveError(f"{self.archive}: more than {self.max_members} members (at {name!r})")

    def declared(self, name: str, size: int) -> None:
        if size > self.max_member_bytes:
            raise UnsafeArchiveError(f"{self.archive}: member {name!r} declares {size} bytes, over the "
                                     f"{self.max_member_bytes}-byte limit per member")

    def charge(self, name: str, written: int, added: int) -> None:
        self.total += added
        if written > self.max_member_bytes:
            raise UnsafeArchiveError(f"{self.archive}: member {name!r} decompresses to more than "
                                     f"{self.max_member_bytes} bytes (limit per member)")
        if self.total > self.max_total_bytes:
            raise UnsafeArchiveError(f"{self.archive}: contents exceed {self.max_total_bytes} bytes in total "
                                     f"(reached at member {name!r})")


@dataclass
class _Links:
    """Link members seen so far, materialized after every regular file is on disk."""

    items: list[tuple[str, str, str]] = field(default_factory=list)  # (member path, target path, kind)


def _safe_relpath(archive: Path, name: str) -> str | None:
    """The member's path relative to the destination, or None for entries that name the root itself.

    Refuses absolute paths, drive letters, NUL bytes and any `..` component. Backslashes count as
    separators for this check: Windows tools write them, and a `..\\` must not slip through.
    """
    if "\x00" in name:
        raise UnsafeArchiveError(f"{archive}: member {name!r} has a NUL byte in its name")
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        raise UnsafeArchiveError(f"{archive}: member {name!r} has an absolute path")
    parts = [p for p in name.replace("\\", "/").split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnsafeArchiveError(f"{archive}: member {name!r} escapes the target folder with '..'")
    return "/".join(parts) or None


def _link_target(archive: Path, name: str, rel: str, target: str, *, symbolic: bool) -> str:
    """Where a link points, as a path relative to the destination; refuse anything outside it.

    Symlink targets are relative to the link's folder, hardlink targets to the archive root.
    The check is lexical and exact because no link ever exists on disk during extraction.
    """
    kind = "symlink" if symbolic else "hardlink"
    if not target or target.startswith(("/", "\\")) or (len(target) > 1 and target[1] == ":"):
        raise UnsafeArchiveError(f"{archive}: member {name!r} is a {kind} to an absolute path {target!r}")
    base = posixpath.dirname(rel) if symbolic else ""
    resolved = posixpath.normpath(posixpath.join(base, target.replace("\\", "/")))
    if resolved == ".." or resolved.startswith("../") or resolved == ".":
        raise UnsafeArchiveError(f"{archive}: member {name!r} is a {kind} to {target!r}, outside the target folder")
    return resolved


def _copy_stream(src: BinaryIO, out_path: Path, name: str, budget: _Budget) -> None:
    written = 0
    with open(out_path, "xb") as out:
        while block := src.read(CHUNK):
            written += len(block)
            budget.charge(name, written, len(block))
            out.write(block)


def _prepare(root: Path, rel: str, archive: Path, name: str) -> Path:
    target = root / rel
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        raise UnsafeArchiveError(f"{archive}: member {name!r} appears twice or collides with a folder")
    return target


# -- formats --------------------------------------------------------------------------------------
def _extract_zip(archive: Path, root: Path, budget: _Budget, links: _Links) -> None:
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            name = info.filename
            budget.member(name)
            rel = _safe_relpath(archive, name)
            if rel is None:
                continue
            # Unix-made zips keep st_mode in the high 16 bits; its type bits may be 0 (plain writers).
            mode = stat.S_IFMT(info.external_attr >> 16) if info.create_system == 3 else 0
            if info.is_dir():
                (root / rel).mkdir(parents=True, exist_ok=True)
            elif stat.S_ISLNK(mode):
                if info.file_size > 4096:
                    raise UnsafeArchiveError(f"{archive}: member {name!r} is a symlink with a "
                                             f"{info.file_size}-byte target")
                target = zf.read(info).decode("utf-8", "surrogateescape")
                links.items.append((rel, _link_target(archive, name, rel, target, symbolic=True), "symlink"))
            elif mode not in (0, stat.S_IFREG):
                raise UnsafeArchiveError(f"{archive}: member {name!r} is a device, fifo or socket")
            else:
                budget.declared(name, info.file_size)
                if info.flag_bits & 0x1:
                    raise MedmixError(f"{archive}: member {name!r} is encrypted; medmix cannot unpack it")
                with zf.open(info) as src:
                    _copy_stream(src, _prepare(root, rel, archive, name), name, budget)


def _tar_members(tar: tarfile.TarFile) -> Iterator[tarfile.TarInfo]:
    """Iterate a streamed tar without keeping every TarInfo (10M members would be GBs of them)."""
    for member in tar:
        yield member
        tar.members = []


def _extract_tar(archive: Path, root: Path, budget: _Budget, links: _Links) -> None:
    # Stream mode ("r|*"): one sequential pass, even for .tar.gz, where random access would
    # decompress the archive again for every member.
    with tarfile.open(archive, mode="r|*") as tar:
        for member in _tar_members(tar):
            name = member.name
            budget.member(name)
            rel = _safe_relpath(archive, name)
            if member.issym() or member.islnk():
                if rel is None:
                    raise UnsafeArchiveError(f"{archive}: member {name!r} is a link in place of the target folder")
                symbolic = member.issym()
                target = _link_target(archive, name, rel, member.linkname, symbolic=symbolic)
                links.items.append((rel, target, "symlink" if symbolic else "hardlink"))
            elif member.isdir():
                if rel is not None:
                    (root / rel).mkdir(parents=True, exist_ok=True)
            elif member.isreg():
                if rel is None:
                    raise UnsafeArchiveError(f"{archive}: member {name!r} is a file in place of the target folder")
                budget.declared(name, member.size)
                src = tar.extractfile(member)
                assert src is not None  # regular members always have data
                _copy_stream(src, _prepare(root, rel, archive, name), name, budget)
            else:
                raise UnsafeArchiveError(f"{archive}: member {name!r} is a device, fifo or other special file")


def _extract_single(archive: Path, root: Path, budget: _Budget, opener, suffixes: tuple[str, ...]) -> None:  # type: ignore[no-untyped-def]
    """A lone compressed file (PCam's `.h5.gz`): the folder gets the file without its suffix."""
    name = archive.name
    for suffix in suffixes:
        if name.lower().endswith(suffix) and len(name) > len(suffix):
            name = name[: -len(suffix)]
            break
    else:
        name = name + ".out"
    budget.member(name)
    with opener(archive, "rb") as src:
        _copy_stream(src, root / name, name, budget)


def _materialize_links(archive: Path, root: Path, links: _Links, budget: _Budget) -> None:
    """Give each in-archive link the bytes of its target file (following link chains, no loops)."""
    pending = {rel: (target, kind) for rel, target, kind in links.items}

    def resolve(rel: str, seen: tuple[str, ...]) -> Path:
        target, _ = pending[rel]
        if target in seen or target == rel:
            raise UnsafeArchiveError(f"{archive}: member {rel!r} is part of a link loop")
        if target in pending:
            return resolve(target, seen + (rel,))
        path = root / target
        if path.is_dir():
            raise UnsafeArchiveError(f"{archive}: member {rel!r} links to the folder {target!r}; "
                                     "links to folders are not supported")
        if not path.is_file():
            raise UnsafeArchiveError(f"{archive}: member {rel!r} links to {target!r}, which is not in the archive")
        return path

    for rel, _target, _kind in links.items:
        source = resolve(rel, ())
        dest = _prepare(root, rel, archive, rel)
        size = source.stat().st_size
        budget.charge(rel, size, size)
        try:
            os.link(source, dest)  # same bytes, no extra disk; the file is not a link to follow
        except OSError:
            shutil.copyfile(source, dest)


def _kind(archive: Path) -> str:
    """Sniff the format from the bytes, not the name: cached files keep upstream names that may lie,
    and `zipfile.is_zipfile` alone would mistake a tar that ends with a .zip member for a zip."""
    with open(archive, "rb") as fh:
        head = fh.read(8)
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return "zip"
    try:
        if tarfile.is_tarfile(archive):
            return "tar"
    except (OSError, EOFError, zlib.error, lzma.LZMAError):
        pass
    for magic in _SINGLE_FILE:
        if head.startswith(magic):
            return magic.hex()
    raise MedmixError(f"{archive}: not a zip, tar, or gzip/bzip2/xz file; cannot extract it")


def safe_extract(archive: Path, dest: Path, *, max_member_bytes: int = 8 << 30, max_total_bytes: int = 64 << 30,
                 max_members: int = 10_000_000) -> Path:
    """Unpack `archive` (zip, tar[.gz|.bz2|.xz], or one .gz/.bz2/.xz file) into the folder `dest`.

    `dest` appears only when extraction is complete, so an existing `dest` is a finished one and
    is returned as is: callers name it by the archive's sha256, which makes this idempotent.
    Raises `UnsafeArchiveError` (naming archive and member) for path escapes, links pointing
    outside, special files and size or count limits; nothing is left behind on failure.
    """
    archive, dest = Path(archive), Path(dest)
    if dest.exists():
        return dest
    if not archive.is_file():
        raise MedmixError(f"{archive}: archive not found")
    kind = _kind(archive)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
    budget = _Budget(archive, max_member_bytes, max_total_bytes, max_members)
    links = _Links()
    try:
        if kind == "zip":
            _extract_zip(archive, tmp, budget, links)
        elif kind == "tar":
            _extract_tar(archive, tmp, budget, links)
        else:
            opener, suffixes = _SINGLE_FILE[bytes.fromhex(kind)]
            _extract_single(archive, tmp, budget, opener, suffixes)
        _materialize_links(archive, tmp, links, budget)
        os.chmod(tmp, 0o755)  # mkdtemp makes it 0700; the folder is a normal cache folder
    except (zipfile.BadZipFile, tarfile.TarError, gzip.BadGzipFile, EOFError, zlib.error, lzma.LZMAError) as err:
        shutil.rmtree(tmp, ignore_errors=True)
        raise MedmixError(f"{archive}: corrupt or truncated archive ({type(err).__name__}: {err})") from None
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        raise MedmixError(f"{archive}: extracting into {dest} failed: {err}") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    publish_dir(tmp, dest)  # or another process finished the same extraction first
    return dest
