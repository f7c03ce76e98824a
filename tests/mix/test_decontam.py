"""Decontamination: training text that contains an evaluation item (NgramIndex), and training
images that are edited copies of evaluation images (medmix.mix.dedup.near_match)."""

from __future__ import annotations

import numpy as np
import pytest

from medmix.mix.decontam import DEFAULT_NGRAM, NgramIndex
from medmix.mix.dedup import near_any, near_match
from medmix.mix.textsim import TextInputError

EVAL = [
    ("A 62-year-old woman with long-standing rheumatoid arthritis presents with fatigue, pallor and a "
     "microcytic anaemia that does not respond to oral iron. What is the most likely cause?"),
    "Which stain demonstrates acid-fast bacilli in a lung biopsy?",  # 9 words: indexed whole
    "What organ is shown?",
    None,
    "",
    ("Granulomas with central caseous necrosis are seen in the lung biopsy of a patient from an endemic "
     "area; which organism is the most likely cause of this finding?"),
]


@pytest.fixture(scope="module")
def index() -> NgramIndex:
    return NgramIndex(EVAL)


def test_planted_eval_question_inside_longer_training_text_is_found(index):
    train = ("Board review, set 4. Q17: a 62-year-old woman with long-standing rheumatoid arthritis presents "
             "with fatigue, pallor, and a microcytic anaemia that does not respond to oral iron! "
             "Discussion: anaemia of chronic disease is common in ...")
    assert index.matches(train)
    assert index.matching_items(train) == [0]
    assert index.match_batch([train]).tolist() == [0]


def test_unrelated_and_merely_similar_text_is_not_flagged(index):
    unrelated = [
        "The dermoscopic image shows an asymmetric pigmented lesion with irregular borders and several colours.",
        "A 62-year-old man with gout presents with a swollen first metatarsophalangeal joint after a large meal.",
        "What is the most likely cause of microcytic anaemia in a menstruating woman?",  # shares < 13 words in a row
        None,
        "",
    ]
    assert index.match_batch(unrelated).tolist() == [-1] * len(unrelated)


def test_short_eval_texts_match_only_as_a_whole(index):
    found = index.matching_items("Q: WHICH stain demonstrates acid-fast bacilli in a lung biopsy? A: Ziehl-Neelsen")
    assert found == [1]
    assert not index.matches("Which stain demonstrates acid-fast bacilli?")  # only part of the short item
    assert index.matching_items("what organ is shown") == [2]
    assert not index.matches("what organ")


def test_item_numbers_are_positions_in_the_eval_iterable(index):
    assert index.size == len(EVAL)
    assert index.skipped == 2  # None and ""
    both = EVAL[0] + " and then " + EVAL[5]
    assert index.matching_items(both) == [0, 5]
    assert index.match_batch([both]).tolist() == [0]  # the smallest item


def test_shared_ngram_reports_every_eval_item_containing_it():
    common = "the patient was started on intravenous broad spectrum antibiotics after blood cultures were drawn"
    idx = NgramIndex([f"Case {i}: {common}, then imaging followed." for i in range(3)] + ["unrelated short text"])
    assert idx.matching_items(common) == [0, 1, 2]
    assert idx.match_batch([common, "nothing here"]).tolist() == [0, -1]


def test_batch_results_do_not_depend_on_batching(index):
    rng = np.random.default_rng(0)
    words = " ".join(t for t in EVAL if t).split()
    texts = [" ".join(rng.choice(words, int(rng.integers(3, 40)))) for _ in range(300)]
    texts += [EVAL[0], EVAL[1] + " extra words", EVAL[5].upper()]
    whole = index.match_batch(texts)
    pieces = np.concatenate([index.match_batch(texts[i:i + 37]) for i in range(0, len(texts), 37)])
    assert np.array_equal(whole, pieces)
    assert [index.matches(t) for t in texts] == (whole >= 0).tolist()
    assert whole[-3:].tolist() == [0, 1, 5]


def test_ngram_length_and_min_tokens():
    assert DEFAULT_NGRAM == 13
    text = "one two three four five six"
    assert NgramIndex([text], n=3).matches("zero four five six seven")
    assert not NgramIndex([text], n=4).matches("zero four five six seven")
    skipping = NgramIndex(["what organ is shown", text], min_tokens=5)
    assert skipping.skipped == 1 and not skipping.matches("what organ is shown")
    with pytest.raises(TextInputError):
        NgramIndex("a single string")  # type: ignore[arg-type]
    with pytest.raises(TextInputError):
        NgramIndex(["x"], n=0)


def test_image_decontamination_flags_edited_copies_of_eval_images():
    """Eval = 40 real images; training = edited copies of 10 of them plus the other 17 distinct images."""
    from test_dedup import EDITS, measured

    originals, _, edited = measured()
    eval_hashes = originals[:40]
    train = np.concatenate([edited[:10].ravel(), originals[40:]])
    expected = np.concatenate([np.repeat(np.arange(10), edited.shape[1]), np.full(len(originals) - 40, -1)])
    for method in ("brute", "tables"):
        assert np.array_equal(near_match(eval_hashes, train, method=method), expected)
    assert near_any(eval_hashes, train).sum() == 10 * len(EDITS)
