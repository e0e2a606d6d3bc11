"""Run a dataset's questions through retrieval (local index or HTTP) and score what comes back.

How passages are judged:
    SQuAD   a passage is a hit when its `[start, end)` in the document covers a gold answer span
    JSONL   a passage is a hit when its text contains an answer string (case-insensitive)
    BEIR    passages become documents by MaxP: a document's score is its best passage's score,
            i.e. its first occurrence in the ranked passages; documents are judged by the qrels
For SQuAD and JSONL every question has one thing to find, the answer: the first answering
passage is the relevant item, so hit@k, MRR@10 and nDCG@10 all measure how high it ranks.
"""

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
from typing import Any, Protocol

from qa.errors import QAError
from qa.eval import metrics
from qa.eval.datasets import AnswerSpan, Dataset, DocLength, Question
from qa.settings import Mode, Settings
from qa.types import Citation, Highlight, Passage

ANSWER = "<answer>"  # the relevant item of span-judged questions; passage ids contain "#"
HIT_CUTOFFS = (1, 3, 5, 10)
BEIR_DEPTH = 100  # passages per query: enough to rank well over 10 distinct documents
COMPLETE = ".complete"


class ServiceError(QAError):
    """The service under evaluation failed or could not be reached."""

    status = 502
    title = "Service error"


class Retriever(Protocol):
    def __call__(self, question: str, k: int, mode: Mode) -> list[Passage]: ...


@dataclass(frozen=True)
class Outcome:
    """One question's result: what came back, how fast, and where the first hit ranked."""

    question: Question
    passages: tuple[Passage, ...]
    latency_ms: float
    first_hit: int | None  # rank in the judged run (documents for BEIR), None if missed


@dataclass
class ModeResult:
    mode: str
    metrics: dict[str, Any]
    outcomes: list[Outcome]
    run: dict[str, dict[str, float]]  # what was retrieved: BEIR doc ids, else passage ids
    hit_curve: dict[int, float] = field(default_factory=dict)  # hit@k for k = 1..max cutoff


# -- judging ---------------------------------------------------------------------------------

def covers(passage_start: int, passage_end: int, span: AnswerSpan, document_id: str) -> bool:
    return (document_id == span.document_id and passage_start <= span.start
            and span.end <= passage_end)


def passage_hits(question: Question, passage: Passage) -> bool:
    c = passage.citation
    if question.spans:
        return any(covers(c.start, c.end, s, c.document_id) for s in question.spans)
    text = passage.text.casefold()
    return any(a.casefold() in text for a in question.answers)


def highlight_hits(question: Question, passage: Passage) -> bool:
    h, c = passage.highlight, passage.citation
    if h is None:
        return False
    if question.spans:
        return any(covers(h.start, h.end, s, c.document_id) for s in question.spans)
    text = h.text.casefold()
    return any(a.casefold() in text for a in question.answers)


def passage_id(passage: Passage) -> str:
    c = passage.citation
    return "_".join(f"{c.document_id}#{c.start}-{c.end}".split())


def document_run(passages: Sequence[Passage]) -> dict[str, float]:
    """MaxP: each document scored by its best passage, i.e. its first in the ranking."""
    run: dict[str, float] = {}
    for p in passages:
        run.setdefault(p.citation.document_id, p.score)
    return run


def answer_run(question: Question, passages: Sequence[Passage]) -> dict[str, float]:
    """Passages as a run in which every answering passage is the one relevant item, ANSWER."""
    run: dict[str, float] = {}
    for p in passages:
        run.setdefault(ANSWER if passage_hits(question, p) else passage_id(p), p.score)
    return run


def _first_relevant(relevance: dict[str, int], ranked: list[str]) -> int | None:
    return next((r for r, d in enumerate(ranked, start=1) if relevance.get(d, 0) > 0), None)


# -- scoring ---------------------------------------------------------------------------------

