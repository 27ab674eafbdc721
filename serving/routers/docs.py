"""The API's docs pages, Swagger UI at /api-docs and ReDoc at /api-docs/redoc, with their
JavaScript and CSS served by the API itself (from the fastapi-offline package's copy of
swagger-ui-dist and redoc) under /api-docs/static/: they work offline and behind a proxy that
forwards only /api-docs, and no page of the API loads anything from another host.
"""

from __future__ import annotations

from importlib.resources import files

from fastapi import APIRouter, FastAPI, Request
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

DOCS_URL = "/api-docs"
REDOC_URL = f"{DOCS_URL}/redoc"
OAUTH2_REDIRECT_URL = f"{DOCS_URL}/oauth2-redirect"
STATIC_URL = f"{DOCS_URL}/static"
STATIC_DIR = files("fastapi_offline") / "static"
ASSETS = ("swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js", "favicon.png")
# Swagger UI would otherwise send the schema to an online validator for its badge
SWAGGER_PARAMETERS = {"validatorUrl": None, "persistAuthorization": False}

router = APIRouter(include_in_schema=False)


def _asset(request: Request, name: str) -> str:
    return f"{request.scope.get('root_path', '')}{STATIC_URL}/{name}"


@router.get(DOCS_URL)
async def swagger_ui(request: Request) -> HTMLResponse:
    app = request.app
    return get_swagger_ui_html(
        openapi_url=f"{request.scope.get('root_path', '')}{app.openapi_url}",
        title=f"{app.title} - Swagger UI",
        oauth2_redirect_url=OAUTH2_REDIRECT_URL,
        swagger_js_url=_asset(request, "swagger-ui-bundle.js"),
        swagger_css_url=_asset(request, "swagger-ui.css"),
        swagger_favicon_url=_asset(request, "favicon.png"),
        swagger_ui_parameters=SWAGGER_PARAMETERS,
    )


@router.get(OAUTH2_REDIRECT_URL)
async def swagger_ui_redirect() -> HTMLResponse:
    return get_swagger_ui_oauth2_redirect_html()


@router.get(REDOC_URL)
async def redoc(request: Request) -> HTMLResponse:
    app = request.app
    return get_redoc_html(
        openapi_url=f"{request.scope.get('root_path', '')}{app.openapi_url}",
        title=f"{app.title} - ReDoc",
        redoc_js_url=_asset(request, "redoc.standalone.js"),
        redoc_favicon_url=_asset(request, "favicon.png"),
        with_google_fonts=False,
    )


def install_docs(app: FastAPI) -> None:
    """The docs pages and their assets (create the app with docs_url=None, redoc_url=None)."""
    app.mount(STATIC_URL, StaticFiles(directory=str(STATIC_DIR)), name="api-docs-static")
    app.include_router(router)
