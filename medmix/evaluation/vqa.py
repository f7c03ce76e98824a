"""Medical VQA evaluation: greedy answers on a held-out split, scored as the VQA literature does.

Per question (answers normalized and tokenized by `metrics.normalize_answer`):

* BLEU-1 of the prediction against the reference (sentence BLEU, unigram weight 1), averaged
  over every question: the number PathVQA and VQA-Med papers report as "BLEU-1".
* closed questions: exact match of the normalized strings, averaged into closed accuracy. A
  question is closed when the dataset says so (`meta["answer_type"]`, as VQA-RAD and SLAKE
  annotate it), else when its reference answer is "yes" or "no" (PathVQA's convention).
* open questions: recall, the share of reference tokens present in the prediction (LLaVA-Med's
  open-set metric), averaged into open recall.

Images go through the shared normalizer (`medmix.imaging.canonical.normalize_image`, default policy)
before the model's own processor, as training rows did: DICOM, multi-frame files, transparency
and bit depth are handled exactly as in training. Rows stream through in batches (memory follows
the batch, not the split), and every prediction is written to `predictions.jsonl` with its scores
so any number can be traced to its rows.
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from medmix.core.errors import MedmixError, RowError
from medmix.evaluation.eval_data import iter_records
from medmix.evaluation.metrics import answer_tokens, bleu1, exact_match, is_closed, mean, token_recall
from medmix.sources.base import Bad, Record, Source

# generate(images, prompts, max_new_tokens) -> answers; prompts are schema-like row dicts, which
# the trainer renders with its training templates.
Generate = Callable[[Sequence[Any], Sequence[dict[str, Any]], int], Sequence[str]]
VQA_DATASETS = ("pathvqa", "vqa_rad", "slake", "vqa_med_2019")


def closed_question(record: Record) -> bool:
    kind = str((record.meta or {}).get("answer_type") or "").strip().lower()
    if kind in ("closed", "open"):
        return kind == "closed"
    return is_closed(record.answer or "")


def score_answer(prediction: str, reference: str, closed: bool) -> dict[str, Any]:
    ref, hyp = answer_tokens(reference), answer_tokens(prediction)
    return {"closed": closed, "bleu1": bleu1(ref, hyp), "exact": exact_match(prediction, reference),
            "recall": token_recall(ref, hyp)}


@dataclass
class VQAResult:
    dataset: str
    split: str
    n: int
    n_closed: int
    n_open: int
    bleu1: float | None
    closed_accuracy: float | None
    open_recall: float | None
    exact_match: float | None
    skipped: list[dict[str, str]] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        from medmix import __version__

        return {"medmix_version": __version__, **asdict(self)}


def summarize(dataset: str, split: str, scores: Iterable[dict[str, Any]], skipped: list[dict[str, str]],
              config: dict[str, Any] | None = None) -> VQAResult:
    scores = list(scores)
    closed = [s for s in scores if s["closed"]]
    opened = [s for s in scores if not s["closed"]]
    return VQAResult(dataset, split, len(scores), len(closed), len(opened),
                     bleu1=mean(s["bleu1"] for s in scores),
                     closed_accuracy=mean(float(s["exact"]) for s in closed),
                     open_recall=mean(s["recall"] for s in opened),
                     exact_match=mean(float(s["exact"]) for s in scores),
                     skipped=skipped, config=dict(config or {}))


def model_image(record: Record) -> Any:
    """The record's picture as training saw it: shared normalization, then RGB. RowError if unusable."""
    from PIL import Image

    from medmix.imaging.canonical import normalize_image

    name = record.image_name or (record.image.name if isinstance(record.image, Path) else record.native_id)
    if isinstance(record.image, Path):
        try:
            data = record.image.read_bytes()
        except OSError as exc:
            raise RowError(f"image file unreadable: {exc.strerror}", file=name) from None
    else:
        data = bytes(record.image or b"")
    normalized = normalize_image(data, name=name)
    return Image.open(io.BytesIO(normalized.data)).convert("RGB")


