"""Running the server's collections and keys over HTTP: GET/POST /collections,
DELETE /collections/{name}, and POST/GET /keys, DELETE /keys/{id} (admin keys only, except the
list of collections, which shows each caller what it may ask)."""

# No `from __future__ import annotations`: FastAPI reads these signatures at run time.

from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field

from qa.api.deps import AdminKey, CallerKey, CatalogDep, CollectionName
from qa.api.problems import PROBLEM_RESPONSES
from qa.catalog import Catalog
from qa.errors import Forbidden
from qa.keys import ApiKey, KeyStore

MAX_LIST = 100


class CollectionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$", max_length=64,
                      description="a-z, 0-9, '_' and '-', starting with a letter or digit.")
    public: bool = Field(False, description="Whether asking needs no key (private: a search "
                         "key for it).")


class CollectionOut(BaseModel):
    name: str
    documents: int
    chunks: int
    public: bool


class CollectionList(BaseModel):
    collections: list[CollectionOut]


class KeyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["admin", "write", "search"]
    collections: list[str] = Field(default_factory=list, max_length=MAX_LIST,
                                   description="Names, or '*' for all (search and write keys "
                                   "need at least one).")
    name: str = Field("", max_length=200, description="A label for people.")
    filter: dict[str, Any] | None = Field(None, description="Search keys: a filter ANDed with "
                                          "every question's, which it cannot widen.")
    origins: list[str] = Field(default_factory=list, max_length=50,
                               description="Browser Origins the key works from, e.g. "
                               "https://docs.example.com (none: any).")
    expires_at: datetime | None = Field(None, description="ISO 8601; none: never.")


class KeyOut(BaseModel):
    id: str
    role: str
    collections: list[str]
    name: str
    filter: dict[str, Any] | None = None
    origins: list[str]
    expires_at: datetime | None = None
    created_at: datetime | None = None
    revoked_at: datetime | None = None


class KeyCreated(BaseModel):
    key: KeyOut
    secret: str = Field(description="Shown this once: only its hash is stored.")


class KeyList(BaseModel):
    keys: list[KeyOut]


def key_out(key: ApiKey) -> KeyOut:
    return KeyOut.model_validate(key.to_dict())


def _keys(request: Request) -> KeyStore:
    store: KeyStore | None = request.app.state.keys
    if store is None:
        raise Forbidden("keys cannot be made on this server: its index is read-only")
    return store


def _described(catalog: Catalog, name: str) -> CollectionOut:
    documents, chunks = catalog.get(name).counts()
    return CollectionOut(name=name, documents=documents, chunks=chunks,
                         public=catalog.info(name).public)


def visible_to(key: ApiKey | None, name: str, public: bool) -> bool:
    if key is None:
        return public
    # A key given is a key enforced: it reaches its own collections, public or not, only.
    return key.role == "admin" or key.reaches(name)


router = APIRouter(responses=PROBLEM_RESPONSES)


@router.get("/collections", response_model=CollectionList, tags=["collections"])
def list_collections(catalog: CatalogDep, key: CallerKey) -> CollectionList:
    """The collections this caller may ask: public ones, and those its key names."""
    shown = [name for name in catalog.names()
             if visible_to(key, name, catalog.info(name).public)]
    return CollectionList(collections=[_described(catalog, name) for name in shown])


@router.post("/collections", status_code=201, response_model=CollectionOut,
             tags=["collections"], responses={409: {"description": "The name is taken"}})
async def create_collection(body: CollectionIn, catalog: CatalogDep, _: AdminKey
                            ) -> CollectionOut:
    await run_in_threadpool(catalog.create_collection, body.name, public=body.public)
    return CollectionOut(name=body.name, documents=0, chunks=0, public=body.public)


@router.delete("/collections/{collection}", status_code=204, response_class=Response,
               tags=["collections"], responses={404: {"description": "Unknown collection"}})
async def delete_collection(collection: CollectionName, catalog: CatalogDep, _: AdminKey
                            ) -> Response:
    await run_in_threadpool(catalog.delete_collection, collection)
    return Response(status_code=204)


@router.post("/keys", status_code=201, response_model=KeyCreated, tags=["keys"])
def create_key(body: KeyIn, request: Request, _: AdminKey) -> KeyCreated:
    key, secret = _keys(request).create(
        body.role, tuple(body.collections), name=body.name, filter=body.filter,
        origins=tuple(body.origins), expires_at=body.expires_at)
    return KeyCreated(key=key_out(key), secret=secret)


@router.get("/keys", response_model=KeyList, tags=["keys"])
def list_keys(request: Request, _: AdminKey) -> KeyList:
    return KeyList(keys=[key_out(k) for k in _keys(request).list()])


@router.delete("/keys/{key_id}", status_code=204, response_class=Response, tags=["keys"],
               responses={404: {"description": "Unknown key"}})
def revoke_key(key_id: str, request: Request, _: AdminKey) -> Response:
    _keys(request).revoke(key_id[:100])
    return Response(status_code=204)
