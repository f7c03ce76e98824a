"""The `medmix view` web app (Starlette): Overview, Browse, Row, Removed and Quarantine pages.

Read-only and built for hostile data: every page is rendered by Jinja2 with autoescaping, so
dataset text is always text; no URL names a file (rows are numbers, static files come from the
package), so nothing outside the mixture can be asked for; every response carries a
Content-Security-Policy with no inline script or style; a malformed query is a 400 with a message,
and an unexpected error is a plain 500 without a traceback.
"""

from __future__ import annotations

import io
import json
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import numpy as np
import pyarrow.compute as pc
from jinja2 import Environment, FileSystemLoader, select_autoescape
from PIL import Image
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from medmix.core.errors import MedmixError
from medmix.core.layout import FUNNEL_STEPS, REMOVAL_KINDS, manifest_sha256
from medmix.core.licenses import terms
from medmix.imaging.thumbnail import thumbnail
from medmix.view.query import CATEGORIES, FILTERS, BadQuery, parse_browse, parse_empty, parse_int_segment, parse_list
from medmix.view.store import CARD_COLUMNS, MixtureStore

PER_PAGE = 48
LIST_PAGE = 50
THUMB_PX = 160
CSP = ("default-src 'none'; img-src 'self' data:; script-src 'self'; style-src 'self'; connect-src 'self'; "
       "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
SECURITY_HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff",
                    "Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY",
                    "Cross-Origin-Resource-Policy": "same-origin"}
# formats a browser shows as they are; anything else (TIFF, ...) is re-encoded to PNG
WEB_FORMATS = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp", "GIF": "image/gif"}
KIND_LABELS = {"license": "license not accepted", "duplicate": "duplicate", "same_image": "same image",
               "eval_image": "evaluation image", "eval_text": "evaluation text"}
PKG = resources.files("medmix") / "view"
DEMO_PATH = "/demo"


def _env() -> Environment:
    env = Environment(loader=FileSystemLoader(str(PKG / "templates")), autoescape=select_autoescape(default=True),
                      trim_blocks=True, lstrip_blocks=True)
    env.filters["num"] = lambda n: f"{n:,}" if isinstance(n, int) else n
    env.filters["url"] = lambda params: ("?" + urlencode(params)) if params else "?"
    env.filters["pct"] = lambda x, total: 0 if not total else max(0.5, round(100 * x / total, 2))
    env.filters["cut"] = lambda s, n=240: s if s is None or len(s) <= n else s[:n] + "…"
    return env


def _bins(values: np.ndarray) -> list[dict[str, Any]]:
    """Counts per power-of-two bin [2^k, 2^(k+1)) (0 on its own): readable at any scale."""
    if len(values) == 0:
        return []
    v = values.astype(np.int64)
    k = np.where(v > 0, np.floor(np.log2(np.maximum(v, 1))).astype(int) + 1, 0)
    hist = np.bincount(k)
    out = []
    for b, n in enumerate(hist):
        if n:
            lo, hi = (0, 0) if b == 0 else (2 ** (b - 1), 2 ** b - 1)
            out.append({"label": str(lo) if lo == hi else f"{lo:,}–{hi:,}", "count": int(n)})
    return out


