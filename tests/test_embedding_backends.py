"""The two embedding backends: the same vectors, the same model input, and the ONNX path free
of torch. The session `embedder` fixture is the default backend (ONNX); the torch one is
loaded once here and used for real (index + ask)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, SEEDS, SHARED

from qa.api.schemas import AskResponse
from qa.collection import Collection
from qa.embedding import DEFAULT_BACKEND, DEFAULT_PRECISION, Embedder, bundled_model_path
from qa.indexing import index_paths
from qa.onnx_embedding import ensure_onnx, model_hash
from qa.retrieval import answer_of, retrieve
from qa.settings import Settings
from qa.wire import ask_json

SUPER_BOWL = SHARED / "eval" / "squad-v1.1-dev-super-bowl-50.json"
HEAVY = ("torch", "transformers", "sentence_transformers")


@pytest.fixture(scope="module")
def torch_embedder() -> Embedder:
    return Embedder(backend="torch")


@pytest.fixture(scope="module")
def fp32_embedder() -> Embedder:
    """The ONNX graph unquantised: torch's vectors (the default, QA_ONNX_PRECISION=fp32)."""
    return Embedder(precision="fp32")


@pytest.fixture(scope="module")
def int8_embedder() -> Embedder:
    """The opt-in int8 graph (QA_ONNX_PRECISION=int8)."""
    return Embedder(precision="int8")


