"""The option policy of `qa eval`: which sources, modes and document lengths go together."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import cast, get_args

from qa.errors import InvalidInput
from qa.eval.datasets import Dataset, DatasetError, DocLength, load_dataset
from qa.settings import Mode


class OptionError(InvalidInput):
    """Options that contradict each other, or the dataset they are given with."""


@dataclass(frozen=True)
class EvalPlan:
    """One evaluation as asked for, its contradictions ruled out and its defaults filled in."""

    dataset: Dataset
    modes: tuple[Mode, ...]
    k: int = 10
    index_dir: Path | None = None
    url: str | None = None
    cache_dir: Path | None = None  # None: build the dataset's index afresh and keep nothing
    doc_length: DocLength = "full"
    compare: bool = False  # modes side by side, even when only one was named
    batch_queries: bool = False  # embed questions ahead in batches: faster, latency not kept


def plan_evaluation(path: Path, *, mode: str, compare: str | None = None, k: int = 10,
                    index_dir: Path | None = None, url: str | None = None,
                    cache_dir: Path | None = None, doc_length: str | None = None,
                    unanswerable: Path | None = None, batch_queries: bool = False) -> EvalPlan:
    """Check the options, load the dataset, then check what depends on it: the first
    contradiction (or a dataset that cannot be read) raises an InvalidInput naming the option.

    `mode` is the one mode evaluated without `compare`; `doc_length` None means BEIR's
    published protocol ("model") for a BEIR folder and "full" for the others. `unanswerable`
    names a second dataset whose questions are asked of the first one's documents, as
    questions they cannot answer (its own documents are never indexed).
    """
    if index_dir is not None and url is not None:
        raise OptionError("give --index or --url, not both")
    if batch_queries and url is not None:
        raise OptionError("--batch-queries embeds questions in this process; a service "
                          "behind --url embeds its own")
    if unanswerable is not None and unanswerable.resolve() == path.resolve():
        raise OptionError("--unanswerable must name another dataset than DATASET: "
                          "its questions are answerable there")
    modes = [m.strip() for m in compare.split(",") if m.strip()] if compare else [mode]
    if not modes or any(m not in get_args(Mode) for m in modes):
        raise OptionError(f"--compare takes modes among dense, keyword, hybrid; got {compare!r}")
    dataset = load_dataset(path)
    if unanswerable is not None:
        try:
            other = load_dataset(unanswerable)
        except DatasetError as exc:
            raise DatasetError(f"--unanswerable: {exc.detail}") from exc
        if other.documents and other.fingerprint() == dataset.fingerprint():
            raise OptionError("--unanswerable must name another dataset than DATASET: "
                              "it holds the same documents, so its questions are answerable")
        dataset = dataset.with_unanswerable(other)
    builds_index = index_dir is None and url is None and bool(dataset.documents)
    if doc_length is not None and not (builds_index and dataset.kind == "beir"):
        raise OptionError(
            "--doc-length applies to the index built from a BEIR folder, not to "
            + ("--index/--url" if not builds_index else f"a {dataset.kind} dataset"))
    if doc_length is not None and doc_length not in get_args(DocLength):
        raise OptionError(f"--doc-length takes model or full; got {doc_length!r}")
    return EvalPlan(
        dataset, cast("tuple[Mode, ...]", tuple(modes)), k, index_dir, url, cache_dir,
        cast("DocLength", doc_length or ("model" if dataset.kind == "beir" else "full")),
        compare=compare is not None, batch_queries=batch_queries)
