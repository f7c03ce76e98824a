"""PathVQA adapter against fixture shards in the real `flaviagiammarino/path-vqa` layout."""

from __future__ import annotations

import pyarrow.parquet as pq
from fixtures import assert_matches_remotes, decodes, local_files, read_split, run_twice
from fixtures import pathvqa as fx

from medmix.core.licenses import terms
from medmix.sources import get_source
from medmix.sources.pathvqa import PathVQA


def test_registered_test_is_eval_and_license_needs_acceptance():
    assert get_source("pathvqa") is PathVQA
    assert PathVQA.eval_splits == {"test"}
    assert PathVQA.splits == {"train": 19654, "validation": 6259, "test": 6719}
    # MIT on the card, but image copyright stays with the publishers: refused until accepted
    assert terms(PathVQA.license).needs_acceptance and not PathVQA.redistributable
    assert_matches_remotes(PathVQA, fx.build())
    assert len(PathVQA().files_for(("train",))) == 7


def test_one_unit_per_shard_and_ids_count_through_the_split(tmp_path):
    src = PathVQA()
    up = fx.build(bad=False)
    files = local_files(tmp_path, src, up, ("train",))
    units = src.units("train", files)
    assert [u.args["file"] for u in units] == [fx.path(s) for s in fx.SHARDS["train"]]
    sizes = [pq.ParquetFile(files[u.args["file"]]).metadata.num_rows for u in units]
    assert [u.args["offset"] for u in units] == [sum(sizes[:i]) for i in range(len(sizes))]
    records, bads = read_split(src, "train", files)
    assert bads == [] and len(records) == sum(sizes)
    assert [r.native_id for r in records] == [f"train-{i:05d}" for i in range(sum(sizes))]
    closed = [r.answer in ("yes", "no") for r in records]
    assert [r.meta["answer_type"] == "closed" for r in records] == closed and any(closed) and not all(closed)
    assert records[0].task == "vqa"


def test_bad_rows_in_one_shard_do_not_stop_the_others(tmp_path):
    src = PathVQA()
    records, bads = read_split(src, "train", local_files(tmp_path, src, fx.build(bad=True), ("train",)))
    assert [b.reason.split(":")[0] for b in bads] == ["image missing"]
    assert bads[0].file == fx.path(fx.SHARDS["train"][2])
    assert len(records) == 7 * 2 + 3 + 1  # every good row, plus the truncated JPEG for shared decoding to reject


def test_end_to_end_through_fetch_and_normalize(http_server, tmp_path):
    rows, bad = run_twice(PathVQA, ("train", "validation", "test"), fx.build(bad=True), http_server, tmp_path)
    assert [sum(r["split"] == s for r in rows) for s in ("train", "validation", "test")] == [17, 7, 7]
    assert all(r["license"] == "LicenseRef-PathVQA" and r["domain"] == "pathology" for r in rows)
    assert all(decodes(r) == (r["width"], r["height"]) for r in rows)
    # the adapter's own check, and the shared decoder rejecting the half JPEG (its wording is its own)
    assert len(bad) == 2 and sum(b["reason"].startswith("image missing") for b in bad) == 1
    # train shards hold 2, 3, then 2 good + 2 bad rows
    assert {b["id"] for b in bad} == {"pathvqa/train-00007", "pathvqa/train-00008"}
    # two questions per picture: the image hash repeats, the ids do not
    assert len({r["image_hash"] for r in rows}) < len(rows)