def score_mode(dataset: Dataset, mode: str, outcomes: list[Outcome], k: int) -> ModeResult:
    """Outcomes → the metrics object (keys as `qa eval --json` prints them)."""
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
    values["latency_ms_p50"] = metrics.percentile(latencies, 50)
    values["latency_ms_p95"] = metrics.percentile(latencies, 95)
    impossible = [o for o in outcomes if o.question.impossible]
    if impossible:
        values["no_answer_questions"] = len(impossible)
        values["no_answer_auroc"] = no_answer_auroc(impossible, answerable)
    rounded = {key: round(v, 4) if isinstance(v, float) else v for key, v in values.items()}
    scored = [
        Outcome(o.question, o.passages, o.latency_ms,
                _first_relevant(qrels[o.question.id], metrics.ranking(judged[o.question.id]))
                if not o.question.impossible else None)
        for o in outcomes
    ]
    raw = ({o.question.id: document_run(o.passages) for o in outcomes} if beir else
           {o.question.id: {passage_id(p): p.score for p in o.passages} for o in outcomes})
    curve = {c: metrics.hit_at_k(qrels, judged, c) for c in range(1, max(cutoffs) + 1)}
    return ModeResult(mode, rounded, scored, raw, curve)


def no_answer_auroc(impossible: Sequence[Outcome], answerable: Sequence[Outcome]
                    ) -> float | None:
    """How well `1 - top confidence` separates unanswerable questions from answerable ones.

    None when the mode gives no confidence (keyword search has no cosine to calibrate).
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


def depth_for(dataset: Dataset, k: int) -> int:
    """Passages to fetch per question: BEIR needs enough for 10+ distinct documents."""
    return max(k, BEIR_DEPTH) if dataset.kind == "beir" else max(k, max(HIT_CUTOFFS))


def run_questions(dataset: Dataset, retriever: Retriever, mode: Mode, depth: int, *,
                  progress: bool = False) -> list[Outcome]:
    from tqdm import tqdm

    reset = getattr(retriever, "reset", None)
    if reset is not None:
        reset()
    outcomes = []
    for question in tqdm(dataset.questions, desc=f"{mode}", unit="q", disable=not progress,
                         file=sys.stderr, leave=False):
        started = time.perf_counter()
        passages = retriever(question.text, depth, mode)
        latency = (time.perf_counter() - started) * 1000
        outcomes.append(Outcome(question, tuple(passages), latency, None))
    return outcomes


def evaluate(dataset: Dataset, retriever: Retriever, modes: Sequence[Mode], k: int = 10, *,
             progress: bool = False) -> list[ModeResult]:
    """Every question in every mode; one ModeResult per mode, in the order given."""
    depth = depth_for(dataset, k)
    return [score_mode(dataset, mode, run_questions(dataset, retriever, mode, depth,
                                                    progress=progress), k)
            for mode in modes]


# -- retrievers ------------------------------------------------------------------------------

class LocalRetriever:
    def __init__(self, collection: Any) -> None:
        self.collection = collection

    def __call__(self, question: str, k: int, mode: Mode) -> list[Passage]:
        from qa.retrieval import retrieve

        return retrieve(self.collection, question, k, mode)

    def reset(self) -> None:
        """Before each mode: warm the model up, then forget cached query vectors, so every
        mode's latency includes embedding its questions (with --compare, later modes would
        otherwise find them cached by earlier ones)."""
        embedder = self.collection.embedder
        embedder.embed(["warm-up"], progress=False)
        cache = getattr(embedder, "_cache", None)
        if cache is not None:
            cache.clear()


class HttpRetriever:
    """POST /ask on a running service: evaluates a deployment as its users see it."""

    def __init__(self, url: str, timeout: float = 60.0) -> None:
        import httpx

        self._client = httpx.Client(base_url=url.rstrip("/"), timeout=timeout)
        self.url = url

    def __call__(self, question: str, k: int, mode: Mode) -> list[Passage]:
        import httpx

        try:
            response = self._client.post("/ask", json={"question": question, "k": k,
                                                       "mode": mode})
        except httpx.HTTPError as exc:
            raise ServiceError(f"{self.url}: {type(exc).__name__}: {exc}") from exc
        if response.status_code != 200:
            try:
                detail = response.json().get("detail", response.text)
            except ValueError:
                detail = response.text[:200]
            raise ServiceError(f"{self.url}/ask answered {response.status_code}: {detail}")
        try:
            return [passage_from_json(p) for p in response.json()["passages"]]
        except (ValueError, KeyError, TypeError) as exc:
            raise ServiceError(f"{self.url}/ask: unexpected response ({exc})") from exc

    def close(self) -> None:
        self._client.close()


def passage_from_json(data: dict[str, Any]) -> Passage:
    c, h = data["citation"], data.get("highlight")
    return Passage(
        rank=data["rank"], score=data["score"], text=data["text"],
        confidence=data.get("confidence"),
        citation=Citation(
            document_id=c["document_id"], title=c["title"], source=c.get("source"),
            date=c.get("date"), url=c.get("url"), chunk_id=c["chunk_id"], start=c["start"],
            end=c["end"], page=c.get("page"), heading_path=tuple(c.get("heading_path") or ()),
        ),
        highlight=Highlight(h["start"], h["end"], h["text"]) if h else None,
    )


# -- temporary indexes -----------------------------------------------------------------------

def index_key(dataset: Dataset, model: str, settings: Settings) -> str:
    """Documents + model + chunker (settings and code): any change means a fresh index."""
    import qa.chunking

    h = hashlib.sha256()
    h.update(dataset.fingerprint().encode())
    h.update(f"\x00{model}\x00{settings.chunk_tokens}\x00{settings.chunk_overlap}\x00".encode())
    # The chunker's code decides the spans as much as its settings do.
    h.update(Path(qa.chunking.__file__).read_bytes())
    return h.hexdigest()[:16]


@contextmanager
def dataset_index(dataset: Dataset, settings: Settings, embedder: Any, *,
                  cache_dir: Path | None, log: Callable[[str], None] = lambda _: None,
                  progress: bool | None = None) -> Iterator[Any]:
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
    target = cache_dir / index_key(dataset, embedder.name, settings)
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


def _build(dataset: Dataset, settings: Settings, embedder: Any, directory: Path,
           log: Callable[[str], None], progress: bool | None) -> Any:
    from qa.collection import Collection

    log(f"indexing {len(dataset.documents)} documents of {dataset.name} into {directory}")
    started = time.perf_counter()
    collection = Collection.open(settings.model_copy(update={"index_dir": directory}), embedder,
                                 create=True)
    report = collection.add(list(dataset.documents), progress=progress)
    log(f"embedded {report.embedded} chunks in {time.perf_counter() - started:.1f}s")
    return collection


def run_evaluation(dataset: Dataset, settings: Settings, modes: Sequence[Mode], k: int = 10, *,
                   index_dir: Path | None = None, url: str | None = None,
                   cache_dir: Path | None = None, doc_length: DocLength = "full",
                   progress: bool = False,
                   log: Callable[[str], None] = lambda _: None) -> list[ModeResult]:
    """Evaluate against `url`, or `index_dir`, or else an index of the dataset's own documents
    (cached in `cache_dir`, each cut to the model's input when `doc_length` is "model"); a
    JSONL set without documents uses `settings.index_dir`."""
    if url is not None:
        http = HttpRetriever(url)
        try:
            return evaluate(dataset, http, modes, k, progress=progress)
        finally:
            http.close()
    from qa.collection import Collection
    from qa.embedding import Embedder

    embedder = Embedder(settings.model, device=settings.device, batch_size=settings.batch_size)
    if index_dir is not None or not dataset.documents:
        opened = settings if index_dir is None else settings.model_copy(
            update={"index_dir": index_dir})
        collection = Collection.open(opened, embedder)
        try:
            return evaluate(dataset, LocalRetriever(collection), modes, k, progress=progress)
        finally:
            collection.close()
    indexed = dataset
    if doc_length == "model":
        indexed = dataset.cut(embedder.model_input)
        cut = sum(a.text != b.text for a, b in zip(dataset.documents, indexed.documents,
                                                    strict=True))
        log(f"{cut} of {len(dataset.documents)} documents cut to the model's input "
            f"({embedder.max_seq_length} word pieces), as published scores embed them")
    with dataset_index(indexed, settings, embedder, cache_dir=cache_dir, log=log,
                       progress=progress) as built:
        results = evaluate(dataset, LocalRetriever(built), modes, k, progress=progress)
    if dataset.kind == "beir":
        for result in results:
            shallow = sum(1 for docs in result.run.values() if len(docs) < 10)
            if shallow:
                log(f"{result.mode}: {shallow} queries ranked fewer than 10 documents")
    return results
