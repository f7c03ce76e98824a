"""Downloads against a real local HTTP server: faults in, correct bytes (or a clear error) out."""

from __future__ import annotations

import hashlib
import io
import socket
import urllib.error
import urllib.request
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import ClassVar

import pytest

from medmix.core.errors import FetchError, ManualFilesMissing
from medmix.fetch.download import (
    FetchResult,
    download,
    fetch_files,
    fetch_info,
    hf_download,
    mirror_url,
    partial_path,
)
from medmix.sources.base import Manual, Remote, Source

PAYLOAD = bytes(range(256)) * 400  # 100 KiB, every byte value, so a shifted resume shows up in the hash
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()
FAST = {"backoff": 0.0, "timeout": 5.0}


def files_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


# -- the test server itself ------------------------------------------------------------------------
def test_server_serves_ranges_head_and_404(http_server):
    url = http_server.add("/h/f.bin", b"0123456789")
    request = urllib.request.Request(url, headers={"Range": "bytes=4-"})
    with urllib.request.urlopen(request) as resp:
        assert resp.status == 206
        assert resp.headers["Content-Range"] == "bytes 4-9/10"
        assert resp.read() == b"456789"
    with urllib.request.urlopen(urllib.request.Request(url, method="HEAD")) as resp:
        assert resp.headers["Content-Length"] == "10" and resp.read() == b""
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(http_server.url + "/nope")
    assert err.value.code == 404
    assert [r[0] for r in http_server.requests] == ["GET", "HEAD", "GET"]
    assert http_server.requests[0] == ("GET", "/h/f.bin", "bytes=4-")


# -- mirror_url -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("url", "mirror", "expected"),
    [
        ("https://host/a/b", "http://m", "http://m/host/a/b"),
        ("https://host/a/b", "http://m/", "http://m/host/a/b"),
        ("https://zenodo.org/records/1/files/x.zip?download=1", "https://m.edu/mm",
         "https://m.edu/mm/zenodo.org/records/1/files/x.zip?download=1"),
        ("http://host:8080/a", "http://m", "http://m/host:8080/a"),
        ("https://user:secret@host/a", "http://m", "http://m/host/a"),
        ("https://host/a/b", None, "https://host/a/b"),
    ],
)
def test_mirror_url(url, mirror, expected):
    assert mirror_url(url, mirror) == expected


def test_mirror_url_rejects_a_mirror_that_is_not_http():
    with pytest.raises(FetchError, match="not an http"):
        mirror_url("https://host/a", "/srv/mirror")


def test_mirror_agrees_with_the_server_layout(http_server, tmp_path):
    real = "https://zenodo.org/records/7/files/data%20set.zip?download=1"
    served = http_server.add_url(real, PAYLOAD)
    assert mirror_url(real, http_server.url) == served
    path = download(mirror_url(real, http_server.url), tmp_path, sha256=PAYLOAD_SHA, **FAST)
    assert path.read_bytes() == PAYLOAD
    assert path.name == "data set.zip"


# -- download -------------------------------------------------------------------------------------
def test_pinned_download_lands_content_addressed_and_is_never_fetched_again(http_server, tmp_path):
    url = http_server.add("/example.org/a/train.zip", PAYLOAD)
    path = download(url, tmp_path, sha256=PAYLOAD_SHA, size=len(PAYLOAD), **FAST)
    assert path == tmp_path / "sha256" / PAYLOAD_SHA / "train.zip"
    assert path.read_bytes() == PAYLOAD
    assert fetch_info(path) == {"sha256": PAYLOAD_SHA, "size": len(PAYLOAD)}
    assert not partial_path(url, tmp_path).exists()

    http_server.requests.clear()
    assert download(url, tmp_path, sha256=PAYLOAD_SHA, **FAST) == path
    # the same bytes under another name and URL: linked from the cache, still no request
    other = download(http_server.url + "/elsewhere/copy.zip", tmp_path, sha256=PAYLOAD_SHA, **FAST)
    assert other.read_bytes() == PAYLOAD and other.name == "copy.zip"
    assert http_server.requests == []


