"""What a request meets around the routes: body limits, the /ask rate limit, CORS, HEAD, and
the header every response carries (keys and scopes: qa/api/deps.py)."""

import math
import re
import time
from typing import Any

import numpy as np
from fastapi import Request
from starlette.datastructures import Headers, MutableHeaders
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from qa.api.problems import error_response, problem
from qa.errors import InvalidInput, PayloadTooLarge, RateLimited
from qa.loaders import MAX_METADATA_DEPTH

# Deepest JSON body accepted: room for the deepest valid one (a batch item's metadata sits two
# levels down) with slack, far below where `json.loads` or pydantic would recurse too deep.
MAX_BODY_DEPTH = 2 * MAX_METADATA_DEPTH
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.S)
_NOT_A_BRACKET = bytes(b for b in range(256) if b not in b"[]{}")
NOSNIFF = (b"x-content-type-options", b"nosniff")

class AskRateLimit:
    """The /ask rate limit, per key where one is given, else per client address, in this
    process's memory.

    `limits` does the moving-window bookkeeping (and its reset time gives Retry-After); each
    worker process counts separately, so N workers admit up to N times the rate.
    """

    def __init__(self, rate: str | None) -> None:
        self._limiter: Any = None
        if rate:
            from limits import parse
            from limits.storage import MemoryStorage
            from limits.strategies import MovingWindowRateLimiter

            self._item = parse(rate)
            self._limiter = MovingWindowRateLimiter(MemoryStorage())

    def check(self, request: Request, identity: str | None = None) -> None:
        """Count one question for `identity` (a key), else for the client's address."""
        if self._limiter is None:
            return
        client = identity or (request.client.host if request.client else "unknown")
        if self._limiter.hit(self._item, "ask", client):
            return
        reset = self._limiter.get_window_stats(self._item, "ask", client).reset_time
        retry_after = max(1, math.ceil(reset - time.time()))
        who = "this key" if identity else client
        raise RateLimited(f"more than {self._item} questions from {who}; "
                          f"retry in {retry_after} s (QA_ASK_RATE_LIMIT)", retry_after)


def json_depth(raw: bytes) -> int:
    """How deep arrays and objects nest in `raw`, counted without parsing (nothing recurses):
    drop the strings, keep the brackets, and take the running count's peak."""
    brackets = _JSON_STRING.sub(b"", raw).translate(None, _NOT_A_BRACKET)
    codes = np.frombuffer(brackets, dtype=np.uint8)
    steps = ((codes == ord("[")) | (codes == ord("{"))).astype(np.int8) * 2 - 1
    return int(np.cumsum(steps, dtype=np.int32).max(initial=0))


def may_nest_deeper(raw: bytes, depth: int) -> bool:
    """Could `raw` nest deeper than `depth`? Never with at most `depth` opening brackets (the
    peak count cannot exceed them), which two C-speed counts tell, 40 µs sooner than
    `json_depth` on a short /ask body."""
    return raw.count(b"[") + raw.count(b"{") > depth


def is_json(content_type: bytes) -> bool:
    value = content_type.split(b";")[0].strip().lower()
    return value == b"application/json" or value.endswith(b"+json")


class BodyLimitMiddleware:
    """Refuses a body over `max_bytes` (413) before the app reads any of it, and a JSON body
    nested deeper than MAX_BODY_DEPTH (422) before anything parses it.

    It must answer itself: an error raised here would miss the app's exception handlers, and
    one raised while FastAPI reads a body becomes a 400. So it renders the 413 itself, with the
    app's one renderer.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        declared = content_type = b""
        for name, value in scope["headers"]:  # the last of a repeated header counts
            if name == b"content-length":
                declared = value
            elif name == b"content-type":
                content_type = value
        if declared.isdigit() and int(declared) > self.max_bytes:
            await error_response(self.too_big())(scope, receive, send)
            return
        # No (or an honest) Content-Length: read up to the limit, then replay to the app.
        buffered: list[Message] = []
        size = 0
        while True:
            message = await receive()
            buffered.append(message)
            if message["type"] != "http.request":
                break
            size += len(message.get("body", b""))
            if size > self.max_bytes:
                await error_response(self.too_big())(scope, receive, send)
                return
            if not message.get("more_body", False):
                break
        if is_json(content_type):
            raw = b"".join(m.get("body", b"") for m in buffered)
            depth = json_depth(raw) if may_nest_deeper(raw, MAX_BODY_DEPTH) else 0
            if depth > MAX_BODY_DEPTH:
                await error_response(InvalidInput(
                    f"JSON body is nested {depth} levels deep; at most {MAX_BODY_DEPTH} "
                    f"(metadata: {MAX_METADATA_DEPTH})"))(scope, receive, send)
                return
        pending = iter(buffered)

        async def replay() -> Message:
            return next(pending, None) or await receive()

        await self.app(scope, replay, send)

    def too_big(self) -> PayloadTooLarge:
        return PayloadTooLarge(
            f"request body is over the {self.max_bytes}-byte limit (QA_MAX_BODY_BYTES)")


class ProblemCORSMiddleware(CORSMiddleware):
    """Starlette's CORS, with a refused preflight answered as problem+json like any error."""

    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code != 400:
            return response
        refused = problem(400, "CORS preflight refused",
                          f"{bytes(response.body).decode()}; the origins allowed to call this "
                          "API from a browser are set by QA_CORS_ORIGINS")
        for name, value in response.headers.items():
            if name not in ("content-type", "content-length"):
                refused.headers[name] = value
        return refused


class HeadMiddleware:
    """HEAD wherever GET is answered: GET's status and headers, no body (FastAPI routes answer
    only the methods they declare, so HEAD was a 405)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return

        async def send_without_body(message: Message) -> None:
            if message["type"] == "http.response.body":
                if message.get("more_body", False):
                    return
                message = {"type": "http.response.body", "body": b"", "more_body": False}
            await send(message)

        await self.app({**scope, "method": "GET"}, receive, send_without_body)


class NoSniffMiddleware:
    """Every response says `X-Content-Type-Options: nosniff`, so a browser takes a JSON or text
    answer for what its Content-Type says and never guesses it to be HTML or script."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_marked(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = message["headers"]
                if any(name == NOSNIFF[0] for name, _ in headers):
                    MutableHeaders(scope=message)["X-Content-Type-Options"] = "nosniff"
                else:  # the usual case, as MutableHeaders would, without building one (4 µs)
                    message["headers"] = [*headers, NOSNIFF]
            await send(message)

        await self.app(scope, receive, send_marked)
