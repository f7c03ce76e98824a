"""The mixture's named steps, each on its own: license → dedup → decontaminate → select."""

from __future__ import annotations

import dataclasses

import numpy as np

from medmix.mix.index import EvalIndex, Index, fixed_width, hash_key
from medmix.mix.select import decontaminate_step, dedup_step, license_step, mixture_rows, select_step
from medmix.recipe import parse_recipe

RECIPE = """name: t
seed: 3
sources:
  a:
    adapter: local
    from: /nonexistent
    options: {domain: radiology, license: CC-BY-4.0}
  b:
    adapter: local
    from: /nonexistent
    options: {domain: radiology, license: CC-BY-4.0}
"""


def _recipe(**dedup):
    r = parse_recipe(RECIPE, "r.yaml")
    return dataclasses.replace(r, accept=("CC-BY-4.0",),
                               dedup=dataclasses.replace(r.dedup, text_threshold=None, **dedup))


def _index(ids, sources, licenses, shas, texts, phash=None, text_hit=None):
    n = len(ids)
    names = ("a", "b")
    lic_names = tuple(dict.fromkeys(licenses))
    return Index(unit=np.zeros(n, np.int32), row=np.arange(n, dtype=np.int32), ids=fixed_width(ids),
                 source=np.array([names.index(s) for s in sources], np.int32), sources=names,
                 license=np.array([lic_names.index(x) for x in licenses], np.int32), licenses=lic_names,
                 has_image=np.array([s is not None for s in shas]),
                 sha=np.array([hash_key(s) for s in shas], "S"),
                 phash=np.array(phash if phash is not None else [0] * n, np.uint64),
                 text=np.array(texts, np.uint64), text_hit=text_hit)


def test_license_step_drops_refused_rows_that_are_still_in():
    idx = _index(["a/1", "a/2", "b/1"], ["a", "a", "b"], ["CC-BY-4.0", "CC-BY-NC-4.0", "CC-BY-NC-4.0"],
                 [None] * 3, [1, 2, 3])
    alive = np.array([True, True, False])  # b/1 already out: not counted twice
    step = license_step(_recipe(), idx, alive)
    assert step.keep.tolist() == [True, False, False]
    (d,) = step.dropped
    assert d.rows.tolist() == [1] and d.other.tolist() == [-1] and d.counter == "license_filtered"
    assert alive.tolist() == [True, True, False]  # the input mask is not mutated


def test_dedup_step_keeps_the_best_ranked_row_and_points_removals_at_it():
    h = "35fb90b51db27c9acb1c76d3250a882e"
    idx = _index(["a/2", "b/1", "a/1", "b/2"], ["a", "b", "a", "b"], ["CC-BY-4.0"] * 4, [h, h, h, None],
                 [7, 7, 7, 7])
    step = dedup_step(_recipe(image_distance=None, priority=("b",)), idx, np.ones(4, bool))
    # priority b first, then id: b/1 survives the image+text group; b/2 has no image, its own group
    assert step.keep.tolist() == [False, True, False, True]
    (d,) = step.dropped
    assert d.rows.tolist() == [0, 2] and d.other.tolist() == [1, 1] and d.kind == "duplicate"


def test_dedup_step_images_unique_drops_other_texts_on_one_image():
    h = "35fb90b51db27c9acb1c76d3250a882e"
    idx = _index(["a/1", "a/2"], ["a", "a"], ["CC-BY-4.0"] * 2, [h, h], [1, 2])
    shared = dedup_step(_recipe(image_distance=None), idx, np.ones(2, bool))
    unique = dedup_step(_recipe(image_distance=None, images="unique"), idx, np.ones(2, bool))
    assert shared.keep.tolist() == [True, True]
    assert unique.keep.tolist() == [True, False] and unique.dropped[-1].kind == "same_image"


