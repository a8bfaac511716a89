"""``/docs`` (Swagger UI) and ``/redoc`` (ReDoc) with every asset served by the gateway.

FastAPI's default pages load their JavaScript and CSS from a CDN (and ReDoc its fonts from
Google), which a trading network blocks. The same files ship inside the ``fastapi-offline``
package (Swagger UI 5 and ReDoc 2 builds); this module serves them under
``/docs/assets/`` from an allow-list (no directory listing, no path joins from the URL).

The pages carry a CSP of their own that allows scripts from this origin only: Swagger UI
is started by a static script (``/docs/assets/swagger-init.js``, reading the document's
URL from a ``data-`` attribute), so no inline script is needed; ReDoc starts from its
``<redoc>`` element. Inline *styles* stay allowed (both UIs set them at run time). The
security-headers middleware adds the rest and keeps a header the response already has.

``serving.docs_enabled: false`` leaves all of this (and ``/openapi.json``) out of the app.
"""

from __future__ import annotations

import html
import importlib.util
from pathlib import Path

import structlog
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, Response

from app.api.errors import ApiError

log = structlog.get_logger("app.api.docs")

DOCS_PATH = "/docs"
REDOC_PATH = "/redoc"
ASSETS_PATH = "/docs/assets"
ASSET_PACKAGE = "fastapi_offline"

DOCS_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self' data:; connect-src 'self'; "
    "worker-src 'self' blob:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
_PAGE_HEADERS = {"Content-Security-Policy": DOCS_CSP, "Cache-Control": "no-cache"}
# The packaged files change only with the package version: let browsers keep them a day.
_ASSET_CACHE = "public, max-age=86400"

# name -> media type: the only files served from the package.
ASSETS: dict[str, str] = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "redoc.standalone.js": "text/javascript; charset=utf-8",
    "favicon.png": "image/png",
}

SWAGGER_INIT_JS = """\
"use strict";
(function () {
  var root = document.getElementById("swagger-ui");
  window.ui = SwaggerUIBundle({
    url: root.getAttribute("data-openapi-url"),
    dom_id: "#swagger-ui",
    layout: "BaseLayout",
    deepLinking: true,
    showExtensions: true,
    showCommonExtensions: true,
    validatorUrl: null,
    presets: [SwaggerUIBundle.presets.apis, SwaggerUIBundle.SwaggerUIStandalonePreset],
  });
})();
"""


def asset_dir() -> Path | None:
    """Where the packaged Swagger UI / ReDoc files are, found without importing the package."""
    spec = importlib.util.find_spec(ASSET_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    static = Path(next(iter(spec.submodule_search_locations))) / "static"
    return static if all((static / name).is_file() for name in ASSETS) else None


def _escaped_urls(root: str, openapi_url: str) -> tuple[str, str]:
    """The assets folder and the OpenAPI document, as they go into the page."""
    return html.escape(root + ASSETS_PATH), html.escape(root + openapi_url)


def _page(title: str, ui: str, assets: str, head: str, body: str) -> str:
    """The page shell both UIs share: title and icon, then each UI's own tags."""
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{html.escape(title)} - {ui}</title>
<link rel="icon" type="image/png" href="{assets}/favicon.png">
{head}</head>
<body>
{body}</body>
</html>
"""


def swagger_html(title: str, root: str, openapi_url: str) -> str:
    assets, url = _escaped_urls(root, openapi_url)
    head = f'<link rel="stylesheet" href="{assets}/swagger-ui.css">\n'
    body = (
        f'<div id="swagger-ui" data-openapi-url="{url}"></div>\n'
        f'<script src="{assets}/swagger-ui-bundle.js"></script>\n'
        f'<script src="{assets}/swagger-init.js"></script>\n'
    )
    return _page(title, "Swagger UI", assets, head, body)


def redoc_html(title: str, root: str, openapi_url: str) -> str:
    assets, url = _escaped_urls(root, openapi_url)
    body = (
        f'<redoc spec-url="{url}"></redoc>\n<script src="{assets}/redoc.standalone.js"></script>\n'
    )
    return _page(title, "ReDoc", assets, "", body)


def install_docs(app: FastAPI) -> bool:
    """Add ``/docs``, ``/redoc`` and their assets to ``app``; False if the assets are missing."""
    static = asset_dir()
    openapi_url = app.openapi_url
    if static is None or openapi_url is None:
        log.warning("docs_unavailable", package=ASSET_PACKAGE, openapi_url=openapi_url)
        return False
    router = APIRouter(include_in_schema=False)

    def _root(request: Request) -> str:
        root = request.scope.get("root_path") or ""
        return root.rstrip("/") if isinstance(root, str) else ""

    @router.get(DOCS_PATH)
    async def swagger_page(request: Request) -> HTMLResponse:
        page = swagger_html(app.title, _root(request), openapi_url)
        return HTMLResponse(page, headers=_PAGE_HEADERS)

    @router.get(REDOC_PATH)
    async def redoc_page(request: Request) -> HTMLResponse:
        page = redoc_html(app.title, _root(request), openapi_url)
        return HTMLResponse(page, headers=_PAGE_HEADERS)

    @router.get(f"{ASSETS_PATH}/swagger-init.js")
    async def swagger_init() -> Response:
        return Response(
            SWAGGER_INIT_JS,
            media_type="text/javascript; charset=utf-8",
            headers={"Cache-Control": _ASSET_CACHE},
        )

    @router.get(ASSETS_PATH + "/{name}")
    async def asset(name: str) -> FileResponse:
        media_type = ASSETS.get(name)
        if media_type is None:
            raise ApiError(404, "no such documentation asset", code="not_found")
        return FileResponse(
            static / name, media_type=media_type, headers={"Cache-Control": _ASSET_CACHE}
        )

    app.include_router(router)
    return True