def test_concurrent_downloads_of_one_file_fetch_it_once(http_server, tmp_path):
    url = http_server.add("/h/shared.bin", PAYLOAD)
    with ThreadPoolExecutor(4) as pool:
        paths = list(pool.map(lambda _: download(url, tmp_path, sha256=PAYLOAD_SHA, **FAST), range(4)))
    assert len(set(paths)) == 1 and paths[0].read_bytes() == PAYLOAD
    assert [r[0] for r in http_server.requests] == ["GET"]


def test_progress_bar_does_not_change_the_bytes(http_server, tmp_path, capsys):
    url = http_server.add("/h/f.bin", PAYLOAD)
    path = download(url, tmp_path, sha256=None, progress=True, **FAST)
    assert path.read_bytes() == PAYLOAD
    assert "f.bin" in capsys.readouterr().err


def test_http_500_is_retried_then_succeeds(http_server, tmp_path):
    url = http_server.add("/h/f.bin", PAYLOAD)
    http_server.fail(url, "500", times=2)
    path = download(url, tmp_path, sha256=PAYLOAD_SHA, **FAST)
    assert path.read_bytes() == PAYLOAD
    assert [r[0] for r in http_server.requests] == ["GET", "GET", "GET"]


def test_persistent_500_gives_up_with_the_url_and_caches_nothing(http_server, tmp_path):
    url = http_server.add("/h/f.bin", PAYLOAD)
    http_server.fail(url, "500", times=10)
    with pytest.raises(FetchError) as err:
        download(url, tmp_path, sha256=PAYLOAD_SHA, retries=2, **FAST)
    assert url in str(err.value) and "3 attempts" in str(err.value) and "HTTP 500" in str(err.value)
    assert len(http_server.requests) == 3
    assert files_in(tmp_path / "sha256") == []


def test_dropped_connection_resumes_with_range(http_server, tmp_path):
    url = http_server.add("/h/big.bin", PAYLOAD)
    http_server.fail(url, "drop")
    path = download(url, tmp_path, sha256=PAYLOAD_SHA, **FAST)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == PAYLOAD_SHA
    assert http_server.requests[0] == ("GET", "/h/big.bin", None)
    # the first attempt got half the body; the second asks only for the rest
    assert http_server.requests[1:] == [("GET", "/h/big.bin", f"bytes={len(PAYLOAD) // 2}-")]


def test_leftover_part_from_a_killed_process_resumes(http_server, tmp_path):
    url = http_server.add("/h/big.bin", PAYLOAD)
    part = partial_path(url, tmp_path)
    part.parent.mkdir(parents=True)
    part.write_bytes(PAYLOAD[:30_000])
    path = download(url, tmp_path, sha256=PAYLOAD_SHA, **FAST)
    assert path.read_bytes() == PAYLOAD
    assert http_server.requests == [("GET", "/h/big.bin", "bytes=30000-")]
    assert not part.exists()


def test_leftover_part_with_foreign_bytes_costs_one_clean_redownload(http_server, tmp_path):
    url = http_server.add("/h/big.bin", PAYLOAD)
    part = partial_path(url, tmp_path)
    part.parent.mkdir(parents=True)
    part.write_bytes(b"x" * 1000)  # not a prefix of the real file
    path = download(url, tmp_path, sha256=PAYLOAD_SHA, **FAST)
    assert path.read_bytes() == PAYLOAD
    assert http_server.requests == [("GET", "/h/big.bin", "bytes=1000-"), ("GET", "/h/big.bin", None)]


def test_wrong_sha256_names_url_expected_and_actual_and_leaves_nothing(http_server, tmp_path):
    url = http_server.add("/h/f.bin", PAYLOAD)
    wrong = "0" * 64
    with pytest.raises(FetchError) as err:
        download(url, tmp_path, sha256=wrong, **FAST)
    message = str(err.value)
    assert url in message and wrong in message and PAYLOAD_SHA in message
    assert files_in(tmp_path / "sha256") == []
    assert not partial_path(url, tmp_path).exists()
    assert len(http_server.requests) == 2  # one clean re-download, not an endless loop


def test_corrupted_body_once_is_healed_by_the_clean_redownload(http_server, tmp_path):
    url = http_server.add("/h/f.bin", PAYLOAD)
    http_server.fail(url, "wrong_body")
    path = download(url, tmp_path, sha256=PAYLOAD_SHA, **FAST)
    assert path.read_bytes() == PAYLOAD
    assert len(http_server.requests) == 2


