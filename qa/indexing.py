"""Folders and files → committed documents, in groups, reporting per-file errors.

Shared by single-process and Ray ingestion (`qa.distributed`): both load with `load_documents`
and commit in the groups `commit_groups` makes, in the same order, so SQLite assigns the same
chunk ids either way. What a document costs (nothing, a metadata update, or embedding) is
decided by `Collection.add`.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from qa.collection import Collection, WriteReport
from qa.errors import DocumentNotFound, QAError, StorageFull
from qa.loaders import Refused, load_file, shown, walk_files
from qa.types import Document

# Documents are committed in groups: big enough to batch the encoder well, small enough that a
# crash loses little work (each group is one transaction).
GROUP_CHUNKS = 256
# A group's size is estimated before chunking, from the text length: ~800 characters a chunk.
CHARS_PER_CHUNK = 800


@dataclass
class IndexSummary:
    added: int = 0
    replaced: int = 0
    unchanged: int = 0
    pruned: int = 0
    embedded: int = 0  # chunks embedded
    errors: list[tuple[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # nothing lost, but worth a line
    seconds: float = 0.0

    @property
    def files(self) -> int:
        return self.added + self.replaced + self.unchanged + len(self.errors)

    def record(self, report: WriteReport) -> None:
        self.added += len(report.added)
        self.replaced += len(report.replaced)
        self.unchanged += len(report.skipped)
        self.embedded += report.embedded


def load_or_record(path: Path, summary: IndexSummary, *, follow_link: bool = True
                   ) -> Document | None:
    """The file's document, or None with its one-line error recorded in `summary`.

    Any failure is that file's failure: one hostile or broken file (or a bug it trips) costs
    that file, never the run. Only interrupts and exhausted memory stop the run.
    """
    name = shown(str(path))
    try:
        if not os.path.lexists(path):
            raise QAError(f"{name}: no such file or folder")
        return load_file(path, follow_link=follow_link)
    except QAError as exc:
        summary.errors.append((name, exc.detail))
    except OSError as exc:
        summary.errors.append((name, f"{name}: {exc.strerror or exc}"))
    except MemoryError:
        raise
    except Exception as exc:  # a bug a file trips: name the file, keep the run going
        detail = " ".join(str(exc).split())[:200] or "no detail"
        summary.errors.append((name, f"{name}: could not be loaded "
                                     f"({type(exc).__name__}: {shown(detail)})"))
    return None


def load_documents(paths: list[Path], summary: IndexSummary, *, progress: bool = False,
                   follow_links: bool = False) -> Iterator[Document]:
    """Every supported file under `paths` as a Document; failures go to `summary.errors`.

    Links named on the command line are followed; links found in folders only with
    `follow_links` (and then only within `paths`, see `walk_files`).
    """
    from tqdm import tqdm

    named = set(paths)
    files = list(walk_files(paths, follow_links=follow_links))
    with tqdm(total=len(files), unit="file", disable=not progress, desc="indexing") as bar:
        for path in files:
            bar.update(1)
            if isinstance(path, Refused):
                summary.errors.append((shown(str(path.path)), path.reason))
                continue
            document = load_or_record(path, summary,
                                      follow_link=follow_links or path in named)
            if document is not None:
                yield document


def commit_groups(documents: Iterable[Document]) -> Iterator[list[Document]]:
    """Consecutive documents of about GROUP_CHUNKS chunks together: one transaction each."""
    group: list[Document] = []
    estimate = 0
    for document in documents:
        group.append(document)
        estimate += max(1, len(document.text) // CHARS_PER_CHUNK)
        if estimate >= GROUP_CHUNKS:
            yield group
            group, estimate = [], 0
    if group:
        yield group


def index_paths(
    collection: Collection,
    paths: list[Path],
    *,
    prune: bool = False,
    force: bool = False,
    follow_links: bool = False,
    progress: bool | None = None,
    on_commit: Callable[[list[str]], None] | None = None,
) -> IndexSummary:
    """Index files and folders; a bad file is recorded in `errors` and the rest go on."""
    started = time.perf_counter()
    summary = IndexSummary()
    if progress is None:
        progress = sys.stderr.isatty()
    seen: set[str] = set()

    def remembered(documents: Iterable[Document]) -> Iterator[Document]:
        for document in documents:
            seen.add(document.id)
            yield document

    documents = load_documents(paths, summary, progress=progress, follow_links=follow_links)
    for group in commit_groups(remembered(documents)):
        # A big document embeds for minutes: its own bar on a terminal, quiet otherwise.
        summary.record(collection.add(group, force=force, progress=progress))
        if on_commit:
            on_commit([d.id for d in group])
    if prune:
        summary.pruned = prune_missing(collection, paths, seen)
    merge_keyword_index(collection, summary)
    collection.save_snapshot()
    summary.seconds = time.perf_counter() - started
    return summary


def merge_keyword_index(collection: Collection, summary: IndexSummary) -> None:
    """The bulk write's last step (see Collection.merge_keyword_index). Everything written is
    committed by then: a disk too full to merge costs a warning, never the run."""
    try:
        collection.merge_keyword_index(summary.embedded)
    except StorageFull as exc:
        summary.warnings.append(f"keyword index left in segments: {exc}")


def prune_missing(collection: Collection, paths: list[Path], seen: set[str]) -> int:
    """Delete documents loaded from under `paths` whose file is gone; returns how many."""
    roots = [p.resolve() for p in paths]
    pruned = 0
    for doc_id, source in collection.sources().items():
        if doc_id in seen:
            continue
        src = Path(source).resolve()
        if any(src == r or r in src.parents for r in roots) and not src.exists():
            try:
                collection.delete(doc_id)
                pruned += 1
            except DocumentNotFound:
                pass
    return pruned
