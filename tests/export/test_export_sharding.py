"""Sharding edges on a generated 3,000-row mixture (7 input shards, 30% images, shared pictures):
row-count shards cut exactly, byte-size shards are as full as the limit allows and never over it
(the size model is the written size), an exact-fit limit keeps the sample, and 1 or 2 workers
write byte-identical exports.
"""

from __future__ import annotations

import hashlib
import json
import struct
import tarfile
from pathlib import Path

import pytest
import webdataset as wds

from medmix.export import export
from medmix.export.mds import config_bytes


def _quiet(message: str) -> None:
    pass


def _tree(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _tar_samples(path: Path) -> list[tuple[str, int]]:
    """(key, bytes the sample takes in the tar: headers + padded data) for each sample, in order."""
    out: list[tuple[str, int]] = []
    with tarfile.open(path) as tar:
        for m in tar.getmembers():
            key = m.name.split(".", 1)[0]
            size = 512 + -(-m.size // 512) * 512
            if out and out[-1][0] == key:
                out[-1] = (key, out[-1][1] + size)
            else:
                out.append((key, size))
    return out


def _json_samples(path: Path) -> list[int]:
    """Bytes each record takes in a JSON-array shard (its line plus the ",\\n" separator)."""
    lines = path.read_bytes().split(b"\n")
    assert lines[0] == b"[" and lines[-2:] == [b"]", b""]
    return [len(line.rstrip(b",")) + 2 for line in lines[1:-2]]


def _mds_samples(path: Path) -> list[int]:
    data = path.read_bytes()
    (n,) = struct.unpack_from("<I", data)
    offsets = struct.unpack_from(f"<{n + 1}I", data, 4)
    assert offsets[-1] == len(data)
    return [b - a + 4 for a, b in zip(offsets, offsets[1:])]


COSTS = {"webdataset": (lambda p: [c for _, c in _tar_samples(p)], 1024),
         "llava": (_json_samples, 3), "sharegpt": (_json_samples, 3)}


def _costs(fmt: str, path: Path, limit: int | None) -> tuple[list[int], int]:
    if fmt == "mds":
        return _mds_samples(path), 8 + len(config_bytes(limit))
    fn, overhead = COSTS[fmt]
    return fn(path), overhead


@pytest.mark.parametrize("fmt", ["webdataset", "llava", "mds"])
def test_row_shards_cut_exactly(fmt, generated, generated_rows, tmp_path):
    total = len(generated_rows)
    for size, expect in (("1000", [1000, 1000, 1000]), ("999", [999, 999, 999, 3]), ("5000", [total])):
        result = export(generated, tmp_path / f"{fmt}-{size}", fmt, shard_size=size, log=_quiet)
        assert [s["rows"] for s in result.index["shards"]] == expect
        ext = {"webdataset": "tar", "llava": "json", "mds": "mds"}[fmt]
        assert [s["path"] for s in result.index["shards"]] == [f"train-{i:05d}.{ext}" for i in range(len(expect))]


@pytest.mark.parametrize("fmt", ["webdataset", "llava", "mds"])
def test_byte_shards_are_full_never_over_and_exact_fit_keeps_the_sample(fmt, generated, generated_rows, tmp_path):
    limit = 150_000 if fmt != "llava" else 60_000
    result = export(generated, tmp_path / "bytes", fmt, shard_size=f"{limit}B", log=_quiet)
    shards = result.index["shards"]
    assert len(shards) >= 3 and sum(s["rows"] for s in shards) == len(generated_rows)
    costs = []
    for s in shards:
        path = tmp_path / "bytes" / s["path"]
        sample_costs, overhead = _costs(fmt, path, limit)
        assert len(sample_costs) == s["rows"] and path.stat().st_size == s["bytes"]
        assert overhead + sum(sample_costs) == s["bytes"]  # the size model the cut uses is the written size
        assert s["bytes"] <= limit
        costs.append(sample_costs)
    for s, nxt in zip(shards, costs[1:]):  # the next shard's first sample would not have fitted
        assert s["bytes"] + nxt[0] > limit

    # a limit equal to a shard's exact size keeps that many rows; one byte less drops its last sample
    first = export(generated, tmp_path / "rows", fmt, shard_size="100", log=_quiet).index["shards"][0]
    exact = first["bytes"] if fmt != "mds" else first["bytes"] - len(config_bytes(None)) + len(
        config_bytes(first["bytes"]))
    fit = export(generated, tmp_path / "fit", fmt, shard_size=f"{exact}B", log=_quiet).index["shards"][0]
    assert fit["rows"] == 100
    under = export(generated, tmp_path / "under", fmt, shard_size=f"{exact - 1}B", log=_quiet).index["shards"][0]
    assert under["rows"] == 99


@pytest.mark.parametrize("fmt", ["webdataset", "llava", "sharegpt", "mds"])
def test_one_or_two_workers_write_the_same_bytes(fmt, generated, tmp_path):
    one = export(generated, tmp_path / "one", fmt, shard_size="700", workers=1, log=_quiet)
    two = export(generated, tmp_path / "two", fmt, shard_size="700", workers=2, log=_quiet)
    assert one.index == two.index
    tree = _tree(tmp_path / "one")
    assert tree == _tree(tmp_path / "two") and len(tree) > 5


def test_generated_webdataset_keeps_global_order_and_shared_images_are_one_file(generated, generated_rows, tmp_path):
    export(generated, tmp_path / "wds", "webdataset", shard_size="64KiB", workers=2, log=_quiet)
    urls = sorted(str(p) for p in (tmp_path / "wds").glob("train-*.tar"))
    ids = [json.loads(s["json"])["id"] for s in wds.WebDataset(urls, shardshuffle=False)]
    assert ids == [r["id"] for r in generated_rows]
    result = export(generated, tmp_path / "llava", "llava", log=_quiet)
    distinct = {hashlib.sha256(r["image"]["bytes"]).hexdigest() for r in generated_rows if r["image"]}
    image_rows = sum(1 for r in generated_rows if r["image"])
    assert result.index["image_files"] == len(distinct) < image_rows and result.index["image_rows"] == image_rows
    by_task = {r["task"] for r in generated_rows}
    assert by_task == {"qa", "mcqa", "vqa", "caption", "classification"}
    raw = json.loads((tmp_path / "llava" / "train-00000.json").read_text())
    for rec, row in zip(raw, generated_rows, strict=True):
        human, gpt = (t["value"] for t in rec["conversations"])
        if row["task"] == "mcqa":  # options lettered, the answer carries its letter (trainer template)
            letter = "ABCD"[row["options"].index(row["answer"])]
            assert "Options:\n(A) " in human and gpt == f"({letter}) {row['answer']}"
        if row["task"] == "qa" and row["context"]:
            assert human.startswith("Context: ")
