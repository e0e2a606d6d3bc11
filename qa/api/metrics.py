"""GET /metrics in Prometheus text format, the middleware that counts every response by route
template, and the shared folder that lets `--workers N` expose one set of counts (the metric
objects themselves: qa/telemetry.py)."""

# No `from __future__ import annotations`: FastAPI reads the route's signature at run time.

import ipaddress
import os
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from qa.api.deps import CallerKey, origin_of
from qa.catalog import Catalog
from qa.errors import Forbidden, QAError
from qa.keys import authorize
from qa.telemetry import MULTIPROCESS_DIR, gather, record_request

UNMATCHED = "<unmatched>"  # the route label of a request no route answers (a 404)

router = APIRouter()


@router.get("/metrics", tags=["service"], response_class=Response, responses={
    200: {"description": "Prometheus text format (OpenMetrics when the scraper asks for it)",
          "content": {"text/plain": {"schema": {"type": "string"}},
                      "application/openmetrics-text": {"schema": {"type": "string"}}}},
    403: {"description": "Not from this machine and no admin key"}})
def metrics(request: Request, key: CallerKey) -> Response:
    """Counts of requests, questions, feedback and timings, and each collection's size.

    They tell who uses the service how much, so only a scraper on this machine (127.0.0.1,
    ::1) or a caller with an admin key may read them.
    """
    if not from_this_machine(request):
        if key is None:
            raise Forbidden("GET /metrics answers only clients on this machine (127.0.0.1, "
                            "::1) or an admin key: `Authorization: Bearer <admin key>`")
        authorize(key, "admin", None, public=False, origin=origin_of(request))
    encode, content_type = choose_encoder(request.headers.get("accept", ""))
    body = encode(gather(CollectionSizes(request.app.state.catalog)))
    return Response(body, media_type=content_type)


def from_this_machine(request: Request) -> bool:
    """Is the client a loopback address? Behind a proxy, uvicorn puts the forwarded client
    here only for proxies in QA_FORWARDED_ALLOW_IPS; others show as the proxy itself."""
    host = request.client.host if request.client else ""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


class CollectionSizes:
    """qa_documents and qa_chunks of every collection, read from the catalog when scraped (so
    every worker reports the same numbers, which live in the index, not in a process)."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog

    def collect(self) -> Iterable[Metric]:
        documents = GaugeMetricFamily("qa_documents", "Documents in each collection.",
                                      labels=["collection"])
        chunks = GaugeMetricFamily("qa_chunks", "Chunks (passages searched) in each "
                                   "collection.", labels=["collection"])
        for name in self.catalog.names():
            with suppress(QAError):  # deleted since names() was read, or its index is broken
                count_documents, count_chunks = self.catalog.get(name).counts()
                documents.add_metric([name], count_documents)
                chunks.add_metric([name], count_chunks)
        return [documents, chunks]


class RequestCounter:
    """Counts every response in qa_http_requests_total by method, route template and status.

    The label is the route's template (`/collections/{collection}/ask`), never the raw path,
    so a client cannot make label values (and memory) grow. It sits inside HeadMiddleware,
    which hands the app a copy of the request, so HEAD counts as GET.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._by_handler: dict[int, list[Any]] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500  # if the app fails before it answers

        async def send_counted(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_counted)
        finally:
            record_request(scope["method"], self.template(scope), status)

    def template(self, scope: Scope) -> str:
        """The template of the route that answered, found by what the router left in the
        scope (the route object, or for plain routes the endpoint): no path is matched again,
        except among routes that share a handler. Neither left means no route answered."""
        if self._by_handler is None:
            self._by_handler = handlers_of(scope["app"].routes)
        candidates = (self._by_handler.get(id(scope.get("route")))
                      or self._by_handler.get(id(scope.get("endpoint"))) or [])
        if len(candidates) <= 1:
            return str(candidates[0].path_format) if candidates else UNMATCHED
        partial = None
        for route in candidates:
            match, _ = route.matches(scope)
            if match == Match.FULL:
                return str(route.path_format)
            if match == Match.PARTIAL and partial is None:
                partial = route  # the path is known, the method is not: a 405
        return UNMATCHED if partial is None else str(partial.path_format)


def handlers_of(routes: Sequence[BaseRoute]) -> dict[int, list[Any]]:
    """Each route (with its full template) under the id of its route object and of its
    endpoint, the two things a router leaves in the scope of the request it hands over."""
    try:
        from fastapi.routing import iter_route_contexts
    except ImportError:  # FastAPI before included routers: routes are copied, prefix and all
        effective: list[Any] = list(routes)
    else:
        # An included route keeps its own (unprefixed) path; its context has the full one.
        effective = list(iter_route_contexts(routes))
    found: dict[int, list[Any]] = {}
    for route in effective:
        original = getattr(route, "original_route", route)
        for handler in {id(original), id(getattr(route, "endpoint", None) or original)}:
            found.setdefault(handler, []).append(route)
    return found


@contextmanager
def shared_metrics() -> Iterator[None]:
    """A fresh private folder (0700) where the workers started inside keep their counts, named
    by PROMETHEUS_MULTIPROC_DIR, which they inherit; removed at exit with the counts."""
    previous = os.environ.get(MULTIPROCESS_DIR)
    with tempfile.TemporaryDirectory(prefix="qa-metrics-") as directory:
        os.environ[MULTIPROCESS_DIR] = directory
        try:
            yield
        finally:
            if previous is None:
                os.environ.pop(MULTIPROCESS_DIR, None)
            else:
                os.environ[MULTIPROCESS_DIR] = previous
