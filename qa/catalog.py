"""Named collections under one index root, each a complete, isolated index.

`default` is the root folder itself, so an index built before collections existed opens as
`default` with no rebuild, and `qa index --rebuild` of it leaves the others alone. Every other
collection lives in `collections/<name>/`: its own SQLite file (documents, chunks, vectors,
keyword index), FAISS snapshot, manifest and lock, so it can be rebuilt, published or deleted
alone. One embedder serves them all.

Which collections exist, and whether each is public, is kept in `catalog.sqlite3` at the root
(the keys of qa/keys.py live in the same file). Every process reads it on each lookup (one
indexed row), so a collection created or deleted through one worker is seen by the others on
their next request.
"""

from __future__ import annotations

import shutil
import sqlite3
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from qa.collection import MANIFEST, Collection
from qa.embedding import Embedder
from qa.errors import (
    CollectionExists,
    CollectionNotFound,
    IndexNotFound,
    InvalidInput,
    ReadOnlyIndex,
)
from qa.settings import Settings
from qa.types import COLLECTION_NAME, DEFAULT_COLLECTION

CATALOG_FILE = "catalog.sqlite3"
COLLECTIONS_FOLDER = "collections"
BUSY_TIMEOUT_S = 30.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS collections (
    name       TEXT PRIMARY KEY,
    public     INTEGER NOT NULL,
    uid        TEXT NOT NULL,      -- changes when a name is deleted and made again
    created_at TEXT NOT NULL
);
"""


@dataclass(frozen=True)
class CollectionInfo:
    name: str
    public: bool
    uid: str = DEFAULT_COLLECTION


def check_collection_name(name: str) -> str:
    if not isinstance(name, str) or not COLLECTION_NAME.fullmatch(name):
        raise InvalidInput(f"collection name {str(name)[:80]!r} is not valid: 1-64 characters "
                           "of a-z, 0-9, '_' and '-', starting with a letter or digit")
    return name


class Catalog:
    """The collections of one index root: which exist, who may ask them, and their open
    `Collection`s (kept open for a server; `open` gives the CLI its own)."""

    def __init__(self, settings: Settings, embedder: Embedder | None = None) -> None:
        self.settings = settings
        self.root = settings.index_dir
        self.embedder = embedder
        self._lock = threading.RLock()
        self._open: dict[str, tuple[str, Collection]] = {}  # name → (uid, collection)
        self._conn: sqlite3.Connection | None = None

    def __enter__(self) -> Catalog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the registry ------------------------------------------------------------------------

    def _connection(self, *, write: bool = False) -> sqlite3.Connection | None:
        """The catalog database, made on the first write; None while it does not exist."""
        if self._conn is not None:
            return self._conn
        path = self.root / CATALOG_FILE
        if not path.exists() and not write:
            return None
        if self.settings.read_only:
            if write:
                raise ReadOnlyIndex(f"index {self.root} is read-only (QA_READ_ONLY): "
                                    "collections cannot be created or deleted")
            conn = sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True,
                                   check_same_thread=False, isolation_level=None)
        else:
            self.root.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None,
                                   timeout=BUSY_TIMEOUT_S)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(_SCHEMA)
        self._conn = conn
        return conn

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            conn = self._connection(write=True)
            assert conn is not None
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    with suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                raise

    def _row(self, name: str) -> CollectionInfo | None:
        with self._lock:
            conn = self._connection()
            if conn is None:
                return None
            row = conn.execute("SELECT public, uid FROM collections WHERE name = ?",
                               (name,)).fetchone()
        return None if row is None else CollectionInfo(name, bool(row[0]), row[1])

    def info(self, name: str) -> CollectionInfo:
        """The collection `name`, or CollectionNotFound naming the ones there are."""
        if name == DEFAULT_COLLECTION:
            if not (self.root / MANIFEST).exists():
                raise IndexNotFound(f"no index at {self.root}: build one with `qa index PATH` "
                                    "(or set QA_INDEX_DIR)")
            return CollectionInfo(name, self.settings.default_public)
        found = self._row(name) if COLLECTION_NAME.fullmatch(name) else None
        if found is None:
            raise CollectionNotFound(
                f"no collection named {name[:80]!r} (there are: {', '.join(self.names())}); "
                "make one with `qa collections create NAME` or POST /collections")
        return found

    def names(self) -> list[str]:
        """Every collection, `default` first when it has an index."""
        with self._lock:
            conn = self._connection()
            rows = [] if conn is None else conn.execute(
                "SELECT name FROM collections ORDER BY name").fetchall()
        own = [DEFAULT_COLLECTION] if (self.root / MANIFEST).exists() else []
        return own + [r[0] for r in rows]

    def directory(self, name: str) -> Path:
        return self.root if name == DEFAULT_COLLECTION else (
            self.root / COLLECTIONS_FOLDER / check_collection_name(name))

    def settings_for(self, name: str) -> Settings:
        return self.settings.model_copy(update={"index_dir": self.directory(name)})

    # -- opening -----------------------------------------------------------------------------

    def open(self, name: str, *, create: bool = False, rebuild: bool = False,
             reconcile: bool = True) -> Collection:
        """A `Collection` of its own for the caller to close (the CLI's way). `create` makes
        the index of `default` if missing; others are made by `create_collection`."""
        if name != DEFAULT_COLLECTION or not (create or rebuild):
            self.info(name)
        return Collection.open(self.settings_for(name), self.embedder, create=create,
                               rebuild=rebuild, reconcile=reconcile)

    def get(self, name: str, info: CollectionInfo | None = None) -> Collection:
        """The shared open collection `name` (a server's way), reopened if it was deleted and
        made again since, and closed here once it is gone from the catalog. `info`: what the
        caller just read of it, so it is not read twice."""
        try:
            info = info or self.info(name)
        except CollectionNotFound:
            self._forget(name)
            raise
        with self._lock:
            held = self._open.get(name)
            if held is not None and held[0] == info.uid:
                return held[1]
            self._forget(name)
            collection = Collection.open(self.settings_for(name), self.embedder)
            # Shared collections serve many questions: their keyword index is worth memory.
            collection.keep_keywords_in_memory(self.settings.keywords_in_memory)
            self._open[name] = (info.uid, collection)
            return collection

    def _forget(self, name: str) -> None:
        with self._lock:
            held = self._open.pop(name, None)
        if held is not None:
            with suppress(Exception):  # its files may be gone already
                held[1].close()

    def close(self) -> None:
        with self._lock:
            for name in list(self._open):
                self._forget(name)
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    # -- making and deleting -----------------------------------------------------------------

    def create_collection(self, name: str, *, public: bool = False) -> CollectionInfo:
        """An empty collection `name` (its folder and index), registered once it is whole."""
        check_collection_name(name)
        if name == DEFAULT_COLLECTION:
            raise CollectionExists("collection 'default' always exists: it is the index root")
        if self.embedder is None:
            raise InvalidInput("a model is needed to make a collection")
        with self._transaction() as conn:  # the write lock: two creates of a name queue
            if conn.execute("SELECT 1 FROM collections WHERE name = ?", (name,)).fetchone():
                raise CollectionExists(f"collection {name!r} exists already")
            directory = self.directory(name)
            if directory.exists():  # left by a create or delete that did not finish
                shutil.rmtree(directory)
            try:
                Collection.open(self.settings_for(name), self.embedder, create=True).close()
                info = CollectionInfo(name, public, uuid.uuid4().hex)
                conn.execute("INSERT INTO collections VALUES (?, ?, ?, ?)",
                             (name, int(public), info.uid, datetime.now(UTC).isoformat()))
            except BaseException:
                shutil.rmtree(directory, ignore_errors=True)
                raise
        return info

    def delete_collection(self, name: str) -> None:
        """Unregister `name` (every process stops serving it at its next request), then remove
        its folder: moved aside first, so no half-deleted collection ever answers by that name."""
        check_collection_name(name)
        if name == DEFAULT_COLLECTION:
            raise CollectionExists("collection 'default' cannot be deleted (it is the index "
                                   "root); rebuild it empty with `qa index --rebuild` instead")
        with self._transaction() as conn:
            gone = conn.execute("DELETE FROM collections WHERE name = ?", (name,)).rowcount
        if not gone:
            raise CollectionNotFound(f"no collection named {name!r}")
        self._forget(name)
        directory = self.directory(name)
        if directory.exists():
            aside = directory.with_name(f".deleted-{name}-{uuid.uuid4().hex[:8]}")
            directory.rename(aside)
            shutil.rmtree(aside, ignore_errors=True)
