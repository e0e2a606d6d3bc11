"""Where an evaluation's passages come from: a local index, or a running service's POST /ask."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from qa.errors import QAError
from qa.settings import Mode
from qa.types import Answer, Citation, Highlight, Passage

if TYPE_CHECKING:
    from qa.collection import Collection


class ServiceError(QAError):
    """The service under evaluation failed or could not be reached."""

    status = 502
    title = "Service error"


class Retriever(Protocol):
    def __call__(self, question: str, k: int, mode: Mode) -> list[Passage]: ...


class LocalRetriever:
    """Retrieval in this process, on an open collection: what `qa ask` would answer."""

    def __init__(self, collection: Collection) -> None:
        self.collection = collection

    def __call__(self, question: str, k: int, mode: Mode) -> list[Passage]:
        from qa.retrieval import retrieve

        return retrieve(self.collection, question, k, mode)

    def reset(self) -> None:
        """Before each mode: warm the model up, then forget cached query vectors, so every
        mode's latency includes embedding its questions (with --compare, later modes would
        otherwise find them cached by earlier ones)."""
        embedder = self.collection.embedder
        embedder.embed_questions(["warm-up"], progress=False)
        embedder.clear_query_cache()

    def warm(self, questions: list[str]) -> None:
        """Embed the questions in batches ahead of asking them: several times faster than one
        at a time, so latency measured afterwards leaves out embedding the question."""
        self.collection.embedder.warm_queries(questions)


class HttpRetriever:
    """POST /ask on a running service: evaluates a deployment as its users see it."""

    def __init__(self, url: str, timeout: float = 60.0) -> None:
        import httpx

        self._client = httpx.Client(base_url=url.rstrip("/"), timeout=timeout)
        self.url = url

    def __call__(self, question: str, k: int, mode: Mode) -> list[Passage]:
        return self.ask(question, k, mode)[0]

    def ask(self, question: str, k: int, mode: Mode) -> tuple[list[Passage], Answer | None]:
        """The passages, and the service's own answer verdict (None from a service too old to
        give one with its threshold)."""
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
            body = response.json()
            return ([passage_from_json(p) for p in body["passages"]],
                    answer_from_json(body.get("answer")))
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


def answer_from_json(data: Any) -> Answer | None:
    if not isinstance(data, dict) or not {"found", "confidence", "threshold"} <= data.keys():
        return None
    return Answer(found=bool(data["found"]), confidence=float(data["confidence"]),
                  threshold=float(data["threshold"]))
