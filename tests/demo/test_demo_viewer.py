"""`medmix view --model RUN`: a row page links to the demo, mounted in the same process at /demo/, with
nothing but the row's numbers in the URL; the demo opens that row's image and question, and hostile
dataset text stays text."""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest
from starlette.testclient import TestClient
from view_fixtures import HOSTILE, audit_recipe

from medmix.demo.answering import load_answerer
from medmix.demo.gradio_page import create_demo
from medmix.pipeline import BuildOptions, build
from medmix.recipe import load_recipe
from medmix.view.store import open_store
from medmix.view.webapp import CSP, create_app, row_lookup


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("viewer")
    build(load_recipe(str(audit_recipe(tmp))), BuildOptions(out=tmp / "audit", cache=tmp / "cache"),
          log=lambda m: None)
    st = open_store(tmp / "audit")
    assert st.figures.ready.wait(30)
    return st


def _find(store, answer: str) -> tuple[int, int]:
    for shard in range(len(store.shards)):
        rows = store.rows([store.position(shard, r) for r in range(store.shard_rows[shard])], ["answer"])
        for r, rec in enumerate(rows):
            if rec["answer"] == answer:
                return shard, r
    raise AssertionError(f"no row answers {answer!r}")


@pytest.fixture(scope="module")
def server(store, trained, tmp_path_factory):
    import uvicorn

    run, _, _ = trained
    demo = create_demo(load_answerer(run, device="cpu"), row_lookup=row_lookup(store), max_new_tokens=6,
                       files_dir=tmp_path_factory.mktemp("files"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(create_app(store, demo), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not srv.started and time.time() < deadline:
        time.sleep(0.05)
    assert srv.started
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(10)


def test_row_pages_link_to_the_demo_by_numbers_only(store, server):
    shard, row = _find(store, HOSTILE)
    page = httpx.get(f"{server}/row/{shard}/{row}").text
    assert f'<a id="ask" href="/demo/?shard={shard}&amp;row={row}">' in page
    assert "<script>alert(1)" not in page  # the viewer's own escaping is untouched
    plain = TestClient(create_app(store)).get(f"/row/{shard}/{row}")
    assert plain.status_code == 200 and 'id="ask"' not in plain.text  # no --model, no link
    viewer, demo = httpx.get(f"{server}/row/{shard}/{row}"), httpx.get(f"{server}/demo/")
    assert viewer.headers["content-security-policy"] == CSP  # the viewer keeps its CSP ...
    assert demo.status_code == 200 and "content-security-policy" not in demo.headers  # Gradio runs inline code
    assert demo.headers["x-content-type-options"] == "nosniff" and demo.headers["x-frame-options"] == "DENY"


@pytest.fixture
def page(browser, server):
    ctx = browser.new_context(viewport={"width": 1280, "height": 1000})
    pg = ctx.new_page()
    pg.errors, pg.outside, pg.dialogs = [], [], []
    pg.on("console", lambda m: pg.errors.append(m.text) if m.type == "error" else None)
    pg.on("pageerror", lambda e: pg.errors.append(str(e)))
    pg.on("dialog", lambda d: (pg.dialogs.append(d.message), d.dismiss()))

    def only_local(route) -> None:
        if route.request.url.startswith(server):
            route.continue_()
        else:
            pg.outside.append(route.request.url)
            route.abort()

    pg.route("**/*", only_local)
    yield pg
    ctx.close()


def test_ask_a_checkpoint_about_a_hostile_row_from_its_page(page, server, store, tmp_path):
    shard, row = _find(store, HOSTILE)
    page.goto(f"{server}/row/{shard}/{row}")
    page.click("#ask")
    page.wait_for_url(f"{server}/demo/?shard={shard}&row={row}")
    page.wait_for_function("document.querySelector('#reference textarea') && "
                           "document.querySelector('#reference textarea').value.length > 0", timeout=30000)
    assert page.input_value("#reference textarea") == HOSTILE  # shown as text, never as markup
    assert page.input_value("#origin textarea") == f"mixture row {shard}/{row} (a training row)"
    assert page.locator("#task input[value=caption]").is_checked()
    page.wait_for_selector("#upload .file-preview")
    page.click("#ask")
    page.wait_for_function("document.querySelector('#stats').innerText.includes('done')", timeout=60000)
    assert page.input_value("#prompt textarea") == "<image>\nDescribe the image.\nAnswer:"
    shots = Path(os.environ.get("MEDMIX_SCREENSHOTS") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(shots / "demo-from-viewer.png"), full_page=True)
    assert page.dialogs == [] and page.errors == [] and page.outside == []


@pytest.mark.parametrize("query, message", [("shard=99&row=0", "no row 0 in shard 99"),
                                            ("shard=0&row=abc", "whole numbers"),
                                            ("shard=-1&row=0", "no row 0 in shard -1")])
def test_a_bad_link_is_a_message(page, server, query, message):
    page.goto(f"{server}/demo/?{query}")
    page.wait_for_function("document.querySelector('#message textarea') && "
                           "document.querySelector('#message textarea').value.startsWith('error')", timeout=30000)
    assert message in page.input_value("#message textarea")
    assert page.errors == [] and page.outside == []
