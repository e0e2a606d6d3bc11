"""Who is asking, and what they may reach: the collection a route works on, resolved together
with the caller's key, as named `Annotated` dependencies.

Every route that touches a collection exists twice: as today (`/ask`, meaning `default`) and
under `/collections/{collection}/`. Both resolve through `scope_of`, so the rules are one:
the key is authenticated (keys in QA_API_KEYS are admin keys; others are looked up, hashed, in
the catalog on every request, so a revoke reaches every worker at once), the action is
authorized for that collection (qa/keys.py `authorize`), and a search key's fixed filter comes
along, to be ANDed with whatever the request asks.
"""

# No `from __future__ import annotations`: FastAPI reads these signatures at run time.

import hmac
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import Depends, Path, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from qa.catalog import Catalog
from qa.collection import Collection
from qa.errors import CollectionNotFound, Forbidden, Unauthorized
from qa.filters import Filter
from qa.keys import Action, ApiKey, KeyStore, authorize
from qa.types import DEFAULT_COLLECTION

bearer = HTTPBearer(auto_error=False, scheme_name="apiKey",
                    description="An API key (`qa keys create`, or one of QA_API_KEYS), as "
                    "`Authorization: Bearer <key>`.")
BearerKey = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]

# Keys from QA_API_KEYS: admin keys, as they were the only keys before scoped keys.
ENV_ADMIN = ApiKey(id="env", role="admin", collections=("*",), name="QA_API_KEYS")

CollectionName = Annotated[str, Path(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$", max_length=64,
                                     description="A collection's name.")]


@dataclass(frozen=True)
class Scope:
    """A request's collection, the key it came with, and the filter that key fixes."""

    name: str
    collection: Collection
    key: ApiKey | None
    filter: Filter | None

    @property
    def rate_identity(self) -> str | None:
        """Rate limits count per key where a key is given (else per client address)."""
        return f"key:{self.key.id}" if self.key is not None else None


def catalog_of(request: Request) -> Catalog:
    return request.app.state.catalog  # type: ignore[no-any-return]


def key_of(request: Request, credentials: HTTPAuthorizationCredentials | None
           ) -> ApiKey | None:
    """The caller's key: None without one; 401 for a key that is unknown, expired or revoked.
    Blocking: a key that is not one of QA_API_KEYS is looked up in the catalog."""
    if credentials is None:
        return None
    given = credentials.credentials.encode("utf-8")
    # Compare with every configured key in constant time, so timing tells nothing about them.
    configured = request.app.state.settings.api_keys
    if any([hmac.compare_digest(given, k.get_secret_value().encode("utf-8"))
            for k in configured]):
        return ENV_ADMIN
    store: KeyStore | None = request.app.state.keys
    try:
        if store is None:
            raise Unauthorized("this API key is not accepted: no keys are made on this server")
        return store.authenticate(credentials.credentials)
    except Unauthorized:
        if not _any_keys(request):
            return None  # a server without keys has nothing to check it against: anonymous
        raise


async def caller_key(request: Request, credentials: BearerKey) -> ApiKey | None:
    """`key_of` as a dependency. A request without a key (a public widget's) is answered here
    on the event loop: each worker-thread hop FastAPI makes for a sync dependency cost ~0.6 ms
    of an /ask on 2 cores (README "Performance")."""
    if credentials is None:
        return None
    return await run_in_threadpool(key_of, request, credentials)


CallerKey = Annotated[ApiKey | None, Depends(caller_key)]


async def caller_key_or_link(request: Request, credentials: BearerKey,
                             key: Annotated[str | None, Query(
                                 max_length=200, description="A search key, for links a "
                                 "browser opens (which cannot send a header): the widget's "
                                 "source links.")] = None) -> ApiKey | None:
    """As `caller_key`, also taking the key from `?key=`: a page opened from a link cannot
    send `Authorization`, and a widget's key is public by design (it is in the page)."""
    if credentials is None and key:
        credentials = HTTPAuthorizationCredentials(scheme="Bearer", credentials=key)
    return await caller_key(request, credentials)


LinkKey = Annotated[ApiKey | None, Depends(caller_key_or_link)]


def origin_of(request: Request) -> str | None:
    """The page a request comes from: `Origin`, else (a link opened from a page, which sends
    no Origin) the origin of `Referer`."""
    origin = request.headers.get("origin")
    if origin or not request.headers.get("referer"):
        return origin
    parts = urlsplit(request.headers["referer"])
    return f"{parts.scheme}://{parts.netloc}" if parts.scheme and parts.netloc else None


def scope_of(request: Request, name: str, key: ApiKey | None, action: Action) -> Scope:
    catalog = catalog_of(request)
    origin = origin_of(request)
    if action == "write" and key is None and not _any_keys(request):
        raise Forbidden(
            "writes over HTTP are disabled on this server: make a key with `qa keys create "
            "--role write` (or set QA_API_KEYS) and send `Authorization: Bearer <key>` "
            "(`qa index` changes a collection without a key)")
    try:
        info = catalog.info(name)
    except CollectionNotFound:
        # Only a caller who could reach such a collection learns that it does not exist.
        authorize(key, action, name, public=False, origin=origin)
        raise
    authorize(key, action, name, public=info.public, origin=origin)
    return Scope(name, catalog.get(name, info), key,
                 None if key is None else key.fixed_filter())


def _any_keys(request: Request) -> bool:
    store: KeyStore | None = request.app.state.keys
    return bool(request.app.state.settings.api_keys) or (store is not None and any(
        k.revoked_at is None for k in store.list()))


def scope_dependency(action: Action, *, named: bool, link: bool = False
                     ) -> Callable[..., Scope]:
    """The dependency resolving a route's `Scope`: from the `{collection}` path parameter when
    `named`, else `default`; with `link`, the key may also come as `?key=` (see LinkKey)."""
    Key = LinkKey if link else CallerKey
    if named:
        def named_scope(request: Request, collection: CollectionName,
                        key: Key) -> Scope:  # type: ignore[valid-type]
            return scope_of(request, collection, key, action)
        return named_scope

    def default_scope(request: Request, key: Key) -> Scope:  # type: ignore[valid-type]
        return scope_of(request, DEFAULT_COLLECTION, key, action)
    return default_scope


def collection_name(*, named: bool) -> Callable[..., Awaitable[str]]:
    """The dependency naming a route's collection without resolving it: the `{collection}`
    path parameter when `named`, else `default`. For a route that resolves its `Scope` with
    `scope_of` on the worker thread it runs on anyway (/ask: one hop instead of two)."""
    if named:
        async def path_name(collection: CollectionName) -> str:
            return collection
        return path_name

    async def default_name() -> str:
        return DEFAULT_COLLECTION
    return default_name


def require_admin(request: Request, key: CallerKey) -> ApiKey:
    authorize(key, "admin", None, public=False, origin=origin_of(request))
    assert key is not None
    return key


AdminKey = Annotated[ApiKey, Depends(require_admin)]
CatalogDep = Annotated[Catalog, Depends(catalog_of)]
