"""An exception no handler takes still leaves as the 500 problem, through the other middleware."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import LiveServer

from qa.collection import Collection
from qa.embedding import Embedder
from qa.settings import Settings

ORIGIN = "http://widget.example"


@pytest.fixture
def failing(tmp_path: Path, embedder: Embedder) -> Iterator[httpx.Client]:
    """The real app, with CORS, plus one route that raises what no handler maps."""
    settings = Settings(index_dir=tmp_path / "index", ask_rate_limit=None, cors_origins=ORIGIN)
    Collection.open(settings, embedder, create=True).close()
    server = LiveServer(settings, embedder)

    def fail() -> None:
        raise RuntimeError("secret path /srv/internal")

    server.server.config.app.add_api_route("/fail", fail)
    with server, httpx.Client(base_url=server.url, timeout=30) as http:
        yield http


def test_an_unexpected_error_is_a_500_problem_a_browser_can_read(failing: httpx.Client
                                                                  ) -> None:
    response = failing.get("/fail", headers={"Origin": ORIGIN})
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["access-control-allow-origin"] == ORIGIN  # CORS saw the 500
    assert response.headers["x-content-type-options"] == "nosniff"
    body = response.json()
    assert body["title"] == "Internal error"
    assert body["detail"].startswith("RuntimeError")
    assert "secret" not in response.text  # the message may hold server internals
    assert failing.get("/healthz").status_code == 200  # and the server goes on
