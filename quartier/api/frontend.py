"""The front end Quartier serves itself, so that a browser asks no other server for anything:
the shipped scripts and styles under ``/static`` (:mod:`quartier.maps.assets`), the API
documentation (``/docs``, Swagger UI from ``/static``), and the Content-Security-Policy of these
HTML pages (only Quartier's own origin, plus the configured tile server for the maps)."""

from __future__ import annotations

from urllib.parse import urlsplit

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from quartier.maps.assets import STATIC_PATH, static_dir

DOCS_PATH = "/docs"
OAUTH2_REDIRECT_PATH = "/docs/oauth2-redirect"


def static_base(request: Request) -> str:
    """The URL path of the shipped files as the browser sees it (behind a proxy's root path)."""
    return str(request.scope.get("root_path", "")).rstrip("/") + STATIC_PATH


def content_security_policy(tile_url: str | None = None) -> str:
    """Scripts, styles, data and images from Quartier's origin only (inline scripts and styles,
    which folium and Swagger UI write, allowed); images also from the tile server, if any."""
    tiles = ""
    if tile_url:
        parts = urlsplit(tile_url.replace("{", "").replace("}", ""))
        tiles = f" {parts.scheme}://{parts.netloc}"
    return (
        "default-src 'none'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
        f"img-src 'self' data:{tiles}; connect-src 'self'; font-src 'self' data:; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'self'"
    )


def install(app: FastAPI) -> None:
    """Mount ``/static`` and serve ``/docs`` with the shipped Swagger UI (create the app with
    ``docs_url=None, redoc_url=None``)."""
    app.mount(STATIC_PATH, StaticFiles(directory=static_dir()), name="static")

    @app.get(DOCS_PATH, include_in_schema=False)
    def docs(request: Request) -> HTMLResponse:
        root = str(request.scope.get("root_path", "")).rstrip("/")
        base = static_base(request)
        page = get_swagger_ui_html(
            openapi_url=root + str(app.openapi_url),
            title=f"{app.title} – API",
            oauth2_redirect_url=root + OAUTH2_REDIRECT_PATH,
            init_oauth=app.swagger_ui_init_oauth,
            swagger_js_url=f"{base}/swagger-ui/swagger-ui-bundle.js",
            swagger_css_url=f"{base}/swagger-ui/swagger-ui.css",
            swagger_favicon_url=f"{base}/swagger-ui/favicon-32x32.png",
            # no badge from validator.swagger.io (Swagger UI's default validator)
            swagger_ui_parameters={"validatorUrl": None, **(app.swagger_ui_parameters or {})},
        )
        page.headers["Content-Security-Policy"] = content_security_policy()
        return page

    @app.get(OAUTH2_REDIRECT_PATH, include_in_schema=False)
    def docs_oauth2_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()