def shared_chunks(limit: int) -> list[str]:
    """Paragraphs of the shared Super Bowl article: real text of every length, some past the
    model's 256-token window."""
    data = json.loads(SUPER_BOWL.read_text())
    paragraphs = [p["context"] for article in data["data"] for p in article["paragraphs"]]
    questions = [qa["question"] for article in data["data"] for p in article["paragraphs"]
                 for qa in p["qas"]]
    long_one = " ".join(paragraphs[:8])  # truncated by both backends at the same token
    return [*paragraphs[:limit], *questions[:limit // 2], long_one]


def test_default_backend_is_the_settings_default() -> None:
    assert Settings().backend == DEFAULT_BACKEND == "onnx"
    assert Settings().onnx_precision == DEFAULT_PRECISION == "int8-documents"


def test_by_default_documents_go_through_int8_and_questions_stay_fp32(
    embedder: Embedder, fp32_embedder: Embedder, torch_embedder: Embedder
) -> None:
    """The adoption rule of the int8 graph (issue 18: cosine >= 0.99 to fp32 on the shared
    data) for documents; questions are fp32's, torch's vectors."""
    assert embedder.precision == "int8-documents"
    texts = shared_chunks(24)
    documents, fp32_documents = embedder.embed(texts), fp32_embedder.embed(texts)
    cosine = (documents * fp32_documents).sum(axis=1)
    assert cosine.min() >= 0.99, f"lowest cosine {cosine.min():.6f}"
    assert cosine.mean() < 0.99999  # really the quantised graph
    questions = texts[-6:-1]
    asked = embedder.embed_questions(questions)
    assert np.array_equal(asked, fp32_embedder.embed_questions(questions))
    assert float((asked * torch_embedder.embed(questions)).sum(axis=1).min()) >= 0.9999
    assert np.array_equal(embedder.embed_query(questions[0])[0], asked[0])


def test_onnx_vectors_match_torch_on_shared_chunks(fp32_embedder: Embedder,
                                                   torch_embedder: Embedder) -> None:
    embedder = fp32_embedder
    assert embedder.backend == "onnx" and torch_embedder.backend == "torch"
    texts = shared_chunks(24)
    onnx_rows, torch_rows = embedder.embed(texts), torch_embedder.embed(texts)
    assert onnx_rows.shape == torch_rows.shape == (len(texts), 384)
    assert np.allclose(np.linalg.norm(onnx_rows, axis=1), 1.0, atol=1e-5)
    cosine = (onnx_rows * torch_rows).sum(axis=1)
    assert cosine.min() >= 0.9999, f"lowest cosine {cosine.min():.6f}"
    # Each text is its own call: a row alone equals the row among others.
    alone = embedder.embed([texts[0]])
    assert float(alone[0] @ onnx_rows[0]) >= 0.99999


def test_int8_stays_within_cosine_099_of_fp32(int8_embedder: Embedder,
                                              fp32_embedder: Embedder) -> None:
    """The adoption rule of the int8 graph (issue 18), on a sample of the shared data."""
    assert int8_embedder.precision == "int8"
    assert int8_embedder._encoder.path.name == "model-int8.onnx"  # type: ignore[union-attr]
    texts = shared_chunks(24)
    int8_rows, fp32_rows = int8_embedder.embed(texts), fp32_embedder.embed(texts)
    assert np.allclose(np.linalg.norm(int8_rows, axis=1), 1.0, atol=1e-5)
    cosine = (int8_rows * fp32_rows).sum(axis=1)
    assert cosine.min() >= 0.99, f"lowest cosine {cosine.min():.6f}"
    assert cosine.mean() < 0.99999  # really the quantised graph, not fp32 again


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_a_texts_vector_does_not_depend_on_what_it_is_embedded_with(
    precision: str, fp32_embedder: Embedder, int8_embedder: Embedder
) -> None:
    """Each text is its own unpadded call: int8's activation scales (per call) once made the
    same question alone and beside a long text differ (cosine 0.9934); fp32's padding moved
    the last bits."""
    encoder = fp32_embedder if precision == "fp32" else int8_embedder
    texts = shared_chunks(6)
    question = texts[-4]
    beside_long = encoder.embed([texts[-1], question, texts[0]])[1]
    beside_short = encoder.embed([question, texts[-2], texts[-3]])[0]
    assert np.array_equal(beside_long, beside_short)  # the same call, whatever the company
    alone = encoder.embed([question])[0]  # alone: the every-core session, same graph
    assert float(alone @ beside_long) >= 0.99999

def test_both_backends_read_the_same_model_input(embedder: Embedder,
                                                 torch_embedder: Embedder) -> None:
    assert embedder.max_seq_length == torch_embedder.max_seq_length == 256
    long_text = shared_chunks(8)[-1]
    cut = embedder.model_input(long_text)
    assert len(cut) < len(long_text) and long_text.startswith(cut)
    assert cut == torch_embedder.model_input(long_text)
    assert embedder.model_input("a short one") == "a short one"


def test_torch_backend_indexes_and_answers(tmp_path: Path, torch_embedder: Embedder,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QA_BACKEND", "torch")
    settings = Settings(index_dir=tmp_path / "index")
    assert settings.backend == "torch"
    collection = Collection.open(settings, torch_embedder, create=True)
    try:
        summary = index_paths(collection, [SEEDS], progress=False)
        assert not summary.errors and summary.embedded > 0
        passages = retrieve(collection, "who led the Russian delegation?", 3, "hybrid")
        answer = answer_of(passages, settings.min_confidence)
    finally:
        collection.close()
    assert "Medinsky" in passages[0].text
    # The body /ask sends (orjson, no pydantic on the way out) is the documented schema.
    body = AskResponse.model_validate(ask_json("q", passages, answer, 1.234))
    assert body.passages[0].citation.document_id == passages[0].citation.document_id


def test_unknown_backend_and_gpu_on_onnx_are_refused() -> None:
    from qa.errors import InvalidInput

    with pytest.raises(InvalidInput, match="backend 'tf'"):
        Embedder(backend="tf")  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="needs QA_BACKEND=torch"):
        Embedder(device="cuda")


def test_model_hash_is_the_weights_sha256_remembered_per_file(tmp_path: Path) -> None:
    model = bundled_model_path()
    digest = hashlib.sha256((model / "model.safetensors").read_bytes())
    for extra in ("config.json", "1_Pooling/config.json"):
        digest.update((model / extra).read_bytes())
    assert model_hash(model, tmp_path) == digest.hexdigest()
    memo, = (tmp_path / "hashes").iterdir()
    assert memo.read_text() == digest.hexdigest()


@pytest.fixture(scope="module")
def ask_index(tmp_path_factory: pytest.TempPathFactory, embedder: Embedder) -> Iterator[Path]:
    index = tmp_path_factory.mktemp("fast-cli") / "index"
    collection = Collection.open(Settings(index_dir=index), embedder, create=True)
    index_paths(collection, [SEEDS], progress=False)
    collection.close()
    yield index


@pytest.mark.parametrize("args", [["--help"], ["check"], ["ask", "who led the Russian delegation?"],
                                  ["ask", "who led the Russian delegation?", "--json"]])
def test_onnx_cli_paths_never_import_torch(ask_index: Path, args: list[str]) -> None:
    script = (
        "import json, sys\nfrom qa.cli import main\n"
        f"sys.argv = ['qa', *{args!r}, *(['--index', {str(ask_index)!r}] "
        f"if {args[0]!r} != '--help' else [])]\n"
        "try:\n    main()\nexcept SystemExit as exit:\n    code = exit.code or 0\n"
        "else:\n    code = 0\n"
        f"print(json.dumps([code, sorted(m for m in {HEAVY!r} if m in sys.modules)]))\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "QA_BACKEND": "onnx"}
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    code, heavy = json.loads(done.stdout.strip().splitlines()[-1])
    assert code == 0, done.stderr[-2000:]
    assert heavy == []
    if args[0] == "ask":
        assert "Russian delegation" in done.stdout


@pytest.mark.slow
def test_first_use_exports_once_even_when_two_processes_race(tmp_path: Path) -> None:
    """A fresh cache: two processes export at once; both get one complete, working file."""
    script = ("import sys\nfrom pathlib import Path\nfrom qa.onnx_embedding import ensure_onnx\n"
              "from qa.embedding import bundled_model_path\n"
              "print(ensure_onnx(bundled_model_path(), Path(sys.argv[1])))\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    racers = [subprocess.Popen([sys.executable, "-c", script, str(tmp_path)], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
              for _ in range(2)]
    outputs = [r.communicate(timeout=600) for r in racers]
    assert all(r.returncode == 0 for r in racers), [e[-2000:] for _, e in outputs]
    paths = {out.strip() for out, _ in outputs}
    assert len(paths) == 1
    exported = Path(paths.pop())
    assert exported == ensure_onnx(bundled_model_path(), tmp_path)
    assert [p.name for p in exported.parent.iterdir() if p.name.startswith(".model")] == []
    fresh = Embedder(cache_dir=tmp_path, precision="fp32")
    texts = shared_chunks(4)
    reference = Embedder(precision="fp32")
    assert float((fresh.embed(texts) * reference.embed(texts)).sum(axis=1).min()) >= 0.99999
