"""/mcp: the MCP server (qa/mcp.py) over streamable HTTP, reaching collections as /ask does.

Each call authenticates the request's `Authorization: Bearer <key>` and authorizes it for the
collection with the same `scope_of` as /ask (a search key for A cannot search B, its fixed
filter applies, a private collection needs a key), and a question counts against the ask
rate limit. The transport is stateless, answering in JSON: no session lives in one process,
so any worker of `qa serve --workers N` can answer any request.
"""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio.to_thread
from fastapi.security.utils import get_authorization_scheme_param
from mcp.server.transport_security import TransportSecuritySettings
from starlette.requests import Request
from starlette.types import Receive, Scope, Send

from qa.api.deps import catalog_of, key_of, origin_of, scope_of
from qa.api.guards import AskRateLimit
from qa.api.problems import error_response
from qa.errors import CollectionNotFound, Forbidden, QAError, Unauthorized
from qa.keys import ApiKey, authorize
from qa.mcp import Reach, build_server
from qa.settings import Settings
from qa.types import DEFAULT_COLLECTION

__all__ = ["McpEndpoint"]

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def request_key(request: Request) -> ApiKey | None:
    """The key of `Authorization: Bearer <key>`, checked as for /ask (401 if not accepted)."""
    from fastapi.security import HTTPAuthorizationCredentials

    scheme, secret = get_authorization_scheme_param(request.headers.get("authorization"))
    given = (HTTPAuthorizationCredentials(scheme=scheme, credentials=secret)
             if scheme.lower() == "bearer" and secret else None)
    return key_of(request, given)


class HttpGate:
    """The request's key, authorized per collection by /ask's rules."""

    default = DEFAULT_COLLECTION

    def __init__(self, settings: Settings) -> None:
        self.rate_limit = AskRateLimit(settings.ask_rate_limit)

    def reach(self, request: object | None, name: str, *, asking: bool) -> Reach:
        assert isinstance(request, Request), "over HTTP every call comes with its request"
        scope = scope_of(request, name, request_key(request), "search")
        if asking:
            self.rate_limit.check(request, scope.rate_identity)
        return Reach(scope.name, scope.collection, scope.filter)

    def reachable(self, request: object | None) -> list[Reach]:
        assert isinstance(request, Request), "over HTTP every call comes with its request"
        catalog, key, origin = catalog_of(request), request_key(request), origin_of(request)
        found = []
        for name in catalog.names():
            try:
                info = catalog.info(name)
                authorize(key, "search", name, public=info.public, origin=origin)
            except (Unauthorized, Forbidden, CollectionNotFound):  # or deleted meanwhile
                continue
            found.append(Reach(name, catalog.get(name, info),
                               None if key is None else key.fixed_filter(), info.public))
        return found


def transport_security(settings: Settings) -> TransportSecuritySettings:
    """The SDK's DNS-rebinding protection where it fits: bound to loopback, only local Host
    names, and Origins that are local or in QA_CORS_ORIGINS. Behind a proxy
    (QA_FORWARDED_ALLOW_IPS) or bound to a public address, Host is a public name the server
    cannot know, so it is off, as for every other route."""
    if settings.host not in LOOPBACK or settings.forwarded_allow_ips:
        return TransportSecuritySettings(enable_dns_rebinding_protection=False)
    local = ("127.0.0.1:*", "localhost:*", "[::1]:*")
    return TransportSecuritySettings(
        allowed_hosts=list(local),
        allowed_origins=[f"http://{host}" for host in local] + list(settings.cors_origins))


class McpEndpoint:
    """The ASGI app at /mcp. A key that is not accepted is refused here, as a 401
    problem+json, before the MCP transport reads the request."""

    def __init__(self, settings: Settings) -> None:
        self.server = build_server(settings, HttpGate(settings))
        self.security = transport_security(settings)

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Serve while the app runs: a session manager runs once, so each lifespan makes its
        own."""
        self.server.streamable_http_app(stateless_http=True, json_response=True,
                                        transport_security=self.security)
        async with self.server.session_manager.run():
            yield

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await anyio.to_thread.run_sync(request_key, Request(scope))
        except QAError as exc:
            await error_response(exc)(scope, receive, send)
            return
        await self.server.session_manager.asgi_app(scope, receive, send)
