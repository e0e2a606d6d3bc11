"""Labelled question sets → documents, questions and judgements, whatever shape they come in.

Three shapes, detected from the data:
    SQuAD JSON (v1.1, v2.0)   one document per article, paragraphs joined by a blank line; each
                              question carries its gold answer spans as document offsets
    BEIR folder               corpus.jsonl, queries.jsonl, qrels/test.tsv; document-level qrels
    JSONL                     {"question", "answers": [...]} per line; judged by answer strings;
                              `"answers": []` marks a question the documents cannot answer;
                              or {"question", "relevant": [{"document_id", "start", "end"}]}
                              (what `qa feedback export` writes), judged by span overlap
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from qa.errors import InvalidInput
from qa.types import Document

Kind = Literal["squad", "beir", "jsonl"]
# How much of each BEIR document goes into the temporary index: "model" keeps what the
# embedding model reads in one pass (the protocol behind published BEIR/MTEB scores), "full"
# the whole text, chunked as the service indexes any document.
DocLength = Literal["model", "full"]
PARAGRAPH_JOIN = "\n\n"


class DatasetError(InvalidInput):
    """The evaluation data is malformed or of no shape we know."""

    title = "Invalid evaluation data"


@dataclass(frozen=True)
class AnswerSpan:
    """A gold answer as `[start, end)` in a document's text."""

    document_id: str
    start: int
    end: int


@dataclass(frozen=True)
class Question:
    id: str
    text: str
    answers: tuple[str, ...] = ()
    spans: tuple[AnswerSpan, ...] = ()
    impossible: bool = False  # SQuAD v2.0: no answer exists in the text
    # Passages known to answer (feedback): any passage overlapping one of them is a hit.
    relevant: tuple[AnswerSpan, ...] = ()


@dataclass(frozen=True)
class Dataset:
    name: str
    kind: Kind
    questions: tuple[Question, ...]
    documents: tuple[Document, ...] = ()  # empty: judged against an existing index
    qrels: dict[str, dict[str, int]] = field(default_factory=dict)  # BEIR only

    def fingerprint(self) -> str:
        """Identifies the indexed content: same documents → same temporary index."""
        h = hashlib.sha256()
        for document in self.documents:
            h.update(document.id.encode("utf-8", "surrogatepass"))
            h.update(b"\x00" + document.content_hash.encode() + b"\x00")
        return h.hexdigest()

    def with_unanswerable(self, other: Dataset) -> Dataset:
        """These questions plus `other`'s, asked of these documents as questions they cannot
        answer (other's documents are never indexed); ids are prefixed so none collide."""
        asked = tuple(replace(q, id=f"unanswerable:{other.name}:{q.id}", answers=(), spans=(),
                              impossible=True) for q in other.questions)
        return replace(self, name=f"{self.name} + unanswerable {other.name}",
                       questions=self.questions + asked)

    def cut(self, prefix: Callable[[str], str]) -> Dataset:
        """The same questions over documents cut to `prefix(text)` (e.g. the model's input)."""
        documents = tuple(replace(d, text=prefix(d.text)) for d in self.documents)
        return replace(self, documents=documents)


def load_dataset(path: Path) -> Dataset:
    """Read `path` as a BEIR folder, a SQuAD JSON file or a JSONL question set."""
    if path.is_dir():
        return load_beir(path)
    if not path.is_file():
        raise DatasetError(f"{path}: no such file or folder")
    text = _read_text(path)
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        data = None
    if isinstance(data, dict) and "data" in data:
        return load_squad(path, data)
    if data is None or isinstance(data, dict) and "question" in data:
        return load_jsonl(path, text)
    raise DatasetError(
        f"{path}: unknown shape; expected SQuAD JSON ({{\"data\": [...]}}), a JSONL file of "
        "{\"question\", \"answers\"} lines, or a BEIR folder"
    )


def _read_text(path: Path) -> str:
    try:
        return path.read_text("utf-8")
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc


def load_squad(path: Path, data: dict[str, Any]) -> Dataset:
    """SQuAD v1.1/v2.0: a gold span's document offset is its paragraph's offset + answer_start."""
    documents: list[Document] = []
    questions: list[Question] = []
    try:
        for article in data["data"]:
            title = str(article["title"])
            contexts = [str(p["context"]) for p in article["paragraphs"]]
            text = PARAGRAPH_JOIN.join(contexts)
            doc_id = title
            offset = 0
            for paragraph, context in zip(article["paragraphs"], contexts, strict=True):
                for qa in paragraph["qas"]:
                    questions.append(_squad_question(path, qa, doc_id, text, offset))
                offset += len(context) + len(PARAGRAPH_JOIN)
            documents.append(Document(id=doc_id, text=text, title=title.replace("_", " ")))
    except (KeyError, TypeError) as exc:
        raise DatasetError(f"{path}: not valid SQuAD JSON (missing or bad field {exc})") from exc
    except ValueError as exc:
        raise DatasetError(f"{path}: {exc}") from exc
    if not questions:
        raise DatasetError(f"{path}: SQuAD file holds no questions")
    return Dataset(path.name, "squad", tuple(questions), tuple(documents))


def _squad_question(path: Path, qa: dict[str, Any], doc_id: str, text: str, offset: int
                    ) -> Question:
    impossible = bool(qa.get("is_impossible", False))
    answers = [] if impossible else qa["answers"]
    spans = []
    for answer in answers:
        start = offset + int(answer["answer_start"])
        end = start + len(answer["text"])
        if text[start:end] != answer["text"]:
            raise DatasetError(
                f"{path}: question {qa['id']}: answer {answer['text']!r} is not at "
                f"answer_start {answer['answer_start']}"
            )
        spans.append(AnswerSpan(doc_id, start, end))
    if not impossible and not spans:
        raise DatasetError(f"{path}: question {qa['id']} has no answers and is not is_impossible")
    return Question(
        id=str(qa["id"]), text=str(qa["question"]),
        answers=tuple(dict.fromkeys(a["text"] for a in answers)),
        spans=tuple(dict.fromkeys(spans)), impossible=impossible,
    )


