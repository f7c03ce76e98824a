"""`medmix doctor`: check every upstream of a recipe, without downloading bodies, before a long build.

Why: a multi-day build that stops on day two because Zenodo moved a record, a Hub repository was
renamed or a hand-placed folder is on another disk wastes the days before it. Each upstream costs
one HEAD request here (a 1-byte `Range` GET where HEAD is refused), in parallel, so a 14-source
recipe is checked in seconds.

Per file it reports one status:
- `ok`        answers, and size / sha256 (the Hub's LFS ETag) agree with the pin where there is one;
- `unpinned`  answers, but nothing pins its bytes yet (`medmix lock` does); not a failure;
- `moved`     a 301/302/307/308 to another place (for the Hub: the repository was renamed);
- `changed`   size or sha256 differs from the lock / the adapter's pin;
- `gone`      404/410, or a pinned Hub revision that no longer exists;
- `missing`   a hand-placed (`--from`) file or folder is not there, or not what its pin says;
- `error`     no answer (network, 5xx after a retry).
Files served from `--from` folders are checked on disk (size against the pin), not over the network.
The exit status is non-zero when any file is moved, changed, gone, missing or in error.
"""

from __future__ import annotations

import os
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urljoin, urlsplit

FAILING = frozenset({"moved", "changed", "gone", "missing", "error"})
HF_ENDPOINT = "https://huggingface.co"
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_RESOLVE = re.compile(r"^/(?:(datasets|spaces)/)?(.+?)/resolve/([^/]+)/(.+)$")


@dataclass
class Check:
    source: str
    file: str
    upstream: str
    status: str
    detail: str = ""
    http: int | None = None
    size: int | None = None
    etag: str | None = None
    location: str | None = None


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # a redirect is a finding, not something to follow


def probe(url: str, *, timeout: float = 20.0, retries: int = 1) -> tuple[int, dict[str, str]]:
    """(status, headers) of `url` from HEAD, or from a 1-byte Range GET where HEAD is refused; no body read."""
    from medmix.fetch.download import USER_AGENT

    opener = urllib.request.build_opener(_NoRedirect)
    status, headers = 0, {}
    for method in ("HEAD", "GET"):
        for attempt in range(retries + 1):
            req = urllib.request.Request(url, method=method, headers={"User-Agent": USER_AGENT})
            if method == "GET":
                req.add_header("Range", "bytes=0-0")
            try:
                with opener.open(req, timeout=timeout) as resp:
                    status, headers = resp.status, {k.lower(): v for k, v in resp.headers.items()}
            except urllib.error.HTTPError as err:
                status, headers = err.code, {k.lower(): v for k, v in (err.headers or {}).items()}
            except (urllib.error.URLError, OSError) as err:
                status, headers = 0, {"x-doctor-error": f"{type(err).__name__}: {getattr(err, 'reason', err)}"}
            if status < 500 and status != 0:
                break
            time.sleep(0.2 * (attempt + 1))
        if status not in (403, 405, 501):
            break
    return status, headers


def _size_of(status: int, headers: dict[str, str]) -> int | None:
    for key in ("x-linked-size",):
        if headers.get(key, "").isdigit():
            return int(headers[key])
    if status == 206 and "/" in headers.get("content-range", ""):
        total = headers["content-range"].rsplit("/", 1)[1]
        return int(total) if total.isdigit() else None
    length = headers.get("content-length", "")
    return int(length) if status == 200 and length.isdigit() else None


def _judge(base: Check, status: int, headers: dict[str, str], want_size: int | None, want_sha: str | None,
           url: str) -> Check:
    etag = (headers.get("x-linked-etag") or headers.get("etag") or "").strip('"').removeprefix("W/").strip('"')
    base.http, base.etag, base.size = status, etag or None, _size_of(status, headers)
    if status == 0:
        base.status, base.detail = "error", headers.get("x-doctor-error", "no answer")
    elif status in (301, 302, 303, 307, 308):
        where = urljoin(url, headers.get("location", ""))
        base.location = where
        moved = _moved_hub_repo(url, where)
        if moved is None and status in (302, 303, 307) and "x-linked-size" in headers:
            return _compare(base, want_size, want_sha)  # the Hub's LFS files answer 302 to their CDN
        base.status = "moved"
        base.detail = f"Hub repository renamed to {moved}" if moved else f"redirects ({status}) to {where}"
    elif status in (404, 410):
        code = headers.get("x-error-code", "")
        base.status = "gone"
        base.detail = {"RevisionNotFound": "pinned revision no longer exists",
                       "RepoNotFound": "repository not found"}.get(code, f"HTTP {status}")
    elif status >= 400:
        base.status, base.detail = "error", f"HTTP {status}"
    else:
        return _compare(base, want_size, want_sha)
    return base


def _compare(base: Check, want_size: int | None, want_sha: str | None) -> Check:
    problems = []
    if want_size is not None and base.size is not None and base.size != want_size:
        problems.append(f"size {base.size} != pinned {want_size}")
    if want_sha and base.etag and _HEX64.match(base.etag) and base.etag != want_sha.lower():
        problems.append(f"sha256 (ETag) {base.etag[:12]}… != pinned {want_sha.lower()[:12]}…")
    if problems:
        base.status, base.detail = "changed", "; ".join(problems)
    elif want_size is None and want_sha is None:
        base.status, base.detail = "unpinned", "answers; not pinned (run `medmix lock`)"
    else:
        base.status, base.detail = "ok", "answers; matches the pin"
    return base


