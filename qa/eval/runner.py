"""Running a dataset's questions through a retriever, scoring each mode, and the cached index
of a dataset's own documents that a run is usually made against."""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qa.eval import metrics
from qa.eval.datasets import Dataset, Question
from qa.eval.judging import (
    ANSWER,
    answer_run,
    document_run,
    first_relevant,
    highlight_hits,
    passage_hits,
    passage_id,
)
from qa.eval.metrics import CalibrationBin
from qa.eval.options import EvalPlan
from qa.eval.retrievers import HttpRetriever, LocalRetriever, Retriever
from qa.settings import Mode, Settings
from qa.types import Answer, Passage

if TYPE_CHECKING:
    from qa.collection import Collection
    from qa.embedding import Embedder

HIT_CUTOFFS = (1, 3, 5, 10)
# The service's own default, so that a caller naming no threshold scores what it ships.
DEFAULT_MIN_CONFIDENCE: float = Settings.model_fields["min_confidence"].default
BEIR_DEPTH = 100  # passages per query: enough to rank well over 10 distinct documents
COMPLETE = ".complete"


@dataclass(frozen=True)
class Outcome:
    """One question's result: what came back, how fast, and where the first hit ranked."""

    question: Question
    passages: tuple[Passage, ...]
    latency_ms: float
    first_hit: int | None  # rank in the judged run (documents for BEIR), None if missed
    answer: Answer | None = None  # the verdict at the threshold: found or not


@dataclass
class ModeResult:
    mode: str
    metrics: dict[str, Any]
    outcomes: list[Outcome]
    run: dict[str, dict[str, float]]  # what was retrieved: BEIR doc ids, else passage ids
    hit_curve: dict[int, float] = field(default_factory=dict)  # hit@k for k = 1..max cutoff
    # Top passage's confidence against its hit rate, when the dataset has unanswerable questions
    calibration: list[CalibrationBin] = field(default_factory=list)


# -- scoring ---------------------------------------------------------------------------------

def score_mode(dataset: Dataset, mode: str, outcomes: list[Outcome], k: int, *,
               timed: bool = True) -> ModeResult:
    """Outcomes → the metrics object (keys as `qa eval --json` prints them); `timed` False
    leaves latency out (null) when questions were embedded ahead, so it would not be honest."""
    answerable = [o for o in outcomes if not o.question.impossible]
    beir = dataset.kind == "beir"
    if beir:
        qrels = {o.question.id: dataset.qrels[o.question.id] for o in answerable}
        judged = {o.question.id: document_run(o.passages) for o in answerable}
    else:
        qrels = {o.question.id: {ANSWER: 1} for o in answerable}
        judged = {o.question.id: answer_run(o.question, o.passages) for o in answerable}
    cutoffs = sorted({*HIT_CUTOFFS, k})
    values: dict[str, Any] = {"questions": len(answerable)}
    for c in cutoffs:
        values[f"hit@{c}"] = metrics.hit_at_k(qrels, judged, c)
    if beir:
        values[f"recall@{k}"] = metrics.recall_at_k(qrels, judged, k)
    values["mrr@10"] = metrics.mrr_at_k(qrels, judged, 10)
    values["ndcg@10"] = metrics.ndcg_at_k(qrels, judged, 10)
    values["highlight_hit@1"] = None if beir or not answerable else sum(
        1 for o in answerable if o.passages and highlight_hits(o.question, o.passages[0])
    ) / len(answerable)
    latencies = [o.latency_ms for o in outcomes]
    values["latency_ms_p50"] = metrics.percentile(latencies, 50) if timed else None
    values["latency_ms_p95"] = metrics.percentile(latencies, 95) if timed else None
    impossible = [o for o in outcomes if o.question.impossible]
    calibration: list[CalibrationBin] = []
    if impossible:
        values["no_answer_questions"] = len(impossible)
        values["no_answer_auroc"] = no_answer_auroc(impossible, answerable)
        calibrated, calibration = calibration_metrics(dataset, outcomes)
        values.update(calibrated)
    rounded = {key: round(v, 4) if isinstance(v, float) else v for key, v in values.items()}
    scored = [
        Outcome(o.question, o.passages, o.latency_ms,
                first_relevant(qrels[o.question.id], metrics.ranking(judged[o.question.id]))
                if not o.question.impossible else None)
        for o in outcomes
    ]
    raw = ({o.question.id: document_run(o.passages) for o in outcomes} if beir else
           {o.question.id: {passage_id(p): p.score for p in o.passages} for o in outcomes})
    curve = {c: metrics.hit_at_k(qrels, judged, c) for c in range(1, max(cutoffs) + 1)}
    return ModeResult(mode, rounded, scored, raw, curve, calibration)


