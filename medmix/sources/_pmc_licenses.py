"""PMCID → license table for PMC-OA rows, from NCBI's PMC Cloud Service bucket `pmc-oa-opendata`.

Why: NCBI moved the legacy FTP bulk lists (`oa_file_list.csv`, the `oa_bulk` lists) to
`deprecated/` on 2026-04-13 and removed them in late August 2026; the OA web service
(`oa.fcgi`) was retired on 2026-08-25. What NCBI documents now is the bucket, readable
anonymously over HTTPS (https://pmc-oa-opendata.s3.amazonaws.com/README.txt): every article
version has `metadata/PMC<id>.<ver>.json` (~1 KB) with `pmcid`, `version`, `is_pmc_openaccess`,
`is_manuscript`, `is_retracted` and `license_code` ("CC BY", "CC BY-NC", ..., "CC0"; null for
open access without a CC code; "TDM" for text-mining-only manuscripts).

How a PMCID without a version is resolved: one S3 `ListObjectsV2` request
(`/?list-type=2&prefix=metadata/PMC<id>.`) names every version of the article (the trailing dot
keeps PMC123 from matching PMC1234); the highest version is the current one and its JSON is
read. A bucket that refuses listing (403) is probed instead: `.1.json`, `.2.json`, ... until the
first 404. So an article costs two small requests, and only the articles PMC-OA's rows cite are
asked for (the daily inventories list all ~7M keys, 30 days only; far more than a build needs).

Politeness and failure: a fixed number of concurrent requests (default 8), retries with
exponential backoff on 5xx and dropped connections, and `Retry-After` honoured on 429/503.
Resume: each answered PMCID is appended to a `.partial.jsonl` next to the table as it arrives,
so a killed run asks only for the rest. The table is canonical JSON (sorted keys), so the same
answers give the same sha256, which `medmix lock` pins with the date and the ETags.

Refusals (`refusal()`): no open-access version, retracted, no CC code, TDM-only, an unknown code,
or absent from the bucket; each row is quarantined with its reason counted. There is no default
license.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import hashlib
import json
import os
import random
import re
import time
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor, as_completed
from http.client import HTTPException
from pathlib import Path
from typing import Any

from medmix.core.errors import FetchError, MedmixError

BUCKET_URL = "https://pmc-oa-opendata.s3.amazonaws.com"
TABLE_NAME = "pmc_licenses.json"
FORMAT = "medmix-pmc-licenses/1"
MAX_VERSIONS = 20          # probing stops here when listing is refused; PMC articles rarely pass 5
MAX_RETRY_AFTER_S = 120.0
_PMCID = re.compile(r"^PMC\d+$")

# bucket `license_code` (and the archived CSV's `License` column) → SPDX. CC families carry no
# version in PMC; 4.0 stands for the family, the raw code stays on the row (`meta.pmc_license`).
CC_CODES = {
    "CC0": "CC0-1.0", "CC BY": "CC-BY-4.0", "CC BY-SA": "CC-BY-SA-4.0", "CC BY-ND": "CC-BY-ND-4.0",
    "CC BY-NC": "CC-BY-NC-4.0", "CC BY-NC-SA": "CC-BY-NC-SA-4.0", "CC BY-NC-ND": "CC-BY-NC-ND-4.0",
}


def normalize_code(value: str | None) -> str | None:
    """"cc by-nc", "CC-BY-NC " → "CC BY-NC"; empty → None."""
    if value is None or not str(value).strip():
        return None
    return re.sub(r"\s+", " ", str(value).strip().upper()).replace("CC-BY", "CC BY")


def refusal(entry: Mapping[str, Any] | None) -> str | None:
    """Why an article's figures may not be redistributed (a stable reason), or None when they may."""
    if entry is None or entry.get("absent"):
        return "absent from the PMC OA bucket"
    if entry.get("is_retracted"):
        return "retracted article"
    if not entry.get("is_pmc_openaccess"):
        return "no open-access version"
    code = normalize_code(entry.get("license_code"))
    if code is None or code == "NO-CC CODE":
        return "open access without a CC license code"
    if code == "TDM":
        return "text-mining-only (TDM) manuscript"
    if code not in CC_CODES:
        return f"unknown license code {code!r}"
    return None


