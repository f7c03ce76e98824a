"""Scores: VQA answer normalization, BLEU-1, closed/open accuracy, and macro-F1.

VQA papers (PathVQA, VQA-RAD, SLAKE, VQA-Med, LLaVA-Med) compare strings only after the
normalization of the VQA challenge's evaluation script, so "The X-ray." and "x ray" count as one
answer. `normalize_answer` follows those rules, written down here so a number we report can be
reproduced by hand:

1. Unicode NFKC, lower-case, whitespace collapsed.
2. Digit grouping commas go ("1,000" → "1000"); a period between digits stays ("2.5"); every
   other punctuation character (Unicode category P*, plus symbols such as "+" and "^") becomes a
   space, except apostrophes, which are dropped so "don't" → "dont" and "patient's" → "patients".
3. Number words zero to ten become digits ("two" → "2"), as the VQA script does.
4. The articles "a", "an", "the" are removed, unless that would leave nothing ("the" stays "the").

Tokens are the whitespace-separated words of the normalized answer. Every metric here works on
those tokens, so BLEU-1, exact match and recall can never disagree about what a word is.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence

_NUMBER_WORDS = {
    "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
    "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}
_ARTICLES = frozenset({"a", "an", "the"})
_DIGIT_COMMA = re.compile(r"(?<=\d),(?=\d{3}\b)")
_DECIMAL_POINT = re.compile(r"(?<=\d)\.(?=\d)")
_POINT_MARK = "\u0000"  # placeholder that survives the punctuation pass
CLOSED_ANSWERS = frozenset({"yes", "no"})


def _is_separator(ch: str) -> bool:
    category = unicodedata.category(ch)
    return category.startswith("P") or category in ("Sm", "Sc", "Sk", "So")


def normalize_answer(text: str) -> str:
    """The VQA-literature normal form of an answer (rules in the module docstring)."""
    text = unicodedata.normalize("NFKC", text).lower()
    text = _DIGIT_COMMA.sub("", text)
    text = _DECIMAL_POINT.sub(_POINT_MARK, text)
    chars = []
    for ch in text:
        if ch in ("'", "\u2019"):
            continue
        chars.append(" " if _is_separator(ch) else ch)
    words = "".join(chars).replace(_POINT_MARK, ".").split()
    words = [_NUMBER_WORDS.get(w, w) for w in words]
    kept = [w for w in words if w not in _ARTICLES]
    return " ".join(kept or words)


def answer_tokens(text: str) -> list[str]:
    return normalize_answer(text).split()


def bleu1(reference: Sequence[str], hypothesis: Sequence[str]) -> float:
    """Sentence BLEU with unigram weight 1: clipped unigram precision × brevity penalty.

    Equal to `nltk.translate.bleu_score.sentence_bleu([reference], hypothesis, weights=(1, 0, 0, 0))`
    (tested), written out because nltk warns on every zero-overlap pair and a VQA test set has
    thousands of them; the closed form also makes the edge cases explicit: an empty hypothesis
    or no shared word scores 0, a hypothesis longer than the reference is not penalized.
    """
    if not hypothesis:
        return 0.0
    ref_counts = Counter(reference)
    matches = sum(min(n, ref_counts[w]) for w, n in Counter(hypothesis).items())
    if matches == 0:
        return 0.0
    precision = matches / len(hypothesis)
    hyp_len, ref_len = len(hypothesis), len(reference)
    penalty = 1.0 if hyp_len > ref_len else math.exp(1.0 - ref_len / hyp_len)
    return penalty * precision


def is_closed(answer: str) -> bool:
    """Closed (yes/no) question, judged by its reference answer, as PathVQA and LLaVA-Med do."""
    return normalize_answer(answer) in CLOSED_ANSWERS


def exact_match(prediction: str, reference: str) -> bool:
    return normalize_answer(prediction) == normalize_answer(reference)


def token_recall(reference: Sequence[str], hypothesis: Sequence[str]) -> float:
    """Share of the reference's tokens that occur in the hypothesis (open-question "recall").

    Free-text generations are longer than the short reference answers, so exact match would call
    "the lesion is in the left lung" wrong for "left lung"; recall asks whether the answer's words
    were said. Repeated reference words count once per occurrence; an empty reference scores 0.
    """
    if not reference:
        return 0.0
    said = set(hypothesis)
    return sum(1 for w in reference if w in said) / len(reference)


def mean(values: Iterable[float]) -> float | None:
    """Arithmetic mean, or None for no values (a split with no closed questions has no closed accuracy)."""
    values = list(values)
    return sum(values) / len(values) if values else None


def macro_f1(y_true: Sequence[int], y_pred: Sequence[int]) -> float:
    """Unweighted mean of per-class F1 over the classes present in `y_true` or `y_pred`.

    Delegates to scikit-learn so the number is the one every paper's table means by "macro-F1";
    `zero_division=0` makes a never-predicted class count as F1 0 without a warning.
    """
    from sklearn.metrics import f1_score

    if len(y_true) != len(y_pred):
        raise ValueError(f"macro_f1: {len(y_true)} labels but {len(y_pred)} predictions")
    if not len(y_true):
        raise ValueError("macro_f1: no samples")
    return float(f1_score(list(y_true), list(y_pred), average="macro", zero_division=0))


def accuracy(y_true: Sequence[int], y_pred: Sequence[int]) -> float:
    if len(y_true) != len(y_pred) or not len(y_true):
        raise ValueError(f"accuracy: {len(y_true)} labels and {len(y_pred)} predictions")
    return sum(int(a == b) for a, b in zip(y_true, y_pred)) / len(y_true)