def _moved_hub_repo(url: str, location: str) -> str | None:
    """The new repo id when a Hub `resolve` URL redirects to the same file in another repository."""
    a, b = _RESOLVE.match(urlsplit(url).path), _RESOLVE.match(urlsplit(location).path)
    if a and b and urlsplit(url).netloc == urlsplit(location).netloc and a.group(2) != b.group(2):
        return b.group(2)
    return None


def _hub_url(endpoint: str, item: Any) -> str:
    kind = "" if item.repo_type == "model" else f"{item.repo_type}s/"
    return f"{endpoint.rstrip('/')}/{kind}{item.hf_repo}/resolve/{quote(item.revision or 'main', safe='')}/" \
           f"{quote(item.hf_path)}"


HASH_LOCAL_UP_TO = 256 << 20  # pinned local copies up to this size are hashed too (~0.3 s at 1 GB/s)


def _local(base: Check, path: Path, want_size: int | None, is_dir: bool = False, want_sha: str | None = None,
           want_content: str | None = None) -> Check:
    if is_dir:
        if not path.is_dir():
            base.status, base.detail = "missing", f"no folder {path}"
        elif want_content is None:
            base.status, base.detail = "ok", "folder present"
        else:
            from medmix.fetch.fileid import fingerprint

            same = fingerprint(path, verify=True)["content_sha256"] == want_content
            base.status, base.detail = (("ok", "folder present, matches the pin") if same else
                                        ("missing", f"{path}: not the pinned folder (content sha256 differs)"))
        return base
    if not path.is_file():
        base.status, base.detail = "missing", f"no file {path}"
        return base
    from medmix.core.writer import sha256_file

    base.size = path.stat().st_size
    if want_size is not None and base.size != want_size:
        base.status, base.detail = "missing", f"{path}: {base.size} bytes, the pin says {want_size}"
    elif want_sha and base.size <= HASH_LOCAL_UP_TO and sha256_file(path) != want_sha.lower():
        base.status, base.detail = "missing", f"{path}: not the pinned file (sha256 differs)"
    else:
        base.status, base.detail = "ok", "present (--from)" + (", matches the pin" if want_sha or want_size else "")
    return base


def check_recipe(recipe: Any, opts: Any, *, workers: int = 8) -> list[Check]:
    """One `Check` per upstream file of every source (training and decontamination) of `recipe`."""
    from medmix.fetch.download import mirror_url
    from medmix.fetch.lock import apply_lock, default_lock_path, read_lock
    from medmix.planning import plan_sources
    from medmix.sources.base import Derived, Manual, Remote

    planned = plan_sources(recipe, opts)
    lock_file = opts.lock or default_lock_path(recipe.name)
    if opts.lock is not None or Path(lock_file).exists():
        lock = read_lock(lock_file)
        for p in planned:
            apply_lock(p.source, type(p.source).name, lock, name=p.name)
    endpoint = opts.hf_endpoint or os.environ.get("HF_ENDPOINT") or HF_ENDPOINT
    tasks: list[Callable[[], Check]] = []
    for p in planned:
        for item in p.source.files_for(p.splits):
            local = Path(p.from_dir) / item.name if p.from_dir is not None else None
            if isinstance(item, Manual):
                base = Check(p.name, item.name, f"manual: {item.name}", "missing")
                if local is None:
                    base.detail = f"pass --from {p.name}=DIR with {item.name} in it ({item.how})"
                    tasks.append(lambda b=base: b)
                else:
                    tasks.append(lambda b=base, path=local, d=item.is_dir, c=item.content_sha256:
                                 _local(b, path, None, d, want_content=c))
                continue
            if isinstance(item, Derived) and item.table is not None:
                base = Check(p.name, item.name, item.upstream, "ok",
                             f"pinned in the lock ({item.table.get('fetched')}, "
                             f"{len(item.table.get('articles', {}))} entries); no request needed")
                tasks.append(lambda b=base: b)
                continue
            if local is not None and local.exists():
                base = Check(p.name, item.name, f"local:{local}", "ok")
                size, sha = getattr(item, "size", None), item.sha256
                tasks.append(lambda b=base, path=local, s=size, h=sha: _local(b, path, s, want_sha=h))
                continue
            if isinstance(item, Remote) and item.hf_repo is not None:
                url = _hub_url(endpoint, item)
            elif isinstance(item, Derived):
                url = mirror_url(item.url.split("/metadata/")[0] + "/README.txt", opts.mirror)
            else:
                url = mirror_url(item.url, opts.mirror)  # type: ignore[arg-type]
            base = Check(p.name, item.name, item.upstream, "error")
            want_size = getattr(item, "size", None) if not isinstance(item, Derived) else None
            want_sha = item.sha256 if not isinstance(item, Derived) else None

            def run(b: Check = base, u: str = url, s: int | None = want_size, h: str | None = want_sha) -> Check:
                status, headers = probe(u)
                return _judge(b, status, headers, s, h, u)
            tasks.append(run)
    with ThreadPoolExecutor(max(1, workers)) as pool:
        return list(pool.map(lambda t: t(), tasks))


def report(checks: list[Check]) -> dict[str, Any]:
    counts: dict[str, int] = {}
    for c in checks:
        counts[c.status] = counts.get(c.status, 0) + 1
    return {"ok": not any(c.status in FAILING for c in checks), "counts": dict(sorted(counts.items())),
            "checks": [asdict(c) for c in checks]}
