"""Ingestion on Ray gives the same chunks, ids and vectors as the single-process path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from qa.collection import Collection
from qa.embedding import Embedder
from qa.indexing import index_paths
from qa.settings import Settings

pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'qa[ray]'")

from qa.distributed import index_paths_on_ray  # noqa: E402


def chunk_table(collection: Collection) -> list[tuple[int, str, int, int]]:
    ids = collection.store.embedded_chunk_ids().tolist()
    rows = collection.store.chunk_rows(ids)
    return [(i, rows[i].document_id, rows[i].start, rows[i].end) for i in ids]


@pytest.mark.slow
def test_ray_ingestion_matches_single_process(tmp_path: Path, seed_docs: Path,
                                              embedder: Embedder) -> None:
    local = Settings(index_dir=tmp_path / "local")
    on_ray = Settings(index_dir=tmp_path / "ray")
    # A second, multi-section document so that commit order across documents is tested too.
    (seed_docs / "notes.md").write_text(
        "# Field notes\n\n" + " ".join(f"Observation {i}: the tide rose {i} cm." for i in
                                         range(120)) + "\n\n## Later\n\nThe wind fell.\n",
        encoding="utf-8",
    )
    single = Collection.open(local, embedder, create=True)
    distributed = Collection.open(on_ray, embedder, create=True)
    try:
        expected = index_paths(single, [seed_docs], progress=False)
        got = index_paths_on_ray(distributed, [seed_docs], on_ray)
        assert (got.added, got.embedded, got.errors) == (expected.added, expected.embedded, [])
        assert got.embedded > 0

        rows = chunk_table(distributed)
        assert rows == chunk_table(single)
        ids = [r[0] for r in rows]
        a = single.store.embeddings(ids, embedder.dimension)
        b = distributed.store.embeddings(ids, embedder.dimension)
        cosines = np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
        assert cosines.min() >= 0.999
        assert distributed.check()["missing_vectors"] == 0

        # A second run embeds nothing: unchanged documents are skipped as on the local path.
        again = index_paths_on_ray(distributed, [seed_docs], on_ray)
        assert (again.unchanged, again.embedded) == (expected.added, 0)
    finally:
        single.close()
        distributed.close()
