"""API keys with a role and a scope, stored hashed, and the one rule of who may do what.

A secret reads `qa_<id>_<random>`: the public id (shown in lists, used to revoke) is read back
from it, so checking a key is one primary-key lookup and one constant-time digest comparison.
Only the SHA-256 digest of a secret is stored. A slow KDF (bcrypt, scrypt, argon2) exists to
make guessing a *human* password expensive; these secrets are 256 random bits, out of reach of
any guessing, so a plain hash is as safe and keeps the check well under a millisecond (GitHub
and Stripe store their tokens the same way).

Every `authenticate` reads the table afresh, so a revoke or an expiry made by one process (the
CLI, another worker) holds in all of them from the next request on.
"""

from __future__ import annotations

import builtins
import functools
import hashlib
import hmac
import json
import re
import secrets
import sqlite3
import string
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, cast, get_args
from urllib.parse import urlsplit

from qa.errors import Forbidden, InvalidInput, KeyNotFound, ReadOnlyIndex, Unauthorized
from qa.filters import Filter, parse_filter
from qa.types import COLLECTION_NAME

Role = Literal["admin", "write", "search"]
Action = Literal["search", "write", "admin"]
ROLES: tuple[Role, ...] = get_args(Role)
ALL_COLLECTIONS = "*"
MAX_NAME_CHARS = 200
MAX_COLLECTIONS = 100
MAX_ORIGINS = 50
MAX_FILTER_CHARS = 10_000  # as JSON: a fixed filter is a few conditions, not a list of ids
BUSY_TIMEOUT_S = 30.0  # how long a write waits for another process's write to the same file

