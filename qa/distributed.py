"""Ingestion on Ray: chunk here, embed on a Ray cluster with Ray Data, commit here.

Only the embedding is distributed: it is the one stage that costs (≈ 30 chunks/s per core
with MiniLM), while loading and chunking are cheap and must stay identical to the
single-process path. Documents are loaded by the same `load_documents`; those whose content
changed (`Collection.needs_embedding`) are chunked by the same `Collection.chunk`, embedded by
actors that each load the same `Embedder` once, put back in their original order by row
number, and committed through `Collection.add` in the same `commit_groups` and order as
`index_paths`, so the chunk ids SQLite assigns are the ones a single process would have
assigned.

Without an address Ray starts locally with small resources; with one (`auto`,
`ray://head:10001`, `head:6379`) it joins that cluster. The workers need this package and the
model installed, as the driver does.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from qa.collection import Collection
from qa.errors import QAError
from qa.indexing import (
    IndexSummary,
    commit_groups,
    load_documents,
    merge_keyword_index,
    prune_missing,
)
from qa.settings import Settings

# What a local Ray may take on a shared machine: the driver keeps working beside it.
LOCAL_RESOURCES: dict[str, Any] = {
    "num_cpus": 2,
    "object_store_memory": 500 * 1024 * 1024,
    "include_dashboard": False,
}
RAY_BATCH = 256  # chunks per actor call: large enough to keep the encoder's batches full


class RayUnavailable(QAError):
    status = 503
    title = "Ray unavailable"


class _EmbedActor:
    """One Embedder per Ray actor, loaded once and reused for every batch it is given."""

    def __init__(self, settings: Settings) -> None:
        from qa.embedding import Embedder

        self.embedder = Embedder.from_settings(settings)

    def __call__(self, batch: dict[str, npt.NDArray[Any]]) -> dict[str, npt.NDArray[Any]]:
        vectors = self.embedder.embed([str(t) for t in batch["text"]], progress=False)
        return {"row": batch["row"], "vector": vectors}


def start_ray(address: str | None) -> bool:
    """Connect to `address`, or start a small local Ray; True when this call started it."""
    try:
        import ray
    except ImportError:
        raise RayUnavailable(
            "Ray is not installed: pip install 'qa[ray]' (or 'ray[data]')"
        ) from None
    if ray.is_initialized():
        return False
    try:
        if address:
            ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
        else:
            ray.init(**LOCAL_RESOURCES, log_to_driver=False, logging_level=logging.WARNING)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = address or "a local Ray"
        raise RayUnavailable(f"could not start or reach {where}: {exc}") from None
    return True


def embed_texts_on_ray(texts: list[str], *, settings: Settings, actors: int | None = None,
                       dimension: int) -> npt.NDArray[np.float32]:
    """Embed `texts` with a pool of Ray actors; rows come back in the order given."""
    import ray
    import ray.data

    out = np.zeros((len(texts), dimension), dtype=np.float32)
    if not texts:
        return out
    if actors is None:
        actors = max(1, int(ray.cluster_resources().get("CPU", 1)))
    # The CLI prints its own summary; Ray Data's per-operator progress lines are noise there.
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.enable_auto_log_stats = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    dataset = ray.data.from_items([{"row": i, "text": t} for i, t in enumerate(texts)])
    vectors = dataset.map_batches(
        _EmbedActor,
        fn_constructor_kwargs={"settings": settings},
        batch_size=RAY_BATCH,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(
            size=min(actors, max(1, -(-len(texts) // RAY_BATCH)))),
        num_cpus=1,
    )
    filled = np.zeros(len(texts), dtype=bool)
    for batch in vectors.iter_batches(batch_size=RAY_BATCH, batch_format="numpy"):
        rows = np.asarray(batch["row"], dtype=np.int64)
        out[rows] = np.asarray(batch["vector"], dtype=np.float32)
        filled[rows] = True
    if not filled.all():
        raise RayUnavailable(f"Ray returned {int(filled.sum())} of {len(texts)} vectors")
    return out


def index_paths_on_ray(collection: Collection, paths: list[Path], settings: Settings, *,
                       address: str | None = None, prune: bool = False, force: bool = False,
                       follow_links: bool = False,
                       on_commit: Callable[[list[str]], None] | None = None) -> IndexSummary:
    """`index_paths`, with the embedding done by Ray Data; same chunks, same ids, same summary."""
    started = time.perf_counter()
    summary = IndexSummary()
    documents = list(load_documents(paths, summary, follow_links=follow_links))
    todo = [(d, collection.chunk(d)) for d in collection.needs_embedding(documents, force=force)]
    texts = [c.text for _, chunks in todo for c in chunks]
    vectors: dict[str, npt.NDArray[np.float32]] = {}
    if texts:
        started_here = start_ray(address)
        try:
            rows = embed_texts_on_ray(texts, settings=settings,
                                      dimension=collection.manifest.dimension)
        finally:
            if started_here:
                import ray

                ray.shutdown()
        offset = 0
        for document, chunks in todo:
            vectors[document.id] = rows[offset : offset + len(chunks)]
            offset += len(chunks)
    for group in commit_groups(documents):
        summary.record(collection.add(group, force=force, progress=False, vectors=vectors))
        if on_commit:
            on_commit([d.id for d in group])
    summary.embedded = len(texts)
    if prune:
        summary.pruned = prune_missing(collection, paths, {d.id for d in documents})
    merge_keyword_index(collection, summary)
    collection.save_snapshot()
    summary.seconds = time.perf_counter() - started
    return summary