def _jsonl_objects(path: Path, text: str) -> Iterator[tuple[int, dict[str, Any]]]:
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{path}:{number}: malformed JSON ({exc.msg})") from exc
        if not isinstance(obj, dict):
            raise DatasetError(f"{path}:{number}: expected a JSON object")
        yield number, obj


def load_jsonl(path: Path, text: str | None = None) -> Dataset:
    """`{"question": str, "answers": [str, ...], "id"?: str}` per line; an empty answers list
    is a question with no answer in the documents (as SQuAD v2.0's `is_impossible`). A line
    may give `"relevant": [{"document_id", "start", "end"}, ...]` instead of answers."""
    questions = []
    for number, obj in _jsonl_objects(path, _read_text(path) if text is None else text):
        question, answers = obj.get("question"), obj.get("answers")
        if not isinstance(question, str) or not question.strip():
            raise DatasetError(f"{path}:{number}: \"question\" must be a non-empty string")
        if answers is None and "relevant" in obj:
            questions.append(Question(id=str(obj.get("id", number)), text=question,
                                      relevant=_relevant_spans(path, number, obj["relevant"])))
            continue
        if (not isinstance(answers, list)
                or not all(isinstance(a, str) and a.strip() for a in answers)):
            raise DatasetError(f"{path}:{number}: \"answers\" must be a list of non-empty "
                               "strings ([] for a question the documents cannot answer), or "
                               "\"relevant\" a list of {\"document_id\", \"start\", \"end\"}")
        questions.append(Question(id=str(obj.get("id", number)), text=question,
                                  answers=tuple(answers), impossible=not answers))
    if not questions:
        raise DatasetError(f"{path}: no questions")
    return Dataset(path.name, "jsonl", tuple(questions))


def _relevant_spans(path: Path, number: int, value: Any) -> tuple[AnswerSpan, ...]:
    """A line's `relevant` spans: a non-empty list of {"document_id", "start", "end"}."""
    spans = [_span(s) for s in value] if isinstance(value, list) and value else [None]
    if any(s is None for s in spans):
        raise DatasetError(f"{path}:{number}: \"relevant\" must be a non-empty list of "
                           "{\"document_id\": str, \"start\": int, \"end\": int} with "
                           "0 <= start < end")
    return tuple(s for s in spans if s is not None)


def _span(value: Any) -> AnswerSpan | None:
    if not isinstance(value, dict):
        return None
    document_id, start, end = value.get("document_id"), value.get("start"), value.get("end")
    if (isinstance(document_id, str) and document_id and type(start) is int
            and type(end) is int and 0 <= start < end):
        return AnswerSpan(document_id, start, end)
    return None


def load_beir(folder: Path, split: str = "test") -> Dataset:
    """BEIR: title kept as the title and prepended to the text (as BEIR embeds title + " " + text);
    only queries judged in qrels/<split>.tsv are evaluated."""
    corpus, queries, qrels_path = (folder / "corpus.jsonl", folder / "queries.jsonl",
                                   folder / "qrels" / f"{split}.tsv")
    for required in (corpus, queries, qrels_path):
        if not required.is_file():
            raise DatasetError(f"{folder}: not a BEIR folder, {required} is missing")
    qrels = _read_qrels(qrels_path)
    documents = []
    for number, obj in _jsonl_objects(corpus, _read_text(corpus)):
        if "_id" not in obj:
            raise DatasetError(f"{corpus}:{number}: missing \"_id\"")
        title, body = str(obj.get("title") or "").strip(), str(obj.get("text") or "").strip()
        text = f"{title} {body}" if title and body else title or body
        if text:
            documents.append(Document(id=str(obj["_id"]), text=text, title=title))
    texts: dict[str, str] = {}
    for number, obj in _jsonl_objects(queries, _read_text(queries)):
        if "_id" not in obj or not isinstance(obj.get("text"), str):
            raise DatasetError(f"{queries}:{number}: expected {{\"_id\", \"text\"}}")
        texts[str(obj["_id"])] = obj["text"]
    missing = [qid for qid in qrels if qid not in texts]
    if missing:
        raise DatasetError(f"{qrels_path}: {len(missing)} judged queries are not in "
                           f"{queries.name} (first: {missing[0]!r})")
    questions = tuple(Question(id=qid, text=texts[qid]) for qid in qrels)
    return Dataset(folder.name, "beir", questions, tuple(documents), qrels)


def _read_qrels(path: Path) -> dict[str, dict[str, int]]:
    qrels: dict[str, dict[str, int]] = {}
    with path.open(encoding="utf-8", newline="") as fh:
        for number, row in enumerate(csv.reader(fh, delimiter="\t"), start=1):
            if not row or number == 1 and row[0] == "query-id":
                continue
            if len(row) != 3:
                raise DatasetError(f"{path}:{number}: expected query-id, corpus-id, score")
            try:
                score = int(row[2])
            except ValueError as exc:
                raise DatasetError(f"{path}:{number}: score {row[2]!r} is not an integer") from exc
            qrels.setdefault(row[0], {})[row[1]] = score
    if not qrels:
        raise DatasetError(f"{path}: no judgements")
    return qrels
