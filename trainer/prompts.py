"""Prompt templates: how a schema row becomes (prompt, target) text. The ONE place they live.

Why at train time and not in the mixture: the mixture stays task-neutral (question / options /
context / answer), so a template change never needs a rebuild. Training and `VLM.generate` both
call `render`, so what the model sees at evaluation is exactly what it learned on.

Layout (image rows start with the `<image>` placeholder, which becomes the visual tokens;
text-only rows have none):

| task           | prompt                                                           | target            |
|----------------|------------------------------------------------------------------|-------------------|
| caption        | `<image>\\n{question or "Describe the image."}\\nAnswer:`          | ` {answer}`       |
| vqa            | `<image>\\nQuestion: {question}\\nAnswer:`                         | ` {answer}`       |
| mcqa           | `[<image>\\n]Question: {question}\\nOptions:\\n(A) {o1}\\n(B) ..\\nAnswer:` | ` (B) {answer}` |
| qa             | `[<image>\\n][Context: {context}\\n]Question: {question}\\nAnswer:` | ` {answer}`       |
| classification | `<image>\\n{question or "What does this image show?"}\\nAnswer:`   | ` {answer}`       |

An mcqa target gets its option letter when the answer is one of the options (the letter ties the
answer to the list; eval can match letter or text). A row's `context` is shown for any task that
has one. Each piece has a kind; when a sample is too long, `data.SampleEncoder` cuts kinds in
`TRUNCATE_ORDER` (context first, the answer last), each from its end (a label such as
"Context: " belongs to its piece and goes last), and never cuts the image.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

IMAGE_PLACEHOLDER = "<image>"
# The sequence format's two sentinels, defined here with the templates so data (which writes them)
# and model (which reads them) share one definition without importing each other.
IMAGE_TOKEN_ID = -200  # one per visual token in input_ids; negative, so never a vocabulary id (LLaVA's trick)
IGNORE_INDEX = -100  # label of every position that is not an answer token (cross_entropy's ignore_index)
# Which text is cut first when a sample exceeds max_length; "fixed" template text never is.
TRUNCATE_ORDER = ("context", "question", "options", "answer")

DEFAULT_QUESTION = {
    "caption": "Describe the image.",
    "classification": "What does this image show?",
    "vqa": "What does the image show?",
}


@dataclass(frozen=True)
class Piece:
    kind: str  # "image", "fixed", "context", "question", "options" or "answer"
    text: str


def _clean(text: str | None) -> str:
    # A literal "<image>" inside user text would be read as a second image slot.
    return (text or "").replace(IMAGE_PLACEHOLDER, "image").strip()


def render(row: Mapping[str, Any], *, has_image: bool, with_answer: bool = True) -> list[Piece]:
    """The row's prompt (and target, unless `with_answer` is false) as kinded pieces."""
    task = row.get("task") or ("vqa" if has_image else "qa")
    pieces: list[Piece] = []
    if has_image:
        pieces += [Piece("image", IMAGE_PLACEHOLDER), Piece("fixed", "\n")]
    context = _clean(row.get("context"))
    if context:
        pieces += [Piece("context", "Context: " + context), Piece("fixed", "\n")]
    question = _clean(row.get("question")) or DEFAULT_QUESTION.get(task, "")
    if question:
        label = "" if task in ("caption", "classification") else "Question: "
        pieces += [Piece("question", label + question), Piece("fixed", "\n")]
    options = [_clean(o) for o in (row.get("options") or [])]
    if options:
        listed = "\n".join(f"({_letter(i)}) {o}" for i, o in enumerate(options))
        pieces += [Piece("options", "Options:\n" + listed), Piece("fixed", "\n")]
    pieces.append(Piece("fixed", "Answer:"))
    if with_answer:
        pieces.append(Piece("answer", " " + target_text(row)))
    return [p for p in pieces if p.text]


def target_text(row: Mapping[str, Any]) -> str:
    answer = _clean(row.get("answer"))
    options = [_clean(o) for o in (row.get("options") or [])]
    if row.get("task") == "mcqa" and answer in options:
        return f"({_letter(options.index(answer))}) {answer}"
    return answer


def _letter(i: int) -> str:
    return chr(ord("A") + i) if i < 26 else str(i + 1)
