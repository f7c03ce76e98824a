"""Mixture and cache folders addressed by fsspec URLs: local paths, `file://`, `s3://`, `gs://`, ...

Why fsspec: it is the storage layer `datasets`, pandas, Dask and Ray Data already use, so any
store a lab's data stack reaches (S3 and S3-compatible stores such as MinIO or Ceph, GCS,
Azure, HDFS) works here with the same URL and the same credentials.

Credentials and endpoints come the way fsspec and the cloud SDKs take them, nothing medmix-specific:
environment variables (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_ENDPOINT_URL for S3,
GOOGLE_APPLICATION_CREDENTIALS for GCS), `~/.aws/credentials`, fsspec's own config
(`FSSPEC_S3_ENDPOINT_URL=...`), or `--storage-option key=value` on the command line (passed to
the filesystem: `--storage-option endpoint_url=http://minio:9000`). In Python,
`storage_options={...}`.

Atomic publication on object storage: an object store has no rename, but a PUT (and a server-side
copy) is all-or-nothing. Every object is uploaded under a temporary key
(`<folder>/.medmix-tmp/<token>/<name>`) and copied to its final key only when complete, and the
manifest is written last: a reader that finds `manifest.json` finds every shard it lists complete.

Faults: a store answering 503 (SlowDown) or timing out is retried with exponential backoff
(`MEDMIX_STORAGE_RETRIES` attempts, 5 by default, on top of the SDK's own retries), then the
build stops with a `StorageError` naming the URL and the operation. Finished work (normalized
units, written shards) stays, so the rerun resumes.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from medmix.core.errors import MedmixError
from medmix.core.extras import install_command

T = TypeVar("T")

TMP_PREFIX = ".medmix-tmp"
BACKOFF_S = 0.25
# errors that another attempt cannot fix: fail at once, with the SDK's message
_PERMANENT = (FileNotFoundError, PermissionError, FileExistsError, IsADirectoryError, NotADirectoryError,
              ValueError, TypeError, KeyError, MedmixError)


class StorageError(MedmixError):
    """The store kept failing (503, timeouts, refused connections) after every retry."""


def is_remote(target: str | os.PathLike[str]) -> bool:
    """True for a URL of a non-local filesystem (`s3://...`); False for paths and `file://`."""
    text = os.fspath(target)
    if "://" not in text:
        return False
    return text.split("://", 1)[0] not in ("file", "local")


def local_path(target: str | os.PathLike[str]) -> Path:
    """A local path or `file://` URL as a Path."""
    text = os.fspath(target)
    return Path(text[len("file://"):]) if text.startswith("file://") else Path(text).expanduser()


def retries() -> int:
    return max(1, int(os.environ.get("MEDMIX_STORAGE_RETRIES", "5")))


def retrying(what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """`fn(*args)`, retried with exponential backoff on transient store errors, then a clear error."""
    attempts = retries()
    delay = BACKOFF_S
    for attempt in range(1, attempts + 1):
        try:
            return fn(*args, **kwargs)
        except _PERMANENT:
            raise
        except Exception as exc:  # 503 SlowDown, timeouts, dropped connections: SDK-specific classes
            if "Validation" in type(exc).__name__:  # a wrong argument: no attempt will fix it
                raise
            if "Credentials" in type(exc).__name__:
                raise StorageError(f"{what}: no credentials ({exc}); set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, "
                                   f"~/.aws/credentials or --storage-option") from None
            if attempt == attempts:
                raise StorageError(f"{what}: the store kept failing after {attempts} attempts "
                                   f"({type(exc).__name__}: {exc}); it is unavailable, overloaded or timing out. "
                                   f"Finished work is kept: rerun the same command when it answers "
                                   f"(MEDMIX_STORAGE_RETRIES sets the attempts)") from exc
            time.sleep(delay)
            delay *= 2
    raise AssertionError("unreachable")


def scratch_dir() -> Path:
    """Node-local working space for remote builds and streaming (MEDMIX_SCRATCH overrides)."""
    root = Path(os.environ.get("MEDMIX_SCRATCH") or Path(tempfile.gettempdir()) / f"medmix-{os.getuid()}")
    root.mkdir(parents=True, exist_ok=True)
    return root


def url_key(url: str) -> str:
    return hashlib.sha256(url.encode()).hexdigest()[:16]


class Store:
    """One folder (local or remote) and the few operations a build and a loader need, all retried."""

    def __init__(self, url: str | os.PathLike[str], storage_options: Mapping[str, Any] | None = None) -> None:
        import fsspec

        text = os.fspath(url)
        self.remote = is_remote(text)
        self.options = dict(storage_options or {})
        if not self.remote:
            text = str(local_path(text).absolute())
        self.url = text.rstrip("/")
        try:
            self._fs, self.root = fsspec.core.url_to_fs(self.url, **self.options)
            self._pid = os.getpid()
        except ImportError as exc:
            raise MedmixError(f"{self.url}: this URL needs a filesystem package that is not installed ({exc}); "
                              f"for s3:// install `{install_command('ray')}` (brings s3fs)") from None
        except (ValueError, TypeError) as exc:
            raise MedmixError(f"{self.url}: cannot open this location ({exc}); "
                              f"check the URL and --storage-option") from None
        self.root = self.root.rstrip("/")

    def __reduce__(self) -> tuple:  # ship (url, options) to tasks, not a live connection
        return (Store, (self.url, self.options))

    @property
    def fs(self) -> Any:
        """The filesystem; a forked process (a DataLoader worker) gets its own, since async clients
        such as s3fs's are not fork-safe."""
        if self._pid != os.getpid():
            import fsspec
            self._fs = fsspec.filesystem(self._fs.protocol if isinstance(self._fs.protocol, str)
                                         else self._fs.protocol[0], skip_instance_cache=True, **self.options)
            self._pid = os.getpid()
        return self._fs

    @property
    def local(self) -> Path | None:
        return None if self.remote else Path(self.url)

    def key(self, rel: str) -> str:
        return f"{self.root}/{rel}" if rel else self.root

    def child_url(self, rel: str) -> str:
        return f"{self.url}/{rel}"

    def _what(self, op: str, rel: str) -> str:
        return f"{self.child_url(rel)}: {op}"

    def exists(self, rel: str) -> bool:
        return retrying(self._what("exists", rel), self.fs.exists, self.key(rel))

    def size(self, rel: str) -> int:
        return retrying(self._what("size", rel), self.fs.size, self.key(rel))

    def read_bytes(self, rel: str) -> bytes:
        return retrying(self._what("read", rel), self.fs.cat_file, self.key(rel))

    def read_range(self, rel: str, start: int, end: int) -> bytes:
        return retrying(self._what(f"read bytes {start}-{end}", rel), self.fs.cat_file, self.key(rel),
                        start=start, end=end)

    def read_json(self, rel: str) -> Any:
        return json.loads(self.read_bytes(rel))

    def list(self, rel: str = "") -> list[str]:
        """Names directly under `rel` ([] when it does not exist)."""
        try:
            entries = retrying(self._what("list", rel), self.fs.ls, self.key(rel), detail=False, refresh=True)
        except FileNotFoundError:
            return []
        return sorted(e.rstrip("/").rsplit("/", 1)[-1] for e in entries)

    def get_file(self, rel: str, target: Path) -> None:
        """Download to `target` atomically (temp name + rename), so a killed download is never taken as whole."""
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
        retrying(self._what("download", rel), self.fs.get_file, self.key(rel), str(tmp))
        os.replace(tmp, target)

    def put_file(self, source: Path, rel: str) -> None:
        """Publish a local file at `rel`: under a temporary key first, then copied into place."""
        final = self.key(rel)
        if not self.remote:
            from medmix.core.writer import atomic_write_bytes
            if Path(final) != Path(source):
                atomic_write_bytes(Path(final), Path(source).read_bytes())
            return
        tmp = self.key(f"{TMP_PREFIX}/{uuid.uuid4().hex}/{rel}")
        retrying(self._what("upload", rel), self.fs.put_file, str(source), tmp)
        retrying(self._what("publish", rel), self.fs.copy, tmp, final)
        try:
            retrying(self._what("remove temporary copy", rel), self.fs.rm_file, tmp)
        except FileNotFoundError:
            pass

    def write_bytes(self, rel: str, data: bytes) -> None:
        if not self.remote:
            from medmix.core.writer import atomic_write_bytes
            atomic_write_bytes(Path(self.key(rel)), data)
            return
        with tempfile.TemporaryDirectory(dir=scratch_dir()) as tmp:
            path = Path(tmp) / "blob"
            path.write_bytes(data)
            self.put_file(path, rel)

    def write_json(self, rel: str, obj: Any) -> None:
        self.write_bytes(rel, (json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode())

    def rm(self, rel: str) -> None:
        try:
            retrying(self._what("delete", rel), self.fs.rm_file, self.key(rel))
        except FileNotFoundError:
            pass

    def clear_temps(self) -> None:
        """Remove the temporary keys a killed run left behind (never visible to readers; litter)."""
        if self.remote and TMP_PREFIX in self.list():
            retrying(self._what("remove temporary keys", TMP_PREFIX), self.fs.rm, self.key(TMP_PREFIX), recursive=True)

    def sha256(self, rel: str, chunk: int = 1 << 22) -> str:
        h = hashlib.sha256()

        def read() -> None:
            with self.fs.open(self.key(rel), "rb") as f:
                while block := f.read(chunk):
                    h.update(block)
        retrying(self._what("checksum", rel), read)
        return h.hexdigest()


def parse_storage_options(values: list[str] | None) -> dict[str, Any]:
    """`--storage-option key=value` (repeatable) → fsspec storage options; JSON values are parsed
    (`use_ssl=false`, `client_kwargs={"region_name": "eu-west-1"}`)."""
    options: dict[str, Any] = {}
    for item in values or []:
        if "=" not in item:
            raise MedmixError(f"--storage-option takes KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        try:
            options[key] = json.loads(value)
        except ValueError:
            options[key] = value
    return options