def spdx(entry: Mapping[str, Any]) -> str:
    return CC_CODES[normalize_code(entry["license_code"])]  # type: ignore[index]


# -- HTTP ------------------------------------------------------------------------------------------
def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    if value.strip().isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None  # unreadable: fall back to exponential backoff
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    return max(0.0, (when - dt.datetime.now(dt.timezone.utc)).total_seconds())


def http_get(url: str, *, retries: int = 6, backoff: float = 0.5, timeout: float = 30.0,
             sleep: Callable[[float], None] = time.sleep) -> tuple[int, bytes, Mapping[str, str]]:
    """GET with retries; returns (status, body, headers) for 2xx, 403 and 404, raises FetchError otherwise."""
    from medmix.fetch.download import USER_AGENT

    failures = 0
    while True:
        wait: float | None = None
        try:
            req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return resp.status, resp.read(), dict(resp.headers)
        except urllib.error.HTTPError as err:
            if err.code in (403, 404):
                return err.code, b"", dict(err.headers or {})
            if err.code not in (408, 429, 500, 502, 503, 504):
                raise FetchError(f"{url}: HTTP {err.code} {err.reason}") from None
            wait = _retry_after((err.headers or {}).get("Retry-After"))
            problem = f"HTTP {err.code}"
        except (urllib.error.URLError, HTTPException, OSError) as err:
            problem = f"{type(err).__name__}: {err}"
        failures += 1
        if failures > retries:
            raise FetchError(f"{url}: giving up after {failures} attempts; last error: {problem}. "
                             "Answers so far are kept; running again continues") from None
        delay = wait if wait is not None else backoff * 2 ** (failures - 1)
        sleep(min(delay, MAX_RETRY_AFTER_S) * (1 + 0.1 * random.random()))


def _versions(pmcid: str, base: str, get: Callable) -> list[int] | None:
    """Versions listed under `metadata/<pmcid>.`; None when the bucket refuses listing."""
    query = urllib.parse.urlencode({"list-type": "2", "prefix": f"metadata/{pmcid}."})
    status, body, _ = get(f"{base}/?{query}")
    if status != 200:
        return None
    found = []
    for el in ET.fromstring(body).iter():
        if el.tag.rsplit("}", 1)[-1] == "Key" and el.text:
            m = re.fullmatch(rf"metadata/{pmcid}\.(\d+)\.json", el.text)
            if m:
                found.append(int(m.group(1)))
    return sorted(found)


def lookup(pmcid: str, base: str = BUCKET_URL, get: Callable = http_get) -> dict[str, Any]:
    """One article's entry for the table: its latest version's metadata and that JSON's ETag."""
    versions = _versions(pmcid, base, get)
    probe = versions is None
    candidates = range(1, MAX_VERSIONS + 1) if probe else reversed(versions)  # type: ignore[arg-type]
    latest: tuple[int, bytes, Mapping[str, str]] | None = None
    for v in candidates:
        status, body, headers = get(f"{base}/metadata/{pmcid}.{v}.json")
        if status == 200:
            latest = (v, body, headers)
            if not probe:
                break
        elif probe or status != 404:
            break
    if latest is None:
        return {"absent": True}
    version, body, headers = latest
    try:
        doc = json.loads(body)
    except ValueError as exc:
        raise FetchError(f"{base}/metadata/{pmcid}.{version}.json: not JSON ({exc})") from None
    etag = next((v for k, v in headers.items() if k.lower() == "etag"), None)
    return {"version": version, "license_code": doc.get("license_code"),
            "is_pmc_openaccess": bool(doc.get("is_pmc_openaccess")), "is_retracted": bool(doc.get("is_retracted")),
            "is_manuscript": bool(doc.get("is_manuscript")), "etag": etag.strip('"') if etag else None}


