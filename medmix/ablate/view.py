"""`medmix view ABLATION_FOLDER`: the ablation's report.md as a page, with its plots.

Report text includes source names from recipes, so it is rendered with raw HTML off (markdown-it,
commonmark + tables: `<script>` in a name shows as text), and only the report's own PNGs are
served, by fixed name, never a path from the request. Same security headers as the mixture viewer.
"""

from __future__ import annotations

import html
from pathlib import Path

from medmix.ablate.ablation_report import CONTRIB_PNG, PRED_PNG, REPORT
from medmix.core.errors import MedmixError

MARKER = ".medmix-ablate.json"
PAGE = ("<!doctype html><html><head><meta charset='utf-8'><title>{title}</title>"
        "<link rel='stylesheet' href='/static/view.css'></head><body><main class='ablate'>{body}</main></body></html>")


def is_ablation(folder: str | Path) -> bool:
    return (Path(folder) / MARKER).is_file()


def render_page(folder: Path) -> str:
    from markdown_it import MarkdownIt

    path = folder / REPORT
    if not path.is_file():
        raise MedmixError(f"{path}: missing; the ablation has not finished (rerun `medmix ablate` with the same "
                          f"arguments to resume it)")
    body = MarkdownIt("commonmark", {"html": False}).enable("table").render(path.read_text())
    return PAGE.format(title=html.escape(f"medmix ablate: {folder.name}"), body=body)


def create_app(folder: str | Path):
    from starlette.applications import Starlette
    from starlette.responses import HTMLResponse, Response
    from starlette.routing import Mount, Route
    from starlette.staticfiles import StaticFiles

    from medmix.view.webapp import PKG, SecurityHeaders

    root = Path(folder)
    page = render_page(root)

    async def index(request):
        return HTMLResponse(page)

    def png(name: str):
        async def serve(request):
            f = root / name
            if not f.is_file():
                return Response("not found", status_code=404, media_type="text/plain")
            return Response(f.read_bytes(), media_type="image/png")
        return serve

    routes = [Route("/", index), *(Route(f"/{n}", png(n)) for n in (CONTRIB_PNG, PRED_PNG)),
              Mount("/static", StaticFiles(directory=str(PKG / "static")), name="static")]
    return SecurityHeaders(Starlette(routes=routes))