def test_decontaminate_step_drops_eval_images_then_eval_texts():
    h = "35fb90b51db27c9acb1c76d3250a882e"
    idx = _index(["a/1", "a/2", "a/3"], ["a"] * 3, ["CC-BY-4.0"] * 3, [h, None, h], [1, 2, 3],
                 phash=[0xFFFF, 0, 0x1234_5678_9ABC_DEF0], text_hit=np.array([-1, 0, 0], np.int64))
    evals = EvalIndex(names=["vqa_rad:test", "vqa_rad:test"], ids=["vqa_rad/test-0", "vqa_rad/test-1"],
                      phash=np.array([0xFFFF], np.uint64), phash_row=np.array([1], np.int64),
                      texts=["what is shown"], text_row=[0])
    step = decontaminate_step(_recipe(), idx, evals, np.ones(3, bool))
    assert step.keep.tolist() == [False, False, False]
    img, txt = step.dropped
    assert img.rows.tolist() == [0] and img.other.tolist() == [1] and img.kind == "eval_image"
    # a/1 already went for its image: the text step sees only the rows still in
    assert txt.rows.tolist() == [1, 2] and txt.other.tolist() == [0, 0] and txt.kind == "eval_text"
    assert decontaminate_step(_recipe(), idx, None, np.ones(3, bool)).dropped == ()


def test_select_step_takes_only_rows_still_in_and_mixture_counts_add_up():
    idx = _index(["a/1", "a/2", "b/1", "b/2"], ["a", "a", "b", "b"], ["CC-BY-4.0"] * 3 + ["CC-BY-NC-4.0"],
                 [None] * 4, [1, 1, 2, 3])
    unit, row, copy, tally = select_step(_recipe(), idx, np.array([True, False, True, True]))
    assert sorted(row.tolist()) == [0, 2, 3] and tally["a"]["available"] == 1
    mix = mixture_rows(_recipe(), idx, None)
    assert sorted(mix.row.tolist()) == [0, 2]  # a/2 duplicate of a/1, b/2 refused license
    assert mix.counts["a"]["duplicates"] == 1 and mix.counts["b"]["license_filtered"] == 1
    assert [(r.id, r.other, r.kind) for r in mix.removed] == [("b/2", "", "license"), ("a/2", "a/1", "duplicate")]


def test_decontaminate_step_keeps_hash_matches_the_pictures_reject_and_tries_the_next_eval_image():
    """Row 0 lies near eval images 0 and 1 by hash, but is a copy of image 1 only; row 1 lies near
    image 0 and is no copy of anything; row 2 is a copy of image 0. The confirmation is asked about
    the smallest eval image first, then, for a rejected row, about every other one in range."""
    idx = _index(["a/1", "a/2", "a/3"], ["a"] * 3, ["CC-BY-4.0"] * 3, ["x", "y", "z"], [1, 2, 3],
                 phash=[0x00FF, 0x0001, 0x0000])  # 8 bits from both eval images / 1 and 15 / 0 and 16
    evals = EvalIndex(names=["vqa_rad:test"] * 2, ids=["vqa_rad/test-0", "vqa_rad/test-1"],
                      phash=np.array([0x0000, 0xFFFF], np.uint64), phash_row=np.array([0, 1], np.int64),
                      texts=[], text_row=[])
    copies = {(0, 1), (2, 0)}
    asked = []

    def confirm(rows, eval_rows):
        asked.append(list(zip(rows.tolist(), eval_rows.tolist())))
        return np.array([(r, e) in copies for r, e in zip(rows.tolist(), eval_rows.tolist())], bool)

    step = decontaminate_step(_recipe(), idx, evals, np.ones(3, bool), confirm)
    (img,) = step.dropped
    assert img.rows.tolist() == [0, 2] and img.other.tolist() == [1, 0]
    assert step.keep.tolist() == [False, True, False] and step.unconfirmed.tolist() == [1]
    assert asked == [[(0, 0), (1, 0), (2, 0)], [(0, 1)]]  # row 1 has no other eval image in range
    off = dataclasses.replace(_recipe(), decontaminate=dataclasses.replace(_recipe().decontaminate,
                                                                           image_correlation=None))
    assert decontaminate_step(off, idx, evals, np.ones(3, bool), confirm).keep.tolist() == [False, False, False]
    mix = mixture_rows(_recipe(), idx, evals, confirm)
    assert mix.images_unconfirmed == {"a": 1} and mix.counts["a"]["contaminated"] == 2
