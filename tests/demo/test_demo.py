"""`medmix demo` through its API (gradio_client): the answers are `medmix eval vqa`'s, they stream, the
gallery holds only held-out rows, and bad input is a message while the server goes on serving."""

from __future__ import annotations

import io
import json
import shutil
import socket
from importlib import resources
from pathlib import Path

import pyarrow.parquet as pq
import pydicom
import pytest
import typer
from PIL import Image
from typer.testing import CliRunner

from medmix.cli.eval_commands import eval_vqa
from medmix.demo.answering import (
    MAX_UPLOAD_BYTES,
    DemoInputError,
    load_answerer,
    load_image,
    pick_checkpoint,
    prompt_text,
    question_row,
)
from medmix.demo.gallery import held_out
from medmix.demo.gradio_page import create_demo, launch

VQA_RAD = Path(str(resources.files("medmix") / "data" / "demo" / "vqa_rad"))
DICOM_CT = Path(str(resources.files("medmix") / "data" / "demo" / "dicom" / "ct"))
MAX_NEW = 8


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def outbound():
    """Every connection or name lookup this process makes beyond loopback while the page serves (none is
    allowed: no analytics, no version check, no fonts, no share tunnel). Recorded and refused."""
    seen: list[str] = []
    connect, lookup = socket.socket.connect, socket.getaddrinfo
    local = ("127.0.0.1", "::1", "localhost")

    def guarded_connect(self, address):
        host = address[0] if isinstance(address, tuple) else str(address)
        if self.family in (socket.AF_INET, socket.AF_INET6) and host not in local:
            seen.append(f"connect {host}")
            raise OSError(f"test: no network beyond loopback ({host})")
        return connect(self, address)

    def guarded_lookup(host, *args, **kwargs):
        if host not in local and host is not None:
            seen.append(f"lookup {host}")
            raise socket.gaierror(f"test: no name lookups ({host})")
        return lookup(host, *args, **kwargs)

    socket.socket.connect, socket.getaddrinfo = guarded_connect, guarded_lookup
    yield seen
    socket.socket.connect, socket.getaddrinfo = connect, lookup


@pytest.fixture(scope="module")
def served(trained, tmp_path_factory, outbound):
    """(client, answerer, examples, url): one page for the module, with the mixture's held-out gallery."""
    from gradio_client import Client

    run, mixture, cache = trained
    answerer = load_answerer(run, device="cpu")
    examples = held_out(mixture, cache=cache)
    demo = create_demo(answerer, examples, max_new_tokens=MAX_NEW, files_dir=tmp_path_factory.mktemp("demo-files"),
                       stream_interval=0)
    _, url, _ = launch(demo, port=free_port(), block=False)
    # The test's own client phones home (huggingface_hub's agent registry while it builds its headers, and
    # a telemetry thread): switched off here, so what `outbound` records is the server's alone.
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("huggingface_hub.utils._detect_agent._fetch_registry", lambda: None)
        mp.setattr(Client, "_telemetry_thread", lambda self: None)
        client = Client(url, verbose=False)
    yield client, answerer, examples, url
    demo.close()


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("uploads")
    good = d / "good.png"
    Image.new("L", (40, 40), 90).save(good)
    (d / "truncated.png").write_bytes(good.read_bytes()[:60])
    ct = next(DICOM_CT.glob("*.dcm"))
    ds = pydicom.dcmread(ct)
    del ds.PixelData
    ds.save_as(d / "no-pixels.dcm")
    with open(d / "huge.png", "wb") as f:  # 50 MB: a PNG signature, then zeros (sparse, cheap to write)
        f.write(b"\x89PNG\r\n\x1a\n")
        f.truncate(50 * 1024 * 1024)
    return {"good": good, "truncated": d / "truncated.png", "no_pixels": d / "no-pixels.dcm", "dicom": ct,
            "huge": d / "huge.png"}


def _ask(client, path: Path, question: str, task: str = "vqa", options: str = "", limit: int = MAX_NEW):
    from gradio_client import handle_file

    return client.predict(handle_file(str(path)), task, question, options, limit, api_name="/ask")