# -- the table -------------------------------------------------------------------------------------
def canonical(table: Mapping[str, Any]) -> bytes:
    """The table's bytes: sorted keys, no spaces (what `medmix.fetch.download` writes back from a lock, too)."""
    return json.dumps(table, sort_keys=True, separators=(",", ":")).encode()


def make_table(articles: Mapping[str, Mapping[str, Any]], source: str, fetched: str) -> dict[str, Any]:
    etags = [f"{k}:{v.get('etag')}" for k, v in sorted(articles.items())]
    return {"format": FORMAT, "source": source, "fetched": fetched, "articles": dict(sorted(articles.items())),
            "etags_sha256": hashlib.sha256("\n".join(etags).encode()).hexdigest()}


def fetch_table(pmcids: Iterable[str], partial: Path, *, base: str = BUCKET_URL, workers: int = 8,
                get: Callable = http_get, log: Callable[[str], None] = lambda m: None) -> dict[str, Any]:
    """Look every PMCID up in the bucket (resuming from `partial`) and return the table."""
    wanted = sorted(set(pmcids))
    bad = [p for p in wanted if not _PMCID.match(p)]
    if bad:
        raise MedmixError(f"not PMCIDs: {bad[:5]}")
    done: dict[str, dict] = {}
    if partial.exists():
        for line in partial.read_text().splitlines():
            try:
                pmcid, entry = json.loads(line)
                done[pmcid] = entry
            except ValueError:
                continue  # a line cut by a kill: asked again
    todo = [p for p in wanted if p not in done]
    if done:
        log(f"PMC licenses: {len(done)} article(s) from an earlier run, {len(todo)} to ask")
    partial.parent.mkdir(parents=True, exist_ok=True)
    with open(partial, "a") as sink, ThreadPoolExecutor(max(1, workers)) as pool:
        futures = {pool.submit(lookup, p, base, get): p for p in todo}
        for fut in as_completed(futures):
            entry = fut.result()
            done[futures[fut]] = entry
            sink.write(json.dumps([futures[fut], entry]) + "\n")
            sink.flush()
    today = dt.datetime.now(dt.timezone.utc).date().isoformat()
    return make_table({p: done[p] for p in wanted}, "pmc-oa-opendata", today)


def article_licenses(file_list: Path, pmcids: set[str]) -> dict[str, tuple[str, str | None]]:
    """PMCID → (License, Retracted) from an archived `oa_file_list.csv`, streaming the multi-GB list.

    Only the needed columns are parsed and only matching rows are kept, so memory stays at the
    cited articles however large the list is. `Retracted` is read when the list has it.
    """
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pacsv

    header = file_list.open("rb").readline().decode("utf-8", "replace")
    wanted = ["Accession ID", "License"] + (["Retracted"] if "Retracted" in header else [])
    try:
        reader = pacsv.open_csv(
            file_list,
            read_options=pacsv.ReadOptions(block_size=8 << 20),
            parse_options=pacsv.ParseOptions(newlines_in_values=True),
            convert_options=pacsv.ConvertOptions(include_columns=wanted,
                                                 column_types={c: pa.string() for c in wanted}),
        )
    except (pa.ArrowInvalid, KeyError) as exc:
        raise MedmixError(f"{file_list.name}: not a PMC OA file list with columns {wanted}: {exc}") from None
    found: dict[str, tuple[str, str | None]] = {}
    if not pmcids:
        return found
    value_set = pa.array(sorted(pmcids), type=pa.string())
    for batch in reader:
        mask = pc.is_in(batch.column(0), value_set=value_set)
        if not pc.any(mask).as_py():
            continue
        hits = batch.filter(mask)
        retracted = hits.column(2).to_pylist() if hits.num_columns > 2 else [None] * hits.num_rows
        for pmcid, lic, ret in zip(hits.column(0).to_pylist(), hits.column(1).to_pylist(), retracted):
            found[pmcid] = (lic or "", ret)
    return found


