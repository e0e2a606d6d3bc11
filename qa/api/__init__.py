"""The HTTP API: `create_app(settings)` assembles the routes, guards and error handlers."""

# No `from __future__ import annotations`: FastAPI reads `lifespan`'s signature.

import json
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from pydantic import SecretStr

from qa import __version__
from qa.api.admin import router as admin_router
from qa.api.analytics import router as analytics_router
from qa.api.documents import documents_router
from qa.api.feedback import feedback_router, open_query_log
from qa.api.guards import (
    BodyLimitMiddleware,
    HeadMiddleware,
    NoSniffMiddleware,
    ProblemCORSMiddleware,
)
from qa.api.mcp import McpEndpoint
from qa.api.metrics import RequestCounter, shared_metrics
from qa.api.metrics import router as metrics_router
from qa.api.pages import router as pages_router
from qa.api.pages import source_router
from qa.api.problems import declare_problem_responses, install_error_handlers
from qa.api.search import search_router
from qa.catalog import CATALOG_FILE, Catalog
from qa.crawl import CrawlSchedule
from qa.embedding import Embedder
from qa.keys import KeyStore
from qa.settings import Settings
from qa.types import DEFAULT_COLLECTION
from qa.watch import FolderWatcher

__all__ = ["app_from_env", "create_app", "hand_over_settings", "run_server", "server_options"]

# Where `run_server` leaves the settings for its worker processes, whole and serialized.
SETTINGS_VARIABLE = "_QA_WORKER_SETTINGS"  # not a setting: `run_server` sets it


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Load the model and open the index when the server starts, never at import."""
    settings: Settings = app.state.settings
    model = app.state.embedder or Embedder.from_settings(settings)
    catalog = Catalog(settings, model)
    app.state.catalog = catalog
    app.state.keys = open_keys(settings)
    app.state.query_log = None
    app.state.background = []  # threads that keep collections fresh (watch): stopped first
    try:
        # `default` opens now, as before collections: a missing or mismatched index stops the
        # server at start, not at its first question. Others open on first use.
        catalog.get(DEFAULT_COLLECTION)
        app.state.query_log = open_query_log(settings)
        if settings.watch_paths:  # `qa serve --watch`: writes on its own thread, as PUT does
            app.state.background.append(FolderWatcher(
                lambda: catalog.get(DEFAULT_COLLECTION), settings.watch_paths,
                log=logging.getLogger("uvicorn.error").info).start())
        if settings.crawl_every_s:  # `qa serve --crawl-every`: one crawl at a time, own thread
            app.state.background.append(CrawlSchedule(
                settings.crawl_every_s, settings.crawl_urls).start(catalog))
        async with app.state.mcp.running():  # /mcp's transport lives as long as the app
            yield
    finally:
        for runner in app.state.background:
            runner.stop()
        if app.state.query_log is not None:
            app.state.query_log.close()
        catalog.close()
        if app.state.keys is not None:
            app.state.keys.close()


def open_keys(settings: Settings) -> KeyStore | None:
    """The keys made by `qa keys` or POST /keys (in the catalog file); None on a read-only
    index that has none."""
    path = settings.index_dir / CATALOG_FILE
    if settings.read_only and not path.exists():
        return None
    return KeyStore(path, read_only=settings.read_only)


def create_app(settings: Settings | None = None, *, embedder: Embedder | None = None) -> FastAPI:
    """Build the app; `embedder` lets tests share one loaded model."""
    settings = settings or Settings()
    app = FastAPI(
        title="qa",
        version=__version__,
        description="Answers questions over your documents with cited passages.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.embedder = embedder
    install_error_handlers(app)  # first: its failure net must be the innermost middleware
    declare_problem_responses(app)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    if settings.cors_origins:
        app.add_middleware(
            ProblemCORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "PUT", "DELETE"],
            allow_headers=["Content-Type", "Authorization"],
        )
    app.add_middleware(RequestCounter)  # inside HeadMiddleware, which copies the scope
    app.add_middleware(HeadMiddleware)
    app.add_middleware(NoSniffMiddleware)  # last added, outermost: on every response
    # Every collection route twice: as before collections (meaning `default`), and by name.
    named = "/collections/{collection}"
    app.include_router(search_router(settings))
    app.include_router(search_router(settings, named=True), prefix=named)
    app.include_router(pages_router)
    app.include_router(source_router())
    app.include_router(source_router(named=True), prefix=named)
    app.include_router(documents_router(settings))
    app.include_router(documents_router(settings, named=True), prefix=named)
    app.include_router(admin_router)
    app.include_router(metrics_router)
    app.include_router(analytics_router)
    app.include_router(feedback_router(settings))
    app.state.mcp = McpEndpoint(settings)  # MCP for agents, with /ask's keys and limits
    app.add_route("/mcp", app.state.mcp, include_in_schema=False)
    return app


def app_from_env() -> FastAPI:
    """Factory for `uvicorn --factory`: the settings `run_server` handed over, else from QA_*."""
    handed_over = os.environ.get(SETTINGS_VARIABLE)
    if handed_over:
        # `model_validate_json` skips the environment: these settings are already complete.
        return create_app(Settings.model_validate_json(handed_over))
    return create_app(Settings())


def server_options(settings: Settings) -> dict[str, Any]:
    """uvicorn's options for these settings.

    uvicorn believes X-Forwarded-For from 127.0.0.1 unless told otherwise, so any local client
    (or a proxy that passes the header through) could pick the address the rate limit counts.
    Forwarded headers are read only from QA_FORWARDED_ALLOW_IPS.
    """
    trusted = settings.forwarded_allow_ips
    return {"host": settings.host, "port": settings.port, "log_level": "info",
            "proxy_headers": bool(trusted), "forwarded_allow_ips": trusted or None}


def run_server(settings: Settings, *, workers: int = 1) -> None:
    """Serve the app on `settings.host:port`, in this process or in `workers` processes."""
    import uvicorn

    if workers == 1:
        uvicorn.run(create_app(settings), **server_options(settings))
        return
    hand_over_settings(settings)
    with shared_metrics():  # one set of counts for every worker, gone when they are
        uvicorn.run("qa.api:app_from_env", factory=True, workers=workers,
                    **server_options(settings))


def hand_over_settings(settings: Settings) -> None:
    """Leave `settings` for the worker processes' `app_from_env`, whole (keys included).

    Workers are fresh processes that import the app by name and inherit only the environment.
    """

    def plain(value: object) -> str:
        return value.get_secret_value() if isinstance(value, SecretStr) else str(value)

    os.environ[SETTINGS_VARIABLE] = json.dumps(settings.model_dump(), default=plain)
