"""`medmix push`: lay a mixture out as a Hub dataset repository and upload it, license-aware.

Layout (what `--dry-run DIR` writes, byte for byte what is uploaded):
  README.md                          dataset card (medmix.publish.card): YAML configs + license notices
  manifest.json                      the build's manifest, unchanged (its sha256 is on the card)
  data/<source>/train-*.parquet      every row once, in shards that each hold one source: config
                                     `<source>` lists its own folder, config `default` lists them all

Why no `data/train-*` copy of the mixture next to the per-source files: that stored every image
twice (a 3.35M-row push would upload the whole mixture two times). A Hub config is only a list of
`data_files`, it cannot filter rows, so per-source configs without duplicated bytes need shards that
hold one source each. `load_dataset(repo)` still yields the whole mixture (every row once); its order
is by source (sorted by name), then the build's order within a source; shuffle, or use
`medmix.load` on a local build, for the mixed order. The input shards are verified against the
manifest's sha256 before they are read.

Why refuse by default: a mixture may hold rows whose terms forbid redistribution (gated sources
such as Quilt-1M, licenses medmix cannot classify). That is checked per row, on the `source` and
`license` columns of the shards, not only on the manifest, because per-row-license sources (PMC-OA,
ROCOv2) mix licenses inside one source. The user must choose: drop them
(`--exclude-nonredistributable`) or take responsibility (`--force-nonredistributable`).

Upload: commits of bounded size through `HfApi.create_commit` (data first, the card last, so a
repo never shows a card for data it lacks). Files already on the Hub with the same content are
skipped, so rerunning the same command resumes an interrupted push; Parquet files under `data/`
that the new layout does not have are deleted in the final commit, so `data/train-*` never mixes
two pushes. The token comes from `huggingface_hub.get_token()` (HF_TOKEN, `hf auth login`) and is
only ever handed to the client: never printed, logged or written.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from medmix.core.errors import MedmixError
from medmix.core.layout import (
    DATA_DIR,
    MANIFEST,
    iter_batches,
    manifest_sha256,
    read_manifest,
    shard_files,
    shard_glob,
    shard_name,
)
from medmix.core.licenses import terms
from medmix.core.schema import ARROW_SCHEMA
from medmix.core.writer import ROW_GROUP_ROWS, ParquetAtomicWriter, sha256_file
from medmix.publish.card import CardInputs, SourceInfo, render_card
from medmix.publish.stats import manifest_figures, pair_counts, scan_shards

Policy = Literal["refuse", "exclude", "force"]
Log = Callable[[str], None]
REPO_ID = re.compile(r"^(?:[A-Za-z0-9][A-Za-z0-9._-]{0,95}/)?[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
CONFIG_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
DEFAULT_GLOB = f"{DATA_DIR}/*/{shard_glob()}"
BATCH_FILES = 64
BATCH_BYTES = 4 << 30  # one commit carries at most ~4 GiB: a failed commit loses little, a resumed push skips it
COPY_CHUNK = 8 << 20


@dataclass(frozen=True)
class Restriction:
    """Rows of one (source, license) pair that may not be redistributed, and why."""

    source: str
    license: str
    rows: int
    why: str


@dataclass
class Layout:
    folder: Path
    files: list[str]                        # relative posix paths, sorted
    bytes: int
    configs: dict[str, str]                 # config name → data_files glob
    excluded: dict[str, int] = field(default_factory=dict)
    forced: dict[str, int] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)


def source_info(name: str, entry: dict[str, Any]) -> SourceInfo:
    """Card facts about a mixture source: its adapter class, with the recipe's license for local folders."""
    from medmix.sources import get_source

    adapter = entry.get("adapter", name)
    try:
        cls = get_source(adapter)
    except MedmixError:
        return SourceInfo(name, adapter, name, None, "", entry.get("license", ""), False, known_adapter=False)
    if adapter == "local":
        return SourceInfo(name, adapter, f"{name} (local folder)", None, "", entry.get("license", cls.license), True)
    return SourceInfo(name, adapter, cls.title, cls.homepage, cls.citation, entry.get("license", cls.license),
                      cls.redistributable)