def top_passage_hits(dataset: Dataset, outcome: Outcome) -> bool:
    """Whether the first passage answers: covers a gold span, holds an answer string, or (BEIR)
    comes from a relevant document. Never for an unanswerable question."""
    q = outcome.question
    if q.impossible or not outcome.passages:
        return False
    top = outcome.passages[0]
    if dataset.kind == "beir":
        return dataset.qrels.get(q.id, {}).get(top.citation.document_id, 0) > 0
    return passage_hits(q, top)


def calibration_metrics(dataset: Dataset, outcomes: Sequence[Outcome]
                        ) -> tuple[dict[str, Any], list[CalibrationBin]]:
    """ece and its bins, over every question (an unanswerable one is a miss), and at the
    threshold answered_precision, answered_coverage and the threshold itself.

    ece is null when a top passage has no confidence; the answered_* metrics when an outcome
    has no answer verdict; min_confidence when the verdicts used different thresholds.
    """
    hits = [top_passage_hits(dataset, o) for o in outcomes]
    values: dict[str, Any] = {"ece": None}
    bins: list[CalibrationBin] = []
    confidences = [o.passages[0].confidence if o.passages else 0.0 for o in outcomes]
    if all(c is not None for c in confidences):
        known = [c for c in confidences if c is not None]
        values["ece"] = metrics.expected_calibration_error(known, hits)
        bins = metrics.calibration_bins(known, hits)
    answers = [o.answer for o in outcomes]
    thresholds = {a.threshold for a in answers if a is not None}
    values["min_confidence"] = thresholds.pop() if len(thresholds) == 1 else None
    values["answered_precision"] = values["answered_coverage"] = None
    if all(a is not None for a in answers):
        found = [a.found for a in answers if a is not None]
        values["answered_precision"] = metrics.answered_precision(found, hits)
        values["answered_coverage"] = metrics.answered_coverage(
            found, [not o.question.impossible for o in outcomes])
    return values, bins


def no_answer_auroc(impossible: Sequence[Outcome], answerable: Sequence[Outcome]
                    ) -> float | None:
    """How well `1 - top confidence` separates unanswerable questions from answerable ones.

    None when a top passage has no confidence (a service too old to give one).
    """
    def no_answer_score(o: Outcome) -> float | None:
        if not o.passages:
            return 1.0
        top = o.passages[0].confidence
        return None if top is None else 1.0 - top

    pos = [no_answer_score(o) for o in impossible]
    neg = [no_answer_score(o) for o in answerable]
    if any(s is None for s in pos + neg):
        return None
    return metrics.auroc([s for s in pos if s is not None], [s for s in neg if s is not None])


# -- running -------------------------------------------------------------------------------

def depth_for(dataset: Dataset, k: int) -> int:
    """Passages to fetch per question: BEIR needs enough for 10+ distinct documents."""
    return max(k, BEIR_DEPTH) if dataset.kind == "beir" else max(k, max(HIT_CUTOFFS))


def run_questions(dataset: Dataset, retriever: Retriever, mode: Mode, depth: int, *,
                  progress: bool = False, min_confidence: float = DEFAULT_MIN_CONFIDENCE,
                  batch_queries: bool = False) -> list[Outcome]:
    """Each question asked once, timed; its answer verdict is the service's own where the
    retriever gives one (`ask`, over HTTP), else `answer_of` at `min_confidence`."""
    from tqdm import tqdm

    from qa.retrieval import answer_of

    reset = getattr(retriever, "reset", None)
    if reset is not None:
        reset()
    # Latency stays honest by default: reset() emptied the query cache, so each question is
    # embedded inside its own timing. Only when the caller says speed matters more than
    # latency are all questions embedded ahead in batches (and latency is then not reported).
    warm = getattr(retriever, "warm", None)
    if batch_queries and warm is not None:
        warm([q.text for q in dataset.questions])
    ask = getattr(retriever, "ask", None)
    outcomes = []
    for question in tqdm(dataset.questions, desc=f"{mode}", unit="q", disable=not progress,
                         file=sys.stderr, leave=False):
        started = time.perf_counter()
        if ask is not None:
            passages, answer = ask(question.text, depth, mode)
        else:
            passages, answer = retriever(question.text, depth, mode), None
        latency = (time.perf_counter() - started) * 1000
        outcomes.append(Outcome(question, tuple(passages), latency, None,
                                answer or answer_of(passages, min_confidence)))
    return outcomes


def evaluate(dataset: Dataset, retriever: Retriever, modes: Sequence[Mode], k: int = 10, *,
             progress: bool = False, min_confidence: float = DEFAULT_MIN_CONFIDENCE,
             batch_queries: bool = False) -> list[ModeResult]:
    """Every question in every mode; one ModeResult per mode, in the order given."""
    depth = depth_for(dataset, k)
    timed = not (batch_queries and hasattr(retriever, "warm"))
    return [score_mode(dataset, mode, run_questions(
        dataset, retriever, mode, depth, progress=progress, min_confidence=min_confidence,
        batch_queries=batch_queries), k, timed=timed) for mode in modes]


# -- the dataset's own index, cached ----------------------------------------------------------

