"""`medmix demo` in Chromium (Debian's, through Playwright): upload, ask, watch the answer stream in;
held-out examples; bad input shown in the page; no console errors and no request leaves 127.0.0.1.

Screenshots go to $MEDMIX_SCREENSHOTS when set (to look at them), else to the test's tmp folder.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
from PIL import Image

from medmix.demo.answering import load_answerer, load_image, question_row
from medmix.demo.gallery import held_out
from medmix.demo.gradio_page import create_demo, launch

# Each poll of the page records the answer box and the stats line whenever either changed.
RECORD = """() => {
  window.__seen = [];
  const answer = document.querySelector('#answer textarea');
  const stats = document.querySelector('#stats');
  const tick = () => {
    const now = [answer.value, stats.innerText];
    const last = window.__seen[window.__seen.length - 1];
    if (!last || last[0] !== now[0] || last[1] !== now[1]) window.__seen.push(now);
  };
  new MutationObserver(tick).observe(document.body, {subtree: true, childList: true, characterData: true,
                                                     attributes: true});
  window.__timer = setInterval(tick, 2);
}"""


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(trained, tmp_path_factory):
    run, mixture, cache = trained
    answerer = load_answerer(run, device="cpu")
    examples = held_out(mixture, cache=cache)
    demo = create_demo(answerer, examples, max_new_tokens=24, files_dir=tmp_path_factory.mktemp("files"),
                       stream_interval=0)  # every token: the test watches the answer grow
    _, url, _ = launch(demo, port=_port(), block=False)
    yield url, answerer, examples
    demo.close()


@pytest.fixture
def page(browser, server):
    url = server[0]
    ctx = browser.new_context(viewport={"width": 1280, "height": 1000})
    pg = ctx.new_page()
    pg.errors, pg.outside = [], []
    pg.on("console", lambda m: pg.errors.append(m.text) if m.type == "error" else None)
    pg.on("pageerror", lambda e: pg.errors.append(str(e)))

    def only_local(route) -> None:  # the page must work offline: anything else is recorded and refused
        if route.request.url.startswith(url):
            route.continue_()
        else:
            pg.outside.append(route.request.url)
            route.abort()

    pg.route("**/*", only_local)
    pg.goto(url)
    pg.wait_for_selector("#ask button, button#ask")
    yield pg
    ctx.close()


@pytest.fixture
def shots(tmp_path) -> Path:
    folder = Path(os.environ.get("MEDMIX_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _upload(pg, path: Path) -> None:
    if not pg.locator("#upload input[type=file]").count():
        pg.click("#upload button[aria-label='Clear']")  # a file is shown: clear it to get the drop zone back
    pg.set_input_files("#upload input[type=file]", str(path))


def _ask(pg, path: Path, question: str) -> None:
    _upload(pg, path)
    pg.wait_for_selector("#upload .file-preview", timeout=15000)
    pg.fill("#question textarea", question)
    pg.click("#ask")


def _done(pg) -> None:
    pg.wait_for_function("document.querySelector('#stats').innerText.includes('done')", timeout=60000)


def test_upload_ask_and_watch_the_answer_stream_in(page, server, tmp_path, shots):
    _, answerer, _ = server
    image = tmp_path / "scan.png"
    Image.radial_gradient("L").resize((96, 96)).save(image)
    page.evaluate(RECORD)
    _ask(page, image, "is there a fracture?")
    _done(page)
    seen = page.evaluate("window.__seen")
    shown = page.input_value("#answer textarea")
    expected = answerer.answer(load_image(image.read_bytes(), "scan.png"), question_row("vqa", "is there a fracture?"),
                               24)
    assert shown == expected and shown
    partial = [a for a, s in seen if "generating" in s and "token(s)" in s]
    assert partial, f"no partial answer was ever shown: {seen}"
    assert len({a for a, _ in seen if a}) >= 2, "the answer grew in steps"
    stats = page.inner_text("#stats")
    assert "time to first token" in stats and "tokens/s" in stats and "step 2" in stats
    assert page.input_value("#prompt textarea") == "<image>\nQuestion: is there a fracture?\nAnswer:"
    assert page.locator("#preview img").count() == 1  # what the model saw, after normalization
    page.screenshot(path=str(shots / "demo-answer.png"), full_page=True)
    assert page.errors == [] and page.outside == []


def test_a_held_out_example_shows_its_reference_beside_the_answer(page, server, shots):
    _, _, examples = server
    page.locator("#gallery .thumbnail-item").nth(1).click()
    page.wait_for_function(f"document.querySelector('#question textarea').value === {examples[1].question!r}")
    assert page.input_value("#reference textarea") == examples[1].answer
    assert "vqa_rad test" in page.input_value("#origin textarea")
    page.keyboard.press("Escape")
    page.click("#ask")
    _done(page)
    assert page.input_value("#answer textarea")
    page.wait_for_function("(() => { const i = document.querySelector('#preview img'); "
                           "return i && i.complete && i.naturalWidth === 80; })()")
    page.screenshot(path=str(shots / "demo-example.png"), full_page=True)
    assert page.errors == [] and page.outside == []


def test_bad_files_are_named_in_the_page_and_the_next_ask_works(page, tmp_path, shots):
    good = tmp_path / "good.png"
    Image.new("L", (40, 40), 120).save(good)
    bad = tmp_path / "cut.png"
    bad.write_bytes(good.read_bytes()[:70])
    _ask(page, bad, "what is this?")
    page.wait_for_function("document.querySelector('#message textarea').value.startsWith('error')")
    assert "truncated PNG" in page.input_value("#message textarea")
    page.screenshot(path=str(shots / "demo-bad-file.png"), full_page=True)
    page.fill("#question textarea", "")
    page.click("#ask")
    page.wait_for_function("document.querySelector('#message textarea').value.includes('question is empty')")
    huge = tmp_path / "huge.png"
    with open(huge, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n")
        f.truncate(50 * 1024 * 1024)
    _upload(page, huge)
    toast = page.locator(".toast-body, [data-testid='toast-body']").first
    toast.wait_for(timeout=15000)
    assert "exceed the maximum allowed size of 32.0 mb" in toast.inner_text().lower()
    page.screenshot(path=str(shots / "demo-huge-file.png"), full_page=True)
    _ask(page, good, "and now?")
    _done(page)
    assert page.input_value("#message textarea") == ""
    assert page.outside == []
