"""Getting upstream bytes onto local disk: HTTP(S) with sha256, resume and retries; the Hub; manual files.

Why medmix does this itself instead of `urlretrieve` or `datasets` download managers: public
medical datasets live on hosts that go down (Zenodo 503s), drop long transfers and ship
multi-GB archives. A build must survive a flaky connection (retry with backoff, resume with
`Range` from a `.part` file, even one left by a killed process), must never use bytes other
than the pinned ones (sha256 over the whole file; a mismatch stops the build), and must never
fetch the same bytes twice (content-addressed cache: a pinned file already there costs no request).

Cache layout under `cache_dir`:
    sha256/<hex>/<basename>        verified files, named by content (basename kept for humans and suffixes)
    url/<key>.json                 unpinned URL → sha256 of what it served the first time
    partial/<key>/<basename>.part  downloads in progress (resumable), <key> = sha256 of the URL
    extracted/<hex>/               archives unpacked by `safe_extract`, named by the archive's sha256
    hf/                            huggingface_hub's own cache (revisions, blobs, snapshots)
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import random
import re
import shutil
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.client import HTTPException
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO
from urllib.parse import unquote, urlsplit

from medmix import __version__
from medmix.core.errors import FetchError, ManualFilesMissing, MedmixError
from medmix.core.writer import sha256_file  # noqa: F401  (re-exported: fetch.sha256_file)
from medmix.fetch.extract import safe_extract
from medmix.fetch.upstreams import Derived, Manual, Remote

if TYPE_CHECKING:
    from medmix.sources.base import Source

try:  # POSIX advisory locks keep two processes from appending to the same .part file
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

CHUNK = 1 << 20
MAX_BACKOFF_S = 60.0
USER_AGENT = f"medmix/{__version__} (+https://github.com/medmix)"
_LOCAL_DISK_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")


# -- small helpers --------------------------------------------------------------------------------
def mirror_url(url: str, mirror: str | None) -> str:
    """Rewrite `url` onto a mirror: `https://host/a/b` → `{mirror}/host/a/b` (query kept).

    Why the host stays in the path: one institutional mirror can then hold every upstream
    without collisions, laid out the same way `wget -x` lays out a crawl.
    """
    if mirror is None:
        return url
    base = urlsplit(mirror)
    if base.scheme not in ("http", "https") or not base.netloc:
        raise FetchError(f"mirror {mirror!r} is not an http(s) URL like http://mirror.example.org/medmix")
    parts = urlsplit(url)
    if not parts.netloc:
        raise FetchError(f"cannot mirror {url!r}: it is not an absolute URL")
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    mapped = f"{mirror.rstrip('/')}/{host}{parts.path or '/'}"
    return f"{mapped}?{parts.query}" if parts.query else mapped


def url_basename(url: str) -> str:
    """The file name a URL serves, made safe to use as one path component."""
    name = unquote(urlsplit(url).path.rstrip("/").rsplit("/", 1)[-1])
    name = name.replace("\\", "_").replace("\x00", "_")
    if name in ("", ".", ".."):
        return "download"
    if len(name.encode()) > 200:  # file systems stop at 255 bytes; keep the suffix, it names the format
        stem, dot, suffix = name.rpartition(".")
        keep = "." + suffix if dot and len(suffix) <= 16 else ""
        name = name.encode()[: 200 - len(keep.encode())].decode("utf-8", "ignore") + keep
    return name


def _url_key(url: str) -> str:
    return hashlib.sha256(url.encode()).hexdigest()


def partial_path(url: str, cache_dir: Path) -> Path:
    """Where an unfinished download of `url` lives; stable across processes so a killed run resumes."""
    return Path(cache_dir) / "partial" / _url_key(url)[:32] / (url_basename(url) + ".part")


def fetch_info(path: Path) -> dict[str, Any]:
    """sha256 and size of a file `download` returned: read off its content address, no rehash."""
    path = Path(path)
    digest = path.parent.name
    if path.parent.parent.name != "sha256" or not _HEX64.match(digest):
        raise MedmixError(f"{path} is not in a medmix download cache")
    return {"sha256": digest, "size": path.stat().st_size}


@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a+b") as fh:
        if fcntl is not None:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            if fcntl is not None:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _publish(src: Path, cache_dir: Path, digest: str, basename: str) -> Path:
    """Atomically move a verified file into `sha256/<hex>/<basename>` (rename, same filesystem)."""
    final = Path(cache_dir) / "sha256" / digest / basename
    final.parent.mkdir(parents=True, exist_ok=True)
    os.replace(src, final)
    return final


def _cached(cache_dir: Path, digest: str, basename: str) -> Path | None:
    """The cached file for `digest`, under `basename`; another name with the same bytes is linked, not refetched."""
    folder = Path(cache_dir) / "sha256" / digest
    target = folder / basename
    if target.is_file():
        return target
    if not folder.is_dir():
        return None
    for other in sorted(p for p in folder.iterdir() if p.is_file()):
        tmp = folder / f".{basename}.{os.getpid()}.tmp"
        try:
            os.link(other, tmp)
        except OSError:
            shutil.copyfile(other, tmp)
        os.replace(tmp, target)
        return target
    return None


# -- HTTP -----------------------------------------------------------------------------------------
class _Retryable(Exception):
    """A failure worth another try: 5xx, 408/429, a dropped connection, a timeout, a short body."""


class _SafeRedirects(urllib.request.HTTPRedirectHandler):
    """Follow redirects, but never carry credentials to another host (signed CDN links)."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and urlsplit(newurl).netloc != urlsplit(req.full_url).netloc:
            for name in ("Authorization", "Cookie"):
                new.remove_header(name)
        return new


