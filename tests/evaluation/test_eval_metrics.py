"""Evaluation metrics against the reference implementations (nltk BLEU, scikit-learn F1) on generated inputs."""

from __future__ import annotations

import random
import warnings

import pytest

from medmix.evaluation.metrics import (
    accuracy,
    answer_tokens,
    bleu1,
    exact_match,
    is_closed,
    macro_f1,
    mean,
    normalize_answer,
    token_recall,
)

WORDS = ["yes", "no", "left", "lung", "ct", "mri", "the", "a", "mass", "liver", "right", "x", "2", "axial"]


def _random_tokens(rng: random.Random, max_len: int) -> list[str]:
    return [rng.choice(WORDS[: rng.randint(1, len(WORDS))]) for _ in range(rng.randint(0, max_len))]


def test_bleu1_equals_nltk_sentence_bleu_on_generated_pairs():
    from nltk.translate.bleu_score import sentence_bleu

    rng = random.Random(1234)
    cases = [([], []), (["a"], []), ([], ["a"]), (["a", "b"], ["a", "b"]), (["a", "a", "b"], ["a", "a", "a"]),
             (["a", "b", "c", "d"], ["a"]), (["x"], ["y", "x", "y"])]
    cases += [(_random_tokens(rng, 12), _random_tokens(rng, 12)) for _ in range(800)]
    nonzero = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # nltk warns on every zero-overlap pair
        for ref, hyp in cases:
            expected = sentence_bleu([ref], hyp, weights=(1, 0, 0, 0))
            assert bleu1(ref, hyp) == pytest.approx(expected, rel=1e-12, abs=1e-15), (ref, hyp)
            nonzero += expected > 0
    assert nonzero > 250  # the generated pairs exercise the formula, not only the zero cases


@pytest.mark.parametrize("text,normal", [
    ("Yes.", "yes"),
    ("The X-Ray", "x ray"),
    ("  an   MRI, axial  ", "mri axial"),
    ("don't", "dont"),
    ("patient's lung", "patients lung"),
    ("Two lesions!", "2 lesions"),
    ("1,000 cells", "1000 cells"),
    ("2.5 cm", "2.5 cm"),
    ("end.", "end"),
    ("the", "the"),          # an answer that is only an article keeps it, never becomes empty
    ("CT / MRI", "ct mri"),
    ("Ｙｅｓ", "yes"),        # full-width letters (NFKC)
    ("right–left", "right left"),
])
def test_normalize_answer_follows_the_documented_rules(text, normal):
    assert normalize_answer(text) == normal


def test_closed_and_exact_match_use_normalized_answers():
    assert is_closed("Yes.") and is_closed(" NO ") and not is_closed("yes, on the left")
    assert exact_match("Yes!", "yes") and not exact_match("yes it is", "yes")
    assert answer_tokens("The left lung.") == ["left", "lung"]


def test_token_recall_counts_reference_words_said():
    assert token_recall(["left", "lung"], ["the", "left", "lung", "is", "opaque"]) == 1.0
    assert token_recall(["left", "lung"], ["right", "lung"]) == 0.5
    assert token_recall(["lung", "lung"], ["lung"]) == 1.0
    assert token_recall([], ["anything"]) == 0.0
    assert token_recall(["a"], []) == 0.0


def test_macro_f1_equals_sklearn_on_generated_labels():
    from sklearn.metrics import f1_score

    rng = random.Random(7)
    for _ in range(60):
        n_classes = rng.randint(2, 9)
        n = rng.randint(1, 60)
        truth = [rng.randrange(n_classes) for _ in range(n)]
        pred = [rng.randrange(n_classes) if rng.random() < 0.6 else t for t in truth]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            expected = f1_score(truth, pred, average="macro")
        assert macro_f1(truth, pred) == pytest.approx(expected, abs=1e-12)


def test_macro_f1_by_hand_and_errors():
    # class 0: P=1/2 R=1 F1=2/3; class 1: P=1 R=1/3 F1=1/2; class 2: never true, predicted once → F1 0
    assert macro_f1([0, 1, 1, 1], [0, 0, 1, 2]) == pytest.approx((2 / 3 + 1 / 2 + 0) / 3)
    assert macro_f1([1, 1], [1, 1]) == 1.0
    with pytest.raises(ValueError, match="2 labels but 1 predictions"):
        macro_f1([0, 1], [0])
    with pytest.raises(ValueError, match="no samples"):
        macro_f1([], [])
    assert accuracy([0, 1, 1], [0, 1, 0]) == pytest.approx(2 / 3)
    assert mean([]) is None and mean([1.0, 2.0]) == 1.5
