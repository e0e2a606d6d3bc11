"""Scoped API keys on a real SQLite file: stored hashed, checked on every use, and the one rule
of which key may search, write or administer which collection from which origin."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from qa.errors import Forbidden, InvalidInput, KeyNotFound, ReadOnlyIndex, Unauthorized
from qa.keys import MAX_COLLECTIONS, MAX_ORIGINS, ApiKey, KeyStore, authorize

SITE = "https://docs.example.com"


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "catalog.sqlite3"


@pytest.fixture
def store(path: Path) -> Iterator[KeyStore]:
    opened = KeyStore(path)
    yield opened
    opened.close()


def later(**delta: float) -> datetime:
    return datetime.now(UTC) + timedelta(**delta)


# --- secrets ---------------------------------------------------------------------------------

def test_secret_names_its_key_and_authenticates_as_it(store: KeyStore) -> None:
    key, secret = store.create("search", ["docs"], name="docs site")
    assert secret.startswith(f"qa_{key.id}_") and len(secret) >= 43 + len(key.id) + 4
    assert store.authenticate(secret) == key
    assert store.authenticate(f"  {secret}\n") == key  # as pasted from a terminal
    assert key.role == "search" and key.collections == ("docs",) and key.name == "docs site"
    assert key.created_at is not None and key.created_at.tzinfo is not None


def test_every_secret_is_different(store: KeyStore) -> None:
    secrets = {store.create("search", ["docs"])[1] for _ in range(20)}
    assert len(secrets) == 20


def test_no_secret_is_stored_in_plain_text(store: KeyStore, path: Path) -> None:
    made = [store.create(role, ["docs"] if role != "admin" else [])[1]
            for role in ("admin", "write", "search")]
    store.revoke(store.list()[0].id)  # a write after the creates, still in the -wal
    files = [p for p in path.parent.iterdir() if p.name.startswith(path.name)]
    assert any(p.name.endswith("-wal") for p in files)
    for secret in made:
        random_part = secret.split("_", 2)[2]
        for file in files:
            data = file.read_bytes()
            assert secret.encode() not in data and random_part.encode() not in data, file.name
    store.close()  # checkpointed into the main file: still nowhere
    for secret in made:
        assert secret.split("_", 2)[2].encode() not in path.read_bytes()


def test_to_dict_is_json_ready_and_holds_no_secret(store: KeyStore) -> None:
    key, secret = store.create("search", ["docs"], origins=[SITE], expires_at=later(days=30))
    shown = key.to_dict()
    assert set(shown) == {"id", "role", "collections", "name", "filter", "origins",
                          "expires_at", "created_at", "revoked_at"}
    assert shown["collections"] == ["docs"] and shown["origins"] == [SITE]
    assert shown["expires_at"].endswith("Z") and shown["revoked_at"] is None
    assert secret.split("_", 2)[2] not in repr(shown) and secret not in repr(key)


# --- authenticate: 401 for anything but a live key -----------------------------------------

def test_malformed_secret_is_unauthorized(store: KeyStore) -> None:
    for secret in ("", "hunter2", "Bearer qa_x", "qa_" + "a" * 12 + "_short"):
        with pytest.raises(Unauthorized, match="not a qa API key"):
            store.authenticate(secret)


def test_unknown_secret_is_unauthorized(store: KeyStore) -> None:
    key, secret = store.create("search", ["docs"])
    forged = secret[:-4] + ("AAAA" if not secret.endswith("AAAA") else "BBBB")
    with pytest.raises(Unauthorized, match="not known"):
        store.authenticate(forged)  # the right id, the wrong secret
    with pytest.raises(Unauthorized, match="not known"):
        store.authenticate("qa_" + "z" * 12 + secret[len(key.id) + 3:])  # an id never issued


def test_expired_key_is_unauthorized_and_says_when(store: KeyStore) -> None:
    expiry = later(hours=1)
    key, secret = store.create("search", ["docs"], expires_at=expiry)
    assert store.authenticate(secret, now=expiry - timedelta(seconds=1)) == key
    with pytest.raises(Unauthorized, match=f"expired at {expiry:%Y-%m-%dT%H:%M:%S}Z"):
        store.authenticate(secret, now=expiry)
    with pytest.raises(Unauthorized, match="expired at"):
        store.authenticate(secret, now=expiry + timedelta(days=1))


def test_revoked_key_is_unauthorized(store: KeyStore) -> None:
    key, secret = store.create("write", ["docs"])
    revoked = store.revoke(key.id)
    assert revoked.revoked_at is not None
    with pytest.raises(Unauthorized, match=f"API key {key.id} was revoked"):
        store.authenticate(secret)


def test_revoking_twice_keeps_the_first_time(store: KeyStore) -> None:
    key, _ = store.create("search", ["docs"])
    first = store.revoke(key.id).revoked_at
    assert store.revoke(key.id).revoked_at == first


def test_unknown_key_id_is_not_found(store: KeyStore) -> None:
    with pytest.raises(KeyNotFound, match="qa keys list"):
        store.get("nosuchkey")
    with pytest.raises(KeyNotFound):
        store.revoke("nosuchkey")


def test_list_shows_every_key_oldest_first(store: KeyStore) -> None:
    made = [store.create("search", [f"c{i}"])[0] for i in range(5)]
    store.revoke(made[2].id)
    listed = store.list()
    assert [k.id for k in listed] == [k.id for k in made]
    assert listed[2].revoked_at is not None and listed[2].collections == ("c2",)
    assert store.get(made[4].id) == made[4]


def test_expiry_must_be_in_the_future_and_have_a_time_zone(store: KeyStore) -> None:
    with pytest.raises(InvalidInput, match="expires_at: .* not in the future"):
        store.create("search", ["docs"], expires_at=later(seconds=-1))
    with pytest.raises(InvalidInput, match="expires_at: give a date and time with a time zone"):
        store.create("search", ["docs"], expires_at=datetime.now() + timedelta(days=1))
    paris = timezone(timedelta(hours=1))
    key, _ = store.create("search", ["docs"], expires_at=datetime(2999, 1, 1, 1, tzinfo=paris))
    assert key.expires_at == datetime(2999, 1, 1, tzinfo=UTC)


# --- validation: InvalidInput naming the field --------------------------------------------

@pytest.mark.parametrize(("kwargs", "message"), [
    ({"role": "owner", "collections": ["docs"]}, "role: must be one of admin, write, search"),
    ({"role": "search", "collections": []}, "collections: a search key needs at least one"),
    ({"role": "write", "collections": []}, "collections: a write key needs at least one"),
    ({"role": "search", "collections": ["Docs"]}, "collections: 'Docs' is not a collection"),
    ({"role": "search", "collections": ["a/b"]}, "collections: 'a/b' is not a collection"),
    ({"role": "search", "collections": [""]}, "collections: '' is not a collection"),
    ({"role": "search", "collections": [7]}, "collections: 7 is not a collection"),
    ({"role": "search", "collections": "docs"}, "give a list"),
    ({"role": "search", "collections": ["*", "docs"]}, "collections: '\\*' .* stands alone"),
    ({"role": "search", "collections": [f"c{i}" for i in range(MAX_COLLECTIONS + 1)]},
     f"collections: at most {MAX_COLLECTIONS}"),
    ({"role": "admin", "collections": ["docs"]}, "collections: an admin key reaches every"),
    ({"role": "write", "collections": ["docs"], "filter": {"title": "x"}},
     "filter: only a search key"),
    ({"role": "admin", "filter": {"title": "x"}}, "filter: only a search key"),
    ({"role": "search", "collections": ["docs"], "filter": ["title"]}, "filter: must be a JSON"),
    ({"role": "search", "collections": ["docs"], "filter": {"nosuchfield": "x"}},
     "filter.*nosuchfield"),
    ({"role": "search", "collections": ["docs"], "filter": {"title": {"$near": "x"}}},
     r"filter.*\$near"),
    ({"role": "search", "collections": ["docs"], "name": "x" * 201}, "name: at most 200"),
    ({"role": "search", "collections": ["docs"], "name": "a\nb"}, "name: at most 200 printable"),
    ({"role": "search", "collections": ["docs"], "origins": ["https://x.org/docs"]},
     "origins: 'https://x.org/docs' is not an origin"),
    ({"role": "search", "collections": ["docs"], "origins": ["ftp://x.org"]}, "origins: 'ftp"),
    ({"role": "search", "collections": ["docs"], "origins": ["x.org"]}, "origins: 'x.org'"),
    ({"role": "search", "collections": ["docs"], "origins": ["https://x.org?a=1"]}, "origins"),
    ({"role": "search", "collections": ["docs"], "origins": ["https://u@x.org"]}, "origins"),
    ({"role": "search", "collections": ["docs"], "origins": ["https://x.org:99999"]}, "origins"),
    ({"role": "search", "collections": ["docs"], "origins": ["*"]}, "origins: '\\*'"),
    ({"role": "search", "collections": ["docs"],
      "origins": [f"https://s{i}.example.com" for i in range(MAX_ORIGINS + 1)]},
     f"origins: at most {MAX_ORIGINS}"),
])
def test_invalid_key_is_refused_naming_the_field(store: KeyStore, kwargs: dict, message: str
                                                 ) -> None:
    kwargs = dict(kwargs)
    role = kwargs.pop("role")
    with pytest.raises(InvalidInput, match=message):
        store.create(role, kwargs.pop("collections", ()), **kwargs)
    assert store.list() == []


def test_admin_key_reaches_every_collection(store: KeyStore) -> None:
    assert store.create("admin")[0].collections == ("*",)
    assert store.create("admin", ["*"])[0].collections == ("*",)


def test_collections_and_origins_are_kept_once_and_origins_normalized(store: KeyStore) -> None:
    key, _ = store.create("search", ["docs", "blog", "docs"],
                          origins=["HTTPS://Docs.Example.com:443/", SITE, "http://localhost:8080",
                                   "http://[::1]:80"])
    assert key.collections == ("docs", "blog")
    assert key.origins == (SITE, "http://localhost:8080", "http://[::1]")


def test_search_key_keeps_its_fixed_filter(store: KeyStore) -> None:
    fixed = {"metadata.team": {"$in": ["docs", "support"]}}
    key, secret = store.create("search", ["docs"], filter=fixed)
    assert store.authenticate(secret).filter == fixed
    assert key.to_dict()["filter"] == fixed
    parsed = key.fixed_filter()
    assert parsed is not None and parsed.key
    assert store.create("search", ["docs"])[0].fixed_filter() is None


# --- authorize ------------------------------------------------------------------------------

def key_of(role: str, *collections: str, origins: tuple[str, ...] = ()) -> ApiKey:
    return ApiKey(id="k1", role=role, collections=collections, origins=origins)  # type: ignore[arg-type]


ADMIN = key_of("admin")
WRITER = key_of("write", "a")
SEARCHER = key_of("search", "a")
EVERYWHERE = key_of("search", "*")


@pytest.mark.parametrize(("key", "action", "collection", "public"), [
    (ADMIN, "admin", None, False), (ADMIN, "write", "b", False), (ADMIN, "search", "b", False),
    (WRITER, "write", "a", False), (WRITER, "search", "a", False),
    (SEARCHER, "search", "a", False), (SEARCHER, "search", "a", True),
    (EVERYWHERE, "search", "zz", False), (SEARCHER, "search", None, False),
    (None, "search", "a", True),
])
def test_allowed(key: ApiKey | None, action: str, collection: str | None, public: bool) -> None:
    authorize(key, action, collection, public=public, origin=None)  # type: ignore[arg-type]


@pytest.mark.parametrize(("key", "action", "collection", "public", "message"), [
    (WRITER, "write", "b", False, "reaches 'a', not 'b'"),
    (WRITER, "search", "b", True, "reaches 'a', not 'b'"),
    (WRITER, "admin", None, False, "is a write key; this needs an admin key"),
    (SEARCHER, "write", "a", False, "search key: it can ask and read, not change documents"),
    (SEARCHER, "admin", None, False, "needs an admin key"),
    (SEARCHER, "search", "b", False, "reaches 'a', not 'b'"),
    (SEARCHER, "search", "b", True, "not 'b'"),  # a key given is a key enforced
    (EVERYWHERE, "write", "a", False, "search key"),
])
def test_forbidden(key: ApiKey, action: str, collection: str | None, public: bool, message: str
                   ) -> None:
    with pytest.raises(Forbidden, match=message):
        authorize(key, action, collection, public=public, origin=None)  # type: ignore[arg-type]


@pytest.mark.parametrize(("action", "collection", "public", "message"), [
    ("search", "a", False, "'a' is private: this collection needs a search key"),
    ("write", "a", True, "needs `Authorization: Bearer <key>` with a write or admin key"),
    ("admin", None, True, "with an admin key"),
])
def test_no_key_is_unauthorized(action: str, collection: str | None, public: bool, message: str
                                ) -> None:
    with pytest.raises(Unauthorized, match=message) as raised:
        authorize(None, action, collection, public=public, origin=None)  # type: ignore[arg-type]
    assert raised.value.headers == {"WWW-Authenticate": "Bearer"}


def test_key_bound_to_origins_passes_only_from_them() -> None:
    key = key_of("search", "a", origins=(SITE, "http://localhost:8080"))
    authorize(key, "search", "a", public=False, origin=SITE)
    authorize(key, "search", "a", public=False, origin="HTTPS://DOCS.example.com")
    authorize(key, "search", "a", public=False, origin="http://localhost:8080")
    for other in ("https://evil.example.com", "http://docs.example.com", "http://localhost:8081",
                  "null", f"{SITE}.evil.com"):
        with pytest.raises(Forbidden, match=f"Origin is {other}"):
            authorize(key, "search", "a", public=True, origin=other)
    with pytest.raises(Forbidden, match="may only be used from https://docs.example.com, "
                                        "http://localhost:8080; this request's Origin is missing"):
        authorize(key, "search", "a", public=True, origin=None)


def test_key_without_origins_works_from_anywhere() -> None:
    authorize(SEARCHER, "search", "a", public=False, origin="https://anywhere.example")
    authorize(SEARCHER, "search", "a", public=False, origin=None)


# --- many processes, many threads ----------------------------------------------------------

def test_revoke_through_one_store_is_seen_by_another_on_the_next_request(path: Path) -> None:
    first, second = KeyStore(path), KeyStore(path)
    try:
        key, secret = first.create("search", ["docs"])
        assert second.authenticate(secret) == key
        first.revoke(key.id)
        with pytest.raises(Unauthorized, match="revoked"):
            second.authenticate(secret)
        later_key, later_secret = second.create("write", ["docs"])
        assert first.authenticate(later_secret) == later_key
    finally:
        first.close()
        second.close()


def test_concurrent_creates_from_threads_all_land(store: KeyStore, path: Path) -> None:
    made: list[tuple[ApiKey, str]] = []
    errors: list[BaseException] = []
    other = KeyStore(path)  # and through a second connection, as another worker would

    def create_some(target: KeyStore) -> None:
        try:
            for _ in range(10):
                made.append(target.create("search", ["docs"]))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=create_some, args=(store if i % 2 else other,))
               for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    other.close()
    assert not errors
    assert len({key.id for key, _ in made}) == 80 and len(store.list()) == 80
    for key, secret in made:
        assert store.authenticate(secret) == key


def test_keys_share_the_file_with_another_table(path: Path) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE collections (name TEXT PRIMARY KEY, public INTEGER)")
        conn.execute("INSERT INTO collections VALUES ('docs', 1)")
    conn.close()
    store = KeyStore(path)
    try:
        _, secret = store.create("search", ["docs"])
        assert store.authenticate(secret).collections == ("docs",)
    finally:
        store.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT name FROM collections").fetchall() == [("docs",)]
    conn.close()


def test_read_only_store_authenticates_and_refuses_changes(store: KeyStore, path: Path) -> None:
    key, secret = store.create("search", ["docs"])
    replica = KeyStore(path, read_only=True)
    try:
        assert replica.authenticate(secret) == key
        store.revoke(key.id)
        with pytest.raises(Unauthorized, match="revoked"):
            replica.authenticate(secret)
        with pytest.raises(ReadOnlyIndex, match="read-only"):
            replica.create("search", ["docs"])
        with pytest.raises(ReadOnlyIndex):
            replica.revoke(key.id)
    finally:
        replica.close()


def test_read_only_store_without_a_file_knows_no_keys(tmp_path: Path) -> None:
    replica = KeyStore(tmp_path / "catalog.sqlite3", read_only=True)
    assert replica.list() == []
    with pytest.raises(Unauthorized, match="not known"):
        replica.authenticate("qa_" + "a" * 12 + "_" + "b" * 43)
    assert not (tmp_path / "catalog.sqlite3").exists()