def test_answers_equal_eval_vqa_for_the_same_image_and_question(served, trained, tmp_path):
    client, answerer, examples, _ = served
    run, _, _ = trained
    app = typer.Typer()
    app.command()(eval_vqa)
    res = CliRunner().invoke(app, [str(run), "--dataset", "vqa_rad", "--from", f"vqa_rad={VQA_RAD}",
                                   "--cache", str(tmp_path / "cache"), "--out", str(tmp_path / "eval"),
                                   "--max-new-tokens", str(MAX_NEW), "--device", "cpu"])
    assert res.exit_code == 0, res.output
    predictions = [json.loads(x) for x in (tmp_path / "eval" / "vqa_rad-test.predictions.jsonl").read_text()
                   .splitlines()]
    shown = [ex for ex in examples if ex.source == "vqa_rad"]
    assert len(shown) >= 3
    by_id = {p["id"]: p for p in predictions}
    for ex in shown[:3]:
        upload = tmp_path / f"{ex.id}{ex.suffix}"
        upload.write_bytes(ex.image)
        _, answer, prompt, stats, message = _ask(client, upload, ex.question)
        assert message == ""
        assert answer == by_id[ex.id]["prediction"], ex.id  # eval's batched greedy answer, exactly
        assert ex.answer == by_id[ex.id]["answer"]  # and the gallery's reference is eval's reference
        assert prompt == f"<image>\nQuestion: {ex.question}\nAnswer:"
        assert stats.startswith("**done**") and "time to first token" in stats and "step 2" in stats


def test_the_answer_streams_token_by_token(served, files):
    from gradio_client import handle_file

    client, answerer, _, _ = served
    job = client.submit(handle_file(str(files["good"])), "vqa", "what organ is this?", "", 12, api_name="/ask")
    assert job.result(timeout=120) is not None
    outputs = job.outputs()
    final = outputs[-1]
    assert final[1] == answerer.answer(load_image(files["good"].read_bytes(), "good.png"),
                                       question_row("vqa", "what organ is this?"), 12)
    stats = [u[3] for u in outputs]
    assert sum("generating" in s for s in stats) >= 3, stats  # one update before the first token, then per token
    counts = [int(s.split("·")[1].split()[0]) for s in stats if "token(s)" in s]
    assert counts == sorted(counts) and counts[-1] == 12, stats  # grows to max_new_tokens (no EOS in 12)
    assert final[3].startswith("**done**") and "tokens/s" in final[3]


def test_gallery_holds_only_held_out_rows_with_their_references(served, trained):
    _, _, examples, _ = served
    _, mixture, _ = trained
    trained_ids = {i for shard in sorted((mixture / "data").glob("*.parquet"))
                   for i in pq.read_table(shard, columns=["id"]).column("id").to_pylist()}
    assert examples and all(ex.split == "test" and ex.source == "vqa_rad" for ex in examples)
    assert not {f"{ex.source}/{ex.id}" for ex in examples} & trained_ids
    assert all(ex.answer and ex.question for ex in examples)


def test_mcqa_and_caption_use_the_training_templates(served, files):
    client, _, _, _ = served
    _, answer, prompt, _, message = _ask(client, files["good"], "which plane?", task="mcqa", options="axial\ncoronal")
    assert message == "" and prompt == "<image>\nQuestion: which plane?\nOptions:\n(A) axial\n(B) coronal\nAnswer:"
    _, _, prompt, _, message = _ask(client, files["good"], "", task="caption")
    assert message == "" and prompt == "<image>\nDescribe the image.\nAnswer:"
    assert prompt == prompt_text({"task": "caption"})


@pytest.mark.parametrize("case, expected", [
    ("truncated", "truncated PNG"),
    ("no_pixels", "no pixel data"),
    ("empty_question", "the question is empty"),
    ("one_option", "at least two options"),
])
def test_bad_input_is_a_message_and_the_server_keeps_serving(served, files, case, expected):
    client, _, _, _ = served
    if case == "empty_question":
        out = _ask(client, files["good"], "   ")
    elif case == "one_option":
        out = _ask(client, files["good"], "which?", task="mcqa", options="only one")
    else:
        out = _ask(client, files[case], "what is this?")
    preview, answer, _, _, message = out
    assert message.startswith("error: ") and expected in message, message
    assert preview is None and answer == ""
    _, answer, _, stats, message = _ask(client, files["good"], "still there?")
    assert message == "" and stats.startswith("**done**")


def test_a_50_mb_upload_is_refused_and_the_server_keeps_serving(served, files):
    import httpx

    client, _, _, url = served
    with pytest.raises(ValueError, match="exceeds the maximum file size of 33554432 bytes"):
        _ask(client, files["huge"], "what is this?")  # the client knows the limit and refuses to send
    with open(files["huge"], "rb") as f:  # a raw upload is cut off by the server itself
        resp = httpx.post(url + "gradio_api/upload", files={"files": ("huge.png", f, "image/png")}, timeout=60)
    assert resp.status_code == 413 and "maximum" in resp.text.lower()
    with pytest.raises(DemoInputError, match="up to 32 MiB"):  # and the handler checks again, before decoding
        load_image(b"\0" * (MAX_UPLOAD_BYTES + 1), "huge.png")
    _, _, _, stats, message = _ask(client, files["good"], "still there?")
    assert message == "" and stats.startswith("**done**")


