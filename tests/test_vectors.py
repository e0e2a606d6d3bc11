"""The vector index: one contract, run against every layout (exact, HNSW, grown into HNSW)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from qa.errors import IndexMismatch
from qa.vectors import VectorIndex

DIM = 32
# Each layout is a way to build the index; all must keep the same promises.
LAYOUTS = {
    "flat": lambda: VectorIndex(DIM, ann_threshold=10**9),
    "hnsw": lambda: VectorIndex(DIM, ann_threshold=0),
    "grown": lambda: VectorIndex(DIM, ann_threshold=150),
}
EXPECTED_LAYOUT = {"flat": "flat", "hnsw": "hnsw", "grown": "hnsw"}


def unit_rows(n: int, seed: int) -> npt.NDArray[np.float32]:
    rows = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def exact_top(vectors: npt.NDArray[np.float32], ids: npt.NDArray[np.int64],
              query: npt.NDArray[np.float32], k: int) -> list[int]:
    order = np.argsort(-(vectors @ query))[:k]
    return [int(i) for i in ids[order]]


@pytest.fixture(params=sorted(LAYOUTS))
def layout(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_index_honours_add_remove_search_save_load(layout: str, tmp_path: Path) -> None:
    index = LAYOUTS[layout]()
    ids = np.arange(1000, 1200, dtype=np.int64)  # chunk ids, not positions
    vectors = unit_rows(len(ids), seed=1)
    index.add(ids[:100], vectors[:100])
    index.add(ids[100:], vectors[100:])
    assert index.layout == EXPECTED_LAYOUT[layout]
    assert len(index) == 200
    assert sorted(index.ids().tolist()) == ids.tolist()

    found, scores = index.search(vectors[7], 5)
    assert found[0] == ids[7]
    assert scores[0] == pytest.approx(1.0, abs=1e-5)
    assert list(scores) == sorted(scores, reverse=True)

    gone = ids[[7, 8, 150]]
    assert index.remove(gone) == 3
    assert index.remove(gone) == 0  # removing twice is a no-op
    assert len(index) == 197
    assert not set(gone.tolist()) & set(index.ids().tolist())
    found, _ = index.search(vectors[7], 10)
    assert ids[7] not in found and len(found) == 10

    path = tmp_path / "vectors.faiss"
    index.save(path)
    loaded = VectorIndex.load(path, DIM)
    assert loaded is not None
    assert loaded.layout == index.layout
    assert len(loaded) == 197
    assert sorted(loaded.ids().tolist()) == sorted(index.ids().tolist())
    for row in (3, 42, 199):
        assert list(loaded.search(vectors[row], 5)[0]) == list(index.search(vectors[row], 5)[0])
    assert ids[7] not in loaded.search(vectors[7], 10)[0]


def test_search_finds_the_exact_neighbours_in_a_small_index(layout: str) -> None:
    index = LAYOUTS[layout]()
    ids = np.arange(200, dtype=np.int64) * 3
    vectors = unit_rows(200, seed=2)
    index.add(ids, vectors)
    index.remove(ids[:20])
    live_ids, live_vectors = ids[20:], vectors[20:]
    for query in unit_rows(10, seed=3):
        assert list(index.search(query, 10)[0]) == exact_top(live_vectors, live_ids, query, 10)


def test_a_search_runs_on_one_openmp_thread_and_leaves_the_callers_setting(layout: str
                                                                          ) -> None:
    import faiss

    index = LAYOUTS[layout]()
    index.add(np.arange(300, dtype=np.int64), unit_rows(300, seed=7))
    seen: list[int] = []
    search = index._search

    def spy(*args: object) -> object:  # what the thread's setting is while FAISS searches
        seen.append(faiss.omp_get_max_threads())
        return search(*args)  # type: ignore[arg-type]

    index._search = spy  # type: ignore[method-assign]
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(3)
    try:
        index.search(unit_rows(1, 8)[0], 5)
        index.search(unit_rows(1, 9)[0], 5, allowed=np.arange(0, 300, 2, dtype=np.int64))
        assert seen == [1, 1]
        assert faiss.omp_get_max_threads() == 3  # builds on this thread keep their threads
    finally:
        faiss.omp_set_num_threads(before)


def test_k_larger_than_the_index_returns_what_there_is(layout: str) -> None:
    index = LAYOUTS[layout]()
    assert len(index.search(unit_rows(1, 4)[0], 5)[0]) == 0
    index.add(np.array([5, 6], dtype=np.int64), unit_rows(2, seed=5))
    index.remove(np.array([5], dtype=np.int64))
    found, _ = index.search(unit_rows(1, 6)[0], 10)
    assert found.tolist() == [6]


def test_vectors_of_the_wrong_dimension_are_refused(layout: str) -> None:
    index = LAYOUTS[layout]()
    with pytest.raises(IndexMismatch, match="dimension 32"):
        index.add(np.array([1], dtype=np.int64), np.zeros((1, DIM + 1), dtype=np.float32))


def test_hnsw_compacts_tombstones_and_shrinks_back_to_exact() -> None:
    index = VectorIndex(DIM, ann_threshold=100)
    ids = np.arange(300, dtype=np.int64)
    vectors = unit_rows(300, seed=7)
    index.add(ids, vectors)
    assert index.layout == "hnsw"
    index.remove(ids[:40])  # under 20% dead: tombstones only
    assert index._dead == 40
    index.remove(ids[40:100])  # past 20%: rebuilt from the live vectors, still HNSW
    assert index._dead == 0 and index.layout == "hnsw" and len(index) == 200
    index.remove(ids[100:260])  # 40 left, under half the threshold: back to exact
    assert index.layout == "flat"
    assert sorted(index.ids().tolist()) == ids[260:].tolist()
    assert index.search(vectors[270], 1)[0].tolist() == [270]


def test_unreadable_or_foreign_snapshot_loads_as_none(tmp_path: Path) -> None:
    path = tmp_path / "vectors.faiss"
    assert VectorIndex.load(path, DIM) is None
    path.write_bytes(b"not a faiss file")
    assert VectorIndex.load(path, DIM) is None
    index = VectorIndex(DIM)
    index.add(np.array([1], dtype=np.int64), unit_rows(1, seed=8))
    index.save(path)
    assert VectorIndex.load(path, DIM + 1) is None


def test_a_snapshot_of_an_older_layout_loads_as_none_so_it_is_rebuilt(tmp_path: Path) -> None:
    import faiss

    old = faiss.IndexIDMap2(faiss.IndexHNSWFlat(DIM, 8, faiss.METRIC_INNER_PRODUCT))
    old.add_with_ids(np.eye(DIM, dtype=np.float32), np.arange(DIM, dtype=np.int64))
    faiss.write_index(old, str(tmp_path / "vectors.faiss"))
    assert VectorIndex.load(tmp_path / "vectors.faiss", DIM) is None
