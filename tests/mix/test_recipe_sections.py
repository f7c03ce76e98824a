"""The recipe's `image`, `dedup` and `decontaminate` sections: typed, validated field by field, and resolved
to the same bytes as when they were plain dicts (the manifest embeds the resolution and its hash)."""

from __future__ import annotations

import dataclasses

import pytest

from medmix.core.errors import RecipeError
from medmix.recipe import DecontaminateSection, DedupSection, ImageSection, load_recipe, parse_recipe

BASE = "name: t\nsources:\n  mine: {adapter: local, from: /x}\n"

# recipe_sha256 of the shipped recipes as written by medmix before the sections were typed
# (commit 2b01405): a change here changes every manifest, so it must be deliberate.
SHA256_BEFORE = {
    # all three changed on purpose with issue 24: `decontaminate.image_correlation` (default 0.8) joined
    # the resolution, since it decides which hash matches to an evaluation image are removed.
    # Before it: demo 835c3dd2 (issue 27: its DICOM folder sets `burned_in_text: off`), openmedq-3.35m
    # d23f831a (issue 11: LicenseRef-PMC-OA-unknown left the accept list), openmedq-open 726c8bcf.
    "demo": "385d55e24b2eeba9fcbaf86f03f19992d95ba87a47f7d890ca9197f0e99a64de",
    "openmedq-3.35m": "fd924c8d769f0b4dccb648ef1e85bf5fc5aa2bab6b600bfae48027544df0c37a",
    "openmedq-open": "3b7dc626ad3b62807b35dcadc978301331cf48ec87758543aac3c1f9eeda9f2c",
}


@pytest.mark.parametrize("name", sorted(SHA256_BEFORE))
def test_shipped_recipes_hash_as_before(name):
    assert load_recipe(name).sha256() == SHA256_BEFORE[name]


def test_values_resolve_as_written_in_the_section_order():
    r = parse_recipe(BASE + "dedup: {priority: null, text_threshold: 1, images: unique}\n"
                            "decontaminate: {ngram: 5, against: [vqa_rad:test]}\n", "r.yaml")
    d = r.resolved()
    assert list(d["image"]) == ["max_side", "encode", "jpeg_quality", "frame"]
    assert d["dedup"] == {"exact": True, "image_distance": 8, "text_threshold": 1, "images": "unique",
                          "priority": None}
    assert isinstance(d["dedup"]["text_threshold"], int)  # 1 stays 1, not 1.0: the hash sees what was written
    assert d["decontaminate"] == {"against": ("vqa_rad:test",), "image_distance": 10, "image_correlation": 0.8,
                                  "ngram": 5}


@pytest.mark.parametrize("value", [0, 1.5, -0.1, "high", True])
def test_image_correlation_outside_0_1_is_refused_with_the_fix(value):
    with pytest.raises(RecipeError, match=r"decontaminate\.image_correlation.*not in \(0, 1\].*0\.8"):
        parse_recipe(BASE + f"decontaminate: {{against: [vqa_rad:test], image_correlation: {value!r}}}\n", "r.yaml")
    off = parse_recipe(BASE + "decontaminate: {image_correlation: null}\n", "r.yaml")
    assert off.decontaminate.image_correlation is None


def test_sections_are_frozen_dataclasses_read_by_attribute():
    r = parse_recipe(BASE + "decontaminate: {against: [vqa_rad:test, pubmedqa:pqa_labeled]}\n", "r.yaml")
    assert isinstance(r.image, ImageSection) and isinstance(r.dedup, DedupSection)
    assert isinstance(r.decontaminate, DecontaminateSection)
    assert r.decontaminate.splits() == [("vqa_rad", "test"), ("pubmedqa", "pqa_labeled")]
    assert r.dedup == DedupSection() and r.image == ImageSection()
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.dedup.exact = False  # type: ignore[misc]


@pytest.mark.parametrize("section, key, fix", [
    ("image: {max_side: 8}", "image.max_side", "use e.g. 1024, or null"),
    ("image: {encode: webp}", "image.encode", "use `encode: keep`"),
    ("image: {frame: last}", "image.frame", "use `frame: middle`"),
    ("image: {jpeg_quality: 0}", "image.jpeg_quality", "use e.g. 90"),
    ("image: {size: 3}", "image.size",
     "use one of ['burned_in_text', 'encode', 'frame', 'jpeg_quality', 'max_side']"),
    ("dedup: {exact: 1}", "dedup.exact", "use `exact: true`"),
    ("dedup: {image_distance: 17}", "dedup.image_distance", "use e.g. 4, or null to turn it off"),
    ("dedup: {text_threshold: 0}", "dedup.text_threshold", "or null to turn text near-dup off"),
    ("dedup: {images: some}", "dedup.images", "use `images: shared`"),
    ("dedup: {priority: rocov2}", "dedup.priority", "use e.g. `priority: [pmc_vqa, rocov2]`"),
    ("decontaminate: {ngram: 0}", "decontaminate.ngram", "use `ngram: 13`"),
    ("decontaminate: {image_distance: true}", "decontaminate.image_distance", "use e.g. 4, or null"),
    ("decontaminate: {against: [pathvqa]}", "decontaminate.against", "use e.g. `against: [pathvqa:test"),
    ("dedup: [exact]", "dedup", "use keys ["),
])
def test_each_field_error_names_file_line_key_and_fix(section, key, fix):
    with pytest.raises(RecipeError) as exc:
        parse_recipe(BASE + section + "\n", "r.yaml")
    msg = str(exc.value)
    assert msg.startswith(f"r.yaml:4: {key}: "), msg  # line 4: the section sits after the 3-line BASE
    assert fix in msg
