"""The normalize cache never serves another folder's rows (issue 11, part 1).

Every case builds a `local` source into one shared cache, changes the folder the way a user
would, rebuilds into a new `--out` and checks that the output follows the folder. On a cache
keyed without the folder's path and contents, each of these returned the first build's rows.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from PIL import Image

from medmix.fetch.download import fetch_files
from medmix.fetch.fileid import fingerprint
from medmix.pipeline import BuildOptions, build
from medmix.recipe import parse_recipe
from medmix.sources.base import Remote, Source


def _png(color: tuple[int, int, int], size: int = 24) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buf, format="PNG")
    return buf.getvalue()


def _folder(root: Path, rows: dict[str, tuple[tuple[int, int, int], str]]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    lines = []
    for name, (color, answer) in rows.items():
        (root / name).write_bytes(_png(color))
        lines.append(json.dumps({"file_name": name, "answer": answer}))
    (root / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    return root


def _recipe(folder: Path):
    text = f"""name: stale
seed: 0
dedup: {{exact: false, image_distance: null, text_threshold: null}}
decontaminate: {{against: []}}
sources:
  mine:
    adapter: local
    from: {folder}
    options: {{domain: radiology, license: CC-BY-4.0}}
"""
    return parse_recipe(text, str(folder.parent / "stale.yaml"))


class Builder:
    def __init__(self, tmp: Path) -> None:
        self.tmp, self.cache, self.n = tmp, tmp / "cache", 0

    def __call__(self, folder: Path, **kw) -> tuple[dict[str, tuple[str, str]], dict]:
        self.n += 1
        out = self.tmp / f"out{self.n}"
        manifest = build(_recipe(folder), BuildOptions(out=out, cache=self.cache, **kw), log=lambda m: None)
        rows = {}
        for shard in manifest["shards"]:
            for r in pq.read_table(out / shard["path"]).to_pylist():
                rows[json.loads(r["meta"] or "{}").get("image_name", r["id"])] = (
                    r["answer"], hashlib.sha256(r["image"]["bytes"]).hexdigest()[:12])
        return rows, manifest


@pytest.fixture
def first(tmp_path):
    folder = _folder(tmp_path / "A", {"a.png": ((200, 0, 0), "first answer"), "b.png": ((0, 200, 0), "b answer")})
    builder = Builder(tmp_path)
    rows, manifest = builder(folder)
    assert sorted(a for a, _ in rows.values()) == ["b answer", "first answer"]
    assert manifest["build_info"]["normalize"] == {"units": 1, "reused": 0}
    return builder, folder, rows


def _answers(rows) -> list[str]:
    return sorted(a for a, _ in rows.values())


def test_untouched_folder_renormalizes_nothing_and_says_so(first):
    builder, folder, rows = first
    again, manifest = builder(folder)
    assert again == rows
    assert manifest["build_info"]["normalize"] == {"units": 1, "reused": 1}


def test_edited_metadata_row(first):
    builder, folder, _ = first
    meta = folder / "metadata.jsonl"
    stat = meta.stat()
    text = meta.read_text().replace("first answer", "other answer")  # same length: size unchanged
    meta.write_text(text)
    os.utime(meta, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # even with the mtime kept, the hash sees it
    rows, manifest = builder(folder)
    assert _answers(rows) == ["b answer", "other answer"]
    assert manifest["build_info"]["normalize"]["reused"] == 0


def test_image_replaced_under_the_same_name(first):
    builder, folder, before = first
    (folder / "a.png").write_bytes(_png((0, 0, 250), size=40))
    rows, _ = builder(folder)
    assert len(rows) == 2 and rows != before
    assert {h for _, h in rows.values()} != {h for _, h in before.values()}


def test_image_added(first):
    builder, folder, _ = first
    (folder / "c.png").write_bytes(_png((9, 9, 9)))
    with open(folder / "metadata.jsonl", "a") as f:
        f.write(json.dumps({"file_name": "c.png", "answer": "c answer"}) + "\n")
    rows, _ = builder(folder)
    assert _answers(rows) == ["b answer", "c answer", "first answer"]


def test_image_removed(first):
    builder, folder, _ = first
    (folder / "b.png").unlink()
    rows, manifest = builder(folder)
    assert _answers(rows) == ["first answer"]
    assert manifest["sources"]["mine"]["counts"]["quarantine_reasons"]  # its metadata row names a missing file


def test_folder_renamed(first):
    builder, folder, before = first
    moved = folder.rename(folder.parent / "A-renamed")
    rows, manifest = builder(moved)
    assert rows == before  # same content, so same rows
    assert manifest["build_info"]["normalize"]["reused"] == 0  # but read from where it now is
    assert manifest["sources"]["mine"]["upstream"][0]["upstream"] == f"manual:{moved.resolve()}"


def test_two_folders_under_one_source_name(first, tmp_path):
    builder, _, _ = first
    other = _folder(tmp_path / "B", {"a.png": ((200, 0, 0), "B's answer"), "b.png": ((0, 200, 0), "b answer")})
    rows, _ = builder(other)
    assert _answers(rows) == ["B's answer", "b answer"]


def test_same_size_same_mtime_replacement_needs_verify(first):
    builder, folder, before = first
    img = folder / "a.png"
    stat = img.stat()
    data = bytearray(img.read_bytes())
    replacement = _png((201, 0, 0))
    assert len(replacement) == len(data)
    img.write_bytes(replacement)
    os.utime(img, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    rows, manifest = builder(folder)
    assert manifest["build_info"]["normalize"]["reused"] == 1  # size and mtime agree: documented limit
    rows, manifest = builder(folder, verify=True)
    assert manifest["build_info"]["normalize"]["reused"] == 0 and rows != before


def test_manifest_records_the_folder_without_mtimes(tmp_path):
    a = _folder(tmp_path / "A", {"a.png": ((1, 2, 3), "x")})
    fp = fingerprint(a)
    shutil.copytree(a, tmp_path / "copy")  # new mtimes and path, same content
    copy = fingerprint(tmp_path / "copy")
    assert copy["content_sha256"] == fp["content_sha256"] and copy["key"] != fp["key"]
    assert fp["files"] == 2 and fp["bytes"] == sum(p.stat().st_size for p in a.iterdir())


def test_links_are_followed_and_dangling_ones_left_out(tmp_path):
    """The fingerprint walks with one stat per file: a linked file counts as its target, a linked
    folder is walked, a dangling link is no file; nested paths are POSIX and sorted."""
    a = _folder(tmp_path / "A", {"a.png": ((1, 2, 3), "x")})
    (a / "sub").mkdir()
    (a / "sub" / "b.csv").write_text("file_name,caption\n")
    plain = fingerprint(a)
    (a / "gone.png").symlink_to(tmp_path / "nowhere.png")
    assert fingerprint(a)["content_sha256"] == plain["content_sha256"]  # dangling: left out
    (a / "alias.png").symlink_to(a / "a.png")
    (a / "linked").symlink_to(a / "sub", target_is_directory=True)
    linked = fingerprint(a)
    assert linked["files"] == plain["files"] + 2
    assert linked["bytes"] == plain["bytes"] + (a / "a.png").stat().st_size + (a / "sub" / "b.csv").stat().st_size
    assert linked["content_sha256"] != plain["content_sha256"]


class _Unpinned(Source):
    name = "unpinned_probe"
    title = homepage = citation = ""
    license = "CC0-1.0"
    domain = "radiology"
    tasks = ("caption",)


def test_unpinned_remote_contributes_the_sha256_computed_at_download(http_server, tmp_path):
    url = http_server.add("/data/table.csv", b"a,b\n1,2\n")
    _Unpinned.files = (Remote("table.csv", url=url),)
    first = fetch_files(_Unpinned(), ("train",), cache_dir=tmp_path / "c1")
    http_server.add("/data/table.csv", b"a,b\n1,3\n")
    second = fetch_files(_Unpinned(), ("train",), cache_dir=tmp_path / "c2")
    assert first.fingerprints["table.csv"] == hashlib.sha256(b"a,b\n1,2\n").hexdigest()
    assert second.fingerprints["table.csv"] == hashlib.sha256(b"a,b\n1,3\n").hexdigest()


def test_manual_folders_of_a_gated_source_are_fingerprinted(tmp_path):
    """Quilt-1M's hand-placed image folder: replacing one image changes what the units are keyed on."""
    from fixtures import quilt1m

    from medmix.sources.quilt1m import Quilt1M

    root = quilt1m.write(tmp_path / "quilt")
    before = fetch_files(Quilt1M(), ("train",), cache_dir=tmp_path / "c", from_dir=root).fingerprints
    image = root / "quilt_1m" / quilt1m.image_name(0)
    image.write_bytes(image.read_bytes() + b"\0")
    after = fetch_files(Quilt1M(), ("train",), cache_dir=tmp_path / "c", from_dir=root).fingerprints
    assert before["quilt_1M_lookup.csv"] == after["quilt_1M_lookup.csv"]  # the table is a file: its sha256
    assert before["quilt_1m"] != after["quilt_1m"]