def test_corrupted_body_every_time_is_a_fetch_error(http_server, tmp_path):
    url = http_server.add("/h/f.bin", PAYLOAD)
    http_server.fail(url, "wrong_body", times=5)
    with pytest.raises(FetchError, match=PAYLOAD_SHA):
        download(url, tmp_path, sha256=PAYLOAD_SHA, **FAST)
    assert files_in(tmp_path / "sha256") == []
    assert not partial_path(url, tmp_path).exists()


def test_unpinned_download_reports_its_sha_and_is_reused_by_url(http_server, tmp_path):
    url = http_server.add("/h/data.json?v=2", b'{"a": 1}')
    path = download(url, tmp_path, sha256=None, **FAST)
    assert path.read_bytes() == b'{"a": 1}'
    assert fetch_info(path)["sha256"] == hashlib.sha256(b'{"a": 1}').hexdigest()
    http_server.requests.clear()
    assert download(url, tmp_path, sha256=None, **FAST) == path
    assert http_server.requests == []


def test_404_fails_at_once_with_the_url(http_server, tmp_path):
    url = http_server.url + "/h/missing.zip"
    with pytest.raises(FetchError, match="HTTP 404") as err:
        download(url, tmp_path, sha256=None, **FAST)
    assert url in str(err.value)
    assert len(http_server.requests) == 1


def test_pinned_size_that_disagrees_with_the_server_stops_before_downloading(http_server, tmp_path):
    url = http_server.add("/h/f.bin", PAYLOAD)
    with pytest.raises(FetchError, match=f"server has {len(PAYLOAD)} bytes but the pinned size is 5"):
        download(url, tmp_path, sha256=PAYLOAD_SHA, size=5, **FAST)
    assert files_in(tmp_path / "sha256") == []


def test_a_server_that_never_answers_times_out_and_gives_up(tmp_path):
    with socket.socket() as silent:  # accepts connections (kernel backlog) but never replies
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/f.bin"
        with pytest.raises(FetchError, match="2 attempts"):
            download(url, tmp_path, sha256=None, retries=1, backoff=0.0, timeout=0.3)


# -- Hugging Face Hub -----------------------------------------------------------------------------
COMMIT = "c0ffee" + "0" * 34


def test_hf_download_pinned_revision_then_cached_without_requests(http_server, tmp_path):
    http_server.add_hf("org/medvqa", "data/train-00000.parquet", PAYLOAD, revision=COMMIT)
    path = hf_download("org/medvqa", "data/train-00000.parquet", revision=COMMIT, cache_dir=tmp_path,
                       sha256=PAYLOAD_SHA, endpoint=http_server.hf_endpoint)
    assert path.read_bytes() == PAYLOAD
    assert COMMIT in path.parts
    assert ("GET", f"/datasets/org/medvqa/resolve/{COMMIT}/data/train-00000.parquet", None) in http_server.requests
    http_server.requests.clear()
    again = hf_download("org/medvqa", "data/train-00000.parquet", revision=COMMIT, cache_dir=tmp_path,
                        sha256=PAYLOAD_SHA, endpoint=http_server.hf_endpoint)
    assert again == path and http_server.requests == []


def test_hf_download_wrong_sha_is_a_fetch_error_and_removes_the_file(http_server, tmp_path):
    http_server.add_hf("org/medvqa", "a.json", b"[1, 2]", revision=COMMIT)
    with pytest.raises(FetchError) as err:
        hf_download("org/medvqa", "a.json", revision=COMMIT, cache_dir=tmp_path, sha256="f" * 64,
                    endpoint=http_server.hf_endpoint)
    assert "f" * 64 in str(err.value) and hashlib.sha256(b"[1, 2]").hexdigest() in str(err.value)
    assert "org/medvqa" in str(err.value)
    assert [p for p in files_in(tmp_path / "hf") if p.read_bytes() == b"[1, 2]"] == []