def restrictions(manifest: dict[str, Any], pairs: Counter[tuple[str, str]]) -> list[Restriction]:
    """Every (source, license) pair in the shards whose rows may not be redistributed."""
    out = []
    for (source, lic), n in sorted(pairs.items()):
        entry = manifest["sources"].get(source)
        if entry is None:
            out.append(Restriction(source, lic, n, "source not in the manifest: its terms cannot be checked"))
            continue
        info = source_info(source, entry)
        t = terms(lic)
        if not info.redistributable:
            why = (f"the source's terms forbid redistribution (adapter {info.adapter})" if info.known_adapter
                   else f"adapter {info.adapter!r} is unknown to this medmix: cannot confirm it allows redistribution")
            out.append(Restriction(source, lic, n, why))
        elif not t.known:
            out.append(Restriction(source, lic, n, f"license {lic}: unknown terms, redistribution not established"))
        elif not t.redistribution:
            out.append(Restriction(source, lic, n, f"license {lic}: redistribution NOT allowed"))
    return out


def _describe(restricted: list[Restriction]) -> str:
    return "\n".join(f"  - {r.source} ({r.license}): {r.rows:,} rows: {r.why}" for r in restricted)


class _ShardSeries:
    """Writes `total` rows as train-XXXXX-of-YYYYY.parquet files of `per_file` rows under `folder`.

    Batches are buffered up to one row group, so filtered slices still make full-size row groups
    and memory holds one row group (plus one input batch) per open series.
    """

    def __init__(self, folder: Path, total: int, per_file: int) -> None:
        self.folder, self.total, self.per_file = folder, total, max(1, per_file)
        self.n_files = max(1, -(-total // self.per_file))
        self.index, self.in_file = 0, 0
        self.buffer: list[pa.RecordBatch] = []
        self.buffered = 0
        self.writer: ParquetAtomicWriter | None = None
        self.written: list[Path] = []

    def _open(self) -> ParquetAtomicWriter:
        if self.writer is None:
            path = self.folder / shard_name(self.index, self.n_files)
            self.writer = ParquetAtomicWriter(path, ARROW_SCHEMA)
        return self.writer

    def add(self, batch: pa.RecordBatch) -> None:
        while batch.num_rows:
            room = self.per_file - self.in_file - self.buffered
            take = batch.slice(0, room)
            batch = batch.slice(take.num_rows)
            self.buffer.append(take)
            self.buffered += take.num_rows
            if self.buffered >= ROW_GROUP_ROWS or self.in_file + self.buffered >= self.per_file:
                self._flush()

    def _flush(self) -> None:
        if not self.buffered:
            return
        table = pa.Table.from_batches(self.buffer).cast(ARROW_SCHEMA)
        self._open().write_table(table)
        self.in_file += self.buffered
        self.buffer, self.buffered = [], 0
        if self.in_file >= self.per_file:
            self._commit()

    def _commit(self) -> None:
        assert self.writer is not None
        self.writer.commit()
        self.written.append(self.writer.path)
        self.writer, self.index, self.in_file = None, self.index + 1, 0

    def close(self) -> list[Path]:
        self._flush()
        if self.writer is not None:
            self._commit()
        if len(self.written) != self.n_files:
            raise MedmixError(f"{self.folder}: wrote {len(self.written)} file(s), expected {self.n_files}; the shards "
                              f"changed while being read")
        return self.written

    def abort(self) -> None:
        if self.writer is not None:
            self.writer.abort()


def _verify(src: Path, sha256: str | None) -> None:
    """Refuse a shard whose bytes are not the ones the manifest recorded."""
    if sha256 is not None and sha256_file(src) != sha256:
        raise MedmixError(f"{src}: sha256 differs from the manifest's; the shard changed after the build. Rebuild "
                          f"the mixture before pushing it")


def _check_out(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise MedmixError(f"{out}: exists and is not an empty folder; give a new or empty folder to write the push "
                          f"layout into")
    out.mkdir(parents=True, exist_ok=True)


def prepare(mixture: Path, out: Path, *, repo_id: str, policy: Policy = "refuse", log: Log = print) -> Layout:
    """Write the folder that `push` uploads (the whole of `--dry-run DIR`); returns what it holds."""
    mixture, out = Path(mixture), Path(out)
    _check_repo_id(repo_id)
    manifest = read_manifest(mixture)
    shards = shard_files(mixture, manifest)
    for name in (n for n, e in manifest["sources"].items() if not e.get("evaluation_only")):
        if name == "default" or not CONFIG_NAME.match(name):
            raise MedmixError(f"source name {name!r} cannot be a Hub config name (letters, digits, . _ - only, and "
                              f"not 'default'); rename it in the recipe")
    _check_out(out)

    pairs: Counter[tuple[str, str]] = Counter()
    for batch in iter_batches(shards, ("source", "license")):
        pairs.update(pair_counts(batch.column("source"), batch.column("license")))
    restricted = restrictions(manifest, pairs)
    drop: set[tuple[str, str]] = set()
    excluded: dict[str, int] = {}
    forced: dict[str, int] = {}
    if restricted:
        total_r = sum(r.rows for r in restricted)
        if policy == "refuse":
            names = ", ".join(sorted({r.source for r in restricted}))
            raise MedmixError(f"refusing to push {mixture}: {total_r:,} row(s) may not be redistributed "
                              f"(sources: {names}):\n{_describe(restricted)}\n"
                              f"Pass --exclude-nonredistributable to push without them, or "
                              f"--force-nonredistributable if you hold the rights to share them.")
        for r in restricted:
            bucket = excluded if policy == "exclude" else forced
            bucket[r.source] = bucket.get(r.source, 0) + r.rows
        if policy == "exclude":
            drop = {(r.source, r.license) for r in restricted}
            log(f"excluding {total_r:,} non-redistributable row(s): "
                + ", ".join(f"{s} ({n:,})" for s, n in sorted(excluded.items())))
        else:
            log(f"WARNING: pushing {total_r:,} row(s) whose terms forbid redistribution, because "
                f"--force-nonredistributable was given:\n{_describe(restricted)}\nYou are responsible for holding the "
                f"rights to share them; the dataset card says so.")

    out.mkdir(parents=True, exist_ok=True)
    data = out / DATA_DIR
    per_file = max((s.get("rows", 0) for s in manifest["shards"]), default=0) or 10_000
    kept_pairs = Counter({k: v for k, v in pairs.items() if k not in drop})
    if not sum(kept_pairs.values()):
        why = "once the non-redistributable rows are excluded" if drop else "(the mixture is empty)"
        raise MedmixError(f"{mixture}: no row left to push {why}")
    per_source: Counter[str] = Counter()
    for (source, _), n in kept_pairs.items():
        per_source[source] += n
    try:
        for path, shard in zip(shards, manifest["shards"], strict=True):
            _verify(path, shard.get("sha256"))
        files_written = _write_per_source(shards, data, per_source, per_file, drop)
    except OSError as exc:
        raise MedmixError(f"{out}: cannot write the push layout ({exc.strerror or exc})") from None

    configs = {"default": DEFAULT_GLOB}
    configs.update({s: f"{DATA_DIR}/{s}/{shard_glob()}" for s in sorted(per_source) if per_source[s]})
    stats = scan_shards(files_written)
    stats["manifest"] = manifest_figures(manifest)
    inputs = CardInputs(repo_id=repo_id, manifest=manifest, manifest_sha256=manifest_sha256(mixture), stats=stats,
                        sources={n: source_info(n, e) for n, e in manifest["sources"].items()}, configs=configs,
                        excluded=excluded, forced=forced)
    (out / "README.md").write_text(render_card(inputs), encoding="utf-8")
    shutil.copyfile(mixture / MANIFEST, out / MANIFEST)
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    size = sum((out / f).stat().st_size for f in files)
    return Layout(out, files, size, configs, excluded, forced, stats)


def _keep_mask(batch: pa.RecordBatch, drop: set[tuple[str, str]]) -> pa.Array:
    src = batch.column("source").to_numpy(zero_copy_only=False)
    lic = batch.column("license").to_numpy(zero_copy_only=False)
    return pa.array(np.fromiter(((s, lic_) not in drop for s, lic_ in zip(src, lic, strict=True)), bool, len(src)))


def _write_per_source(shards: list[Path], data: Path, per_source: Counter[str], per_file: int,
                      drop: set[tuple[str, str]]) -> list[Path]:
    """One pass over the mixture's shards, appending each kept row to its source's series (one open file
    each); returns every file written, sorted by path (the default config's order)."""
    series = {s: _ShardSeries(data / s, n, per_file) for s, n in sorted(per_source.items()) if n}
    try:
        for batch in iter_batches(shards, ARROW_SCHEMA.names, ROW_GROUP_ROWS):
            if drop:
                batch = batch.filter(_keep_mask(batch, drop))
            sources = batch.column("source")
            for s in pc.unique(sources).to_pylist():
                series[s].add(batch.filter(pc.equal(sources, s)))
        written = [p for s in series.values() for p in s.close()]
    except BaseException:
        for s in series.values():
            s.abort()
        raise
    return sorted(written)


# --- upload ---------------------------------------------------------------------------------------

def make_api(token: str | None) -> Any:
    """The Hub client; a seam tests replace with a recording stand-in."""
    from huggingface_hub import HfApi

    return HfApi(token=token)


def _check_repo_id(repo_id: str) -> None:
    if not REPO_ID.match(repo_id or "") or ".." in repo_id or "--" in repo_id:
        raise MedmixError(f"{repo_id!r} is not a Hub repository id; use NAME or OWNER/NAME (letters, digits, . _ -)")


def _git_blob_sha1(path: Path) -> str:
    h = hashlib.sha1(f"blob {path.stat().st_size}\0".encode())
    with open(path, "rb") as f:
        while block := f.read(COPY_CHUNK):
            h.update(block)
    return h.hexdigest()


def _same_remote(local: Path, remote: Any) -> bool:
    """True when the Hub already has these bytes (LFS sha256, or the git blob id of a small file)."""
    if getattr(remote, "size", None) != local.stat().st_size:
        return False
    lfs = getattr(remote, "lfs", None)
    if lfs is not None and getattr(lfs, "sha256", None):
        return lfs.sha256 == sha256_file(local)
    blob = getattr(remote, "blob_id", None)
    return blob is not None and blob == _git_blob_sha1(local)


class _Scrub:
    """Wraps client errors into MedmixError with the token (if any) blanked out of the message."""

    def __init__(self, token: str | None, repo_id: str) -> None:
        self.token, self.repo_id = token, repo_id

    def __call__(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except MedmixError:
            raise
        except Exception as exc:  # the client raises HTTP, network and validation errors of many types
            msg = str(exc)
            if self.token:
                msg = msg.replace(self.token, "***")
            raise MedmixError(f"Hub: {what} for {self.repo_id} failed ({type(exc).__name__}: {msg}). Files already "
                              f"uploaded are kept; run the same command again to resume.") from None


def upload(layout: Layout, repo_id: str, api: Any, *, private: bool = False, revision: str | None = None,
           message: str = "Upload medmix mixture", log: Log = print, token: str | None = None,
           batch_files: int = BATCH_FILES, batch_bytes: int = BATCH_BYTES) -> list[Any]:
    """Upload `layout` in bounded commits, skipping files the Hub already has; returns the commit infos."""
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete

    call = _Scrub(token, repo_id)
    call("create the repository", api.create_repo, repo_id, repo_type="dataset", private=private, exist_ok=True)
    if revision:
        call(f"create branch {revision!r}", api.create_branch, repo_id, repo_type="dataset", branch=revision,
             exist_ok=True)
    tree = call("list the repository", api.list_repo_tree, repo_id, repo_type="dataset", revision=revision,
                recursive=True)
    remote = {f.path: f for f in tree if hasattr(f, "size")}  # RepoFile has a size, RepoFolder has none
    todo = [f for f in layout.files if f not in remote or not _same_remote(layout.folder / f, remote[f])]
    skipped = len(layout.files) - len(todo)
    if skipped:
        log(f"{skipped} file(s) already on the Hub with the same content: skipped")
    stale = sorted(p for p in remote if p.startswith("data/") and p.endswith(".parquet") and p not in layout.files)
    data = [f for f in todo if f.startswith("data/")]
    last = [f for f in todo if not f.startswith("data/")]
    batches: list[list[str]] = []
    current: list[str] = []
    size = 0
    for f in data:
        n = (layout.folder / f).stat().st_size
        if current and (len(current) >= batch_files or size + n > batch_bytes):
            batches.append(current)
            current, size = [], 0
        current.append(f)
        size += n
    if current:
        batches.append(current)
    commits = []
    total = len(batches) + (1 if last or stale else 0)
    for i, files in enumerate(batches, 1):
        ops = [CommitOperationAdd(path_in_repo=f, path_or_fileobj=str(layout.folder / f)) for f in files]
        title = message if total == 1 else f"{message} (data {i}/{len(batches)})"
        log(f"commit {i}/{total}: {len(files)} data file(s)")
        commits.append(call("commit", api.create_commit, repo_id, ops, commit_message=title, repo_type="dataset",
                            revision=revision))
    if last or stale:
        ops = [CommitOperationAdd(path_in_repo=f, path_or_fileobj=str(layout.folder / f)) for f in last]
        ops += [CommitOperationDelete(path_in_repo=p) for p in stale]
        log(f"commit {total}/{total}: {len(last)} file(s) (card, manifest)"
            + (f", {len(stale)} stale Parquet file(s) deleted" if stale else ""))
        commits.append(call("commit", api.create_commit, repo_id, ops, commit_message=message, repo_type="dataset",
                            revision=revision))
    if not commits:
        log("the Hub already holds exactly this layout: nothing to commit")
    return commits


def push(mixture: Path, repo_id: str, *, policy: Policy = "refuse", private: bool = False,
         revision: str | None = None, message: str = "Upload medmix mixture", log: Log = print,
         api: Any = None, staging: Path | None = None) -> str:
    """Lay out, then upload; returns the dataset's URL. The staging folder is removed afterwards."""
    from huggingface_hub import get_token

    mixture = Path(mixture)
    _check_repo_id(repo_id)
    token = get_token()
    if api is None:
        if not token:
            raise MedmixError("no Hugging Face token found: run `hf auth login` or set HF_TOKEN (a token with write "
                              "access), or use --dry-run DIR to write the layout without uploading")
        api = make_api(token)
    read_manifest(mixture)  # fail on a non-mixture before creating any folder
    parent = staging
    if parent is None:
        parent = mixture if os.access(mixture, os.W_OK) else Path(tempfile.gettempdir())
    folder = Path(tempfile.mkdtemp(prefix=".medmix-push-", dir=parent))
    try:
        layout = prepare(mixture, folder / "layout", repo_id=repo_id, policy=policy, log=log)
        log(f"uploading {len(layout.files)} file(s), {layout.bytes:,} bytes to {repo_id}"
            + (f" (branch {revision})" if revision else "") + (" as a private repository" if private else ""))
        upload(layout, repo_id, api, private=private, revision=revision, message=message, log=log, token=token)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    endpoint = getattr(api, "endpoint", None) or "https://huggingface.co"
    return f"{endpoint.rstrip('/')}/datasets/{repo_id}" + (f"/tree/{revision}" if revision else "")
