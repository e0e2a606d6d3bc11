"""The index on disk: manifest + SQLite store + FAISS snapshot, kept in agreement.

Layout of an index directory:
    manifest.json    model, dimension and chunker the index was built with (written once)
    qa.sqlite3       documents, chunks, embeddings, keyword index (the source of truth)
    vectors.faiss    snapshot of the vectors for fast opening; reconciled with SQLite at open
    qa.lock          advisory lock: shared by every open collection, exclusive by a rebuild
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from qa.chunking import ENCODING, split_document
from qa.embedding import Embedder, model_name
from qa.errors import (
    DocumentNotFound,
    IndexBusy,
    IndexMismatch,
    IndexNotFound,
    ReadOnlyIndex,
)
from qa.filters import Filter
from qa.settings import Settings
from qa.store import SCHEMA_VERSION, KeywordKeeper, Store
from qa.types import Chunk, ChunkRow, Document, DocumentRow
from qa.vectors import VectorIndex

MANIFEST = "manifest.json"
DATABASE = "qa.sqlite3"
SNAPSHOT = "vectors.faiss"
LOCK = "qa.lock"  # never deleted: a new file would be a new lock beside one still held
# Filters whose allowed chunk ids are remembered (see allowed_ids), and at most this many ids
# in all (8 bytes each: 32 MB), so a large collection's broad filters cannot hoard memory.
ALLOWED_CACHE = 32
ALLOWED_CACHE_IDS = 4_000_000


@dataclass(frozen=True)
class Manifest:
    model: str
    dimension: int
    chunk_tokens: int
    chunk_overlap: int
    encoding: str = ENCODING
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


@dataclass
class WriteReport:
    """What one write changed; `skipped` lists documents whose content was unchanged.
    `replaced` includes documents whose metadata or source alone changed (nothing embedded)."""

    added: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    embedded: int = 0  # chunks embedded (every chunk written is embedded first)


Change = Literal["added", "replaced", "details", "unchanged"]
StoredState = tuple[str, dict[str, Any], str | None]  # content hash, metadata, source


def change_of(document: Document, stored: StoredState | None, *, force: bool = False) -> Change:
    """What writing `document` over its stored version changes: everything (`added`,
    `replaced`), only what is not embedded (`details`: metadata or source), or nothing.

    The content hash covers what is chunked and embedded (text, title, date, url); metadata
    and source are kept beside it, so a change to them alone is stored without re-embedding.
    """
    if stored is None:
        return "added"
    content_hash, metadata, source = stored
    if force or content_hash != document.content_hash:
        return "replaced"
    # Compared as JSON, as stored: a tuple read back is a list, a key is a string.
    given = json.loads(json.dumps(dict(document.metadata), ensure_ascii=False))
    if given != metadata or source != document.source:
        return "details"
    return "unchanged"


class Collection:
    """Documents in, vectors and keyword postings kept in step, searches out."""

    def __init__(self, directory: Path, store: Store, manifest: Manifest,
                 embedder: Embedder | None) -> None:
        self.directory = directory
        self.store = store
        self.manifest = manifest
        self._embedder = embedder
        self._lock = threading.RLock()
        self._vectors = VectorIndex(manifest.dimension)
        self._seen_version = -1
        self._dirty = False
        self._lock_fd: int | None = None  # see lock_index; released by close
        # (filter key, data version) → allowed chunk ids; see allowed_ids
        self._allowed: OrderedDict[tuple[str, tuple[int, int]], npt.NDArray[np.int64]] = (
            OrderedDict())
        self._allowed_lock = threading.Lock()
        self._keeper: KeywordKeeper | None = None  # see keep_keywords_in_memory

    # -- opening -----------------------------------------------------------------------------

    @classmethod
    def open(cls, settings: Settings, embedder: Embedder | None = None, *,
             create: bool = False, rebuild: bool = False,
             reconcile: bool = True) -> Collection:
        """Open (or with `create`, make) the index in `settings.index_dir`.

        Refuses an index built with another model or dimension; repairs a snapshot that
        disagrees with SQLite unless `reconcile` is False (`check` looks before it mends).
        `rebuild` deletes the index first and makes it anew, refusing while any other process
        has it open.
        """
        directory = settings.index_dir
        manifest_path = directory / MANIFEST
        wanted_model = embedder.name if embedder else model_name(settings.model)
        read_only = settings.read_only or (directory.is_dir() and not _writable(directory))
        if read_only and (create or rebuild):
            raise ReadOnlyIndex(f"index {directory} is read-only (QA_READ_ONLY, or a read-only "
                                "volume): it can answer questions but not be built or changed")
        if rebuild:
            directory.mkdir(parents=True, exist_ok=True)
            # Held exclusively until this collection closes: a half-built index is no one's.
            lock = lock_index(directory, exclusive=True)
            remove_index(directory)
            create = True
        elif manifest_path.exists() or create:
            if create:
                directory.mkdir(parents=True, exist_ok=True)
            lock = lock_index(directory, exclusive=False, read_only=read_only)
        else:
            raise IndexNotFound(
                f"no index at {directory}: build one with `qa index PATH` (or set QA_INDEX_DIR)"
            )
        try:
            if manifest_path.exists():
                manifest = Manifest.from_dict(json.loads(manifest_path.read_text("utf-8")))
                if manifest.model != wanted_model or (
                    embedder is not None and manifest.dimension != embedder.dimension
                ):
                    raise IndexMismatch(
                        f"index {directory} was built with model {manifest.model!r} "
                        f"(dimension {manifest.dimension}) but settings ask for "
                        f"{wanted_model!r}"
                        f"{f' (dimension {embedder.dimension})' if embedder else ''}; "
                        "rebuild it with `qa index --rebuild` or set QA_MODEL to match"
                    )
            else:
                if embedder is None:
                    raise IndexNotFound(f"no index at {directory}, and no model to build one")
                manifest = Manifest(embedder.name, embedder.dimension, settings.chunk_tokens,
                                    settings.chunk_overlap)
                _write_atomic(manifest_path, json.dumps(manifest.to_dict(), indent=2) + "\n")
            store = Store(directory / DATABASE, read_only=read_only)
            collection = cls(directory, store, manifest, embedder)
        except BaseException:
            _unlock(lock)
            raise
        collection._lock_fd = lock
        collection._load_snapshot(reconcile=reconcile)
        return collection

    def keep_keywords_in_memory(self, max_instances: int) -> None:
        """Hold the keyword index in memory from now on (a server's collections): read it on
        a thread of its own, and again once writes have changed it and then paused (see
        KeywordKeeper). Until then, and whenever it is behind, FTS5 answers, the same."""
        if max_instances > 0 and self._keeper is None:
            self._keeper = KeywordKeeper(self.store, max_instances).start()

    @property
    def keywords(self) -> str:
        """Where keyword search runs: "memory", "building" (FTS5 meanwhile) or "fts5"."""
        return "fts5" if self._keeper is None else self._keeper.state

    def close(self) -> None:
        if self._keeper is not None:
            self._keeper.stop()
        try:
            self.save_snapshot()
            self.store.close()
        finally:
            _unlock(self._lock_fd)
            self._lock_fd = None

    def _load_snapshot(self, *, reconcile: bool = True) -> None:
        snapshot = VectorIndex.load(self.directory / SNAPSHOT, self.manifest.dimension)
        if snapshot is not None:
            self._vectors = snapshot
        if reconcile:
            self.refresh(force=True)

    def refresh(self, *, force: bool = False) -> bool:
        """Bring the in-memory vectors in line with SQLite after another process wrote.

        Cheap when nothing changed (one PRAGMA). Returns True when anything was repaired.
        """
        version = self.store.data_version()
        if not force and version == self._seen_version:
            return False
        with self._lock:
            self._seen_version = version
            changed = self._reconcile()
        return changed

    @property
    def read_only(self) -> bool:
        return self.store.read_only

    def _check_writable(self) -> None:
        if self.read_only:
            raise ReadOnlyIndex(f"index {self.directory} is read-only (QA_READ_ONLY, or a "
                                "read-only volume): it answers questions but takes no writes")

    def _reconcile(self) -> bool:
        missing = self.store.chunks_missing_embeddings()
        if missing and self._embedder is not None and not self.read_only:
            # Rows without vectors (a crash between steps, or ingestion elsewhere): embed only them.
            ids = [cid for cid, _ in missing]
            self.store.set_embeddings(ids, self._embedder.embed([t for _, t in missing]))
        in_db = self.store.embedded_chunk_ids()
        in_index = self._vectors.ids()
        stale = np.setdiff1d(in_index, in_db, assume_unique=True)
        absent = np.setdiff1d(in_db, in_index, assume_unique=True)
        self._vectors.remove(stale)
        if len(absent):
            self._vectors.add(absent, self.store.embeddings(absent.tolist(),
                                                             self.manifest.dimension))
        if len(stale) or len(absent):
            self._dirty = True
        return bool(len(stale) or len(absent) or missing)

    def check(self) -> dict[str, int]:
        """Consistency check: vectors, keyword postings and chunk rows must name the same ids.
        Run it on a collection opened with `reconcile=False` to see drift before it is mended.
        """
        chunk_ids = self.store.chunk_ids()
        in_db = self.store.embedded_chunk_ids()
        with self._lock:
            in_index = np.sort(self._vectors.ids())
        in_keywords = self.store.keyword_ids()
        docs, chunks = self.store.counts()
        return {
            "documents": docs,
            "chunks": chunks,
            "vectors": len(in_index),
            "missing_vectors": int(len(np.setdiff1d(in_db, in_index))),
            "orphan_vectors": int(len(np.setdiff1d(in_index, in_db))),
            "unembedded_chunks": chunks - len(in_db),
            "keyword_rows": len(in_keywords),
            "missing_keyword_rows": int(len(np.setdiff1d(chunk_ids, in_keywords))),
            "orphan_keyword_rows": int(len(np.setdiff1d(in_keywords, chunk_ids))),
            "keyword_index_corrupt": int(not self.store.keyword_index_intact()),
        }

    def repair(self) -> None:
        """Mend what `check` reports: vectors from SQLite (embedding chunks that lack one),
        the keyword index from the chunk rows, then save the snapshot."""
        self._check_writable()
        self.refresh(force=True)
        report = self.check()
        if report["missing_keyword_rows"] or report["orphan_keyword_rows"] or report[
                "keyword_index_corrupt"]:
            self.store.rebuild_keyword_index()
        self.save_snapshot()

    def save_snapshot(self) -> None:
        with self._lock:
            if self._dirty and not self.read_only:
                self._vectors.save(self.directory / SNAPSHOT)
                self._dirty = False

    # -- writes ------------------------------------------------------------------------------

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            raise IndexNotFound("this collection was opened without a model")
        return self._embedder

    def chunk(self, document: Document) -> list[Chunk]:
        return split_document(document, self.manifest.chunk_tokens, self.manifest.chunk_overlap)

    def _changes(self, documents: Sequence[Document], force: bool
                 ) -> list[tuple[Document, Change]]:
        """Each document (an id given twice counts once, as its last occurrence) with what
        writing it would change (`change_of`)."""
        latest = {d.id: d for d in documents}
        states = self.store.document_states(list(latest))
        return [(d, change_of(d, states.get(d.id), force=force)) for d in latest.values()]

    def needs_embedding(self, documents: Sequence[Document], *, force: bool = False
                        ) -> list[Document]:
        """Those of `documents` that `add` would chunk and embed (new or changed content)."""
        return [d for d, change in self._changes(documents, force)
                if change in ("added", "replaced")]

    def add(self, documents: Sequence[Document], *, force: bool = False,
            progress: bool | None = None,
            vectors: Mapping[str, npt.NDArray[np.float32]] | None = None) -> WriteReport:
        """Add or replace documents in one transaction; see `change_of` for what each costs.

        `vectors` gives documents' chunk vectors computed elsewhere (Ray), by document id, in
        the order `chunk` makes them; the rest are embedded here. A document id given twice
        is written once, as its last occurrence.
        """
        self._check_writable()  # before any embedding is spent
        report = WriteReport()
        todo: list[tuple[Document, list[Chunk]]] = []
        details: list[Document] = []
        for document, change in self._changes(documents, force):
            if change == "unchanged":
                report.skipped.append(document.id)
                continue
            (report.added if change == "added" else report.replaced).append(document.id)
            if change == "details":
                details.append(document)
            else:
                todo.append((document, self.chunk(document)))
        given = vectors or {}
        texts = [c.text for document, chunks in todo if document.id not in given
                 for c in chunks]
        fresh = self.embedder.embed(texts, progress=progress) if texts else None
        report.embedded = len(texts)
        items, offset = [], 0
        for document, chunks in todo:
            if document.id in given:
                items.append((document, chunks, given[document.id]))
            else:
                assert fresh is not None
                items.append((document, chunks, fresh[offset : offset + len(chunks)]))
                offset += len(chunks)
        if items or details:
            self.write_embedded(items, details)
        return report

    def write_embedded(
        self, items: Sequence[tuple[Document, Sequence[Chunk], npt.NDArray[np.float32] | None]],
        details: Sequence[Document] = (),
    ) -> None:
        """Commit documents whose chunks were embedded already, as given: no change detection
        (`add` decides; benchmarks load prepared corpora through here). One transaction."""
        self._check_writable()
        for _, chunks, vectors in items:
            if vectors is not None and vectors.shape != (len(chunks), self.manifest.dimension):
                raise IndexMismatch(
                    f"got vectors of shape {vectors.shape}, expected "
                    f"({len(chunks)}, {self.manifest.dimension})"
                )
        with self._lock:
            added, removed = self.store.replace_documents(items, details)
            self._vectors.remove(np.asarray(removed, dtype=np.int64))
            pending = [(cid, v) for cid, v in zip(added, _rows(items), strict=True)
                       if v is not None]
            if pending:
                self._vectors.add(np.asarray([c for c, _ in pending], dtype=np.int64),
                                  np.stack([v for _, v in pending]))
            # No `_seen_version` update: our own commits leave data_version alone, and a
            # change it does show came from another process and still needs reconciling.
            self._dirty = True
        if any(v is None for _, _, v in items):
            self.refresh(force=True)

    def merge_keyword_index(self, written: int) -> bool:
        """After a bulk write of `written` chunks (`qa index`): merge the keyword index into
        one segment when they are at least a tenth of the collection, so the merge's cost
        (a rewrite of the index, ~1 s for 100k chunks here) stays in proportion to what was
        written. Returns whether it merged.

        FTS5 leaves a segment per commit, merging only some (a 100k-chunk index loaded in
        groups of 512 kept 7); one segment made each keyword query at 100k chunks ~0.5 ms
        cheaper and the absent-word probes half as costly (README "Performance and scale").
        Writes while serving are left to FTS5's own merging, which is incremental.
        """
        self._check_writable()
        chunks = self.store.counts()[1]
        if not written or written * 10 < chunks or self.store.keyword_segments() <= 1:
            return False
        self.store.optimize_keyword_index()
        return True

    def delete(self, document_id: str) -> int:
        self._check_writable()
        with self._lock:
            removed = self.store.delete_document(document_id)
            if not removed:
                # A document has at least one chunk, so nothing removed means it was not there.
                raise DocumentNotFound(f"no document with id {document_id!r}")
            self._vectors.remove(np.asarray(removed, dtype=np.int64))
            self._dirty = True  # `_seen_version` left alone, as in `write_embedded`
        return len(removed)

    # -- reads -------------------------------------------------------------------------------

    def get_document(self, document_id: str, *, with_text: bool = True,
                     filter: Filter | None = None) -> DocumentRow:
        return self.store.get_document(document_id, with_text=with_text, filter=filter)

    def list_documents(self, offset: int, limit: int, *, filter: Filter | None = None
                       ) -> tuple[list[DocumentRow], int]:
        return self.store.list_documents(offset, limit, filter=filter)

    def counts(self) -> tuple[int, int]:
        """(documents, chunks)."""
        return self.store.counts()

    def sources(self) -> dict[str, str]:
        """Document id → the path it was loaded from, for those loaded from files."""
        return self.store.sources()

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        """Reads inside see one committed version of every document (see Store.snapshot)."""
        with self.store.snapshot():
            yield

    def chunk_rows(self, ids: Sequence[int], *, filter: Filter | None = None
                   ) -> dict[int, ChunkRow]:
        """Chunks by id; with a `filter`, only those it allows as this read sees them."""
        return self.store.chunk_rows(ids, filter=filter)

    def text_span(self, document_id: str, start: int, end: int) -> str:
        return self.store.text_span(document_id, start, end)

    # -- search ------------------------------------------------------------------------------

    def dense_search(self, question: str, k: int, *, filter: Filter | None = None,
                     refresh: bool = True) -> list[tuple[int, float]]:
        """Top-k chunks by cosine; with a `filter`, top-k among the chunks it allows.
        `refresh=False`: the caller has just called `refresh` (its check reads SQLite, which
        a keyword search running beside may hold)."""
        query = self.embedder.embed_query(question)
        if refresh:
            self.refresh()
        allowed = None if filter is None else self.allowed_ids(filter)
        with self._lock:
            ids, scores = self._vectors.search(query, k, allowed=allowed)
        return [(int(i), float(s)) for i, s in zip(ids, scores, strict=True)]

    def allowed_ids(self, filter: Filter) -> npt.NDArray[np.int64]:
        """The ids of the chunks `filter` allows, ascending. Remembered per (filter, version
        of the data) for the last ALLOWED_CACHE filters: a site's widget sends the same
        filter with every question (Elasticsearch caches filter bitsets for the same reason),
        and any write, here or in another process, changes the version."""
        key = (filter.key, self.store.version())
        with self._allowed_lock:
            cached = self._allowed.get(key)
            if cached is not None:
                self._allowed.move_to_end(key)
                return cached
        ids = self.store.filtered_chunk_ids(filter)
        ids.setflags(write=False)  # shared by every question that asks the same filter
        with self._allowed_lock:
            self._allowed[key] = ids
            while len(self._allowed) > 1 and (
                    len(self._allowed) > ALLOWED_CACHE
                    or sum(len(v) for v in self._allowed.values()) > ALLOWED_CACHE_IDS):
                self._allowed.popitem(last=False)
        return ids

    def cosines(self, question: str, ids: Sequence[int]) -> list[tuple[int, float]]:
        """Exact cosine of the question with given chunks, from their stored vectors.

        A chunk's vector never changes while its id lives, so the vector index's copy serves
        (0.04 ms for ~27 chunks at 100k against 0.2 ms from SQLite); SQLite's when the index
        lacks any of them (written by another process since the last refresh), or when a
        write holds the index. Never waited for: retrieval calls this inside a snapshot, which
        holds the store, and a write takes the index first and then the store, so waiting here
        would deadlock the two (as a load test of questions beside writes once did)."""
        query = self.embedder.embed_query(question)
        held = None
        if self._lock.acquire(blocking=False):
            try:
                held = self._vectors.stored(np.asarray(ids, dtype=np.int64))
            finally:
                self._lock.release()
        if held is None:
            vectors = self.store.embeddings(list(ids), self.manifest.dimension)
        else:  # laid out as SQLite's are, so the product below gives the very same floats
            vectors = np.zeros((len(ids), self.manifest.dimension), dtype=np.float32)
            vectors[:] = held
        return [(int(i), float(s)) for i, s in zip(ids, vectors @ query[0], strict=True)]

    def absent_words(self, words: Sequence[str]) -> list[str]:
        """Those of `words` found nowhere in the collection."""
        return self.store.absent_words(words)

    def keyword_search(self, question: str, k: int, *, budget: int | None = None,
                       filter: Filter | None = None) -> list[tuple[int, float]]:
        """Top-k chunks by BM25; with a `filter`, top-k among the chunks it allows."""
        allowed = None if filter is None else self.allowed_ids(filter)
        return self.store.keyword_search(question, k, budget=budget, allowed=allowed)


def _rows(items: Iterable[tuple[Document, Sequence[Chunk], npt.NDArray[np.float32] | None]]
          ) -> Iterable[npt.NDArray[np.float32] | None]:
    for _, chunks, vectors in items:
        for i in range(len(chunks)):
            yield None if vectors is None else vectors[i]


def drift_in(report: Mapping[str, int]) -> list[str]:
    """The names of `check` counts that say the index has drifted (empty when it agrees)."""
    return [name for name in ("missing_vectors", "orphan_vectors", "unembedded_chunks",
                              "missing_keyword_rows", "orphan_keyword_rows",
                              "keyword_index_corrupt") if report[name]]


def lock_index(directory: Path, *, exclusive: bool, read_only: bool = False) -> int | None:
    """Take the index's advisory lock: shared for every open collection, exclusive for a
    rebuild. Returns the descriptor that holds it (None where no lock file can exist).

    Why a lock and not build-beside-and-swap: a server holds the SQLite file open and keeps
    writing to it, so any swap would still leave it writing to a file nobody reads again;
    only refusing while it is open keeps acknowledged writes. flock is released by the
    kernel when a process dies (no stale locks after a SIGKILL) and is per open file, so
    two collections in one process count as two holders.
    """
    fd = _open_lock_file(directory / LOCK, create=not read_only)
    if fd is None:
        return None
    try:
        fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise IndexBusy(
            f"index {directory} is open by another process (a server?); stop it first"
            if exclusive else
            f"index {directory} is being rebuilt by another process; open it when that ends"
        ) from None
    return fd


def _open_lock_file(path: Path, *, create: bool) -> int | None:
    if create:
        with suppress(OSError):
            return os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:  # a read-only index writes nothing: share the publisher's lock file if it left one
        return os.open(path, os.O_RDONLY)
    except OSError:
        return None


def _writable(directory: Path) -> bool:
    """Whether the index folder can be written. The mount flag is asked for first because
    root passes every permission check (os.access) yet cannot write a read-only mount."""
    if os.statvfs(directory).f_flag & os.ST_RDONLY:
        return False
    database = directory / DATABASE
    return os.access(directory, os.W_OK) and (not database.exists()
                                              or os.access(database, os.W_OK))


def _unlock(fd: int | None) -> None:
    if fd is not None:
        os.close(fd)  # closing the last descriptor of the open file releases its flock


def remove_index(directory: Path) -> None:
    """Delete an index's own files, leaving anything else in the folder (a README) and the
    lock file (see LOCK) alone."""
    for name in (MANIFEST, SNAPSHOT, DATABASE, f"{DATABASE}-wal", f"{DATABASE}-shm"):
        (directory / name).unlink(missing_ok=True)


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


