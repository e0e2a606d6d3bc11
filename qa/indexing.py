"""Folders and files → committed documents, in batches, reporting per-file errors."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from qa.collection import Collection
from qa.errors import DocumentNotFound, QAError
from qa.loaders import iter_files, load_file
from qa.types import Document

# Documents are committed in groups: big enough to batch the encoder well, small enough that a
# crash loses little work (each group is one transaction).
GROUP_CHUNKS = 256


@dataclass
class IndexSummary:
    added: int = 0
    replaced: int = 0
    unchanged: int = 0
    pruned: int = 0
    chunks: int = 0
    embedded: int = 0
    errors: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def files(self) -> int:
        return self.added + self.replaced + self.unchanged + len(self.errors)


def load_or_record(path: Path, summary: IndexSummary) -> Document | None:
    """The file's document, or None with its one-line error recorded in `summary`."""
    try:
        if not path.exists():
            raise QAError(f"{path}: no such file or folder")
        return load_file(path)
    except QAError as exc:
        summary.errors.append((str(path), exc.detail))
    except OSError as exc:
        summary.errors.append((str(path), f"{path}: {exc.strerror or exc}"))
    return None


def index_paths(
    collection: Collection,
    paths: list[Path],
    *,
    prune: bool = False,
    force: bool = False,
    progress: bool | None = None,
    on_commit: Callable[[list[str]], None] | None = None,
) -> IndexSummary:
    """Index files and folders; a bad file is recorded in `errors` and the rest go on."""
    started = time.perf_counter()
    summary = IndexSummary()
    if progress is None:
        progress = sys.stderr.isatty()
    files = list(iter_files(paths))
    known = collection.store.content_hashes()
    group: list[Document] = []
    group_chunks = 0
    seen: set[str] = set()

    def flush() -> None:
        nonlocal group, group_chunks
        if group:
            report = collection.add(group, force=force, progress=False)
            summary.added += len(report.added)
            summary.replaced += len(report.replaced)
            summary.unchanged += len(report.skipped)
            summary.chunks += report.embedded
            summary.embedded += report.embedded
            if on_commit:
                on_commit([d.id for d in group])
        group, group_chunks = [], 0

    from tqdm import tqdm

    with tqdm(total=len(files), unit="file", disable=not progress, desc="indexing") as bar:
        for path in files:
            bar.update(1)
            document = load_or_record(path, summary)
            if document is None:
                continue
            seen.add(document.id)
            if not force and known.get(document.id) == document.content_hash:
                summary.unchanged += 1  # unchanged content: no chunking, no embedding
                continue
            group.append(document)
            group_chunks += max(1, len(document.text) // 800)
            if group_chunks >= GROUP_CHUNKS:
                flush()
        flush()
    if prune:
        roots = [p.resolve() for p in paths]
        for doc_id, source in collection.store.sources().items():
            if doc_id in seen:
                continue
            src = Path(source).resolve()
            if any(src == r or r in src.parents for r in roots) and not src.exists():
                try:
                    collection.delete(doc_id)
                    summary.pruned += 1
                except DocumentNotFound:
                    pass
    collection.save_snapshot()
    summary.seconds = time.perf_counter() - started
    return summary
