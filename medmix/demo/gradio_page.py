"""The Gradio page: upload an image, ask, watch the answer stream in; held-out examples beside it.

Offline by construction: the theme uses system fonts only (Gradio's default theme loads IBM Plex
from fonts.googleapis.com, which fails without network and logs console errors), analytics are off
(`GRADIO_ANALYTICS_ENABLED=False` before Gradio is imported, and `analytics_enabled=False`), the
public share link is off unless asked for, and the server binds 127.0.0.1 unless told otherwise.

Dataset text is hostile: every field that can hold it (question, options, reference, gallery
caption) is a Textbox or a caption, which Gradio shows as text; Markdown, which renders HTML, only
ever holds the demo's own strings and numbers. Bad input (an undecodable or oversized file, a DICOM
without pixels, an empty question) is a `gr.Error` with a plain message shown in the page; the
server goes on serving.

No `from __future__ import annotations` here: Gradio finds its injected arguments (gr.SelectData,
gr.Request) by evaluating the handlers' annotations, which string annotations of local names defeat.
"""


import os
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from medmix.demo.answering import (
    MAX_UPLOAD_BYTES,
    TASKS,
    Answerer,
    DemoInputError,
    load_image,
    prompt_text,
    question_row,
)

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

# 10 updates a second reads as streaming; measured on CPU, each update costs the page ~20 ms, so sending
# every token of the tiny model (~5 ms each) made a 32-token answer 1.0 s instead of 0.4 s end to end.
STREAM_INTERVAL = 0.1
TASK_LABELS = {"vqa": "VQA", "caption": "Caption", "mcqa": "Multiple choice"}
FILE_TYPES = [".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp", ".dcm", ".dicom"]
INTRO = ("# medmix demo\n"
         "Upload a medical image (PNG, JPEG, TIFF or DICOM) and ask the checkpoint about it. The image goes through "
         "medmix's own normalization and the prompt through the training template, so this is the question "
         "`medmix eval vqa` would ask. Decoding is greedy. A research checkpoint: not for clinical use.")
# (shard, row) -> (image bytes, file suffix, row dict, reference answer) or None; the viewer's hook
RowLookup = Callable[[int, int], "tuple[bytes, str, dict[str, Any], str] | None"]


def theme() -> Any:
    import gradio as gr

    # Plain font names are never fetched; a GoogleFont would be (and fail offline).
    return gr.themes.Default(font=("ui-sans-serif", "system-ui", "sans-serif"),
                             font_mono=("ui-monospace", "SFMono-Regular", "monospace"))


def _stats(update: Any, answerer: Answerer) -> str:
    parts = [f"{update.tokens} token(s)"]
    if update.ttft is not None:
        parts.append(f"time to first token {update.ttft:.2f} s")
    if update.tokens_per_s is not None:
        parts.append(f"{update.tokens_per_s:.1f} tokens/s")
    step = f"step {answerer.step}" if answerer.step is not None else answerer.ckpt.name
    parts.append(f"{step}, {answerer.device}, {answerer.dtype}")
    return ("**done** · " if update.done else "*generating…* · ") + " · ".join(parts)


def _read_upload(path: str | None) -> tuple[bytes, str]:
    if not path:
        raise DemoInputError("no image: upload a PNG, JPEG, TIFF or DICOM file (or pick an example)")
    size = os.path.getsize(path)
    if size > MAX_UPLOAD_BYTES:
        raise DemoInputError(f"the file is {size / 2**20:.1f} MiB; the demo takes images up to "
                             f"{MAX_UPLOAD_BYTES // 2**20} MiB")
    with open(path, "rb") as f:
        return f.read(), Path(path).name


def _example_files(examples: Sequence[Any], folder: Path) -> list[str]:
    paths = []
    for i, ex in enumerate(examples):
        path = folder / f"example-{i:03d}{ex.suffix}"
        path.write_bytes(ex.image)
        paths.append(str(path))
    return paths


