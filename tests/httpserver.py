"""A real HTTP server on 127.0.0.1 that serves fixture bytes to medmix's fetch code.

Why a real server and not a mocked `urlopen`: resume, retries and the Hugging Face client all
live in socket-level behaviour (Range headers, a connection closed mid-body, HEAD metadata),
and only a real server exercises the same code paths a flaky Zenodo or the Hub would.

Three ways to put bytes on it:
- `add(path, data)` serves bytes at a path;
- `add_url(real_url, data)` serves them where medmix looks for `real_url` through a mirror
  (`mirror_url(url, server.url)` maps `https://host/a/b` to `{server.url}/host/a/b`);
- `add_hf(repo, file, data, ...)` answers like the Hub's `resolve` endpoint, so
  `huggingface_hub.hf_hub_download(endpoint=server.hf_endpoint, ...)` works against it.

`fail(path, kind, times)` injects faults into the next GETs of a path, and `requests` logs
every request as (method, path, Range header) so tests can assert that a resume used Range.
"""

from __future__ import annotations

import hashlib
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import quote, unquote, urlsplit

FAIL_KINDS = ("500", "drop", "wrong_body", "429", "503")
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")


@dataclass
class _Entry:
    data: bytes
    headers: dict[str, str] = field(default_factory=dict)


def _normalize(path: str) -> str:
    """Request paths are compared unquoted, so `a%20b` and `a b` name the same fixture."""
    if not path.startswith("/"):
        path = "/" + path
    return unquote(path)