def test_dicom_is_windowed_like_training_and_no_header_reaches_the_page(served, files):
    client, answerer, _, _ = served
    ds = pydicom.dcmread(files["dicom"])
    phi = [str(ds.get(k)) for k in ("PatientName", "PatientID", "InstitutionName") if ds.get(k)]
    assert phi
    preview, answer, prompt, stats, message = _ask(client, files["dicom"], "what is this?")
    assert message == "" and stats.startswith("**done**")
    seen = Image.open(preview)
    assert seen.size == load_image(files["dicom"].read_bytes(), "x.dcm").size
    for text in (answer, prompt, stats, message):
        assert not any(p in text for p in phi)
    _, _, _, _, message = _ask(client, files["no_pixels"], "what is this?")
    assert not any(p in message for p in phi) and files["no_pixels"].name not in message


def test_nothing_leaves_the_machine(served, outbound, files):
    client, _, _, _ = served
    _, _, _, stats, _ = _ask(client, files["good"], "one more?")
    assert stats.startswith("**done**")
    assert outbound == []


def _cli(*args: str):
    from medmix.cli.main import app

    return CliRunner().invoke(app, ["demo", *args], env={"COLUMNS": "200"})


def test_wrong_checkpoint_folders_get_a_clear_error(trained, tmp_path):
    run, mixture, _ = trained
    res = _cli(str(tmp_path / "nowhere"))
    assert res.exit_code == 2 and "no such folder" in res.output
    res = _cli(str(mixture))
    assert res.exit_code == 2 and "no checkpoint here" in res.output
    half = tmp_path / "run" / "checkpoints" / ".tmp-step-000004"
    half.mkdir(parents=True)
    res = _cli(str(half))
    assert res.exit_code == 2 and "still being written" in res.output
    res = _cli(str(tmp_path / "run"))
    assert res.exit_code == 2 and "only a half-written checkpoint" in res.output
    broken = tmp_path / "broken" / "step-000002"
    shutil.copytree(pick_checkpoint(run), broken)
    (broken / "adapter" / "adapter_model.safetensors").unlink()
    res = _cli(str(broken))
    assert res.exit_code == 2 and "not a complete checkpoint: missing adapter/adapter_model.safetensors" in res.output
    res = _cli(str(run), "--dtype", "float8")
    assert res.exit_code == 2 and "--dtype 'float8'" in res.output


def test_the_run_folder_loads_its_latest_checkpoint_and_says_which(trained, tmp_path):
    run, _, _ = trained
    assert pick_checkpoint(run).name == "step-000002"
    copy = tmp_path / "copied"
    shutil.copytree(run, copy)
    (copy / "checkpoints" / "latest").unlink()  # a copied run without its pointer: the highest complete step
    shutil.copytree(copy / "checkpoints" / "step-000002", copy / "checkpoints" / "step-000001")
    assert pick_checkpoint(copy).name == "step-000002"
    answerer = load_answerer(copy / "checkpoints" / "step-000001", device="cpu", dtype="bfloat16")
    assert "step 1" in answerer.describe() and "bfloat16" in answerer.describe()
    assert {str(p.dtype) for p in answerer.vlm.parameters()} == {"torch.bfloat16"}
    image = load_image(io.BytesIO(_png()).getvalue(), "x.png")
    assert isinstance(answerer.answer(image, question_row("vqa", "what?"), 3), str)


def _png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (20, 30), (10, 200, 30)).save(buf, format="PNG")
    return buf.getvalue()


def test_binding_and_sharing_are_local_unless_asked_for(trained, monkeypatch):
    import medmix.demo.gradio_page as demo_app

    run, mixture, cache = trained
    calls = []
    monkeypatch.setattr(demo_app, "launch", lambda demo, **kw: calls.append(kw))
    res = _cli(str(run), "--port", "7999")
    assert res.exit_code == 0, res.output
    assert calls[-1] == {"host": "127.0.0.1", "port": 7999, "share": False} and "warning" not in res.output
    assert "step-000002 (step 2;" in res.output.replace("\n", "")  # says which checkpoint it loaded
    res = _cli(str(run), "--host", "0.0.0.0", "--share", "--mixture", str(mixture), "--cache", str(cache))
    assert res.exit_code == 0, res.output
    assert calls[-1] == {"host": "0.0.0.0", "port": 7860, "share": True}
    out = res.output.replace("\n", " ")
    assert "warning: serving on 0.0.0.0, reachable from other machines" in out
    assert "warning: --share opens a public gradio.live link" in out
    assert "gallery: 6 held-out example(s)" in out


def test_a_stream_closed_mid_answer_lets_the_next_question_run(served, files):
    _, answerer, _, _ = served
    image = load_image(files["good"].read_bytes(), "good.png")
    row = question_row("vqa", "what organ is this?")
    stream = answerer.stream(image, row, 24)
    first = next(stream)
    stream.close()  # the page went away after the first token
    assert first.tokens >= 1 and not first.done
    assert not answerer.lock.locked()
    assert answerer.answer(image, row, 24) == list(answerer.stream(image, row, 24))[-1].text