def create_demo(answerer: Answerer, examples: Sequence[Any] = (), *, max_new_tokens: int = 32,
                row_lookup: RowLookup | None = None, files_dir: Path | None = None,
                stream_interval: float = STREAM_INTERVAL) -> Any:
    """The Blocks app. `examples` (gallery.Example) fill the held-out gallery; `row_lookup` lets
    `?shard=S&row=R` open a mixture row (the viewer's "ask a checkpoint" link). Example and row
    images are written under `files_dir` (a fresh temporary folder by default), the one folder
    besides Gradio's own cache that the page may serve. The growing answer is sent at most every
    `stream_interval` seconds (0: every token)."""
    import gradio as gr

    files_dir = Path(files_dir or tempfile.mkdtemp(prefix="medmix-demo-"))
    example_paths = _example_files(examples, files_dir)

    def ask(path: str | None, task: str, question: str, options: str, limit: float) -> Iterator[tuple]:
        # outputs: preview, answer, prompt, stats, message. Bad input is a message in the page (and the
        # last value a client sees), not an exception: the page keeps its state and the server serves on.
        started = time.perf_counter()
        try:
            row = question_row(task, question, options)
            data, name = _read_upload(path)
            image = load_image(data, name)
        except DemoInputError as exc:
            yield None, "", "", "", f"error: {exc}"
            return
        prompt = prompt_text(row, has_image=True)
        yield image, "", prompt, "*generating…*", ""
        last = 0.0
        for update in answerer.stream(image, row, max_new_tokens=int(limit), started=started):
            if update.done:  # every output once more, so a client's last value is the whole result
                yield image, update.text, prompt, _stats(update, answerer), ""
            elif time.perf_counter() - last >= stream_interval:
                # only what changed (re-sending the preview re-encoded it each time), at most every
                # stream_interval: each update costs the page ~20 ms, more than a small model's token
                last = time.perf_counter()
                yield gr.skip(), update.text, gr.skip(), _stats(update, answerer), gr.skip()

    def pick(evt: gr.SelectData) -> tuple:
        ex = examples[evt.index]
        return (example_paths[evt.index], ex.task, ex.question, "\n".join(ex.options), ex.answer,
                f"{ex.source} {ex.split} · {ex.id}")

    def open_row(request: gr.Request) -> tuple:
        # outputs: upload, task, question, options, reference, origin, message
        params = dict(request.query_params) if request is not None else {}
        if row_lookup is None or "shard" not in params:
            return (gr.update(),) * 7
        keep = (gr.update(),) * 6
        try:
            shard, row = int(params["shard"]), int(params.get("row", ""))
        except ValueError:
            return (*keep, "error: the link's shard and row must be whole numbers")
        found = row_lookup(shard, row) if shard >= 0 and row >= 0 else None
        if found is None:
            return (*keep, f"error: no row {row} in shard {shard} of this mixture, or the row has no image")
        data, suffix, rec, reference = found
        path = files_dir / f"row-{shard}-{row}{suffix}"
        path.write_bytes(data)
        task, question, note = rec.get("task") or "vqa", rec.get("question") or "", ""
        if task not in TASKS:  # qa / classification rows are asked as VQA, with the template's own default
            from trainer.prompts import DEFAULT_QUESTION

            task, question, note = "vqa", question or DEFAULT_QUESTION.get(task, ""), f", a {task} row asked as VQA"
        return (str(path), task, question, "\n".join(rec.get("options") or []), reference,
                f"mixture row {shard}/{row} (a training row{note})", "")

    # delete_cache: uploads (a DICOM among them) are removed from Gradio's cache within two hours
    with gr.Blocks(title="medmix demo", analytics_enabled=False, delete_cache=(3600, 3600)) as demo:
        gr.Markdown(INTRO)
        gr.Textbox(answerer.describe(), label="Checkpoint", interactive=False, elem_id="checkpoint")
        with gr.Row():
            with gr.Column():
                upload = gr.File(label="Image (PNG, JPEG, TIFF or DICOM)", type="filepath", file_types=FILE_TYPES,
                                 elem_id="upload")
                preview = gr.Image(label="What the model sees (after medmix normalization)", type="pil",
                                   interactive=False, height=320, elem_id="preview")
            with gr.Column():
                task = gr.Radio([(TASK_LABELS[t], t) for t in TASKS], value="vqa", label="Task", elem_id="task")
                question = gr.Textbox(label="Question", lines=2, elem_id="question")
                options = gr.Textbox(label="Options (multiple choice only, one per line)", lines=3, elem_id="options")
                limit = gr.Slider(1, 256, value=max_new_tokens, step=1, label="Max new tokens")
                button = gr.Button("Ask", variant="primary", elem_id="ask")
                message = gr.Textbox(label="Message", interactive=False, elem_id="message")
                with gr.Row():
                    answer = gr.Textbox(label="Model's answer (greedy)", lines=3, interactive=False, elem_id="answer")
                    reference = gr.Textbox(label="Reference answer (from the dataset)", lines=3, interactive=False,
                                           elem_id="reference")
                origin = gr.Textbox(label="Example", interactive=False, elem_id="origin")
                stats = gr.Markdown(elem_id="stats")
                prompt = gr.Textbox(label="Prompt sent to the model", lines=4, interactive=False, elem_id="prompt")
        if examples:
            gallery = gr.Gallery([(p, ex.question) for p, ex in zip(example_paths, examples)],
                                 label="Held-out examples (evaluation splits; click one, then Ask)", columns=6,
                                 allow_preview=True, height=240, elem_id="gallery")
            gallery.select(pick, None, [upload, task, question, options, reference, origin], api_name=False)
        upload.upload(lambda: ("", ""), None, [reference, origin], api_name=False)
        outputs = [preview, answer, prompt, stats, message]
        button.click(ask, [upload, task, question, options, limit], outputs, api_name="ask")
        question.submit(ask, [upload, task, question, options, limit], outputs, api_name=False)
        demo.load(open_row, None, [upload, task, question, options, reference, origin, message], api_name=False)
    demo.medmix_files_dir = files_dir  # the folder launch() must allow
    return demo


def mount_options(demo: Any) -> dict[str, Any]:
    """What both ways of serving the page share (`launch`, and `gr.mount_gradio_app` inside `medmix view`):
    the upload limit, the one extra folder it may serve, the offline theme, no server-side rendering
    (a Node process), no MCP server, no PWA manifest, no footer links to gradio.app."""
    demo.queue(default_concurrency_limit=1)  # one answer at a time: the model is one object
    return {"max_file_size": MAX_UPLOAD_BYTES, "allowed_paths": [str(demo.medmix_files_dir)], "theme": theme(),
            "ssr_mode": False, "mcp_server": False, "pwa": False, "footer_links": [], "show_error": True}


def launch(demo: Any, *, host: str = "127.0.0.1", port: int = 7860, share: bool = False,
           block: bool = True) -> Any:
    """Serve the page; `block=False` returns at once (tests)."""
    return demo.launch(server_name=host, server_port=port, share=share, inbrowser=False, quiet=True,
                       prevent_thread_lock=not block, **mount_options(demo))
