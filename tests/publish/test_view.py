"""`medmix view`: pages, filters, paging and removed pairs in Debian's Chromium (Playwright), and the
security promises (no traversal, hostile text stays text, CSP, 400 on malformed queries) over HTTP.

The mixture is the demo recipe plus a local folder that plants a near-duplicate image, a text
near-duplicate and hostile captions (tests/view_fixtures.py), so every kind of removal is shown.
"""

from __future__ import annotations

import json
import shutil
import socket
import sys
import threading
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

sys.path.insert(0, str(Path(__file__).parents[1]))
from view_fixtures import HOSTILE, audit_recipe

from medmix.core import layout
from medmix.core.errors import MedmixError
from medmix.pipeline import BuildOptions, build
from medmix.recipe import load_recipe

pytest.importorskip("starlette")
from starlette.testclient import TestClient

from medmix.view.store import MixtureStore, open_store
from medmix.view.webapp import CSP, create_app


@pytest.fixture(scope="module")
def mixture(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("view")
    out = tmp / "audit"
    build(load_recipe(str(audit_recipe(tmp))), BuildOptions(out=out, cache=tmp / "cache"), log=lambda m: None)
    return out


def _ready(store: MixtureStore) -> MixtureStore:
    assert store.figures.ready.wait(30)
    return store


@pytest.fixture(scope="module")
def client(mixture) -> TestClient:
    return TestClient(create_app(_ready(open_store(mixture))), raise_server_exceptions=False)


@pytest.fixture(scope="module")
def server(mixture):
    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(create_app(_ready(open_store(mixture))), host="127.0.0.1", port=port,
                                        log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.time() + 20
    while not srv.started and time.time() < deadline:
        time.sleep(0.05)
    assert srv.started
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(10)


@pytest.fixture
def page(browser):
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = ctx.new_page()
    pg.dialogs, pg.errors = [], []
    pg.on("dialog", lambda d: (pg.dialogs.append(d.message), d.dismiss()))
    pg.on("console", lambda m: pg.errors.append(m.text) if m.type == "error" else None)
    pg.on("pageerror", lambda e: pg.errors.append(str(e)))
    yield pg
    ctx.close()


def _ids(page) -> list[str]:
    return page.eval_on_selector_all("#cards .card", "cs => cs.map(c => c.dataset.id)")


# -- in the browser ----------------------------------------------------------------------------------
def test_every_page_opens_without_script_or_csp_errors(server, page):
    for path, heading in [("/", "audit"), ("/browse", None), ("/row/0/0", None), ("/removed", "Removed rows"),
                          ("/removed/0", None), ("/quarantine", "Quarantined rows")]:
        resp = page.goto(server + path)
        assert resp.status == 200, path
        if heading:
            assert page.locator("h1").first.inner_text() == heading
    page.goto(server + "/")
    assert page.locator("#figures h3", has_text="Rows per domain").count() == 1  # background pass rendered
    assert page.locator("table.funnel tbody tr").count() == 5
    page.goto(server + "/quarantine")
    assert "MR_truncated" in page.locator("#quarantine").inner_text()
    assert page.errors == [] and page.dialogs == []


def test_filters_search_and_paging_through_the_url(server, page):
    page.goto(server + "/browse")
    first = _ids(page)
    assert len(first) == 48
    page.click("#next")
    assert page.url.endswith("/browse?page=2")
    second = _ids(page)
    assert second and not set(second) & set(first)
    page.click("#prev")
    assert page.url.endswith("/browse?") or page.url.endswith("/browse")
    assert _ids(page) == first

    page.select_option("select[name=source]", "audit")
    page.click("button[type=submit]")
    assert "source=audit" in page.url
    assert sorted(_ids(page)) == ["audit/base.png", "audit/hostile.png"]  # near.png and copy.png were dropped

    page.fill("input[name=q]", "hemangioma")
    page.click("button[type=submit]")
    assert "source=audit" in page.url and "q=hemangioma" in page.url
    assert _ids(page) == ["audit/base.png"]
    assert page.locator("#summary").inner_text().startswith("1 matching row ·")

    page.goto(server + "/browse?order=random&seed=5")
    shuffled = _ids(page)
    assert len(shuffled) == 48 and shuffled != first
    page.goto(server + "/browse?order=random&seed=5")
    assert _ids(page) == shuffled  # a seeded sample is a stable URL
    assert page.errors == []


def test_removed_pair_shows_both_images_and_the_measure(server, page):
    page.goto(server + "/removed?kind=duplicate&source=audit")
    assert page.locator("#summary").inner_text().startswith("2 rows")
    page.click("a.pair-link:text('audit/near.png')")
    assert "/removed/" in page.url
    page.wait_for_load_state("load")
    for img in ("#img-removed", "#img-other"):
        assert page.eval_on_selector(img, "i => i.complete && i.naturalWidth") > 0
    assert "Hamming 4/64" in page.locator(".reason").inner_text()
    assert "audit/base.png" in page.locator("#other-side").inner_text()

    page.goto(server + "/removed?kind=eval_image")
    page.locator("a.pair-link").first.click()
    page.wait_for_load_state("load")
    assert page.locator("#other-side h2").inner_text() == "evaluation item"
    for img in ("#img-removed", "#img-other"):
        assert page.eval_on_selector(img, "i => i.complete && i.naturalWidth") > 0

    page.goto(server + "/removed?kind=eval_text")
    page.locator("a.pair-link").first.click()
    assert "shared 13-gram" in page.locator(".reason").inner_text()
    assert page.errors == []


def test_hostile_caption_is_shown_as_text(server, page):
    page.goto(server + "/browse?source=audit&q=alert")
    card = page.locator("#cards .card")
    assert card.count() == 1
    assert HOSTILE in card.locator(".a").inner_text()
    card.click()
    assert HOSTILE in page.locator("table.fields").first.inner_text()
    assert page.locator("img[src=x]").count() == 0 and page.locator("main script").count() == 0
    page.wait_for_timeout(200)
    assert page.dialogs == [] and page.errors == []


# -- over HTTP -----------------------------------------------------------------------------------------
def test_security_headers_on_every_kind_of_response(client):
    for path in ("/", "/static/view.css", "/nope", "/browse?page=0", "/removed/0/thumb"):
        r = client.get(path)
        assert r.headers["content-security-policy"] == CSP, path
        assert r.headers["x-content-type-options"] == "nosniff" and r.headers["referrer-policy"] == "no-referrer"
    assert "'unsafe-inline'" not in CSP and "script-src 'self'" in CSP


@pytest.mark.parametrize("query", ["page=x", "page=0", "page=-1", "page=1e3", "seed=abc", "order=sideways",
                                   "bogus=1", "page=1&page=2", "q=" + "a" * 300, "source=%00", "page=%EF%BC%91"])
def test_malformed_query_is_a_400_without_traceback(client, query):
    r = client.get("/browse?" + query)
    assert r.status_code == 400
    assert "Traceback" not in r.text and "File \"" not in r.text
    assert client.get("/removed?" + query.replace("q=", "reason=")).status_code == 400


def test_only_the_mixture_is_served(client, mixture, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET")
    (mixture / "leak.txt").symlink_to(secret)
    paths = ["/../manifest.json", "/static/../../manifest.json", "/static/%2e%2e/%2e%2e/layout.py",
             "/static/%252e%252e/%252e%252e/layout.py", "/static/..%2f..%2flayout.py", f"/static/{secret}",
             f"/static//{secret}", "/leak.txt", "/data/leak.txt", "/manifest.json", "/row/..%2f/0",
             "/row/0/%2e%2e", "/row/-1/0", "/row/0/99999", "/thumb/999/0", "/image/0/1e3", "/removed/999",
             "/removed/0/../../manifest.json", "/removed/0/meta", "/static/view.css/..%2f..%2fapp.py"]
    for path in paths:
        r = client.get(path)
        assert r.status_code == 404, path
        assert "TOP-SECRET" not in r.text and "format_version" not in r.text
    (mixture / "leak.txt").unlink()


def test_side_files_symlinked_outside_are_not_read(mixture, tmp_path):
    copy = tmp_path / "m"
    shutil.copytree(mixture, copy, symlinks=True)
    outside = tmp_path / "outside.parquet"
    pq.write_table(pa.table({"id": ["OUTSIDE-ROW"], "reason": ["x"], "other": ["y"]}), outside)
    (copy / layout.REMOVED).unlink()
    (copy / layout.REMOVED).symlink_to(outside)
    c = TestClient(create_app(open_store(copy, scan=False)), raise_server_exceptions=False)
    r = c.get("/removed")
    assert r.status_code == 200 and "OUTSIDE-ROW" not in r.text and "0 rows" in r.text

    m = json.loads((copy / layout.MANIFEST).read_text())
    shard = copy / m["shards"][0]["path"]
    moved = tmp_path / "shard.parquet"
    shutil.move(shard, moved)
    shard.symlink_to(moved)
    with pytest.raises(MedmixError, match="outside the mixture folder"):
        open_store(copy, scan=False)


def test_format_1_removed_parquet_shows_ids_only(mixture, tmp_path):
    copy = tmp_path / "v1"
    shutil.copytree(mixture, copy)
    old = pq.read_table(copy / layout.REMOVED, columns=["id", "reason", "other"])
    pq.write_table(old.cast(layout.REMOVED_SCHEMA_V1), copy / layout.REMOVED)
    c = TestClient(create_app(open_store(copy, scan=False)), raise_server_exceptions=False)
    r = c.get("/removed")
    assert r.status_code == 200 and "format 1" in r.text and "audit/near.png" in r.text
    assert c.get("/removed?kind=duplicate").status_code == 400
    assert c.get("/removed/0").status_code == 200


def test_thumbnails_and_images_are_served_with_cache_headers(client):
    r = client.get("/browse?source=audit&q=hemangioma")
    href = r.text.split('src="/thumb/')[1].split('"')[0]
    t = client.get("/thumb/" + href)
    assert t.status_code == 200 and t.headers["content-type"] == "image/jpeg"
    assert "max-age" in t.headers["cache-control"]
    full = client.get("/image/" + href)
    assert full.status_code == 200 and full.headers["content-type"] in ("image/png", "image/jpeg", "image/webp")
    assert len(full.content) > 0


def test_binding_beyond_loopback_warns(monkeypatch, mixture):
    import uvicorn

    from medmix.view import webapp as view_app

    calls, said = [], []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.append(kw))
    view_app.serve(mixture, host="0.0.0.0", port=9, warn=said.append)
    assert calls[0]["host"] == "0.0.0.0" and any("reachable from other machines" in s for s in said)
    said.clear()
    view_app.serve(mixture, warn=said.append)
    assert calls[1]["host"] == "127.0.0.1" and not any("warning" in s for s in said)
