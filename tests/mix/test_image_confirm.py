"""Confirming an evaluation-image hash match on the pictures (medmix.mix.image_confirm), measured on
real images: the threshold must keep every edited copy and separate distinct pictures."""

from __future__ import annotations

import io
import itertools

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from medmix.imaging.phash import pixels_of, thumbnail
from medmix.mix.image_confirm import DEFAULT_CORRELATION, confirm_pairs, correlation, picture_thumb
from tests.mix.test_dedup import EDITS, real_images


@pytest.fixture(scope="module")
def corpus():
    return real_images()


def _thumb(im: Image.Image) -> np.ndarray:
    return thumbnail(pixels_of(im))


def test_every_edited_copy_of_a_real_image_correlates_above_the_threshold(corpus):
    worst = min(correlation(_thumb(im), _thumb(edit(im))) for im in corpus.values() for edit in EDITS.values())
    assert worst >= DEFAULT_CORRELATION + 0.1  # measured 0.932 (2 % crop): the margin the docstring states


def test_distinct_real_images_mostly_fall_far_below_it(corpus):
    thumbs = [_thumb(im) for im in corpus.values()]
    values = np.array([correlation(a, b) for a, b in itertools.combinations(thumbs, 2)])
    assert np.median(values) < 0.3 and (values >= DEFAULT_CORRELATION).mean() < 0.02


def test_flat_pictures_and_undecodable_bytes():
    flat, grad = np.full((32, 32), 7.0), np.tile(np.arange(32.0), (32, 1))
    assert correlation(flat, flat + 3) == 1.0 and correlation(flat, grad) == 0.0
    assert correlation(grad, grad * 2 + 5) == pytest.approx(1.0) and correlation(grad, -grad) == pytest.approx(-1.0)
    assert picture_thumb(b"not an image") is None and picture_thumb(None) is None


def _png(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return buf.getvalue()


def test_confirm_pairs_reads_both_sides_from_cache_files(corpus, tmp_path):
    names = sorted(corpus)[:4]
    imgs = [corpus[n].convert("L") for n in names]
    train = tmp_path / "unit.parquet"
    evals = tmp_path / "eval.parquet"
    copy = EDITS["all four"](imgs[0])
    rows = [{"bytes": b, "path": None} for b in (_png(copy), _png(imgs[1]), b"junk")]
    pq.write_table(pa.table({"image": rows}), train, row_group_size=2)
    pq.write_table(pa.table({"image": [{"bytes": _png(im), "path": None} for im in (imgs[0], imgs[2])]}), evals)
    pairs = [((train, 0), (evals, 0)), ((train, 1), (evals, 1)), ((train, 2), (evals, 1)), ((train, 0), (evals, 1))]
    got = confirm_pairs(pairs, DEFAULT_CORRELATION)
    # the copy is confirmed against its original only; an unreadable image cannot argue against the hash
    assert got.tolist() == [True, correlation(_thumb(imgs[1]), _thumb(imgs[2])) >= DEFAULT_CORRELATION, True, False]
    assert confirm_pairs([], 0.8).tolist() == []
