"""The demo's model side: which checkpoint, the image as training saw it, the answer as eval computes it.

Nothing here has its own preprocessing or prompt format. An uploaded file goes through
`medmix.evaluation.vqa.model_image` (the shared normalizer: DICOM windowing, frame choice, bit
depth, transparency, then RGB), the prompt is rendered by `trainer.prompts.render`, and the answer
is `VLM.generate` (greedy, batch of one): the same three calls `medmix eval vqa` makes, so the demo
answers what eval scores. A transformers streamer hooked into that same `generate` call shows the
answer as it grows; the final text shown is `generate`'s return value, not the streamed pieces.

DICOM: only pixels leave the normalizer. No header field is shown, logged or put into an error
message (errors name the upload as "upload.dcm", never its original file name, which may carry a
patient name).
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medmix.core.errors import MedmixError, RowError

# An upload larger than this is refused before it is decoded. Gradio enforces the same limit on the
# upload itself (`launch(max_file_size=...)`), so a bigger file never reaches the disk in full.
MAX_UPLOAD_BYTES = 32 * 1024 * 1024
TASKS = ("vqa", "caption", "mcqa")
# Files a checkpoint must have before generation can use it (trainer/checkpoint.py writes them into a
# temporary folder and renames it to step-N only when all are written).
REQUIRED = ("config.json", "vision/model.safetensors", "projector.safetensors", "adapter/adapter_model.safetensors",
            "adapter/adapter_config.json", "tokenizer")
DTYPES = ("bfloat16", "float16", "float32")
_STEP = re.compile(r"^step-(\d+)$")


class DemoInputError(MedmixError):
    """An upload or question the demo cannot answer; the message is shown in the page."""


def pick_checkpoint(path: str | Path) -> Path:
    """The checkpoint folder to load: `path` itself (a `step-N`), or a run's latest complete one.

    Errors say what is wrong and what to pass instead: a missing folder, a half-written checkpoint
    (`.tmp-step-N`, or a `step-N` lacking a required file), a `latest` pointing nowhere, a folder that
    is no run at all.
    """
    from trainer.checkpoint import CheckpointError, resolve_checkpoint

    path = Path(path)
    if not path.exists():
        raise MedmixError(f"{path}: no such folder; pass a run folder (holding checkpoints/) or one of its "
                          f"checkpoints/step-N folders")
    if path.name.startswith(".tmp-step-"):
        raise MedmixError(f"{path} is a checkpoint still being written (or left by a crash mid-save): the trainer "
                          f"renames it to step-N when complete; pass the run folder to load the latest complete one")
    try:
        ckpt = resolve_checkpoint(path)
    except CheckpointError as exc:
        steps = _complete_steps(path / "checkpoints") or _complete_steps(path)
        if steps and not (path / "checkpoints" / "latest").exists() and not (path / "latest").exists():
            ckpt = steps[-1]  # `latest` missing (copied run): the highest complete step
        elif any((path / "checkpoints").glob(".tmp-step-*")) or any(path.glob(".tmp-step-*")):
            raise MedmixError(f"{path} holds only a half-written checkpoint (.tmp-step-N: a save still running or "
                              f"cut short); wait for the trainer to finish the save, or pick a complete step-N "
                              f"folder") from None
        else:
            raise MedmixError(f"{exc}. Pass a run folder written by `medmix train` or a checkpoints/step-N "
                              f"folder") from None
    missing = [name for name in REQUIRED if not (ckpt / name).exists()]
    if missing:
        raise MedmixError(f"{ckpt} is not a complete checkpoint: missing {', '.join(missing)}. A crash mid-save or "
                          f"a partial copy leaves such a folder; pick another checkpoints/step-N, or the run folder")
    return ckpt


def _complete_steps(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if _STEP.match(p.name) and all((p / n).exists() for n in REQUIRED)]
    return sorted(found, key=lambda p: int(_STEP.match(p.name).group(1)))


def step_of(ckpt: Path) -> int | None:
    m = _STEP.match(ckpt.name)
    return int(m.group(1)) if m else None


def load_image(data: bytes, name: str) -> Any:
    """The upload as the model sees it (eval's `model_image`): a DemoInputError with a plain message if not."""
    from medmix.evaluation.vqa import model_image
    from medmix.sources.base import Record

    if len(data) > MAX_UPLOAD_BYTES:
        raise DemoInputError(f"the file is {len(data) / 2**20:.1f} MiB; the demo takes images up to "
                             f"{MAX_UPLOAD_BYTES // 2**20} MiB")
    # A neutral name: the suffix helps spot a DICOM without preamble; the original name may hold PHI.
    shown = "upload" + (".dcm" if name.lower().endswith((".dcm", ".dicom")) else Path(name).suffix.lower()[:8])
    try:
        return model_image(Record(native_id=shown, answer=None, image=data, image_name=shown))
    except RowError as err:
        raise DemoInputError(f"cannot use this image ({err.reason}). Upload a PNG, JPEG, TIFF or a DICOM file "
                             f"with pixel data") from None


def question_row(task: str, question: str | None, options: str | list[str] | None = None) -> dict[str, Any]:
    """The schema-like row `VLM.generate` renders, from the page's fields; DemoInputError when unusable."""
    task = (task or "vqa").strip().lower()
    if task not in TASKS:
        raise DemoInputError(f"unknown task {task!r}; pick one of {', '.join(TASKS)}")
    question = (question or "").strip()
    if isinstance(options, str):
        options = [line.strip() for line in options.splitlines()]
    opts = [o for o in (options or []) if o and o.strip()]
    if task != "caption" and not question:
        raise DemoInputError("the question is empty; type a question (or pick the caption task)")
    if task == "mcqa" and len(opts) < 2:
        raise DemoInputError("multiple choice needs at least two options, one per line")
    return {"task": task, "question": question or None, "options": opts if task == "mcqa" else None,
            "context": None}


def prompt_text(row: Mapping[str, Any], has_image: bool = True) -> str:
    """The exact prompt text the model receives (the training template without its answer)."""
    from trainer.prompts import render

    return "".join(p.text for p in render(row, has_image=has_image, with_answer=False))


@dataclass
class Update:
    """One step of a streamed answer: the text so far and the timings so far."""

    text: str
    tokens: int
    ttft: float | None  # seconds from the request to the first answer token
    tokens_per_s: float | None  # decoding rate after the first token
    done: bool = False


@dataclass
class Answerer:
    """A loaded checkpoint that answers one question at a time (a lock keeps concurrent asks in turn)."""

    ckpt: Path
    vlm: Any
    device: str
    dtype: str
    load_seconds: float
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def step(self) -> int | None:
        return step_of(self.ckpt)

    def describe(self) -> str:
        step = f"step {self.step}" if self.step is not None else self.ckpt.name
        return f"{self.ckpt} ({step}; {self.device}, {self.dtype}; loaded in {self.load_seconds:.1f} s)"

    def answer(self, image: Any, row: Mapping[str, Any], max_new_tokens: int = 32) -> str:
        with self.lock:
            return self.vlm.generate([image], [dict(row)], max_new_tokens=max_new_tokens)[0]

    def stream(self, image: Any, row: Mapping[str, Any], max_new_tokens: int = 32,
               started: float | None = None) -> Iterator[Update]:
        """Yield the answer as it grows; the last update (`done`) carries `generate`'s own text."""
        started = time.perf_counter() if started is None else started
        streamer = _new_streamer(self.vlm.tokenizer)
        result: dict[str, Any] = {}

        def run() -> None:
            try:
                result["text"] = self.vlm.generate([image], [dict(row)], max_new_tokens=max_new_tokens,
                                                   streamer=streamer)[0]
            except BaseException as exc:  # re-raised in the caller's thread below
                result["error"] = exc
                streamer.end()

        with self.lock:
            worker = threading.Thread(target=run, name="medmix-demo-generate", daemon=True)
            worker.start()
            try:
                text = ""
                for piece in streamer:
                    text += piece
                    yield Update(text.strip(), streamer.count, streamer.ttft(started), streamer.rate())
            finally:
                # A page closed mid-answer closes this generator: the model is still generating, and
                # the next question must not start on it until it has finished (at most max_new_tokens).
                worker.join()
        if "error" in result:
            raise result["error"]
        yield Update(result["text"], streamer.count, streamer.ttft(started), streamer.rate(), done=True)


def _make_streamer_class() -> type:
    from transformers import TextIteratorStreamer

    class CountingStreamer(TextIteratorStreamer):
        """Counts generated tokens and stamps the first and last, for time-to-first-token and tokens/s."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.count = 0
            self.first: float | None = None
            self.last: float | None = None

        def put(self, value: Any) -> None:
            if not (self.skip_prompt and self.next_tokens_are_prompt):
                now = time.perf_counter()
                self.count += int(value.numel())
                self.first = now if self.first is None else self.first
                self.last = now
            super().put(value)

        def ttft(self, started: float) -> float | None:
            return None if self.first is None else self.first - started

        def rate(self) -> float | None:
            if self.count < 2 or self.last is None or self.first is None or self.last <= self.first:
                return None
            return (self.count - 1) / (self.last - self.first)

    return CountingStreamer


_STREAMER: list[type] = []  # built on first use: transformers is imported only when a model answers


def _new_streamer(tokenizer: Any) -> Any:
    if not _STREAMER:
        _STREAMER.append(_make_streamer_class())
    # timeout: a generate thread that dies without ending the stream cannot hang the page forever
    return _STREAMER[0](tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=600)


def resolve_dtype(name: str) -> Any:
    import torch

    if name not in DTYPES:
        raise MedmixError(f"--dtype {name!r} is not one of {', '.join(DTYPES)}")
    return getattr(torch, name)


def load_answerer(path: str | Path, *, device: str = "auto", dtype: str = "float32") -> Answerer:
    """Pick and load a checkpoint (timed), cast to `dtype`, in eval mode."""
    from medmix.evaluation.classify import resolve_device

    ckpt = pick_checkpoint(path)
    torch_dtype = resolve_dtype(dtype)
    try:
        from trainer.model import load_vlm
    except ImportError as exc:
        raise MedmixError(f"medmix demo needs the trainer's extra: pip install 'medmix[train,demo]' ({exc})") from None
    dev = resolve_device(device)
    t0 = time.perf_counter()
    try:
        vlm = load_vlm(ckpt, device=dev)
    except (OSError, ValueError, RuntimeError, json.JSONDecodeError) as exc:
        raise MedmixError(f"cannot load the checkpoint {ckpt}: {exc}") from None
    if torch_dtype != next(vlm.parameters()).dtype:
        vlm.to(torch_dtype)
    return Answerer(ckpt, vlm.eval(), str(dev), dtype, time.perf_counter() - t0)
