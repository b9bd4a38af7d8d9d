"""``/docs`` (Swagger UI) and ``/redoc`` served from files installed with the package, so the API pages
render on a machine with no internet access: the scripts and styles come from the ``fastapi-offline``
wheel (Swagger UI and ReDoc, MIT and Apache-2.0 licensed), served at ``/docs-assets/``; no font is
fetched (ReDoc's Google fonts are off), Swagger UI's online validator badge is disabled, and ReDoc's
"powered by" logo, which its script loads from the vendor's CDN, is replaced by an inline image when the
script is served (``/docs-assets/redoc.js``).

:func:`install` adds the pages to an app created with ``docs_url=None, redoc_url=None``.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse, Response
from fastapi.staticfiles import StaticFiles

ASSETS = "/docs-assets"
#: an inline favicon: the browser asks for nothing
FAVICON = "data:image/svg+xml,%3Csvg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 16 16'%3E%3C/svg%3E"
#: what ReDoc's script fetches from the internet, and the inline image served instead
REDOC_REMOTE = b"https://cdn.redoc.ly/redoc/logo-mini.svg"
BLANK_GIF = b"data:image/gif;base64,R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7"


def assets_dir() -> Path:
    """The folder of Swagger UI's and ReDoc's files (the ``fastapi-offline`` package's ``static``)."""
    spec = importlib.util.find_spec("fastapi_offline")
    if spec is None or spec.origin is None:  # a dependency of the package: only a broken install lacks it
        raise RuntimeError("fastapi-offline is not installed: pip install fastapi-offline")
    return Path(spec.origin).parent / "static"


@functools.lru_cache(maxsize=1)
def redoc_script() -> bytes:
    """ReDoc's standalone script with its one remote image replaced by an inline one."""
    return (assets_dir() / "redoc.standalone.js").read_bytes().replace(REDOC_REMOTE, BLANK_GIF)


def install(app: FastAPI, docs_url: str = "/docs", redoc_url: str = "/redoc") -> None:
    """Serve Swagger UI at ``docs_url`` and ReDoc at ``redoc_url`` with local assets."""

    async def redoc_js() -> Response:
        return Response(redoc_script(), media_type="text/javascript",
                        headers={"cache-control": "public, max-age=86400"})

    app.add_api_route(f"{ASSETS}/redoc.js", redoc_js, methods=["GET"], include_in_schema=False)
    app.mount(ASSETS, StaticFiles(directory=str(assets_dir())), name="docs-assets")
    openapi_url = app.openapi_url or "/openapi.json"
    oauth = app.swagger_ui_oauth2_redirect_url or "/docs/oauth2-redirect"

    async def swagger(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(openapi_url=f"{root}{openapi_url}", title=f"{app.title} - Swagger UI",
                                   oauth2_redirect_url=f"{root}{oauth}",
                                   swagger_js_url=f"{root}{ASSETS}/swagger-ui-bundle.js",
                                   swagger_css_url=f"{root}{ASSETS}/swagger-ui.css", swagger_favicon_url=FAVICON,
                                   swagger_ui_parameters={**(app.swagger_ui_parameters or {}), "validatorUrl": None})

    async def redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_redoc_html(openapi_url=f"{root}{openapi_url}", title=f"{app.title} - ReDoc",
                              redoc_js_url=f"{root}{ASSETS}/redoc.js", redoc_favicon_url=FAVICON,
                              with_google_fonts=False)

    app.add_api_route(docs_url, swagger, methods=["GET"], include_in_schema=False)
    app.add_api_route(oauth, redirect, methods=["GET"], include_in_schema=False)
    app.add_api_route(redoc_url, redoc, methods=["GET"], include_in_schema=False)