def test_the_streamed_fingerprint_equals_json_of_the_whole_row_lists(tmp_path):
    """`fingerprint` feeds its digests row by row; the bytes must be those of one `json.dumps` of
    the row lists, the form every cache key so far was made from (or every cache goes stale)."""
    names = ["a/b.jpg", "a-c.jpg", "a/b/c.csv", "ab/x.JSON", "z.txt", "é/ü.png", "a.b/c", "noext", "dir.csv/f.jpg",
             "a/.json"]  # a dot file has no suffix (os.path.splitext): not hashed
    # names JSON must escape (written by hand for every other name): quote, backslash, control, DEL
    odd = ['q"uote.jpg', "back\\slash.csv", "tab\there.jpg", "del\x7f.jpg", "..x.txt"]
    names += odd
    for rel in names:
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(rel.encode())
    rows = sorted(names)
    stats = {r: os.stat(tmp_path / r) for r in rows}
    digests = {r: (hashlib.sha256(r.encode()).hexdigest()
                   if os.path.splitext(r)[1].lower() in {".csv", ".json", ".txt"} else None) for r in rows}
    assert digests["back\\slash.csv"] and digests["..x.txt"] and not digests["del\x7f.jpg"]
    assert [r for r in rows if r not in odd] == ["a-c.jpg", "a.b/c", "a/.json", "a/b.jpg", "a/b/c.csv", "ab/x.JSON",
                                                 "dir.csv/f.jpg", "noext", "z.txt", "é/ü.png"]  # whole path order
    key = [str(tmp_path.resolve()), [[r, stats[r].st_size, stats[r].st_mtime_ns, digests[r]] for r in rows]]
    content = [[r, stats[r].st_size, digests[r]] for r in rows]
    fp = fingerprint(tmp_path)
    assert fp["key"] == hashlib.sha256(json.dumps(key, separators=(",", ":")).encode()).hexdigest()
    assert fp["content_sha256"] == hashlib.sha256(json.dumps(content, separators=(",", ":")).encode()).hexdigest()
    assert fp["files"] == len(rows) and fp["bytes"] == sum(len(r.encode()) for r in rows)


