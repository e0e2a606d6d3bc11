"""FAISS vectors keyed by chunk id: the searchable mirror of the embeddings kept in SQLite.

Inner product equals cosine because every vector is normalized. The file on disk is only a
snapshot for fast opening; SQLite stays the source of truth, so a stale or missing snapshot
is reconciled at open rather than trusted.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import numpy.typing as npt

from qa.errors import IndexMismatch

Ids = npt.NDArray[np.int64]


class VectorIndex:
    """Exact inner-product search over (chunk id → vector), with adds and removals in place."""

    def __init__(self, dimension: int) -> None:
        import faiss

        self.dimension = dimension
        self._index = faiss.IndexIDMap2(faiss.IndexFlatIP(dimension))

    def __len__(self) -> int:
        return int(self._index.ntotal)

    def ids(self) -> Ids:
        import faiss

        return faiss.vector_to_array(self._index.id_map).astype(np.int64)

    def add(self, ids: Ids, vectors: npt.NDArray[np.float32]) -> None:
        if len(ids) == 0:
            return
        if vectors.shape != (len(ids), self.dimension):
            raise IndexMismatch(
                f"vectors of shape {vectors.shape} do not fit an index of dimension "
                f"{self.dimension}"
            )
        self._index.add_with_ids(
            np.ascontiguousarray(vectors, dtype=np.float32), np.asarray(ids, dtype=np.int64)
        )

    def remove(self, ids: Ids) -> int:
        if len(ids) == 0:
            return 0
        return int(self._index.remove_ids(np.asarray(ids, dtype=np.int64)))

    def search(self, query: npt.NDArray[np.float32], k: int) -> tuple[Ids, npt.NDArray[np.float32]]:
        """Top-k (ids, scores) for one query row; fewer when the index holds fewer."""
        if len(self) == 0 or k <= 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        scores, ids = self._index.search(query.reshape(1, -1), min(k, len(self)))
        keep = ids[0] >= 0
        return ids[0][keep], scores[0][keep]

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
    def load(cls, path: Path, dimension: int) -> VectorIndex | None:
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
        index = cls.__new__(cls)
        index.dimension = dimension
        index._index = raw
        return index