_OPENER = urllib.request.build_opener(_SafeRedirects)


def _progress_bar(enabled: bool, total: int | None, initial: int, desc: str) -> Any:
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, unit="B", unit_scale=True, unit_divisor=1024, desc=desc, leave=False)


def _stream_once(url: str, part: Path, *, size: int | None, timeout: float,
                 headers: dict[str, str], progress: bool) -> None:
    """One attempt: append the rest of `url` to `part`, asking for `Range` when `part` has bytes.

    Returns when `part` holds the whole body; raises `_Retryable` for transient trouble and
    `FetchError` for answers that retrying will not change (404, 403, a different file size).
    """
    offset = part.stat().st_size if part.exists() else 0
    if size is not None and offset > size:  # the leftover is not a prefix of the pinned file
        part.unlink()
        offset = 0
    if size is not None and offset == size:
        return
    request_headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity", **headers}
    if offset:
        request_headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(url, headers=request_headers)
    try:
        response = _OPENER.open(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        err.close()
        if err.code == 416 and offset:
            # The .part already holds everything (or more than) the server has.
            total = _total_from_content_range(err.headers.get("Content-Range"))
            if total == offset:
                return
            part.unlink()
            raise _Retryable(f"HTTP 416 for a resume at byte {offset}; starting over") from None
        if err.code >= 500 or err.code in (408, 425, 429):
            raise _Retryable(f"HTTP {err.code} {err.reason}") from None
        hint = " (the link may need credentials or may have expired)" if err.code in (401, 403) else ""
        raise FetchError(f"{url}: HTTP {err.code} {err.reason}{hint}") from None
    except (urllib.error.URLError, HTTPException, OSError) as err:
        reason = getattr(err, "reason", err)
        raise _Retryable(f"connection failed: {reason}") from None

    with response:
        if response.status == 206:
            start = _start_from_content_range(response.headers.get("Content-Range"))
            if start != offset:
                part.unlink(missing_ok=True)
                raise _Retryable(f"server resumed at byte {start}, not {offset}; starting over")
            mode, expected_total = "ab", _total_from_content_range(response.headers.get("Content-Range"))
        else:  # 200: the server ignored Range (or none was sent) and sends the whole body
            offset, mode = 0, "wb"
            length = response.headers.get("Content-Length")
            expected_total = int(length) if length and length.isdigit() else None
        if size is not None and expected_total is not None and expected_total != size:
            raise FetchError(f"{url}: the server has {expected_total} bytes but the pinned size is {size}; "
                             "the upstream file changed or the pin is wrong")
        bar = _progress_bar(progress, expected_total, offset, url_basename(url))
        try:
            with open(part, mode) as out:
                _copy(response, out, bar)
                out.flush()
                os.fsync(out.fileno())
        except (HTTPException, OSError) as err:  # socket.timeout and resets are OSErrors
            if getattr(err, "errno", None) in _LOCAL_DISK_ERRORS:  # our disk, not the network: retrying won't help
                raise FetchError(f"{url}: cannot write {part}: {err}") from None
            raise _Retryable(f"connection lost after {part.stat().st_size} bytes: {err}") from None
        finally:
            if bar is not None:
                bar.close()
    got = part.stat().st_size
    if expected_total is not None and got < expected_total:
        raise _Retryable(f"connection closed after {got} of {expected_total} bytes")


def _copy(src: BinaryIO, dst: BinaryIO, bar: Any) -> None:
    while block := src.read(CHUNK):
        dst.write(block)
        if bar is not None:
            bar.update(len(block))


def _start_from_content_range(value: str | None) -> int | None:
    match = re.match(r"bytes (\d+)-\d+/(\d+|\*)", value or "")
    return int(match.group(1)) if match else None


def _total_from_content_range(value: str | None) -> int | None:
    match = re.match(r"bytes (?:\d+-\d+|\*)/(\d+)", value or "")
    return int(match.group(1)) if match else None


def _download_to_part(url: str, part: Path, *, size: int | None, retries: int, backoff: float,
                      timeout: float, headers: dict[str, str], progress: bool) -> None:
    """Retry `_stream_once` with exponential backoff; an attempt that gained bytes does not count,
    so a long transfer over a link that drops every few minutes still finishes."""
    failures = 0
    while True:
        before = part.stat().st_size if part.exists() else 0
        try:
            _stream_once(url, part, size=size, timeout=timeout, headers=headers, progress=progress)
            return
        except _Retryable as err:
            after = part.stat().st_size if part.exists() else 0
            failures = 0 if after > before else failures + 1
            if failures > retries:
                raise FetchError(f"{url}: giving up after {retries + 1} attempts without progress; last error: {err}. "
                                 f"The partial file {part} is kept; running again resumes it") from None
            delay = min(backoff * (2 ** max(failures - 1, 0)), MAX_BACKOFF_S)
            time.sleep(delay * (1 + 0.1 * random.random()))


def download(url: str, cache_dir: Path, *, sha256: str | None, size: int | None = None, retries: int = 5,
             backoff: float = 0.5, timeout: float = 60.0, headers: dict | None = None,
             progress: bool = False) -> Path:
    """Download `url` into the content-addressed cache and return the cached file.

    Pinned (`sha256` given): a file already cached under that sha256 returns at once, with no
    request. Otherwise the bytes stream into a `.part` file (resumed with `Range` after a drop
    or a killed process), are verified over the whole file, and move atomically into the cache.
    A mismatch deletes the bytes and tries one clean download (a corrupting proxy or a torn
    resume); a second mismatch raises `FetchError` with the URL, expected and actual sha256.

    Unpinned: the first download is remembered by URL and reused; `fetch_info(path)` gives
    the sha256 to pin.
    """
    cache_dir = Path(cache_dir)
    basename = url_basename(url)
    expected = sha256.lower() if sha256 else None
    if expected is not None and not _HEX64.match(expected):
        raise FetchError(f"{url}: pinned sha256 {sha256!r} is not 64 hex digits")
    index = cache_dir / "url" / f"{_url_key(url)[:32]}.json"


    def cache_hit() -> Path | None:
        if expected is not None:
            return _cached(cache_dir, expected, basename)
        if index.is_file():
            known = json.loads(index.read_text())
            if known.get("url") == url:
                return _cached(cache_dir, known["sha256"], known["name"])
        return None

    if (hit := cache_hit()) is not None:
        return hit
    part = partial_path(url, cache_dir)
    with _locked(part.with_name(part.name + ".lock")):
        # Another process may have finished this download while we waited for the lock.
        if (hit := cache_hit()) is not None:
            return hit
        for attempt in (1, 2):
            _download_to_part(url, part, size=size, retries=retries, backoff=backoff, timeout=timeout,
                              headers=dict(headers or {}), progress=progress)
            got_size = part.stat().st_size
            actual = sha256_file(part)
            if (expected is None or actual == expected) and (size is None or got_size == size):
                break
            part.unlink()
            if attempt == 2:
                problem = (f"expected sha256 {expected}, got {actual}" if actual != expected
                           else f"expected {size} bytes, got {got_size}")
                raise FetchError(f"{url}: downloaded bytes are not the pinned ones ({problem}), twice. "
                                 "The upstream file changed, or the pin is wrong; nothing was kept in the cache")
        final = _publish(part, cache_dir, actual, basename)
        with contextlib.suppress(OSError):
            part.parent.rmdir()
        if expected is None:
            index.parent.mkdir(parents=True, exist_ok=True)
            tmp = index.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps({"url": url, "sha256": actual, "name": basename, "size": got_size}))
            os.replace(tmp, index)
        return final