def test_hf_download_retries_a_server_error(http_server, tmp_path):
    http_server.add_hf("org/medvqa", "a.json", b"[1]", revision="main")
    http_server.fail("/datasets/org/medvqa/resolve/main/a.json", "500")
    path = hf_download("org/medvqa", "a.json", revision=None, cache_dir=tmp_path, endpoint=http_server.hf_endpoint,
                       backoff=0.0)
    assert path.read_bytes() == b"[1]"
    assert [r[0] for r in http_server.requests].count("GET") == 2


def test_hf_download_missing_file_names_the_upstream(http_server, tmp_path):
    http_server.add_hf("org/medvqa", "a.json", b"[]", revision=COMMIT)
    with pytest.raises(FetchError, match="org/medvqa.*nope.json"):
        hf_download("org/medvqa", "nope.json", revision=COMMIT, cache_dir=tmp_path, endpoint=http_server.hf_endpoint,
                    retries=0)


# -- fetch_files ----------------------------------------------------------------------------------
def zip_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


ARCHIVE = zip_bytes({"images/a.png": b"png-a", "captions.json": b"[]"})
ARCHIVE_SHA = hashlib.sha256(ARCHIVE).hexdigest()


class Demo(Source):
    name = "demo"
    title = "Demo"
    homepage = "https://example.org"
    citation = ""
    license = "CC-BY-4.0"
    domain = "radiology"
    tasks = ("vqa",)
    files: ClassVar[tuple] = (
        Remote("train.json", url="https://example.org/demo/train.json", sha256=PAYLOAD_SHA),
        Remote("images", url="https://zenodo.org/records/9/files/images.zip", sha256=ARCHIVE_SHA, extract=True),
        Remote("test.parquet", hf_repo="org/demo", hf_path="data/test.parquet", revision=COMMIT,
               splits=("test",)),
    )


class Gated(Source):
    name = "gated"
    title = "Gated"
    homepage = "https://example.org"
    citation = ""
    license = "other"
    domain = "radiology"
    tasks = ("caption",)
    files: ClassVar[tuple] = (
        Manual("train/captions.csv", how="register at https://example.org/form and download the CSV"),
        Manual("images.zip", how="same form, 'images' link", extract=True),
        Manual("masks", how="ask the authors", is_dir=True, splits=("valid",)),
    )


def test_fetch_files_downloads_mirrors_extracts_and_records_provenance(http_server, tmp_path):
    http_server.add_url("https://example.org/demo/train.json", PAYLOAD)
    http_server.add_url("https://zenodo.org/records/9/files/images.zip", ARCHIVE)
    http_server.add_hf("org/demo", "data/test.parquet", b"PAR1", revision=COMMIT)

    result = fetch_files(Demo(), ("train", "test"), cache_dir=tmp_path, mirror=http_server.url,
                         hf_endpoint=http_server.hf_endpoint)
    assert isinstance(result, FetchResult)
    assert result.paths["train.json"].read_bytes() == PAYLOAD
    assert result.paths["images"] == tmp_path / "extracted" / ARCHIVE_SHA
    assert (result.paths["images"] / "images" / "a.png").read_bytes() == b"png-a"
    assert result.paths["test.parquet"].read_bytes() == b"PAR1"

    by_name = {p["name"]: p for p in result.provenance}
    assert by_name["train.json"]["upstream"] == "https://example.org/demo/train.json"
    assert by_name["train.json"]["mirror"] == http_server.url + "/example.org/demo/train.json"
    assert by_name["train.json"] | {"mirror": None} == {
        "name": "train.json", "upstream": "https://example.org/demo/train.json", "sha256": PAYLOAD_SHA,
        "size": len(PAYLOAD), "pinned": True, "revision": None, "mirror": None}
    assert by_name["test.parquet"]["pinned"] is False
    assert by_name["test.parquet"]["sha256"] == hashlib.sha256(b"PAR1").hexdigest()
    assert by_name["test.parquet"]["revision"] == COMMIT

    # a second run: everything pinned or commit-pinned comes from the cache
    http_server.requests.clear()
    again = fetch_files(Demo(), ("train", "test"), cache_dir=tmp_path, mirror=http_server.url,
                        hf_endpoint=http_server.hf_endpoint)
    assert again.paths == result.paths and http_server.requests == []