class Viewer:
    def __init__(self, store: MixtureStore, ask: bool = False) -> None:
        self.store = store
        self.env = _env()
        self.manifest_digest = manifest_sha256(store.root)
        self.ask = ask  # a checkpoint is served at /demo/: row pages link to it

    def render(self, name: str, status: int = 200, **ctx: Any) -> HTMLResponse:
        ctx.setdefault("title", "")
        html = self.env.get_template(name).render(recipe=self.store.manifest.get("recipe", {}).get("name", "mixture"),
                                                  ask=self.ask, **ctx)
        return HTMLResponse(html, status_code=status)

    # -- overview ---------------------------------------------------------------------------------
    def figures(self) -> dict[str, Any]:
        f = self.store.figures
        if not f.ready.is_set():
            return {"ready": False, "rows_done": f.rows_done, "total": self.store.total}
        if f.error:
            return {"ready": True, "error": f.error}
        sizes = np.concatenate(f.sizes) if f.sizes else np.zeros((0, 2), np.int64)
        texts = {c: np.concatenate(v) if v else np.zeros(0, np.int32) for c, v in f.text_len.items()}
        return {"ready": True, "seconds": round(f.seconds, 2), "total": self.store.total,
                "counts": {c: f.counts(c) for c in CATEGORIES},
                "images": len(sizes), "long_side": _bins(sizes.max(axis=1)) if len(sizes) else [],
                "text": {c: {"rows": int((v > 0).sum()), "median": int(np.median(v[v > 0])) if (v > 0).any() else 0,
                             "bins": _bins(v[v > 0])} for c, v in texts.items()}}

    def overview(self, request: Request) -> Response:
        parse_empty(request.query_params.multi_items())
        m = self.store.manifest
        built = m.get("build_info", {}).get("created_unix")
        funnel = []
        for name, entry in m.get("sources", {}).items():
            if entry.get("evaluation_only"):
                continue
            counts = entry.get("counts", {})
            funnel.append({"source": name, "license": entry.get("license"), "terms": entry.get("license_terms"),
                           **{k: counts.get(k) for k, _, _ in FUNNEL_STEPS}, "epochs": counts.get("epochs")})
        evals = [n for n, e in m.get("sources", {}).items() if e.get("evaluation_only")]
        source_rows = dict(sorted(((f["source"], f["selected"] or 0) for f in funnel), key=lambda kv: (-kv[1], kv[0])))
        return self.render("overview.html", title="Overview", m=m, funnel=funnel, source_rows=source_rows,
                           steps=FUNNEL_STEPS, evals=evals,
                           built=datetime.fromtimestamp(built, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
                           if isinstance(built, (int, float)) else None,
                           manifest_digest=self.manifest_digest, total=self.store.total, fig=self.figures(),
                           removed_rows=self.store.removed().num_rows,
                           quarantined=self.store.quarantine().num_rows, shards=len(self.store.shards))

    def overview_figures(self, request: Request) -> Response:
        parse_empty(request.query_params.multi_items())
        return self.render("_figures.html", fig=self.figures())

    # -- browse and row ---------------------------------------------------------------------------
    def browse(self, request: Request) -> Response:
        q = parse_browse(request.query_params.multi_items())
        positions, more, total = self.store.browse(q, PER_PAGE)
        rows = self.store.rows(positions, CARD_COLUMNS)
        choices = {c: list(self.store.figures.counts(c)) if self.store.figures.ready.is_set() else []
                   for c in CATEGORIES}
        choices["image"] = ["yes", "no"]
        return self.render("browse.html", title="Browse", q=q, rows=rows, more=more, total=total,
                           categories=FILTERS, choices=choices, per_page=PER_PAGE)

    def _position(self, request: Request) -> tuple[int, int]:
        shard = parse_int_segment(request.path_params["shard"])
        row = parse_int_segment(request.path_params["row"])
        if shard is None or row is None or self.store.position(shard, row) is None:
            raise HTTPException(404, "no such row in this mixture")
        return shard, row

    def row(self, request: Request) -> Response:
        parse_empty(request.query_params.multi_items())
        shard, row = self._position(request)
        columns = [c for c in self.store.files[shard].schema_arrow.names if c != "image"]
        rec = self.store.rows([self.store.position(shard, row)], columns)[0]
        try:
            meta = json.loads(rec.get("meta") or "{}")
        except ValueError:
            meta = {"(unparsed)": rec.get("meta")}
        source = self.store.manifest.get("sources", {}).get(rec.get("source"), {})
        lic = rec.get("license")
        return self.render("row.html", title=rec.get("id") or "row", r=rec, shard=shard, row_n=row,
                           shard_path=self.store.shards[shard].rel, meta=meta, source=source,
                           license_terms=terms(lic).summary() if lic else None,
                           fields=[c for c in columns if c not in ("meta",)])

    def image(self, request: Request) -> Response:
        shard, row = self._position(request)
        data = self.store.image_bytes(shard, row)
        if not data:
            raise HTTPException(404, "this row has no image")
        try:
            with Image.open(io.BytesIO(data)) as im:
                fmt = im.format
                if fmt not in WEB_FORMATS:
                    buf = io.BytesIO()
                    im.save(buf, format="PNG")
                    data, fmt = buf.getvalue(), "PNG"
        except (OSError, ValueError, Image.DecompressionBombError):
            raise HTTPException(404, "the stored image cannot be decoded") from None
        return Response(data, media_type=WEB_FORMATS[fmt], headers={"Cache-Control": "private, max-age=86400"})

    def thumb(self, request: Request) -> Response:
        shard, row = self._position(request)
        key = (shard, row, THUMB_PX)
        data = self.store.thumbs.get(key)
        if data is None:
            raw = self.store.image_bytes(shard, row)
            if not raw:
                raise HTTPException(404, "this row has no image")
            try:
                data = thumbnail(raw, THUMB_PX)
            except (OSError, ValueError, Image.DecompressionBombError):
                raise HTTPException(404, "the stored image cannot be decoded") from None
            self.store.thumbs.put(key, data, len(data))
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=86400"})

    # -- removed ----------------------------------------------------------------------------------
    def removed(self, request: Request) -> Response:
        q = parse_list(request.query_params.multi_items(), ("kind", "reason", "source"))
        table = self.store.removed()
        fmt = self.store.removed_format()
        by_kind = _value_counts(table, "kind") if "kind" in table.column_names else {}
        by_reason = _value_counts(table, "reason")
        by_source = _value_counts(table, "source") if "source" in table.column_names else {}
        mask = None
        for column, value in q.filters:
            if column not in table.column_names:
                raise BadQuery(f"this mixture's removed.parquet (format {fmt}) has no {column!r} column")
            hit = pc.fill_null(pc.equal(table[column], value), False)
            mask = hit if mask is None else pc.and_(mask, hit)
        idx = np.flatnonzero(mask.to_numpy(zero_copy_only=False)) if mask is not None else np.arange(table.num_rows)
        lo = (q.page - 1) * LIST_PAGE
        page = idx[lo:lo + LIST_PAGE]
        rows = [{**table.slice(int(i), 1).to_pylist()[0], "_n": int(i)} for i in page]
        return self.render("removed.html", title="Removed", q=q, rows=rows, total=len(idx), fmt=fmt,
                           by_kind=by_kind, by_reason=by_reason, by_source=by_source, kinds=KIND_LABELS,
                           more=len(idx) > lo + LIST_PAGE, per_page=LIST_PAGE, all_kinds=REMOVAL_KINDS)

    def _removed_n(self, request: Request) -> tuple[int, dict[str, Any]]:
        n = parse_int_segment(request.path_params["n"])
        rec = self.store.removed_detail(n) if n is not None else None
        if rec is None:
            raise HTTPException(404, "no such removed row")
        return n, rec

    def removed_pair(self, request: Request) -> Response:
        parse_empty(request.query_params.multi_items())
        n, rec = self._removed_n(request)
        return self.render("removed_pair.html", title=f"Removed: {rec['id']}", r=rec, n=n, kinds=KIND_LABELS,
                           fmt=self.store.removed_format(), total=self.store.removed().num_rows)

    def removed_thumb(self, request: Request) -> Response:
        side = request.path_params["side"]
        if side not in ("thumb", "other_thumb"):
            raise HTTPException(404)
        _, rec = self._removed_n(request)
        data = rec.get(side)
        if not data:
            raise HTTPException(404, "no image on this side")
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=86400"})

    # -- quarantine -------------------------------------------------------------------------------
    def quarantine(self, request: Request) -> Response:
        q = parse_list(request.query_params.multi_items(), ("reason", "source"))
        table = self.store.quarantine()
        mask = None
        for column, value in q.filters:
            hit = pc.fill_null(pc.equal(table[column], value), False)
            mask = hit if mask is None else pc.and_(mask, hit)
        idx = np.flatnonzero(mask.to_numpy(zero_copy_only=False)) if mask is not None else np.arange(table.num_rows)
        lo = (q.page - 1) * LIST_PAGE
        rows = [table.slice(int(i), 1).to_pylist()[0] for i in idx[lo:lo + LIST_PAGE]]
        return self.render("quarantine.html", title="Quarantine", q=q, rows=rows, total=len(idx),
                           by_reason=_value_counts(table, "reason"), by_source=_value_counts(table, "source"),
                           more=len(idx) > lo + LIST_PAGE, per_page=LIST_PAGE)

    async def healthz(self, request: Request) -> Response:
        f = self.store.figures
        return JSONResponse({"rows": self.store.total, "scanned": f.ready.is_set()})


def _value_counts(table, column: str) -> dict[str, int]:
    if table.num_rows == 0:
        return {}
    vc = pc.value_counts(table[column]).to_pylist()
    return dict(sorted(((str(d["values"]), int(d["counts"])) for d in vc), key=lambda kv: (-kv[1], kv[0])))


def create_app(store: MixtureStore, demo: Any = None) -> SecurityHeaders:
    """The viewer; with `demo` (a `medmix.demo.gradio_page.create_demo` page) also that page at /demo/, which row
    pages link to with only the row's shard and row numbers in the URL (no dataset text ever travels)."""
    v = Viewer(store, ask=demo is not None)

    async def bad_query(request: Request, exc: Exception) -> Response:
        return v.render("error.html", status=400, title="Bad request", code=400, message=str(exc))

    async def http_error(request: Request, exc: Exception) -> Response:
        code = getattr(exc, "status_code", 500)
        detail = getattr(exc, "detail", "") or ("not found" if code == 404 else "error")
        return v.render("error.html", status=code, title=str(code), code=code, message=detail)

    async def server_error(request: Request, exc: Exception) -> Response:
        return PlainTextResponse("internal error (the server log has the details)", status_code=500)

    routes = [
        Route("/", v.overview), Route("/overview/figures", v.overview_figures),
        Route("/browse", v.browse),
        Route("/row/{shard}/{row}", v.row), Route("/image/{shard}/{row}", v.image),
        Route("/thumb/{shard}/{row}", v.thumb),
        Route("/removed", v.removed), Route("/removed/{n}", v.removed_pair),
        Route("/removed/{n}/{side}", v.removed_thumb),
        Route("/quarantine", v.quarantine), Route("/healthz", v.healthz),
        Mount("/static", StaticFiles(directory=str(PKG / "static")), name="static"),
    ]
    app = Starlette(routes=routes, exception_handlers={BadQuery: bad_query, HTTPException: http_error,
                                                      Exception: server_error})
    if demo is None:
        return SecurityHeaders(app)
    import gradio as gr
    from fastapi import FastAPI

    from medmix.demo.gradio_page import mount_options

    both = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    gr.mount_gradio_app(both, demo, DEMO_PATH, **mount_options(demo))
    both.mount("/", app)
    return SecurityHeaders(both)


class SecurityHeaders:
    """ASGI wrapper adding SECURITY_HEADERS to every response, error pages and static files included."""

    def __init__(self, app) -> None:
        self.app = app
        self.extra = [(k.lower().encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]
        # Gradio's page (mounted at /demo/ with --model) runs inline scripts and styles, which the viewer's
        # CSP forbids: it keeps every other header, and Gradio escapes what it shows.
        self.demo_extra = [kv for kv in self.extra if kv[0] != b"content-security-policy"]

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        extra = self.demo_extra if scope.get("path", "").startswith(DEMO_PATH + "/") else self.extra

        async def with_headers(message) -> None:
            if message["type"] == "http.response.start":
                have = {k.lower() for k, _ in message.get("headers", [])}
                message["headers"] = list(message.get("headers", [])) + [kv for kv in extra if kv[0] not in have]
            await send(message)

        await self.app(scope, receive, with_headers)


def is_loopback(host: str) -> bool:
    return host in ("127.0.0.1", "localhost", "::1") or host.startswith("127.")


def row_lookup(store: MixtureStore):
    """(shard, row) -> (image bytes, suffix, row fields, reference answer) or None: the demo's way into rows."""

    def lookup(shard: int, row: int) -> tuple[bytes, str, dict[str, Any], str] | None:
        position = store.position(shard, row)
        if position is None:
            return None
        data = store.image_bytes(shard, row)
        if not data:
            return None
        rec = store.rows([position], ["task", "question", "options", "answer"])[0]
        suffix = ".jpg" if data[:3] == b"\xff\xd8\xff" else ".png"
        return data, suffix, rec, rec.get("answer") or ""

    return lookup


def serve(mixture: str | Path, host: str = "127.0.0.1", port: int = 8765, warn=print, model: str | Path | None = None,
          device: str = "auto", report_app: Any = None) -> None:
    """Open the mixture and serve it until interrupted. Binding beyond loopback needs an explicit host.
    With `model` (a run or checkpoint folder), row pages get an "ask a checkpoint" link to /demo/."""
    import uvicorn

    from medmix.view.store import open_store

    if not is_loopback(host):
        warn(f"warning: serving on {host}, reachable from other machines; the mixture's text and images are "
             f"shown to anyone who can connect (use --host 127.0.0.1 to keep it local)")
    shown = f"[{host}]" if ":" in host else host
    if report_app is not None:  # e.g. a `medmix ablate` folder's report (medmix.ablate.view)
        warn(f"medmix view: report of {mixture} at http://{shown}:{port}/")
        uvicorn.run(report_app, host=host, port=port, log_level="warning", server_header=False)
        return
    store = open_store(mixture)
    demo = None
    if model is not None:
        try:
            import gradio  # noqa: F401
        except ImportError as exc:
            raise MedmixError(f'medmix view --model needs its extra: pip install "medmix[demo]" ({exc})') from None
        from medmix.demo.answering import load_answerer
        from medmix.demo.gradio_page import create_demo

        answerer = load_answerer(model, device=device)
        warn(f"medmix view: row pages ask {answerer.describe()}")
        demo = create_demo(answerer, row_lookup=row_lookup(store))
    warn(f"medmix view: {store.total:,} rows of {mixture} at http://{shown}:{port}/")
    uvicorn.run(create_app(store, demo), host=host, port=port, log_level="warning", server_header=False)