# -- Hugging Face Hub ----------------------------------------------------------------------------
def hf_download(repo_id: str, filename: str, *, revision: str | None, repo_type: str = "dataset",
                cache_dir: Path, sha256: str | None = None, endpoint: str | None = None,
                retries: int = 3, backoff: float = 1.0) -> Path:
    """One Hub file via `huggingface_hub.hf_hub_download` (its cache under `cache_dir/hf`,
    its token lookup, its resume); then sha256-checked when pinned.

    Why through huggingface_hub and not plain HTTP: gated datasets need the user's token from
    `hf auth login` or HF_TOKEN, large files come over Xet, and a commit-pinned file already in
    its cache is returned without any request. The token is never logged or put in messages.
    """
    from huggingface_hub import constants as hf_constants
    from huggingface_hub import hf_hub_download
    from huggingface_hub.utils import (  # the one import path from 0.23 to 2.x
        EntryNotFoundError,
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    upstream = f"hf://{repo_type}s/{repo_id}@{revision or 'main'}/{filename}"
    failures = 0
    while True:
        try:
            local = Path(hf_hub_download(repo_id, filename, revision=revision, repo_type=repo_type,
                                         cache_dir=Path(cache_dir) / "hf", endpoint=endpoint))
            break
        except GatedRepoError:
            raise FetchError(f"{upstream}: the dataset is gated; accept its terms on the Hub page, then log in "
                             "with `hf auth login` (or set HF_TOKEN)") from None
        except RepositoryNotFoundError:
            raise FetchError(f"{upstream}: repository not found (or private and no token allows it)") from None
        except RevisionNotFoundError:
            raise FetchError(f"{upstream}: revision {revision!r} does not exist") from None
        except EntryNotFoundError as err:
            # huggingface_hub 1.x/2.x derive LocalEntryNotFoundError (no network and nothing cached)
            # from EntryNotFoundError: only a remote "not found" means the file is not there.
            if not isinstance(err, LocalEntryNotFoundError):
                raise FetchError(f"{upstream}: no file {filename!r} at that revision") from None
            failures += 1
            if failures > retries:
                raise FetchError(f"{upstream}: download failed after {failures} attempts (no network, or the "
                                 f"Hub is unreachable, and the file is not in the cache): {err}") from None
            time.sleep(min(backoff * 2 ** (failures - 1), MAX_BACKOFF_S))
        except OSError as err:
            # LocalEntryNotFound is how hf_hub_download reports a network or 5xx failure it could
            # not answer from its cache: transient, so retry like plain HTTP does. A 4xx or
            # offline mode will answer the same next time, so they fail at once.
            status = getattr(getattr(err, "response", None), "status_code", None)
            offline = getattr(hf_constants, "is_offline_mode", lambda: hf_constants.HF_HUB_OFFLINE)()
            permanent = offline or (
                isinstance(err, HfHubHTTPError) and status is not None and status < 500 and status not in (408, 429))
            failures += 1
            if permanent or failures > retries:
                tries = "" if permanent else f" after {failures} attempts"
                raise FetchError(f"{upstream}: download failed{tries}: {type(err).__name__}: {err}") from None
            time.sleep(min(backoff * 2 ** (failures - 1), MAX_BACKOFF_S))

    if sha256 is not None:
        actual = sha256_file(local)
        if actual != sha256.lower():
            # Remove the bad blob so the next run downloads again instead of trusting the cache.
            blob = local.resolve()
            local.unlink(missing_ok=True)
            blob.unlink(missing_ok=True)
            raise FetchError(f"{upstream}: expected sha256 {sha256.lower()}, got {actual}; the file was "
                             "removed from the cache. Pin a commit sha as revision so the bytes cannot move")
    return local


def _hf_commit(local: Path) -> str | None:
    """The commit a Hub file resolved to, read from its snapshot path (`snapshots/<sha>/...`)."""
    parts = local.parts
    if "snapshots" in parts:
        idx = len(parts) - 1 - parts[::-1].index("snapshots")
        if idx + 1 < len(parts) and _COMMIT.match(parts[idx + 1]):
            return parts[idx + 1]
    return None


# -- one source -----------------------------------------------------------------------------------
@dataclass
class FetchResult:
    """What a source's upstream files became locally, and where each came from (for the manifest)."""

    paths: dict[str, Path] = field(default_factory=dict)
    provenance: list[dict[str, Any]] = field(default_factory=list)
    # name → what the bytes under that name are, for unit cache keys: the sha256 of a file, or a
    # folder's `medmix.fetch.fileid.fingerprint` key (resolved path, every file's size, mtime, hashes)
    fingerprints: dict[str, str | None] = field(default_factory=dict)


def _check_pin(what: str, path: Path, sha256: str | None, size: int | None) -> tuple[str, int]:
    actual_size = path.stat().st_size
    if size is not None and actual_size != size:
        raise FetchError(f"{what}: expected {size} bytes, found {actual_size}")
    actual = sha256_file(path)
    if sha256 is not None and actual != sha256.lower():
        raise FetchError(f"{what}: expected sha256 {sha256.lower()}, got {actual}; this is not the pinned file")
    return actual, actual_size


def _extracted(archive: Path, digest: str, cache_dir: Path) -> Path:
    return safe_extract(archive, Path(cache_dir) / "extracted" / digest)


def missing_manual(manuals: list[Manual], from_dir: Path | None) -> list[str]:
    problems = []
    for item in manuals:
        if from_dir is None:
            problems.append(f"  DIR/{item.name}\n      how: {item.how}")
            continue
        target = Path(from_dir) / item.name
        if item.is_dir and not target.is_dir():
            note = "a file is there, a folder is needed" if target.exists() else "missing"
        elif not item.is_dir and not target.is_file():
            note = "a folder is there, a file is needed" if target.exists() else "missing"
        else:
            continue
        problems.append(f"  {target.resolve()} ({note})\n      how: {item.how}")
    return problems


def fetch_files(source: Source, splits: tuple[str, ...], *, cache_dir: Path, from_dir: Path | None = None,
                mirror: str | None = None, hf_endpoint: str | None = None, verify: bool = False) -> FetchResult:
    """Make every upstream file that `splits` of `source` need available locally.

    Manual files are checked first, all of them, so a user learns every file to place in one
    message instead of one per run, and before any long download starts. A `Remote` whose
    name is present under `from_dir` is used from there (still sha256-checked when pinned):
    that is how offline mirrors and the offline demo recipe run without network.

    `verify=True` hashes every file of a hand-placed folder, not only its metadata files (see
    `medmix.fetch.fileid`); files are always hashed.
    """
    cache_dir = Path(cache_dir)
    upstreams = source.files_for(tuple(splits))
    manuals = [u for u in upstreams if isinstance(u, Manual)]
    problems = missing_manual(manuals, from_dir)
    if problems:
        where = "" if from_dir is None else f" (looked under {Path(from_dir).resolve()})"
        raise ManualFilesMissing(
            f"source {source.name!r} needs {len(problems)} file(s) that must be obtained by hand{where}:\n"
            + "\n".join(problems)
            + f"\nPlace them under one folder DIR and pass --from {source.name}=DIR")

    result = FetchResult()
    # derived tables last: they are computed from the other files
    for item in sorted(upstreams, key=lambda u: isinstance(u, Derived)):
        if isinstance(item, Derived):
            path, record = _fetch_derived(item, result.paths, cache_dir, from_dir, mirror)
        elif isinstance(item, Manual):
            path, record = _fetch_manual(item, Path(from_dir), cache_dir, verify)  # type: ignore[arg-type]
        elif isinstance(item, Remote):
            path, record = _fetch_remote(item, cache_dir, from_dir, mirror, hf_endpoint)
        else:  # pragma: no cover - the Upstream union has two members
            raise MedmixError(f"source {source.name!r}: unknown upstream {item!r}")
        result.paths[item.name] = path
        result.fingerprints[item.name] = record.pop("fingerprint", None) or record.get("sha256")
        result.provenance.append(record)
    return result


def _fetch_manual(item: Manual, from_dir: Path, cache_dir: Path,
                  verify: bool = False) -> tuple[Path, dict[str, Any]]:
    from medmix.fetch.fileid import fingerprint

    target = (from_dir / item.name).resolve()
    record: dict[str, Any] = {"name": item.name, "upstream": f"manual:{target}", "sha256": None, "size": None,
                              "pinned": False, "revision": None}
    if item.is_dir:
        fp = fingerprint(target, verify=verify or item.content_sha256 is not None)
        if item.content_sha256 is not None:
            if fp["content_sha256"] != item.content_sha256:
                raise FetchError(f"{target}: the folder's content ({fp['files']} files, {fp['bytes']} bytes) is not "
                                 f"the one the lock pins (content sha256 {fp['content_sha256'][:12]}… != "
                                 f"{item.content_sha256[:12]}…); restore the folder, or run `medmix lock` to pin "
                                 "what is there now")
            record["pinned"] = True
        # the manifest gets what is equal for equal folders anywhere; the key also gets path and mtimes
        record.update(files=fp["files"], size=fp["bytes"], content_sha256=fp["content_sha256"],
                      fingerprint=fp["key"])
        return target, record
    digest, size = _check_pin(f"manual file {target}", target, None, None)
    record.update(sha256=digest, size=size)
    return (_extracted(target, digest, cache_dir) if item.extract else target), record


def _fetch_derived(item: Derived, inputs: dict[str, Path], cache_dir: Path, from_dir: Path | None,
                   mirror: str | None) -> tuple[Path, dict[str, Any]]:
    """A table computed from fetched files (see `Derived`): from the lock when pinned there, else a
    copy under `--from`, else built by `item.make`, then kept in the content-addressed cache."""
    import importlib

    record: dict[str, Any] = {"name": item.name, "upstream": item.upstream, "sha256": item.sha256,
                              "size": item.size, "pinned": item.sha256 is not None, "revision": None}
    local = Path(from_dir) / item.name if from_dir is not None else None
    if item.sha256 is not None and (hit := _cached(cache_dir, item.sha256.lower(), item.name)) is not None:
        path = hit
    elif local is not None and local.is_file():
        local = local.resolve()
        _check_pin(f"{local} (local copy of the table from {item.upstream})", local, item.sha256, item.size)
        record.update(upstream=f"local:{local}", original_upstream=item.upstream)
        path = local
    else:
        tmp = cache_dir / "derived" / f"{item.name}.{os.getpid()}.tmp"
        tmp.parent.mkdir(parents=True, exist_ok=True)
        if item.table is not None:  # pinned in the lock: no request at all. Derived tables are canonical JSON.
            tmp.write_bytes(json.dumps(item.table, sort_keys=True, separators=(",", ":")).encode())
        else:
            module, func = item.make.split(":")
            built = getattr(importlib.import_module(module), func)(
                {k: inputs[k] for k in item.inputs}, cache_dir / "derived", from_dir=from_dir, mirror=mirror)
            os.replace(built, tmp)
        digest, _ = _check_pin(f"{item.name} built from {item.upstream} (pinned in the lock)", tmp,
                               item.sha256, item.size)
        path = _publish(tmp, cache_dir, digest, item.name)
    in_cache = path.parent.parent.name == "sha256" and _HEX64.match(path.parent.name)
    record.update(sha256=path.parent.name if in_cache else sha256_file(path), size=path.stat().st_size)
    with contextlib.suppress(OSError, ValueError):
        meta = json.loads(path.read_bytes())
        record.update(fetched=meta.get("fetched"), articles=len(meta.get("articles", {})),
                      etags_sha256=meta.get("etags_sha256"), table_source=meta.get("source"))
    return path, record


def _fetch_remote(item: Remote, cache_dir: Path, from_dir: Path | None, mirror: str | None,
                  hf_endpoint: str | None) -> tuple[Path, dict[str, Any]]:
    record: dict[str, Any] = {"name": item.name, "upstream": item.upstream, "sha256": item.sha256,
                              "size": item.size, "pinned": item.sha256 is not None, "revision": item.revision}
    local = Path(from_dir) / item.name if from_dir is not None else None
    if local is not None and local.exists():
        if not local.is_file():
            raise FetchError(f"{local} is a folder, but {item.upstream} is one file; put the file itself there")
        local = local.resolve()
        digest, size = _check_pin(f"{local} (local copy of {item.upstream})", local, item.sha256, item.size)
        record.update(upstream=f"local:{local}", original_upstream=item.upstream, sha256=digest, size=size)
        path = local
    elif item.url is not None:
        fetch_from = mirror_url(item.url, mirror)
        path = download(fetch_from, cache_dir, sha256=item.sha256, size=item.size)
        record.update(fetch_info(path))
        if fetch_from != item.url:
            record["mirror"] = fetch_from
    else:
        path = hf_download(item.hf_repo, item.hf_path, revision=item.revision,  # type: ignore[arg-type]
                           repo_type=item.repo_type, cache_dir=cache_dir, sha256=item.sha256,
                           endpoint=hf_endpoint or os.environ.get("HF_ENDPOINT"))
        digest = item.sha256.lower() if item.sha256 else sha256_file(path)
        record.update(sha256=digest, size=path.stat().st_size, revision=_hf_commit(path) or item.revision,
                      requested_revision=item.revision)
        if item.size is not None and record["size"] != item.size:
            raise FetchError(f"{item.upstream}: expected {item.size} bytes, got {record['size']}")
    if item.extract:
        path = _extracted(path, record["sha256"], cache_dir)
    return path, record