class FixtureServer:
    """Threaded HTTP server holding a path → bytes table; start() it, or use it as a context manager."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[str, _Entry] = {}
        self._failures: dict[str, list[str]] = {}
        self._redirects: dict[str, tuple[int, str]] = {}
        self.requests: list[tuple[str, str, str | None]] = []
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.url = ""
        self.hf_endpoint = ""

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> FixtureServer:
        if self._httpd is not None:
            return self
        handler = type("_BoundHandler", (_Handler,), {"fixture": self})
        httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        httpd.daemon_threads = True
        self._httpd = httpd
        self.url = f"http://127.0.0.1:{httpd.server_address[1]}"
        self.hf_endpoint = self.url
        # A short poll interval: shutdown() waits up to one interval, and tests stop a server each.
        self._thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02},
                                        name="FixtureServer", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is None:
            return
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = None
        self._thread = None

    def __enter__(self) -> FixtureServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- content -----------------------------------------------------------------------------
    def _path_of(self, path_or_url: str) -> str:
        """Accept a path or a full URL on this server (what `add` returns) wherever a path is asked."""
        if self.url and path_or_url.startswith(self.url):
            path_or_url = path_or_url[len(self.url):]
        return _normalize(path_or_url)

    def add(self, path: str, data: bytes, *, headers: dict[str, str] | None = None) -> str:
        """Serve `data` at `path` (query string included if given); return the full URL."""
        key = self._path_of(path)
        with self._lock:
            self._entries[key] = _Entry(bytes(data), dict(headers or {}))
        return self.url + quote(key, safe="/?=&:@-._~%")

    def add_url(self, real_url: str, data: bytes) -> str:
        """Serve `data` where a mirror rooted at this server puts `real_url`; return that URL.

        The mapping is written out here on its own (not imported from medmix) so that tests
        of `medmix.fetch.download.mirror_url` check it against an independent statement of the scheme.
        """
        parts = urlsplit(real_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"add_url needs an absolute http(s) URL, got {real_url!r}")
        path = "/" + parts.netloc + (parts.path or "/")
        if parts.query:
            path += "?" + parts.query
        return self.add(path, data)

    def add_hf(
        self,
        repo_id: str,
        filename: str,
        data: bytes,
        *,
        revision: str = "main",
        repo_type: str = "dataset",
        commit: str | None = None,
    ) -> None:
        """Serve a Hub file at `{endpoint}/{type}s/{repo}/resolve/{rev}/{file}` for both the
        named revision and its commit sha, with the headers `hf_hub_download` insists on
        (X-Repo-Commit, ETag, Content-Length)."""
        if commit is None:
            commit = revision if _COMMIT.match(revision) else hashlib.sha1(
                f"{repo_type}/{repo_id}@{revision}".encode()).hexdigest()
        if not _COMMIT.match(commit):
            raise ValueError(f"commit must be a 40-hex sha, got {commit!r}")
        prefix = "" if repo_type == "model" else f"/{repo_type}s"
        # LFS files on the Hub carry their sha256 as ETag; the client only needs it to be stable.
        headers = {"X-Repo-Commit": commit, "ETag": f'"{hashlib.sha256(data).hexdigest()}"'}
        for rev in {revision, commit}:
            self.add(f"{prefix}/{repo_id}/resolve/{rev}/{filename}", data, headers=headers)

    def redirect(self, path: str, location: str, status: int = 301) -> None:
        """Answer GET and HEAD of `path` with `status` and `Location: location` (a moved file or Hub repo)."""
        with self._lock:
            self._redirects[self._path_of(path)] = (status, location)

    def fail(self, path: str, kind: str, times: int = 1) -> None:
        """Make the next `times` GETs of `path` fail in the way `kind` says.

        "500": answer HTTP 500; "429"/"503": throttle with `Retry-After: 0` (S3's SlowDown);
        "drop": send the headers and half the body, then close the
        connection; "wrong_body": send other bytes of the same length (a corrupting proxy).
        HEAD requests are never failed, so metadata probes do not eat the injected faults.
        """
        if kind not in FAIL_KINDS:
            raise ValueError(f"unknown failure kind {kind!r}; use one of {FAIL_KINDS}")
        key = self._path_of(path)
        with self._lock:
            self._failures.setdefault(key, []).extend([kind] * times)

    # -- used by the handler -----------------------------------------------------------------
    def _lookup(self, raw_path: str) -> tuple[str, _Entry | None]:
        full = _normalize(raw_path)
        bare = full.split("?", 1)[0]
        with self._lock:
            for key in (full, bare):
                if key in self._entries:
                    return key, self._entries[key]
        return full, None

    def _take_failure(self, key: str) -> str | None:
        with self._lock:
            queue = self._failures.get(key)
            return queue.pop(0) if queue else None

    def _log(self, method: str, path: str, range_header: str | None) -> None:
        with self._lock:
            self.requests.append((method, _normalize(path), range_header))


class _Handler(BaseHTTPRequestHandler):
    fixture: FixtureServer
    # HTTP/1.0: one request per connection, so a dropped body can never desync a kept-alive socket.
    protocol_version = "HTTP/1.0"
    timeout = 30

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
        pass  # keep pytest output clean; `requests` is the log tests look at

    def do_HEAD(self) -> None:
        self._serve(body=False)

    def do_GET(self) -> None:
        self._serve(body=True)

    def _serve(self, *, body: bool) -> None:
        range_header = self.headers.get("Range")
        self.fixture._log(self.command, self.path, range_header)
        moved = self.fixture._redirects.get(_normalize(self.path))
        if moved is not None:
            self._plain(moved[0], b"moved\n", {"Location": moved[1]}, body)
            return
        key, entry = self.fixture._lookup(self.path)
        if entry is None:
            self._plain(404, b"not found\n", {"X-Error-Code": "EntryNotFound"}, body)
            return
        failure = self.fixture._take_failure(key) if body else None
        if failure == "500":
            self._plain(500, b"injected server error\n", {}, body)
            return
        if failure in ("429", "503"):
            self._plain(int(failure), b"SlowDown: please reduce your request rate\n", {"Retry-After": "0"}, body)
            return

        data = entry.data
        status, start, end = 200, 0, len(data)
        if range_header:
            parsed = self._parse_range(range_header, len(data))
            if parsed is None:
                self._plain(416, b"range not satisfiable\n", {"Content-Range": f"bytes */{len(data)}"}, body)
                return
            status, (start, end) = 206, parsed
        chunk = data[start:end]
        if failure == "wrong_body":
            chunk = bytes(b ^ 0x5A for b in chunk)

        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(chunk)))
        self.send_header("Accept-Ranges", "bytes")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end - 1}/{len(data)}")
        for name, value in entry.headers.items():
            self.send_header(name, value)
        self.end_headers()
        if not body:
            return
        if failure == "drop":
            self.wfile.write(chunk[: len(chunk) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(chunk)

    @staticmethod
    def _parse_range(header: str, size: int) -> tuple[int, int] | None:
        """`bytes=N-`, `bytes=N-M` and `bytes=-K` → half-open (start, end); None if unsatisfiable."""
        match = _RANGE.match(header.strip())
        if not match or match.group(0) == "bytes=-":
            return None
        first, last = match.groups()
        if first == "":
            start, end = max(size - int(last), 0), size
        else:
            start = int(first)
            end = size if last == "" else min(int(last) + 1, size)
        if start >= size or start >= end:
            return None
        return start, end

    def _plain(self, status: int, text: bytes, headers: dict[str, str], body: bool) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(text)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        if body:
            self.wfile.write(text)
