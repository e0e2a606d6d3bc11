"""Folders kept in step with a collection as files are created, changed, moved and deleted.

The rules are `qa index --prune`'s, applied to what changed: a created or changed file is
loaded and written through `Collection.add` (unchanged content costs nothing), a file that is
gone is removed by `prune_missing`, so a rename is the old id removed and the new one added.
Changes are grouped by watchfiles (a burst of saves is one batch), and each batch is committed
through the collection's own write path, so a server over the same index (another process, or
this one) answers from it at its next question.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from qa.collection import Collection
from qa.indexing import IndexSummary, index_paths, prune_missing
from qa.loaders import shown, supported_suffixes

# watchfiles yields a batch once no change came for STEP_MS, or at the latest after
# DEBOUNCE_MS of steady changes: an editor's save (write, rename, chmod) lands in one batch,
# and a change shows in answers within about a second.
STEP_MS = 300
DEBOUNCE_MS = 1600
# How often a quiet watcher looks at its stop event (Ctrl-C, server shutdown).
POLL_MS = 500


@dataclass
class Batch:
    """What one batch of changes asked for: files to (re)load and paths that are gone."""

    load: list[Path] = field(default_factory=list)
    gone: list[Path] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.load or self.gone or self.refused)


def given_form(path: Path, roots: list[Path]) -> Path:
    """`path` (absolute, as watchfiles reports it) spelled under the root it was given as, so
    a document's source reads the same as when `qa index ROOT` loaded it."""
    for root in roots:
        for base in (root.absolute(), root.resolve()):
            try:
                return root / path.relative_to(base)
            except ValueError:
                continue
    return path


def sort_changes(changes: Iterable[tuple[str, Path]], roots: list[Path]) -> Batch:
    """Raw (kind, path) changes → a `Batch`, by what is on disk now (a file may have been
    created and deleted within one batch). Only what `qa index` would take: supported file
    types, nothing hidden, no symbolic links (reported, as `qa index` reports them)."""
    suffixes = set(supported_suffixes())
    batch = Batch()
    seen: set[Path] = set()
    for _, raw in sorted(changes, key=lambda change: str(change[1])):
        path = given_form(raw, roots)
        if path in seen or _hidden(path, roots):
            continue
        seen.add(path)
        if not path.exists() and not path.is_symlink():
            batch.gone.append(path)
        elif path.is_symlink():
            if path.suffix.lower() in suffixes:
                batch.refused.append((shown(str(path)), f"{shown(str(path))}: is a symbolic "
                                      "link; not followed"))
        elif path.is_dir():
            batch.load.append(path)  # moved in whole: walked with `qa index`'s rules
        elif path.suffix.lower() in suffixes:
            batch.load.append(path)
    return batch


def _hidden(path: Path, roots: list[Path]) -> bool:
    for root in roots:
        try:
            inside = path.relative_to(root)
        except ValueError:
            continue
        return any(part.startswith(".") for part in inside.parts)
    return path.name.startswith(".")


def apply_batch(collection: Collection, batch: Batch) -> IndexSummary:
    """Write one batch through the collection: load what changed, prune what is gone."""
    started = time.perf_counter()
    summary = index_paths(collection, batch.load, progress=False) if batch.load else (
        IndexSummary())
    summary.errors.extend(batch.refused)
    if batch.gone:
        summary.pruned = prune_missing(collection, batch.gone, set())
        collection.save_snapshot()
    summary.seconds = time.perf_counter() - started
    return summary


def watch_folders(
    collection: Callable[[], Collection],
    paths: list[Path],
    *,
    stop: threading.Event,
    on_summary: Callable[[IndexSummary], None],
    sync_first: bool = True,
    progress: bool = False,
) -> None:
    """Keep `paths` in step with the collection until `stop` is set.

    `collection` is called for each batch (a server's catalog may reopen it). With
    `sync_first`, the folders are indexed with `--prune` first, so what changed while no one
    watched is caught up. A file that fails is reported in its batch's summary; a batch that
    fails as a whole (the index went read-only, the disk filled) is reported and the watch
    goes on.
    """
    from watchfiles import watch

    roots = list(paths)
    synced = not sync_first
    # yield_on_timeout: the first (maybe empty) batch comes once the watch is registered, and
    # only then is the catch-up run, so a change made while it runs is still seen. No
    # watch_filter: watchfiles' default skips node_modules and the like, which `qa index` reads;
    # `sort_changes` applies `qa index`'s own rules instead.
    for changes in watch(*roots, watch_filter=None, step=STEP_MS,
                         debounce=DEBOUNCE_MS, rust_timeout=POLL_MS, stop_event=stop,
                         raise_interrupt=True, yield_on_timeout=True):
        if not synced:
            on_summary(index_paths(collection(), roots, prune=True, progress=progress))
            synced = True
        batch = sort_changes(((c.name, Path(p)) for c, p in changes), roots)
        if not batch:
            continue
        try:
            summary = apply_batch(collection(), batch)
        except Exception as exc:  # the next batch may succeed (space freed, lock released)
            summary = IndexSummary(errors=[("batch", f"could not apply {len(batch.load)} "
                                            f"changed and {len(batch.gone)} removed paths: "
                                            f"{exc}")])
        on_summary(summary)


def describe(summary: IndexSummary) -> str:
    """One line about a batch, in `qa index`'s words."""
    return (f"{summary.added} added, {summary.replaced} replaced, {summary.unchanged} "
            f"unchanged, {summary.pruned} removed, {len(summary.errors)} failed; "
            f"{summary.embedded} chunks embedded in {summary.seconds:.2f}s")


class FolderWatcher:
    """`watch_folders` on a background thread: a server keeps answering while it indexes."""

    def __init__(self, collection: Callable[[], Collection], paths: list[Path],
                 log: Callable[[str], None]) -> None:
        self._stop = threading.Event()
        self._log = log

        def run() -> None:
            try:
                watch_folders(collection, paths, stop=self._stop, on_summary=self._report)
            except Exception as exc:  # the server goes on answering; say why watching ended
                log(f"watching {', '.join(map(str, paths))} stopped: {exc}")

        self._thread = threading.Thread(target=run, name="qa-watch", daemon=True)

    def _report(self, summary: IndexSummary) -> None:
        for _, message in summary.errors:
            self._log(f"watch: error: {message}")
        for message in summary.warnings:
            self._log(f"watch: warning: {message}")
        if summary.added or summary.replaced or summary.pruned or summary.errors:
            self._log(f"watch: {describe(summary)}")

    def start(self) -> FolderWatcher:
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._thread.join(timeout)