def _batches(items: Iterable[Record | Bad], size: int,
             skipped: list[dict[str, str]]) -> Iterator[list[tuple[Record, Any]]]:
    batch: list[tuple[Record, Any]] = []
    for item in items:
        if isinstance(item, Bad):
            skipped.append({"id": str(item.native_id), "file": str(item.file), "reason": item.reason})
            continue
        if not item.question or item.answer is None:
            skipped.append({"id": item.native_id, "file": str(item.image_name), "reason": "no question or answer"})
            continue
        try:
            image = model_image(item) if item.image is not None else None
        except RowError as err:
            skipped.append({"id": item.native_id, "file": str(err.file), "reason": err.reason})
            continue
        batch.append((item, image))
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def run_vqa(generate: Generate, records: Iterable[Record | Bad], *, dataset: str, split: str, batch_size: int = 8,
            max_new_tokens: int = 32, limit: int | None = None, predictions_path: Path | None = None,
            config: dict[str, Any] | None = None) -> VQAResult:
    """Answer and score every usable row; write one JSON line per question to `predictions_path`."""
    if batch_size < 1:
        raise MedmixError(f"batch_size must be at least 1, got {batch_size}")
    skipped: list[dict[str, str]] = []
    scores: list[dict[str, Any]] = []
    with open(predictions_path, "w", encoding="utf-8") if predictions_path else contextlib.nullcontext() as sink:
        for batch in _batches(records, batch_size, skipped):
            if limit is not None:
                batch = batch[: max(limit - len(scores), 0)]
                if not batch:
                    break
            prompts = [{"task": rec.task or "vqa", "question": rec.question, "options": rec.options,
                        "context": rec.context} for rec, _ in batch]
            answers = list(generate([img for _, img in batch], prompts, max_new_tokens))
            if len(answers) != len(batch):
                raise MedmixError(f"the model returned {len(answers)} answers for {len(batch)} questions")
            for (rec, _), answer in zip(batch, answers):
                score = score_answer(answer, rec.answer or "", closed_question(rec))
                scores.append(score)
                if sink:
                    sink.write(json.dumps({"id": rec.native_id, "question": rec.question, "answer": rec.answer,
                                           "prediction": answer, **score}, ensure_ascii=False) + "\n")
    if not scores:
        raise MedmixError(f"{dataset} {split}: no question could be evaluated ({len(skipped)} skipped; "
                          f"first: {skipped[:1]})")
    return summarize(dataset, split, scores, skipped, config)


def vqa_source(name: str) -> Source:
    from medmix.sources import get_source

    cls = get_source(name)
    if "vqa" not in cls.tasks:
        raise MedmixError(f"source {name!r} is not a VQA dataset; VQA benchmarks: {list(VQA_DATASETS)}")
    return cls()


def load_generate(model: Path, device: str | None = None) -> Generate:
    """A medmix VLM checkpoint as a `Generate` function (greedy, the training prompt templates)."""
    from medmix.evaluation.classify import resolve_device

    try:
        from trainer.model import load_vlm
    except ImportError as exc:
        raise MedmixError(f"the medmix trainer is not importable ({exc})") from None
    try:
        vlm = load_vlm(model, device=resolve_device(device))
    except (OSError, ValueError, RuntimeError) as exc:  # the trainer's own CheckpointError is a MedmixError
        raise MedmixError(f"cannot load the model checkpoint {model}: {exc}") from None

    def generate(images: Sequence[Any], prompts: Sequence[dict[str, Any]], max_new_tokens: int) -> list[str]:
        return vlm.generate(list(images), list(prompts), max_new_tokens=max_new_tokens)

    return generate


def evaluate_dataset(generate: Generate, source: Source, *, files: Mapping[str, Path], split: str = "test",
                     batch_size: int = 8, max_new_tokens: int = 32, limit: int | None = None,
                     out_dir: Path | None = None, config: dict[str, Any] | None = None) -> VQAResult:
    """`run_vqa` on one of `source`'s evaluation splits; writes `<name>-<split>.vqa.json` and predictions."""
    if split not in source.eval_splits:
        raise MedmixError(f"{source.name}: split {split!r} is not one of its evaluation splits "
                          f"{sorted(source.eval_splits)}; scoring a training split would report memorization")
    out = Path(out_dir) if out_dir else None
    if out:
        out.mkdir(parents=True, exist_ok=True)
    config = {**(config or {}), "batch_size": batch_size, "max_new_tokens": max_new_tokens, "limit": limit,
              "decoding": "greedy"}
    result = run_vqa(generate, iter_records(source, split, files), dataset=source.name, split=split,
                     batch_size=batch_size, max_new_tokens=max_new_tokens, limit=limit,
                     predictions_path=out / f"{source.name}-{split}.predictions.jsonl" if out else None, config=config)
    if out:
        (out / f"{source.name}-{split}.vqa.json").write_text(json.dumps(result.to_dict(), indent=2) + "\n")
    return result


def rich_table(results: Sequence[VQAResult]) -> Any:
    from rich.table import Table

    def pct(v: float | None) -> str:
        return "—" if v is None else f"{100 * v:.1f}"

    table = Table(title="Medical VQA (greedy)", caption="BLEU-1 over all questions; closed: exact match; "
                                                         "open: recall of reference tokens. Percent.")
    for col in ("dataset", "split", "questions", "closed", "open", "BLEU-1", "closed acc.", "open recall",
                "skipped"):
        table.add_column(col, justify="left" if col in ("dataset", "split") else "right")
    for r in results:
        table.add_row(r.dataset, r.split, str(r.n), str(r.n_closed), str(r.n_open), pct(r.bleu1),
                      pct(r.closed_accuracy), pct(r.open_recall), str(len(r.skipped)))
    return table