# The id is lower-case letters and digits, so it never holds the `_` that ends it.
_ID_ALPHABET = string.ascii_lowercase + string.digits
_ID_CHARS = 12
_SECRET = re.compile(rf"qa_([a-z0-9]{{{_ID_CHARS}}})_([A-Za-z0-9_-]{{43}})")
_DEFAULT_PORTS = {"http": 80, "https": 443}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS api_keys (
    id TEXT PRIMARY KEY,
    digest BLOB NOT NULL,           -- SHA-256 of the secret; the secret itself is never stored
    role TEXT NOT NULL,
    collections TEXT NOT NULL,      -- JSON list of names, or ["*"]
    name TEXT NOT NULL DEFAULT '',
    filter TEXT,                    -- JSON object, search keys only
    origins TEXT NOT NULL DEFAULT '[]',
    expires_at TEXT,                -- ISO 8601, UTC
    created_at TEXT NOT NULL,
    revoked_at TEXT
) WITHOUT ROWID;
"""
_COLUMNS = "id, role, collections, name, filter, origins, expires_at, created_at, revoked_at"


@dataclass(frozen=True)
class ApiKey:
    """What a key may do; validated and normalized on construction, never holding the secret."""

    id: str
    role: Role
    collections: tuple[str, ...]
    name: str = ""
    filter: Mapping[str, Any] | None = field(default=None, hash=False)
    origins: tuple[str, ...] = ()
    expires_at: datetime | None = None
    created_at: datetime | None = None
    revoked_at: datetime | None = None

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise InvalidInput(f"role: must be one of {', '.join(ROLES)}, not {self.role!r}")
        if not isinstance(self.name, str) or len(self.name) > MAX_NAME_CHARS or any(
                not ch.isprintable() for ch in self.name):
            raise InvalidInput(f"name: at most {MAX_NAME_CHARS} printable characters")
        set_ = object.__setattr__  # a frozen dataclass normalizes its own fields this way
        set_(self, "collections", _collections(self.role, self.collections))
        set_(self, "filter", _filter(self.role, self.filter))
        set_(self, "origins", _origins(self.origins))
        for name in ("expires_at", "created_at", "revoked_at"):
            set_(self, name, _utc(name, getattr(self, name)))

    def reaches(self, collection: str) -> bool:
        """Whether this key's collections include `collection`."""
        return ALL_COLLECTIONS in self.collections or collection in self.collections

    def fixed_filter(self) -> Filter | None:
        """The filter a search key ANDs onto every question (`all_of(key, request)`)."""
        return None if self.filter is None else _parsed_filter(_canonical(self.filter))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: never the secret nor its digest (neither is held here)."""
        return {
            "id": self.id, "role": self.role, "collections": list(self.collections),
            "name": self.name, "filter": _copy_json(self.filter), "origins": list(self.origins),
            "expires_at": _iso(self.expires_at), "created_at": _iso(self.created_at),
            "revoked_at": _iso(self.revoked_at),
        }


class KeyStore:
    """The `api_keys` table of one SQLite file (shared with the catalog's own table).

    One connection per store, guarded by a lock (FastAPI calls from threads); WAL so that a
    reader in one process never waits on a writer in another.
    """

    def __init__(self, path: Path, *, read_only: bool = False) -> None:
        self.path = path
        self.read_only = read_only
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        if read_only:
            return  # connected on first use: the file may not exist (then there are no keys)
        self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None,
                                     timeout=BUSY_TIMEOUT_S)
        with self._lock:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def create(self, role: Role, collections: Iterable[str] = (), *, name: str = "",
               filter: Mapping[str, Any] | None = None, origins: Iterable[str] = (),
               expires_at: datetime | None = None) -> tuple[ApiKey, str]:
        """A new key and its secret, which is returned this once and stored only as a digest."""
        now = _now()
        if isinstance(collections, str) or isinstance(origins, str):
            raise InvalidInput("collections and origins: give a list, not a single string")
        key = ApiKey(id="", role=role, collections=tuple(collections), name=name, filter=filter,
                     origins=tuple(origins), expires_at=expires_at, created_at=now)
        if key.expires_at is not None and key.expires_at <= now:
            raise InvalidInput(f"expires_at: {_iso(key.expires_at)} is not in the future")
        conn = self._writable()
        for _ in range(3):  # a clash of 62-bit random ids is all but impossible; retry anyway
            key_id = "".join(secrets.choice(_ID_ALPHABET) for _ in range(_ID_CHARS))
            secret = f"qa_{key_id}_{secrets.token_urlsafe(32)}"
            try:
                with self._lock:
                    conn.execute(
                        f"INSERT INTO api_keys (digest, {_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?)",
                        (_digest(secret), key_id, key.role, json.dumps(list(key.collections)),
                         key.name, None if key.filter is None else json.dumps(key.filter),
                         json.dumps(list(key.origins)), _stamp(key.expires_at), _stamp(now), None))
            except sqlite3.IntegrityError:
                continue
            return replace(key, id=key_id), secret
        raise RuntimeError("could not draw an unused key id")

    def list(self) -> builtins.list[ApiKey]:
        """Every key, revoked and expired ones included, oldest first."""
        return [_key_of(row) for row in self._rows(
            f"SELECT {_COLUMNS} FROM api_keys ORDER BY created_at, id", ())]

    def get(self, key_id: str) -> ApiKey:
        rows = self._rows(f"SELECT {_COLUMNS} FROM api_keys WHERE id = ?", (key_id,))
        if not rows:
            raise KeyNotFound(f"no API key with id {key_id!r}; `GET /keys` or `qa keys list` "
                              "lists them")
        return _key_of(rows[0])

    def revoke(self, key_id: str) -> ApiKey:
        """Revoke a key from now on; revoking it again keeps the first time."""
        conn = self._writable()
        with self._lock:
            conn.execute("UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
                         (_stamp(_now()), key_id))
        return self.get(key_id)

    def authenticate(self, secret: str, now: datetime | None = None) -> ApiKey:
        """The key a secret belongs to, if it is known, unrevoked and unexpired (else 401)."""
        match = _SECRET.fullmatch(secret.strip()) if isinstance(secret, str) else None
        if match is None:
            raise Unauthorized("this is not a qa API key (they read `qa_<id>_<secret>`); send "
                               "`Authorization: Bearer <key>` with a key from `qa keys create`")
        key_id = match.group(1)
        rows = self._rows(f"SELECT digest, {_COLUMNS} FROM api_keys WHERE id = ?", (key_id,))
        # The digest is compared even for an unknown id, so the time taken says nothing.
        stored = rows[0][0] if rows else b"\0" * 32
        if not hmac.compare_digest(stored, _digest(secret.strip())) or not rows:
            raise Unauthorized("this API key is not known here (mistyped, or made for another "
                               "server); ask an admin for a key")
        key = _key_of(rows[0][1:])
        if key.revoked_at is not None:
            raise Unauthorized(f"API key {key.id} was revoked at {_iso(key.revoked_at)}; ask an "
                               "admin for a new key")
        at = _utc("now", now) or _now()
        if key.expires_at is not None and at >= key.expires_at:
            raise Unauthorized(f"API key {key.id} expired at {_iso(key.expires_at)}; ask an "
                               "admin for a new key")
        return key

    def _writable(self) -> sqlite3.Connection:
        if self.read_only or self._conn is None:
            raise ReadOnlyIndex(f"keys in {self.path} are read-only here (QA_READ_ONLY, or a "
                                "read-only volume); manage them where the index is written")
        return self._conn

    def _rows(self, sql: str, params: tuple[Any, ...]) -> builtins.list[tuple[Any, ...]]:
        with self._lock:
            if self._conn is None and self.read_only and self.path.exists():
                self._conn = sqlite3.connect(f"{self.path.absolute().as_uri()}?mode=ro", uri=True,
                                             check_same_thread=False, isolation_level=None,
                                             timeout=BUSY_TIMEOUT_S)
            if self._conn is None:
                if self.read_only:
                    return []  # no file yet: no keys
                raise RuntimeError("the key store is closed")
            try:
                return self._conn.execute(sql, params).fetchall()
            except sqlite3.OperationalError as exc:
                if self.read_only and "no such table" in str(exc):
                    return []  # a catalog that never held a key
                raise


def authorize(key: ApiKey | None, action: Action, collection: str | None, *, public: bool,
              origin: str | None) -> None:
    """May this key (or no key) take `action` on `collection`? Raises Unauthorized/Forbidden.

    `collection` is None for an action on no one collection (listing collections, managing
    keys); `public` says whether that collection may be searched without a key. A key given is
    a key enforced: a search key for A cannot search a public B.
    """
    if action not in get_args(Action):
        raise ValueError(f"unknown action {action!r}")
    if key is None:
        if action == "search" and (public or collection is None):
            return
        if action == "search":
            raise Unauthorized(f"collection {collection!r} is private: this collection needs a "
                               "search key; send `Authorization: Bearer <key>` with a key an "
                               "admin made for it")
        raise Unauthorized(f"this needs `Authorization: Bearer <key>` with "
                           f"{'an admin' if action == 'admin' else 'a write or admin'} key")
    if key.origins and _origin(origin) not in key.origins:
        raise Forbidden(f"API key {key.id} may only be used from {', '.join(key.origins)}; this "
                        f"request's Origin is {origin if origin else 'missing'}: embed the key "
                        "on one of those sites, or ask an admin to add this origin")
    if key.role == "admin":
        return
    if action == "admin":
        raise Forbidden(f"API key {key.id} is a {key.role} key; this needs an admin key")
    if action == "write" and key.role == "search":
        raise Forbidden(f"API key {key.id} is a search key: it can ask and read, not change "
                        "documents; use a write key")
    if collection is not None and not key.reaches(collection):
        raise Forbidden(f"API key {key.id} reaches {', '.join(map(repr, key.collections))}, "
                        f"not {collection!r}; use a key made for {collection!r}")


def _collections(role: str, value: Any) -> tuple[str, ...]:
    if len(value) > MAX_COLLECTIONS:
        raise InvalidInput(f"collections: at most {MAX_COLLECTIONS}, or '*' for all")
    for name in value:
        if not isinstance(name, str) or not (
                name == ALL_COLLECTIONS or COLLECTION_NAME.fullmatch(name)):
            raise InvalidInput(f"collections: {name!r} is not a collection name (lower-case "
                               "letters, digits, '_' and '-', up to 64) nor '*' for all")
    names = tuple(dict.fromkeys(value))  # in order, each once
    if ALL_COLLECTIONS in names and len(names) > 1:
        raise InvalidInput("collections: '*' means every collection and stands alone")
    if role == "admin":
        if names not in ((), (ALL_COLLECTIONS,)):
            raise InvalidInput("collections: an admin key reaches every collection; make a "
                               "write or search key to limit one to some collections")
        return (ALL_COLLECTIONS,)
    if not names:
        raise InvalidInput(f"collections: a {role} key needs at least one collection, "
                           "or '*' for all")
    return names


def _filter(role: str, value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    if role != "search":
        raise InvalidInput("filter: only a search key can carry a fixed filter")
    if not isinstance(value, Mapping):
        raise InvalidInput("filter: must be a JSON object")
    copy = _copy_json(value)
    canonical = _canonical(copy)
    if len(canonical) > MAX_FILTER_CHARS:
        raise InvalidInput(f"filter: at most {MAX_FILTER_CHARS} characters as JSON")
    _parsed_filter(canonical)  # its InvalidInput names the field or operator
    return cast(dict[str, Any], copy)


@functools.lru_cache(maxsize=1024)
def _parsed_filter(canonical: str) -> Filter:
    """A key's filter, parsed once per distinct filter: each request reads its key afresh, and
    parsing is most of that read's time."""
    return parse_filter(json.loads(canonical), where="filter")


def _canonical(value: Mapping[str, Any]) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _origins(value: Any) -> tuple[str, ...]:
    if len(value) > MAX_ORIGINS:
        raise InvalidInput(f"origins: at most {MAX_ORIGINS}")
    return tuple(dict.fromkeys(_origin_or_error(item) for item in value))


def _origin_or_error(value: Any) -> str:
    origin = _origin(value) if isinstance(value, str) else None
    if origin is None:
        raise InvalidInput(f"origins: {value!r} is not an origin: give scheme://host[:port] of "
                           "http or https, with no path, e.g. https://docs.example.com")
    return origin


def _origin(value: str | None) -> str | None:
    """`scheme://host[:port]` in lower case without a default port, or None if not an origin."""
    if not value or len(value) > 300:
        return None
    try:
        parts = urlsplit(value.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if (scheme not in _DEFAULT_PORTS or not parts.hostname or parts.username is not None
            or parts.password is not None or parts.path not in ("", "/") or parts.query
            or parts.fragment or value.strip().endswith(("?", "#"))):
        return None
    host = parts.hostname.lower()
    host = f"[{host}]" if ":" in host else host  # an IPv6 address keeps its brackets
    return f"{scheme}://{host}" + ("" if port in (None, _DEFAULT_PORTS[scheme]) else f":{port}")


def _utc(name: str, value: datetime | None) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, datetime) or value.tzinfo is None or value.utcoffset() is None:
        raise InvalidInput(f"{name}: give a date and time with a time zone, e.g. "
                           "2026-12-31T23:59:59Z")
    return value.astimezone(UTC)


def _copy_json(value: Mapping[str, Any] | None) -> Any:
    if value is None:
        return None
    try:
        return json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"filter: must be plain JSON ({exc})") from None


def _key_of(row: tuple[Any, ...]) -> ApiKey:
    key_id, role, collections, name, filter_, origins, expires, created, revoked = row
    return ApiKey(
        id=key_id, role=cast(Role, role), collections=tuple(json.loads(collections)), name=name,
        filter=None if filter_ is None else json.loads(filter_),
        origins=tuple(json.loads(origins)), expires_at=_parse_time(expires),
        created_at=_parse_time(created), revoked_at=_parse_time(revoked),
    )


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("utf-8")).digest()


def _now() -> datetime:
    return datetime.now(UTC)


def _iso(value: datetime | None) -> str | None:
    """For people and JSON: 2026-12-31T23:59:59Z."""
    return None if value is None else value.isoformat(timespec="seconds").replace("+00:00", "Z")


def _stamp(value: datetime | None) -> str | None:
    """For the table: one fixed width, so the text sorts as the time does."""
    return None if value is None else value.isoformat(timespec="microseconds")


def _parse_time(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)