def test_fetch_files_skips_files_of_splits_not_asked_for(http_server, tmp_path):
    http_server.add_url("https://example.org/demo/train.json", PAYLOAD)
    http_server.add_url("https://zenodo.org/records/9/files/images.zip", ARCHIVE)
    result = fetch_files(Demo(), ("train",), cache_dir=tmp_path, mirror=http_server.url)
    assert set(result.paths) == {"train.json", "images"}
    assert not any("/datasets/" in r[1] for r in http_server.requests)


def test_fetch_files_uses_local_copies_from_from_dir_without_downloading(http_server, tmp_path):
    local = tmp_path / "offline"
    local.mkdir()
    (local / "train.json").write_bytes(PAYLOAD)
    (local / "images").mkdir()  # wrong: a folder where the archive should be
    with pytest.raises(FetchError, match="is a folder"):
        fetch_files(Demo(), ("train",), cache_dir=tmp_path / "cache", from_dir=local, mirror=http_server.url)
    (local / "images").rmdir()
    (local / "images").write_bytes(ARCHIVE)

    result = fetch_files(Demo(), ("train",), cache_dir=tmp_path / "cache", from_dir=local, mirror=http_server.url)
    assert http_server.requests == []
    assert result.paths["train.json"] == (local / "train.json").resolve()
    assert (result.paths["images"] / "captions.json").read_bytes() == b"[]"
    prov = {p["name"]: p for p in result.provenance}
    assert prov["train.json"]["upstream"] == f"local:{(local / 'train.json').resolve()}"
    assert prov["train.json"]["sha256"] == PAYLOAD_SHA


def test_fetch_files_refuses_a_local_copy_that_is_not_the_pinned_file(tmp_path):
    local = tmp_path / "offline"
    local.mkdir()
    (local / "train.json").write_bytes(b"tampered")
    with pytest.raises(FetchError) as err:
        fetch_files(Demo(), ("train",), cache_dir=tmp_path / "cache", from_dir=local)
    assert str(local / "train.json") in str(err.value) and PAYLOAD_SHA in str(err.value)


def test_manual_files_missing_lists_every_file_its_how_and_the_flag(tmp_path):
    with pytest.raises(ManualFilesMissing) as err:
        fetch_files(Gated(), ("train", "valid"), cache_dir=tmp_path, from_dir=tmp_path / "clef")
    message = str(err.value)
    for name, how in [("train/captions.csv", "register at https://example.org/form and download the CSV"),
                      ("images.zip", "same form, 'images' link"), ("masks", "ask the authors")]:
        assert str((tmp_path / "clef" / name).resolve()) in message
        assert how in message
    assert "--from gated=DIR" in message

    with pytest.raises(ManualFilesMissing) as err:
        fetch_files(Gated(), ("train",), cache_dir=tmp_path, from_dir=None)
    assert "DIR/train/captions.csv" in str(err.value) and "DIR/images.zip" in str(err.value)
    assert "masks" not in str(err.value)  # only needed for the valid split
    assert "--from gated=DIR" in str(err.value)


def test_manual_files_present_are_hashed_and_extracted(tmp_path):
    clef = tmp_path / "clef"
    (clef / "train").mkdir(parents=True)
    (clef / "train" / "captions.csv").write_text("id,caption\n1,x\n")
    (clef / "images.zip").write_bytes(ARCHIVE)
    result = fetch_files(Gated(), ("train",), cache_dir=tmp_path / "cache", from_dir=clef)
    assert result.paths["train/captions.csv"].read_text().startswith("id,caption")
    assert (result.paths["images.zip"] / "images" / "a.png").read_bytes() == b"png-a"
    prov = {p["name"]: p for p in result.provenance}
    assert prov["images.zip"]["sha256"] == ARCHIVE_SHA
    assert prov["images.zip"]["upstream"].startswith("manual:")


def test_hub_unreachable_is_a_network_failure_not_a_missing_file(tmp_path, monkeypatch):
    """huggingface_hub reports "no network and not cached" with a subclass of EntryNotFoundError;
    the message must say the Hub was unreachable, not that the file does not exist."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the same error as a dead network, without its retries
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(FetchError) as exc:
        hf_download("org/ds", "data/train.parquet", revision="main", cache_dir=tmp_path,
                    endpoint="http://127.0.0.1:9", retries=0)
    assert "no file" not in str(exc.value) and "download failed" in str(exc.value)