def table_from_file_list(file_list: Path, pmcids: Iterable[str]) -> dict[str, Any]:
    """The same table from an archived `oa_file_list.csv` (NCBI's pre-2026 list) a user kept.

    Every article in the list was open access; its `License` column is the code ("NO-CC CODE" when
    none) and `Retracted` says yes/no. Articles not in the list are absent.
    """
    wanted = set(pmcids)
    found = article_licenses(file_list, wanted)
    articles: dict[str, dict] = {}
    for pmcid in wanted:
        if pmcid not in found:
            articles[pmcid] = {"absent": True}
            continue
        code, retracted = found[pmcid]
        articles[pmcid] = {"license_code": normalize_code(code), "is_pmc_openaccess": True,
                           "is_retracted": (retracted or "").strip().lower() == "yes", "etag": None}
    mtime = dt.datetime.fromtimestamp(file_list.stat().st_mtime, dt.timezone.utc).date().isoformat()
    return make_table(articles, "oa_file_list.csv (archived)", mtime)


def pmcids_of(jsonl: Path) -> set[str]:
    """PMCIDs cited by `pmc_oa.jsonl` image names (`PMC<id>_...`), read without parsing every line."""
    found: set[str] = set()
    pat = re.compile(rb'"image"\s*:\s*"(PMC\d+)_')
    with open(jsonl, "rb") as fh:
        for line in fh:
            m = pat.search(line)
            if m:
                found.add(m.group(1).decode())
    return found


def make(inputs: Mapping[str, Path], work_dir: Path, *, from_dir: Path | None = None, mirror: str | None = None,
         log: Callable[[str], None] = lambda m: None) -> Path:
    """`Derived.make` for PMC-OA: the table for the PMCIDs `pmc_oa.jsonl` cites, as a file in `work_dir`.

    An archived `oa_file_list.csv` under `--from pmc_oa=DIR` is used instead of the bucket.
    """
    from medmix.fetch.download import mirror_url

    pmcids = pmcids_of(Path(inputs["pmc_oa.jsonl"]))
    archived = Path(from_dir) / "oa_file_list.csv" if from_dir is not None else None
    work_dir = Path(work_dir)
    out = work_dir / f"{TABLE_NAME}.{os.getpid()}.tmp"
    out.parent.mkdir(parents=True, exist_ok=True)
    if archived is not None and archived.is_file():
        out.write_bytes(canonical(table_from_file_list(archived, pmcids)))
        return out
    # A finished table for these PMCIDs is reused as is (its date included), like an unpinned download:
    # asking again every build would change the table's sha256 daily and re-normalize every unit.
    # Delete it (or pin a newer one with `medmix lock`) to refresh.
    key = hashlib.sha256(canonical({"pmcids": sorted(pmcids), "base": BUCKET_URL})).hexdigest()[:16]
    done = work_dir / f"pmc-licenses-{key}.json"
    if not done.is_file():
        partial = work_dir / "partial" / f"pmc-licenses-{key}.partial.jsonl"
        table = fetch_table(pmcids, partial, base=mirror_url(BUCKET_URL, mirror).rstrip("/"), log=log)
        tmp = done.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_bytes(canonical(table))
        os.replace(tmp, done)
        partial.unlink(missing_ok=True)
    out.write_bytes(done.read_bytes())
    return out


def read_table(path: Path) -> dict[str, Any]:
    try:
        table = json.loads(Path(path).read_bytes())
    except (OSError, ValueError) as exc:
        raise MedmixError(f"{path}: not a PMC license table ({exc})") from None
    if not isinstance(table, dict) or table.get("format") != FORMAT:
        raise MedmixError(f"{path}: not a PMC license table (format {FORMAT!r} expected)")
    return table
