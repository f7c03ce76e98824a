"""ARCH adapter: one row per image, bags of images sharing a caption linked by meta.caption_id."""

from __future__ import annotations

import io
import json

from adapter_harness import run_adapter
from fixtures import arch as fx
from fixtures import assert_matches_remotes, local_files, read_split, serve
from PIL import Image

from medmix.sources import get_source
from medmix.sources.arch import ARCH


def test_registered_non_commercial_share_alike_pathology():
    assert get_source("arch") is ARCH
    assert ARCH.license == "CC-BY-NC-SA-4.0" and ARCH.domain == "pathology" and ARCH.tasks == ("caption",)
    assert_matches_remotes(ARCH, fx.build())


def test_end_to_end_one_row_per_image_with_shared_caption_ids(http_server, tmp_path):
    serve(http_server, fx.build())
    rows, bad = run_adapter(ARCH(), ("train",), server=http_server, cache_dir=tmp_path)
    assert len(rows) == 4 + 3
    metas = {r["id"]: json.loads(r["meta"]) for r in rows}
    bag = [metas[f"arch/books/{u}"] for u, *_ in fx.BOOKS[:3]]
    assert len({m["caption_id"] for m in bag}) == 1 and all(m["bag_size"] == 3 for m in bag)
    assert [m["letter"] for m in bag] == ["A", "B", "C"] and {m["figure_id"] for m in bag} == {"00"}
    single = metas[f"arch/books/{fx.BOOKS[3][0]}"]
    assert single["caption_id"] != bag[0]["caption_id"] and single["bag_size"] == 1
    pub = [metas[f"arch/pubmed/{u}"] for u, *_ in fx.PUBMED[:2]]
    assert pub[0]["caption_id"] == pub[1]["caption_id"] and "figure_id" not in pub[0]
    assert pub[0]["caption_id"].startswith("pubmed:") and bag[0]["caption_id"].startswith("books:")
    assert all(r["license"] == "CC-BY-NC-SA-4.0" and r["modality"] == "SM" for r in rows)
    assert all(Image.open(io.BytesIO(r["image"]["bytes"])).size[0] > 0 for r in rows)
    assert next(r for r in rows if r["id"].endswith(fx.BOOKS[0][0]))["answer"] == fx.BAG_CAPTION
    reasons = {b["id"]: b["reason"] for b in bad}
    assert reasons[f"arch/books/{fx.BOOKS[4][0]}"].startswith("image file missing")
    assert reasons["arch/books/no-caption-uuid"] == "missing field: caption"
    assert reasons["arch/books/row6"] == "malformed entry: not an object"
    assert len(bad) == 3


def test_units_per_set_and_ids_stable(tmp_path):
    files = local_files(tmp_path, ARCH(), fx.build(bad=False), ("train",))
    assert [u.args["set"] for u in ARCH().units("train", files)] == ["books", "pubmed"]
    a, _ = read_split(ARCH(), "train", files)
    b, _ = read_split(ARCH(), "train", files)
    assert [r.native_id for r in a] == [r.native_id for r in b]
    assert len({r.native_id for r in a}) == len(a) == 7
    # images with a caption of their own keep .png/.jpg as found
    assert {r.image.suffix for r in a if r.native_id.startswith("pubmed/")} == {".jpg", ".png"}
