"""FAISS vectors keyed by chunk id: the searchable mirror of the embeddings kept in SQLite.

Inner product equals cosine because every vector is normalized. The file on disk is only a
snapshot for fast opening; SQLite stays the source of truth, so a stale or missing snapshot
is reconciled at open rather than trusted.

The layout follows the size. Below `ANN_THRESHOLD` vectors the index is exact (a flat scan
costs under a millisecond there, and exact means no recall to lose). At or above it the index
becomes HNSW, whose search time grows with log n instead of n (`make bench` measures both and
the recall@10 of HNSW against exact search): the graph is walked over 8-bit codes of the
vectors, and its best candidates are re-ranked exactly against the float vectors kept beside
it (FAISS's IndexHNSWSQ inside an IndexRefineFlat). HNSW cannot delete a node, so a removal is
a tombstone: the chunk id of that slot becomes -1 in the id map, and the graph walk skips
those slots with an `IDSelector`. Because the tombstone lives in the id map itself,
`save`/`load` carry it in the one FAISS file with no side file to keep in step. When
tombstones pass `COMPACT_FRACTION` of the slots the graph is rebuilt from the live vectors,
so dead nodes cannot slow the walk or waste memory for long.
"""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from qa.errors import IndexMismatch, StorageFull

Ids = npt.NDArray[np.int64]
Layout = Literal["flat", "hnsw"]

