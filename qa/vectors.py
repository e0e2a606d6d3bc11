"""FAISS vectors keyed by chunk id: the searchable mirror of the embeddings kept in SQLite.

Inner product equals cosine because every vector is normalized. The file on disk is only a
snapshot for fast opening; SQLite stays the source of truth, so a stale or missing snapshot
is reconciled at open rather than trusted.

The layout follows the size. Below `ANN_THRESHOLD` vectors the index is exact (a flat scan
costs under a millisecond there, and exact means no recall to lose). At or above it the index
becomes HNSW, whose search time grows with log n instead of n (`make bench` measures both and
the recall@10 of HNSW against exact search). HNSW cannot delete a node, so a removal is a
tombstone: the chunk id of that slot becomes -1 in the id map, and every search filters -1 out
with an `IDSelector`. Because the tombstone lives in the id map itself, `save`/`load` carry it in
the one FAISS file with no side file to keep in step. When tombstones pass `COMPACT_FRACTION`
of the slots the graph is rebuilt from the live vectors, so dead nodes cannot slow the walk or
waste memory for long.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from qa.errors import IndexMismatch

Ids = npt.NDArray[np.int64]
Layout = Literal["flat", "hnsw"]

# Exact search over 20k 384-d vectors is ~1 ms on one core; past that HNSW starts to pay.
ANN_THRESHOLD = 20_000
# Links per node and build effort. Question queries sit far from chunk vectors, which makes
# the graph walk harder than chunk-to-chunk search: on 60k MiniLM-derived vectors recall@10 was
# 0.94 with efConstruction 80 and 0.99 with 128 (efSearch 128); `make bench` re-measures it.
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 128
# Candidates kept while walking the graph; FAISS also never uses fewer than k.
HNSW_EF_SEARCH = 192
COMPACT_FRACTION = 0.2
_DEAD = -1


class VectorIndex:
    """Inner-product search over (chunk id → vector): exact when small, HNSW when large."""

    def __init__(self, dimension: int, *, ann_threshold: int = ANN_THRESHOLD,
                 ef_search: int = HNSW_EF_SEARCH) -> None:
        self.dimension = dimension
        self.ann_threshold = ann_threshold
        self.ef_search = ef_search
        self._index: Any = _flat(dimension)
        self._is_hnsw = False
        self._dead = 0

    # -- shape -------------------------------------------------------------------------------

    @property
    def layout(self) -> Layout:
        return "hnsw" if self._is_hnsw else "flat"

    def __len__(self) -> int:
        return int(self._index.ntotal) - self._dead

    def ids(self) -> Ids:
        import faiss

        slots = faiss.vector_to_array(self._index.id_map).astype(np.int64)
        return slots[slots != _DEAD] if self._dead else slots

    # -- writes ------------------------------------------------------------------------------

    def add(self, ids: Ids, vectors: npt.NDArray[np.float32]) -> None:
        if len(ids) == 0:
            return
        if vectors.shape != (len(ids), self.dimension):
            raise IndexMismatch(
                f"vectors of shape {vectors.shape} do not fit an index of dimension "
                f"{self.dimension}"
            )
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        ids = np.asarray(ids, dtype=np.int64)
        if self.layout == "flat" and len(self) + len(ids) >= self.ann_threshold:
            # Grow into HNSW once, with everything so far plus the new rows in one build.
            old_ids, old_vectors = self._live()
            self._rebuild(np.concatenate([old_ids, ids]), np.vstack([old_vectors, vectors]))
            return
        self._index.add_with_ids(vectors, ids)

    def remove(self, ids: Ids) -> int:
        if len(ids) == 0:
            return 0
        ids = np.asarray(ids, dtype=np.int64)
        if self.layout == "flat":
            return int(self._index.remove_ids(ids))
        import faiss

        slots = faiss.vector_to_array(self._index.id_map).astype(np.int64)
        hit = np.isin(slots, ids[ids != _DEAD])
        removed = int(hit.sum())
        if removed:
            slots[hit] = _DEAD
            faiss.copy_array_to_vector(slots, self._index.id_map)
            self._index.construct_rev_map()
            self._dead += removed
            self._maybe_compact()
        return removed

    def _maybe_compact(self) -> None:
        total = int(self._index.ntotal)
        if self._dead and self._dead >= COMPACT_FRACTION * total:
            self._rebuild(*self._live())

    def _live(self) -> tuple[Ids, npt.NDArray[np.float32]]:
        import faiss

        total = int(self._index.ntotal)
        slots = faiss.vector_to_array(self._index.id_map).astype(np.int64)
        vectors = self._index.index.reconstruct_n(0, total) if total else np.zeros(
            (0, self.dimension), dtype=np.float32)
        keep = slots != _DEAD
        return slots[keep], np.ascontiguousarray(vectors[keep], dtype=np.float32)

    def _rebuild(self, ids: Ids, vectors: npt.NDArray[np.float32]) -> None:
        """A fresh index of the right layout for this many vectors (hysteresis: shrink at ½)."""
        want_hnsw = len(ids) >= (self.ann_threshold if self.layout == "flat"
                                 else self.ann_threshold // 2)
        index = _hnsw(self.dimension) if want_hnsw else _flat(self.dimension)
        if len(ids):
            index.add_with_ids(vectors, ids)
        self._index, self._is_hnsw, self._dead = index, want_hnsw, 0

    # -- reads -------------------------------------------------------------------------------

    def search(self, query: npt.NDArray[np.float32], k: int) -> tuple[Ids, npt.NDArray[np.float32]]:
        """Top-k (ids, scores) for one query row; fewer when the index holds fewer."""
        if len(self) == 0 or k <= 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        row = np.ascontiguousarray(query, dtype=np.float32).reshape(1, -1)
        k = min(k, len(self))
        if self.layout == "flat":
            scores, ids = self._index.search(row, k)
        else:
            import faiss

            params = faiss.SearchParametersHNSW()  # type: ignore[attr-defined]  # stubs lag
            params.efSearch = self.ef_search
            # The id map translates slots to chunk ids before the selector sees them, so
            # "id ≥ 0" skips tombstones. Held in a local: FAISS does not own the selector.
            live = faiss.IDSelectorRange(0, np.iinfo(np.int64).max) if self._dead else None
            if live is not None:
                params.sel = live
            scores, ids = self._index.search(row, k, params=params)
        keep = ids[0] >= 0
        return ids[0][keep], scores[0][keep]

    # -- disk --------------------------------------------------------------------------------

    def save(self, path: Path) -> None:
        """Temp file, fsync, rename: a crash leaves the old snapshot or the new one, never half."""
        import faiss

        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
        os.close(fd)
        try:
            faiss.write_index(self._index, tmp)
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
            # mkstemp makes 0600; a published snapshot must be readable by the API's user.
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)
            os.replace(tmp, path)
            dir_fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    @classmethod
    def load(cls, path: Path, dimension: int, *, ann_threshold: int = ANN_THRESHOLD,
             ef_search: int = HNSW_EF_SEARCH) -> VectorIndex | None:
        """The snapshot at `path`, or None when it is missing or unreadable (then rebuild)."""
        import faiss

        if not path.exists():
            return None
        try:
            raw = faiss.read_index(str(path))
        except RuntimeError:
            return None
        if raw.d != dimension or not isinstance(raw, faiss.IndexIDMap2):
            return None
        index = cls(dimension, ann_threshold=ann_threshold, ef_search=ef_search)
        index._index = raw
        index._is_hnsw = _is_hnsw(raw)
        if index._is_hnsw:
            slots = faiss.vector_to_array(raw.id_map)
            index._dead = int((slots == _DEAD).sum())
        return index


def _flat(dimension: int) -> Any:
    import faiss

    return faiss.IndexIDMap2(faiss.IndexFlatIP(dimension))


def _hnsw(dimension: int) -> Any:
    import faiss

    inner = faiss.IndexHNSWFlat(dimension, HNSW_M, faiss.METRIC_INNER_PRODUCT)
    inner.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
    inner.hnsw.efSearch = HNSW_EF_SEARCH
    return faiss.IndexIDMap2(inner)


def _is_hnsw(index: Any) -> bool:
    import faiss

    return isinstance(faiss.downcast_index(index.index), faiss.IndexHNSW)