def index_key(dataset: Dataset, model: str, settings: Settings) -> str:
    """Documents + model + chunker (settings and code): any change means a fresh index."""
    import qa.chunking

    h = hashlib.sha256()
    h.update(dataset.fingerprint().encode())
    h.update(f"\x00{model}\x00{settings.chunk_tokens}\x00{settings.chunk_overlap}\x00".encode())
    # The chunker's code decides the spans as much as its settings do, and the manifest records
    # only the settings: hashing the source means an edit to the chunking rules can never be
    # scored against passages cut by the old rules. A version constant would rely on someone
    # remembering to bump it; the cost of this way is a rebuild after a harmless edit.
    h.update(Path(qa.chunking.__file__).read_bytes())
    return h.hexdigest()[:16]


@contextmanager
def dataset_index(dataset: Dataset, settings: Settings, embedder: Embedder, *,
                  cache_dir: Path | None, log: Callable[[str], None] = lambda _: None,
                  progress: bool | None = None) -> Iterator[Collection]:
    """An index of the dataset's documents: reused from `cache_dir` when built before,
    else built there (or, with no cache_dir, in a temporary folder removed afterwards)."""
    from qa.collection import Collection

    if cache_dir is None:
        with tempfile.TemporaryDirectory(prefix="qa-eval-") as tmp:
            collection = _build(dataset, settings, embedder, Path(tmp) / "index", log, progress)
            try:
                yield collection
            finally:
                collection.close()
        return
    # int8 vectors are near fp32's (cosine >= 0.99), not equal: each precision its own index.
    target = cache_dir / index_key(dataset, f"{embedder.name}/{embedder.precision}", settings)
    if (target / COMPLETE).exists():
        log(f"using cached index {target}")
    else:
        # Build beside the target and rename: an interrupted build is never mistaken for one.
        partial = target.with_name(f"{target.name}.partial-{os.getpid()}")
        shutil.rmtree(partial, ignore_errors=True)
        try:
            _build(dataset, settings, embedder, partial, log, progress).close()
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        (partial / COMPLETE).touch()
        shutil.rmtree(target, ignore_errors=True)
        os.replace(partial, target)
    collection = Collection.open(settings.model_copy(update={"index_dir": target}), embedder)
    try:
        yield collection
    finally:
        collection.close()


def _build(dataset: Dataset, settings: Settings, embedder: Embedder, directory: Path,
           log: Callable[[str], None], progress: bool | None) -> Collection:
    from qa.collection import Collection

    log(f"indexing {len(dataset.documents)} documents of {dataset.name} into {directory}")
    started = time.perf_counter()
    collection = Collection.open(settings.model_copy(update={"index_dir": directory}), embedder,
                                 create=True)
    report = collection.add(list(dataset.documents), progress=progress)
    log(f"embedded {report.embedded} chunks in {time.perf_counter() - started:.1f}s")
    return collection


# -- orchestration ---------------------------------------------------------------------------

def run_evaluation(plan: EvalPlan, settings: Settings, *, progress: bool = False,
                   log: Callable[[str], None] = lambda _: None) -> list[ModeResult]:
    """Evaluate against the plan's `url`, or its `index_dir`, or else an index of the dataset's
    own documents (cached in `cache_dir`, each cut to the model's input when `doc_length` is
    "model"); a JSONL set without documents uses `settings.index_dir`."""
    dataset, modes, k = plan.dataset, plan.modes, plan.k

    def ask_all(retriever: Retriever) -> list[ModeResult]:
        return evaluate(dataset, retriever, modes, k, progress=progress,
                        min_confidence=settings.min_confidence,
                        batch_queries=plan.batch_queries)

    if plan.url is not None:
        http = HttpRetriever(plan.url)
        try:
            return ask_all(http)
        finally:
            http.close()
    from qa.collection import Collection
    from qa.embedding import Embedder

    embedder = Embedder.from_settings(settings)
    if plan.index_dir is not None or not dataset.documents:
        opened = settings if plan.index_dir is None else settings.model_copy(
            update={"index_dir": plan.index_dir})
        collection = Collection.open(opened, embedder)
        try:
            return ask_all(LocalRetriever(collection))
        finally:
            collection.close()
    indexed = dataset
    if plan.doc_length == "model":
        indexed = dataset.cut(embedder.model_input)
        cut = sum(a.text != b.text for a, b in zip(dataset.documents, indexed.documents,
                                                    strict=True))
        log(f"{cut} of {len(dataset.documents)} documents cut to the model's input "
            f"({embedder.max_seq_length} word pieces), as published scores embed them")
    with dataset_index(indexed, settings, embedder, cache_dir=plan.cache_dir, log=log,
                       progress=progress) as built:
        results = ask_all(LocalRetriever(built))
    if dataset.kind == "beir":
        for result in results:
            shallow = sum(1 for docs in result.run.values() if len(docs) < 10)
            if shallow:
                log(f"{result.mode}: {shallow} queries ranked fewer than 10 documents")
    return results