# Exact search over 20k 384-d vectors is ~1 ms on one core; past that HNSW starts to pay.
ANN_THRESHOLD = 20_000
# Links per node, build effort and search breadth. Question queries sit far from chunk vectors,
# which makes the walk harder than chunk-to-chunk search. Measured by `make bench` on 1M vectors
# drawn like real MiniLM ones (see bench/corpus.clustered): efSearch 512 gives recall@10 0.988
# in 2.5 ms (256: 0.964; 768: 0.992 in 3.5 ms), and 8-bit codes walk ~1.5x faster than floats
# at the same recall. On 100k real-derived vectors recall@10 is above 0.99.
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 192
# Candidates kept while walking the graph; FAISS also never uses fewer than k.
HNSW_EF_SEARCH = 512
# The graph's best REFINE_FACTOR·k candidates are re-ranked exactly (8-bit codes blur ties).
REFINE_FACTOR = 4
MIN_TRAINING = 1000  # vectors needed to learn the 8-bit codes' range per dimension
COMPACT_FRACTION = 0.2
# With a filter, HNSW scores fewer allowed vectors than this exactly instead of walking the
# graph (VectorIndex._search_allowed). Measured by `python -m bench.filters` on 100k vectors
# shaped like MiniLM ones, depth 30, SciFact questions, 2 shared cores; unfiltered walk 2.0 ms:
#   allowed          200    1k     2k     5k     10k    20k    50k
#   exact, ms        1.3    1.9    2.1    3.4    3.8    7.3    11.4
#   walk, ms         3.9    3.8    3.3    3.5    2.8    3.6    3.4   (allowed drawn at random)
#   walk recall@30   1.00   0.74   0.83   0.96   0.99   0.99   1.00
#   walk recall@30   0.99   0.96   0.84   0.84   0.87   0.80   0.97  (allowed = one topic)
# Exact is exact, and up to ~20k allowed it costs under 10 ms, while the walk loses a sixth
# of the best matches below 5% of the vectors, or when the allowed ones share a topic away
# from the question's (a larger efSearch barely helps there: 0.88 at 10% with 2048).
EXACT_BELOW = 20_000
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
        self._selector: Any = None  # see _live_slots
        self._dead_slots: Any = None
        self._slots: tuple[tuple[Any, int, int], Ids] | None = None  # see _slot_ids
        self._selected: tuple[Ids, tuple[Any, int, int], Any, int] | None = None  # _selection

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

    def stored(self, ids: Ids) -> npt.NDArray[np.float32] | None:
        """The vectors held for `ids`, in their order, exactly as added (flat and refinement
        vectors are kept as floats); None when any of them is not held."""
        try:
            vectors = self._index.reconstruct_batch(np.asarray(ids, dtype=np.int64))
        except RuntimeError:  # FAISS's error for an id its map does not hold
            return None
        return np.asarray(vectors, dtype=np.float32)

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
            self._selector = None
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
        vectors = self._index.index.reconstruct_n(0, total) if total else np.zeros(  # exact
            (0, self.dimension), dtype=np.float32)
        keep = slots != _DEAD
        return slots[keep], np.ascontiguousarray(vectors[keep], dtype=np.float32)

    def _rebuild(self, ids: Ids, vectors: npt.NDArray[np.float32]) -> None:
        """A fresh index of the right layout for this many vectors (hysteresis: shrink at ½)."""
        want_hnsw = len(ids) >= (self.ann_threshold if self.layout == "flat"
                                 else self.ann_threshold // 2)
        index = _hnsw(self.dimension, vectors) if want_hnsw else _flat(self.dimension)
        if len(ids):
            index.add_with_ids(vectors, ids)
        self._index, self._is_hnsw, self._dead, self._selector = index, want_hnsw, 0, None

    # -- reads -------------------------------------------------------------------------------

    def search(self, query: npt.NDArray[np.float32], k: int, *, allowed: Ids | None = None
               ) -> tuple[Ids, npt.NDArray[np.float32]]:
        """Top-k (ids, scores) for one query row; fewer when the index holds fewer. With
        `allowed` (chunk ids, ascending), only those are searched: see `_search_allowed`."""
        if len(self) == 0 or k <= 0 or (allowed is not None and len(allowed) == 0):
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        row = np.ascontiguousarray(query, dtype=np.float32).reshape(1, -1)
        with _one_thread():
            return self._search(row, k, allowed)

    def _search(self, row: npt.NDArray[np.float32], k: int, allowed: Ids | None
                ) -> tuple[Ids, npt.NDArray[np.float32]]:
        if allowed is not None:
            return self._search_allowed(row, k, allowed)
        k = min(k, len(self))
        if self.layout == "flat":
            scores, ids = self._index.search(row, k)
        else:
            import faiss

            graph = faiss.SearchParametersHNSW()  # type: ignore[attr-defined]  # stubs lag
            graph.efSearch = self.ef_search
            # The graph sees slots, not chunk ids: tombstoned slots are skipped there, so the
            # refinement only ever re-ranks live vectors. Kept on self: FAISS does not own it.
            if self._dead:
                graph.sel = self._live_slots()
            params = faiss.IndexRefineSearchParameters()  # type: ignore[attr-defined]
            params.k_factor = REFINE_FACTOR
            params.base_index_params = graph
            scores, ids = self._index.search(row, k, params=params)
        keep = ids[0] >= 0
        return ids[0][keep], scores[0][keep]

    def _search_allowed(self, row: npt.NDArray[np.float32], k: int, allowed: Ids
                        ) -> tuple[Ids, npt.NDArray[np.float32]]:
        """Top-k among `allowed` only, FAISS skipping every other vector (an IDSelector), so
        a selective filter still gets k results when k allowed vectors exist.

        Flat: the selector is on chunk ids (the id map translates). HNSW: the graph knows
        slots, so allowed ids become a bitmap of slots (a tombstone's id is -1, never allowed,
        so tombstones stay skipped). The walk still visits disallowed nodes but keeps only
        allowed ones: when few are allowed it ends with fewer than k, or misses the best, so
        below EXACT_BELOW allowed vectors (or when the walk comes back short) the allowed
        vectors are scored exactly instead, from the float copies kept for refinement.
        """
        import faiss

        sel, live = self._selection(allowed)
        if self.layout == "flat":
            k = min(k, len(self), live)
            scores, ids = self._index.search(row, k, params=_selecting(sel))
            keep = ids[0] >= 0
            return ids[0][keep], scores[0][keep]
        if live == 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        k = min(k, live)
        if live >= EXACT_BELOW:
            graph = faiss.SearchParametersHNSW()  # type: ignore[attr-defined]  # stubs lag
            graph.efSearch = self.ef_search
            graph.sel = sel
            params = faiss.IndexRefineSearchParameters()  # type: ignore[attr-defined]
            params.k_factor = REFINE_FACTOR
            params.base_index_params = graph
            scores, ids = self._index.search(row, k, params=params)
            keep = ids[0] >= 0
            if int(keep.sum()) >= k:
                return ids[0][keep], scores[0][keep]
        exact: Any = faiss.downcast_index(self._index.index).refine_index  # type: ignore[attr-defined]
        scores, found = exact.search(row, k, params=_selecting(sel))
        keep = found[0] >= 0
        return self._slot_ids()[found[0][keep]], scores[0][keep]

    def _selection(self, allowed: Ids) -> tuple[Any, int]:
        """A bitmap selector of `allowed` (over chunk ids when flat, over slots for HNSW) and
        how many vectors it can let through. Remembered for the last `allowed` array while
        the index is unchanged: the collection hands out the same array for the same filter
        until the data changes, so a repeated filter costs no pass over the slots."""
        state = self._state()
        memo = self._selected
        if memo is not None and memo[0] is allowed and _same(memo[1], state):
            return memo[2], memo[3]
        if self.layout == "flat":
            member, live = _membership(allowed, None), len(allowed)
        else:
            member = _membership(allowed, self._slot_ids())
            live = int(np.count_nonzero(member))
        sel = _bitmap(member)
        self._selected = (allowed, state, sel, live)
        return sel, live

    def _state(self) -> tuple[Any, int, int]:
        """Names what slots hold: HNSW only appends, tombstones (counted in `_dead`) and
        rebuilds (a new object); flat changes size with any add or remove."""
        return (self._index, int(self._index.ntotal), self._dead)

    def _slot_ids(self) -> Ids:
        """The chunk id of every slot (-1: a tombstone), cached while the index is unchanged."""
        import faiss

        state = self._state()
        if self._slots is None or not _same(self._slots[0], state):
            self._slots = (state, faiss.vector_to_array(self._index.id_map).astype(np.int64))
        return self._slots[1]

    def _live_slots(self) -> Any:
        """A selector of the slots that are not tombstones (cached until the next removal)."""
        import faiss

        if self._selector is None:
            slots = faiss.vector_to_array(self._index.id_map)
            dead = np.flatnonzero(slots == _DEAD).astype(np.int64)
            self._dead_slots = faiss.IDSelectorBatch(dead)
            self._selector = faiss.IDSelectorNot(self._dead_slots)
        return self._selector

    # -- disk --------------------------------------------------------------------------------

    def save(self, path: Path) -> None:
        """Temp file, fsync, rename: a crash leaves the old snapshot or the new one, never half."""
        import faiss

        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
        os.close(fd)
        try:
            try:
                faiss.write_index(self._index, tmp)
                with open(tmp, "rb") as fh:
                    os.fsync(fh.fileno())
            except (OSError, RuntimeError) as exc:  # FAISS reports a failed write as text
                if getattr(exc, "errno", None) == errno.ENOSPC or "No space left" in str(exc):
                    raise StorageFull(f"disk is full: cannot save the vector snapshot in "
                                      f"{path.parent} (the index is intact; it is rebuilt "
                                      "from SQLite at the next open)") from exc
                raise
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
        inner = faiss.downcast_index(raw.index)
        if not isinstance(inner, faiss.IndexFlat | faiss.IndexRefine):
            return None  # a layout this version does not build (e.g. an older HNSW): rebuild
        index = cls(dimension, ann_threshold=ann_threshold, ef_search=ef_search)
        index._index = raw
        index._is_hnsw = _is_hnsw(raw)
        if index._is_hnsw:
            slots = faiss.vector_to_array(raw.id_map)
            index._dead = int((slots == _DEAD).sum())
        return index


@contextmanager
def _one_thread() -> Iterator[None]:
    """Run the FAISS calls inside on the calling thread alone (OpenMP's setting is per thread:
    builds elsewhere keep every core). One query gains nothing from a team of OpenMP threads,
    and the team costs it dearly on a small busy machine: its threads wait for each other,
    and, spinning, for the next region, taking the core that SQLite and Python need next. At
    100k chunks on 2 shared cores (load ~4) an HNSW search took 14.9 ms with FAISS's 2 threads
    and 2.0 ms with one, and the rest of an /ask 16.6 ms and 9.5 ms (same results)."""
    import faiss

    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def _same(a: tuple[Any, int, int], b: tuple[Any, int, int]) -> bool:
    return a[0] is b[0] and a[1:] == b[1:]


def _bitmap(member: npt.NDArray[np.bool_]) -> Any:
    """A selector of the positions where `member` is true (it keeps the bits alive)."""
    import faiss

    return faiss.IDSelectorBitmap(  # type: ignore[call-arg]  # stubs lack the array form
        np.packbits(member, bitorder="little"))  # type: ignore[arg-type]


def _selecting(sel: Any) -> Any:
    import faiss

    params = faiss.SearchParameters()
    params.sel = sel
    return params


def _membership(allowed: Ids, ids: Ids | None) -> npt.NDArray[np.bool_]:
    """Which of `ids` are in `allowed` (both chunk ids; -1 never is), as a bool per entry;
    with `ids` None, a table indexed by chunk id itself. A lookup table over ids, not a
    sorted search: ids are dense (autoincrement), so it is one pass over each array."""
    table = np.zeros(int(allowed[-1]) + 1, dtype=bool)
    table[allowed] = True
    if ids is None:
        return table
    inside = (ids >= 0) & (ids < len(table))
    member = np.zeros(len(ids), dtype=bool)
    member[inside] = table[ids[inside]]
    return member


def _flat(dimension: int) -> Any:
    import faiss

    return faiss.IndexIDMap2(faiss.IndexFlatIP(dimension))


def _hnsw(dimension: int, training: npt.NDArray[np.float32]) -> Any:
    """The graph walks 8-bit codes (a quarter of the memory traffic of floats); its best
    `REFINE_FACTOR`·k are then re-ranked by exact inner product over the float vectors."""
    import faiss

    graph = faiss.IndexHNSWSQ(dimension, faiss.ScalarQuantizer.QT_8bit,  # type: ignore[arg-type]
                              HNSW_M, faiss.METRIC_INNER_PRODUCT)
    graph.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
    graph.hnsw.efSearch = HNSW_EF_SEARCH
    refined = faiss.IndexRefineFlat(graph)
    refined.k_factor = REFINE_FACTOR
    if len(training) < MIN_TRAINING:
        # Too few vectors to learn each dimension's range: add ±1 on every axis, the range
        # any normalized vector can take.
        axes = np.eye(dimension, dtype=np.float32)
        training = np.vstack([training, axes, -axes])
    refined.train(np.ascontiguousarray(training, dtype=np.float32))
    return faiss.IndexIDMap2(refined)


def _is_hnsw(index: Any) -> bool:
    import faiss

    return isinstance(faiss.downcast_index(index.index), faiss.IndexRefine)