def test_local_units_come_from_the_fingerprints_listing_and_match_a_walk(tmp_path):
    """The local adapter cuts units from the listing the fetch stage's fingerprint just made (once,
    for that folder only), leaving out what lies under symlinked folders as its own walk does."""
    from medmix.fetch.fileid import take_listing
    from medmix.sources.local import LocalFolder

    a = _folder(tmp_path / "A", {f"img{i}.png": ((i, 0, 0), "x") for i in range(5)})
    (a / "sub").mkdir()
    (a / "sub" / "deep.jpg").write_bytes(_png((9, 9, 9)))
    (a / "notes.txt").write_text("not an image")
    outside = _folder(tmp_path / "B", {"far.png": ((1, 1, 1), "y")})
    (a / "linked").symlink_to(outside, target_is_directory=True)
    src = LocalFolder(domain="radiology", license="CC0-1.0")
    walked = src._images(a)
    assert "sub/deep.jpg" in walked and not any(n.startswith("linked/") for n in walked)
    fp = fingerprint(a)
    assert fp["files"] == 10  # the fingerprint does see the linked folder's files
    assert src._images(a) == walked  # from the listing, the same names and sizes in the same order
    assert take_listing(a) is None  # handed over once
    fingerprint(a)
    fingerprint(outside)
    assert take_listing(a) is None  # another folder was fingerprinted since: not this one's listing
