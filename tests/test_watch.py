"""`qa watch` and `qa serve --watch`: files created, changed, renamed and deleted in a watched
folder show in /ask answers within seconds, through the real CLI, model and server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner
from conftest import LiveServer, qa_serve_workers

from qa.cli import cli
from qa.collection import Collection
from qa.embedding import Embedder
from qa.settings import Settings
from qa.types import Document

WITHIN_S = 5.0  # the acceptance bound: a change shows in answers within this
QUESTION = "What colour does the Karsk lighthouse keeper paint the shutters?"
TEAL = "The Karsk lighthouse keeper paints the shutters teal every April, before the storms."
CRIMSON = "The Karsk lighthouse keeper paints the shutters crimson every April, after the fair."


def passages(client: httpx.Client) -> dict[str, str]:
    """Document id → passage text, for the question about the lighthouse."""
    response = client.post("/ask", json={"question": QUESTION, "k": 5})
    response.raise_for_status()
    return {p["citation"]["document_id"]: p["text"] for p in response.json()["passages"]}


def within(client: httpx.Client, holds: Callable[[dict[str, str]], bool], what: str) -> float:
    """Seconds until /ask shows `holds`; fails after WITHIN_S."""
    started = time.monotonic()
    while True:
        found = passages(client)
        if holds(found):
            return time.monotonic() - started
        assert time.monotonic() - started < WITHIN_S, f"{what} not in /ask after {WITHIN_S}s: " \
            f"{found}"
        time.sleep(0.1)


def make_index(index: Path, embedder: Embedder) -> None:
    """An index holding one unrelated document: `qa serve` needs one to start."""
    collection = Collection.open(Settings(index_dir=index), embedder, create=True)
    try:
        collection.add([Document(id="unrelated", title="Harbour fees",
                                 text="Harbour fees are paid at the office by the quay.")])
    finally:
        collection.close()


@contextmanager
def qa_watch(cwd: Path) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    """`qa watch docs` as a user runs it, from `cwd` (so ids are docs/...); killed on exit."""
    log_path = cwd / "watch.log"
    # PYTHONFAULTHANDLER: a watch that will not stop is sent SIGABRT and dumps its threads.
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONFAULTHANDLER": "1"}
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [str(Path(sys.executable).parent / "qa"), "watch", "docs", "--index", "index"],
            cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield process, log_path
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def wait_watching(process: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + 120
    while "embedded in" not in log_path.read_text():  # the catch-up is done: it watches
        assert process.poll() is None, log_path.read_text()
        assert time.monotonic() < deadline, log_path.read_text()
        time.sleep(0.1)


def stopped(process: subprocess.Popen[bytes], log_path: Path, timeout: float = 60) -> int:
    """The exit code of a watch asked to stop; one that hangs fails with its threads' stacks
    (it stopped in under a second in every run here, but once hung under a loaded CI)."""
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGABRT)
        process.wait(timeout=30)
        pytest.fail(f"qa watch did not stop within {timeout} s of Ctrl-C:\n"
                    f"{log_path.read_text()[-6000:]}")


@pytest.mark.slow
def test_qa_watch_changes_show_in_a_running_servers_answers(tmp_path: Path,
                                                           embedder: Embedder) -> None:
    make_index(tmp_path / "index", embedder)
    docs = tmp_path / "docs"
    docs.mkdir()
    seconds: dict[str, float] = {}
    # Both start together: their models load side by side.
    with qa_watch(tmp_path) as (process, log_path), \
            qa_serve_workers(tmp_path / "index", tmp_path / "serve.log", workers=1,
                             QA_ASK_RATE_LIMIT="off") as (url, _), \
            httpx.Client(base_url=url, timeout=30) as client:
        wait_watching(process, log_path)
        (docs / "lighthouse.md").write_text(TEAL, "utf-8")
        seconds["create"] = within(
            client, lambda f: "teal" in f.get("docs/lighthouse.md", ""), "the new file")
        # A file that cannot be loaded is reported, and the watch goes on.
        (docs / "broken.pdf").write_bytes(b"%PDF-1.7 not really")
        (docs / "lighthouse.md").write_text(CRIMSON, "utf-8")
        seconds["modify"] = within(
            client, lambda f: "crimson" in f.get("docs/lighthouse.md", ""), "the change")
        (docs / "lighthouse.md").rename(docs / "beacon.md")
        seconds["rename"] = within(
            client, lambda f: "docs/beacon.md" in f and "docs/lighthouse.md" not in f,
            "the rename")
        (docs / "beacon.md").unlink()
        seconds["delete"] = within(client, lambda f: "docs/beacon.md" not in f, "the deletion")
        assert set(passages(client)) == {"unrelated"}
        process.send_signal(signal.SIGINT)  # Ctrl-C: a clean stop, the index closed
        assert stopped(process, log_path) == 0
    log = log_path.read_text()
    assert "error: docs/broken.pdf" in log and "stopped watching" in log
    assert "Traceback" not in log
    print(f"seconds until /ask showed each change: {seconds}")


def test_serve_watch_indexes_on_a_thread_of_the_server(tmp_path: Path, embedder: Embedder
                                                       ) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "lighthouse.md").write_text(TEAL, "utf-8")  # there before: the catch-up adds it
    make_index(tmp_path / "index", embedder)
    settings = Settings(index_dir=tmp_path / "index", watch_paths=[docs], ask_rate_limit=None)
    with LiveServer(settings, embedder) as server, \
            httpx.Client(base_url=server.url, timeout=30) as client:
        within(client, lambda f: any(i.endswith("docs/lighthouse.md") for i in f), "catch-up")
        (docs / "beacon.md").write_text(CRIMSON, "utf-8")
        (docs / "lighthouse.md").unlink()
        within(client, lambda f: any(i.endswith("docs/beacon.md") for i in f)
               and not any(i.endswith("docs/lighthouse.md") for i in f), "the changes")


def test_serve_watch_refuses_several_workers(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["serve", "--watch", str(tmp_path), "--workers", "2",
                                      "--index", str(tmp_path / "index")])
    assert result.exit_code == 2
    assert "--watch needs --workers 1" in result.output


def test_qa_watch_refuses_a_missing_folder(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["watch", str(tmp_path / "nowhere")], catch_exceptions=False)
    assert result.exit_code == 2
    assert "does not exist" in result.output



def test_a_batch_takes_only_what_qa_index_would(tmp_path: Path) -> None:
    from qa.watch import sort_changes

    root = tmp_path / "docs"
    (root / ".git").mkdir(parents=True)
    (root / "moved-in").mkdir()
    for name in ("a.md", "b.txt~", ".draft.md", ".git/HEAD.md", "notes.tmp"):
        (root / name).write_text("text", "utf-8")
    (root / "link.md").symlink_to(root / "a.md")
    changes = [("added", root.absolute() / name) for name in (
        "a.md", "b.txt~", ".draft.md", ".git/HEAD.md", "notes.tmp", "link.md", "moved-in",
        "gone.md")]
    batch = sort_changes(changes, [root])
    assert batch.load == [root / "a.md", root / "moved-in"]  # spelled as the root was given
    assert batch.gone == [root / "gone.md"]
    assert [name for name, _ in batch.refused] == [str(root / "link.md")]
