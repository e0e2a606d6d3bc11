"""Shared fixtures: one real model per session, real indexes in tmp_path, a real HTTP server."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import uvicorn

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from qa.api import create_app, server_options  # noqa: E402
from qa.collection import Collection  # noqa: E402
from qa.embedding import Embedder  # noqa: E402
from qa.indexing import index_paths  # noqa: E402
from qa.settings import Settings  # noqa: E402
from qa.types import Document  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SEEDS = ROOT / "seeds"
SHARED = ROOT.parent / "shared"


def seed_paragraphs(count: int) -> list[Document]:
    """The seed article's first `count` long paragraphs, each a document of its own: a
    collection of several commits (a keyword-index segment each) without embedding much."""
    text = (SEEDS / "2025-05-15-istanbul-peace-talks.txt").read_text(encoding="utf-8")
    paragraphs = [p for p in text.split("\n\n") if len(p.split()) > 20]
    assert len(paragraphs) >= count
    return [Document(id=f"p{n}", text=p, title=f"Part {n}")
            for n, p in enumerate(paragraphs[:count])]


@pytest.fixture(scope="session")
def embedder() -> Embedder:
    """The real bundled all-MiniLM-L6-v2, loaded once."""
    return Embedder()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(index_dir=tmp_path / "index")


@pytest.fixture
def seed_docs(tmp_path: Path) -> Path:
    """A copy of seeds/ so tests may change it freely."""
    target = tmp_path / "seeds"
    shutil.copytree(SEEDS, target, ignore=shutil.ignore_patterns("*.jsonl"))
    return target


@pytest.fixture
def collection(settings: Settings, embedder: Embedder) -> Iterator[Collection]:
    opened = Collection.open(settings, embedder, create=True)
    yield opened
    opened.close()


@pytest.fixture
def built_index(collection: Collection, seed_docs: Path) -> Collection:
    """The one definition of "a built index": the seed corpus, indexed."""
    summary = index_paths(collection, [seed_docs], progress=False)
    assert not summary.errors
    return collection


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LiveServer:
    """The real app under uvicorn on 127.0.0.1, in a thread."""

    def __init__(self, settings: Settings, embedder: Embedder) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # `qa serve`'s options (which proxies to believe), on a free local port.
        options = server_options(settings) | {"host": "127.0.0.1", "port": self.port,
                                              "log_level": "warning"}
        config = uvicorn.Config(create_app(settings, embedder=embedder), **options)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("server did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture
def served_index(built_index: Collection, settings: Settings, embedder: Embedder
                 ) -> Iterator[str]:
    """Base URL of a live server over the built seed index."""
    built_index.close()
    with LiveServer(settings, embedder) as server:
        yield server.url


@pytest.fixture
def http(served_index: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=served_index, timeout=30) as client:
        yield client


@contextmanager
def qa_serve_workers(index: Path, log_path: Path, workers: int = 2, **env: str
                     ) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """`qa serve --workers N` as a user runs it (the installed CLI, a subprocess) on a free
    local port: (base URL, process) once every worker has started; stopped on exit."""
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", **env}
    environment.pop("PROMETHEUS_MULTIPROC_DIR", None)  # run_server makes its own
    port = free_port()
    with log_path.open("w") as log:
        server = subprocess.Popen(
            [str(Path(sys.executable).parent / "qa"), "serve", "--workers", str(workers),
             "--port", str(port), "--index", str(index)],
            cwd=ROOT, env=environment, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 120
            while log_path.read_text().count("Application startup complete") < workers:
                assert server.poll() is None, log_path.read_text()
                assert time.monotonic() < deadline, "workers did not start:\n" + \
                    log_path.read_text()
                time.sleep(0.2)
            yield f"http://127.0.0.1:{port}", server
        finally:
            server.terminate()
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.kill()
