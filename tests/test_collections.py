"""Collections and scoped keys: one server, many sites and audiences, each seeing only its own."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from conftest import ROOT, LiveServer, qa_serve_workers
from pydantic import SecretStr

from qa.catalog import CATALOG_FILE, Catalog
from qa.cli import cli
from qa.collection import Collection
from qa.embedding import Embedder
from qa.eval.datasets import load_dataset
from qa.indexing import index_paths
from qa.retrieval import retrieve
from qa.settings import Settings
from qa.types import Document

ADMIN = "admin-key-5c1d0e"
SUPER_BOWL = ROOT.parent / "shared" / "eval" / "squad-v1.1-dev-super-bowl-50.json"
NOTES = {
    "volcano/tambora": "Mount Tambora erupted in April 1815, the largest eruption in recorded "
    "history; the following year was called the year without a summer in Europe.",
    "volcano/krakatoa": "Krakatoa erupted in August 1883; the sound was heard 4,800 kilometres "
    "away, the loudest sound in recorded history.",
    "animals/armadillo": "The nine-banded armadillo rolls into a ball only rarely; it mostly "
    "escapes predators by jumping straight up and running into thorny brush.",
}


def note(doc_id: str) -> Document:
    return Document(id=doc_id, title=doc_id.split("/")[-1].title(), text=NOTES[doc_id],
                    metadata={"topic": doc_id.split("/")[0]})


@pytest.fixture
def root(built_index: Collection, settings: Settings, embedder: Embedder) -> Path:
    """The seed index as `default` (built before collections existed), plus a private
    collection `notes` with three short documents of its own."""
    built_index.close()
    with Catalog(settings, embedder) as catalog:
        catalog.create_collection("notes", public=False)
        notes = catalog.open("notes")
        notes.add([note(d) for d in NOTES], progress=False)
        notes.close()
    return settings.index_dir


@pytest.fixture
def server(root: Path, settings: Settings, embedder: Embedder) -> Iterator[str]:
    served = settings.model_copy(update={"api_keys": [SecretStr(ADMIN)], "ask_rate_limit": None})
    with LiveServer(served, embedder) as live:
        yield live.url


@pytest.fixture
def admin(server: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server, timeout=30,
                      headers={"Authorization": f"Bearer {ADMIN}"}) as client:
        yield client


@pytest.fixture
def anonymous(server: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server, timeout=30) as client:
        yield client


def make_key(admin: httpx.Client, **body: Any) -> str:
    response = admin.post("/keys", json=body)
    assert response.status_code == 201, response.text
    return str(response.json()["secret"])


def bearer(secret: str, **headers: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}", **headers}


def cited(response: httpx.Response) -> set[str]:
    assert response.status_code == 200, response.text
    return {p["citation"]["document_id"] for p in response.json()["passages"]}


def problem(response: httpx.Response, status: int, needle: str = "") -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert needle in response.json()["detail"], response.json()["detail"]


# -- collections -----------------------------------------------------------------------------


def test_an_index_made_before_collections_opens_as_default_on_the_old_and_the_new_routes(
        anonymous: httpx.Client) -> None:
    question = {"question": "who led the Russian delegation?", "k": 3}
    old = anonymous.post("/ask", json=question)
    new = anonymous.post("/collections/default/ask", json=question)
    assert cited(old) == cited(new) and "Medinsky" in old.json()["passages"][0]["text"]
    listed = anonymous.get("/collections").json()["collections"]
    assert [c["name"] for c in listed] == ["default"]  # `notes` is private: not shown
    assert listed[0]["public"] and listed[0]["documents"] >= 1


def test_collections_are_made_listed_asked_written_and_deleted_over_http(
        admin: httpx.Client, anonymous: httpx.Client) -> None:
    made = admin.post("/collections", json={"name": "faq", "public": True})
    assert made.status_code == 201 and made.json() == {
        "name": "faq", "documents": 0, "chunks": 0, "public": True}
    problem(admin.post("/collections", json={"name": "faq"}), 409, "exists")
    problem(admin.post("/collections", json={"name": "Not Valid"}), 422)
    put = admin.put("/collections/faq/documents/hours", json={
        "text": "The library opens at nine and closes at six, Monday to Saturday."})
    assert put.status_code == 201, put.text
    assert cited(anonymous.post("/collections/faq/ask",
                                json={"question": "when does the library open?"})) == {"hours"}
    assert anonymous.get("/collections/faq/documents/hours").json()["chunk_count"] == 1
    assert "hours" not in {d["id"] for d in anonymous.get("/documents").json()["documents"]}
    names = {c["name"]: c for c in admin.get("/collections").json()["collections"]}
    assert set(names) == {"default", "faq", "notes"} and names["faq"]["documents"] == 1
    assert admin.delete("/collections/faq").status_code == 204
    problem(admin.post("/collections/faq/ask", json={"question": "open?"}), 404, "faq")
    problem(admin.delete("/collections/default"), 409, "cannot be deleted")


def test_a_private_collection_answers_only_with_a_key_for_it(
        admin: httpx.Client, anonymous: httpx.Client) -> None:
    question = {"question": "which volcano erupted in 1815?"}
    problem(anonymous.post("/collections/notes/ask", json=question), 401, "search key")
    problem(anonymous.get("/collections/notes/documents"), 401)
    problem(anonymous.get("/collections/notes/source/volcano/tambora"), 401)
    secret = make_key(admin, role="search", collections=["notes"])
    answer = anonymous.post("/collections/notes/ask", json=question, headers=bearer(secret))
    assert cited(answer) <= set(NOTES)
    assert answer.json()["passages"][0]["citation"]["document_id"] == "volcano/tambora"
    # A source link opens in a new tab, which cannot send a header: the key rides in the link.
    page = anonymous.get("/collections/notes/source/volcano/tambora", params={"key": secret})
    assert page.status_code == 200 and "Tambora" in page.text
    problem(anonymous.get("/collections/notes/documents", params={"key": secret}), 401)


def test_a_search_key_for_one_collection_is_refused_on_others_and_on_every_write(
        admin: httpx.Client, anonymous: httpx.Client) -> None:
    auth = bearer(make_key(admin, role="search", collections=["notes"]))
    question = {"question": "who led the Russian delegation?"}
    problem(anonymous.post("/ask", json=question, headers=auth), 403, "default")
    problem(anonymous.post("/collections/default/ask", json=question, headers=auth), 403)
    writes = [
        anonymous.post("/collections/notes/documents", json={"text": "x"}, headers=auth),
        anonymous.put("/collections/notes/documents/new", json={"text": "x"}, headers=auth),
        anonymous.delete("/collections/notes/documents/volcano/tambora", headers=auth),
        anonymous.put("/documents/new", json={"text": "x"}, headers=auth),
        anonymous.post("/collections", json={"name": "mine"}, headers=auth),
        anonymous.delete("/collections/notes", headers=auth),
        anonymous.get("/keys", headers=auth),
        anonymous.post("/keys", json={"role": "admin"}, headers=auth),
    ]
    for response in writes:
        problem(response, 403)
    assert admin.get("/collections/notes/documents/volcano/tambora").status_code == 200


def test_a_write_key_changes_its_collection_only(admin: httpx.Client,
                                                 anonymous: httpx.Client) -> None:
    auth = bearer(make_key(admin, role="write", collections=["notes"]))
    new = anonymous.put("/collections/notes/documents/volcano/etna", headers=auth, json={
        "text": "Etna is the most active volcano in Europe, on the island of Sicily."})
    assert new.status_code == 201, new.text
    problem(anonymous.put("/documents/etna", json={"text": "x"}, headers=auth), 403)
    asked = anonymous.post("/collections/notes/ask", headers=auth,
                           json={"question": "which volcano is on Sicily?"})
    assert asked.json()["passages"][0]["citation"]["document_id"] == "volcano/etna"


def test_revoked_and_expired_keys_are_401_on_their_next_request(
        admin: httpx.Client, anonymous: httpx.Client) -> None:
    question = {"question": "which volcano erupted in 1815?"}
    secret = make_key(admin, role="search", collections=["notes"])
    assert anonymous.post("/collections/notes/ask", json=question,
                          headers=bearer(secret)).status_code == 200
    key_id = next(k["id"] for k in admin.get("/keys").json()["keys"] if k["id"] in secret)
    assert admin.delete(f"/keys/{key_id}").status_code == 204
    problem(anonymous.post("/collections/notes/ask", json=question, headers=bearer(secret)),
            401, "revoked")
    soon = (datetime.now(UTC) + timedelta(seconds=1.5)).isoformat()
    expiring = make_key(admin, role="search", collections=["notes"], expires_at=soon)
    assert anonymous.post("/collections/notes/ask", json=question,
                          headers=bearer(expiring)).status_code == 200
    time.sleep(2)
    problem(anonymous.post("/collections/notes/ask", json=question, headers=bearer(expiring)),
            401, "expired")


def test_the_key_list_never_shows_a_secret_and_the_catalog_file_holds_none(
        admin: httpx.Client, root: Path) -> None:
    secret = make_key(admin, role="search", collections=["notes"], name="docs site")
    listed = admin.get("/keys")
    assert secret not in listed.text and secret.split("_", 2)[2] not in listed.text
    assert {"id", "role", "collections", "name", "origins"} <= set(listed.json()["keys"][0])
    raw = b"".join(p.read_bytes() for p in root.glob(CATALOG_FILE + "*"))
    assert secret.split("_", 2)[2].encode() not in raw


def test_a_key_bound_to_an_origin_is_refused_from_another(admin: httpx.Client,
                                                          anonymous: httpx.Client) -> None:
    secret = make_key(admin, role="search", collections=["notes"],
                      origins=["https://docs.example.com"])
    question = {"question": "which volcano erupted in 1815?"}
    ok = anonymous.post("/collections/notes/ask", json=question,
                        headers=bearer(secret, Origin="https://docs.example.com"))
    assert ok.status_code == 200, ok.text
    problem(anonymous.post("/collections/notes/ask", json=question,
                           headers=bearer(secret, Origin="https://evil.example.net")),
            403, "evil.example.net")
    # A link opened from a page sends no Origin: the origin of its Referer counts instead.
    link = "/collections/notes/source/volcano/krakatoa"
    ok = anonymous.get(link, params={"key": secret},
                       headers={"Referer": "https://docs.example.com/guide/eruptions"})
    assert ok.status_code == 200, ok.text
    problem(anonymous.get(link, params={"key": secret},
                          headers={"Referer": "https://evil.example.net/page"}), 403)


def test_a_keys_fixed_filter_cannot_be_widened_by_the_request(
        admin: httpx.Client, anonymous: httpx.Client) -> None:
    auth = bearer(make_key(admin, role="search", collections=["notes"],
                           filter={"metadata.topic": "volcano"}))
    widen = {"$or": [{"metadata.topic": "animals"}, {"document_id": {"$exists": True}}]}
    volcanoes = {"volcano/tambora", "volcano/krakatoa"}
    for body in ({"question": "how does the armadillo escape predators?"},
                 {"question": "how does the armadillo escape predators?", "filter": widen}):
        got = cited(anonymous.post("/collections/notes/ask", json=body, headers=auth))
        assert got == volcanoes, got
    # Only the armadillo's document holds the word: the key's filter leaves nothing to find.
    assert cited(anonymous.post("/collections/notes/ask", headers=auth, json={
        "question": "armadillo", "mode": "keyword", "filter": widen})) == set()
    # What it may not ask, it may not read either.
    problem(anonymous.get("/collections/notes/documents/animals/armadillo", headers=auth), 404)
    problem(anonymous.get("/collections/notes/source/animals/armadillo", headers=auth), 404)
    listed = anonymous.get("/collections/notes/documents", headers=auth).json()
    assert {d["id"] for d in listed["documents"]} == volcanoes and listed["total"] == 2
    assert anonymous.get("/collections/notes/source/volcano/tambora",
                         headers=auth).status_code == 200
    narrowed = anonymous.post("/collections/notes/ask", headers=auth, json={
        "question": "eruption", "filter": {"document_id": "volcano/krakatoa"}})
    assert cited(narrowed) == {"volcano/krakatoa"}


def test_rate_limits_count_per_key_where_a_key_is_given(
        root: Path, settings: Settings, embedder: Embedder) -> None:
    served = settings.model_copy(update={"api_keys": [SecretStr(ADMIN)],
                                         "ask_rate_limit": "3/minute"})
    with LiveServer(served, embedder) as live, httpx.Client(base_url=live.url,
                                                            timeout=30) as client:
        secret = make_key(httpx.Client(base_url=live.url, headers=bearer(ADMIN)),
                          role="search", collections=["default"])
        question = {"question": "peace talks"}
        keyed = [client.post("/ask", json=question, headers=bearer(secret)).status_code
                 for _ in range(4)]
        assert keyed == [200, 200, 200, 429]
        # Same address, no key: its own bucket, untouched by the key's questions.
        assert client.post("/ask", json=question).status_code == 200


# -- the command line ------------------------------------------------------------------------


def test_the_cli_makes_indexes_checks_and_deletes_a_collection(root: Path, tmp_path: Path,
                                                                embedder: Embedder) -> None:
    folder = tmp_path / "handbook"
    folder.mkdir()
    (folder / "leave.md").write_text("# Leave\n\nStaff get 25 days of paid leave a year.\n")
    runner = CliRunner()
    index = ["--index", str(root)]
    made = runner.invoke(cli, ["collections", "create", "handbook", *index])
    assert made.exit_code == 0, made.output
    missing = runner.invoke(cli, ["index", str(folder), "--collection", "nope", *index])
    assert missing.exit_code == 1 and "qa collections create" in missing.output
    indexed = runner.invoke(cli, ["index", str(folder), "--collection", "handbook", *index])
    assert indexed.exit_code == 0, indexed.output
    checked = runner.invoke(cli, ["check", "--collection", "handbook", *index])
    assert checked.exit_code == 0, checked.output
    listed = runner.invoke(cli, ["collections", "list", "--json", *index])
    rows = {r["name"]: r for r in __import__("json").loads(listed.output)}
    assert rows["handbook"] == {"name": "handbook", "documents": 1, "chunks": 1,
                                "public": False}
    assert rows["default"]["public"] and rows["notes"]["documents"] == 3
    with Catalog(Settings(index_dir=root), embedder) as catalog:
        passages = retrieve(catalog.get("handbook"), "how many days of leave?", 3)
    assert [Path(p.citation.document_id).name for p in passages] == ["leave.md"]
    deleted = runner.invoke(cli, ["collections", "delete", "handbook", *index])
    assert deleted.exit_code == 0 and not (root / "collections" / "handbook").exists()
    gone = runner.invoke(cli, ["check", "--collection", "handbook", *index])
    assert gone.exit_code == 1 and gone.output.count("\n") == 1 and "handbook" in gone.output


def test_the_cli_makes_lists_and_revokes_keys_and_shows_the_secret_once(root: Path) -> None:
    runner = CliRunner()
    index = ["--index", str(root)]
    made = runner.invoke(cli, ["keys", "create", "--role", "search", "--collection", "notes",
                               "--origin", "https://docs.example.com", "--expires", "30d",
                               "--filter", '{"metadata.topic": "volcano"}', *index])
    assert made.exit_code == 0, made.output
    secret = made.stdout.strip()
    assert secret.startswith("qa_")
    listed = runner.invoke(cli, ["keys", "list", "--json", *index])
    (key,) = __import__("json").loads(listed.stdout)
    assert key["collections"] == ["notes"] and secret not in listed.stdout
    bad = runner.invoke(cli, ["keys", "create", "--role", "search", "--collection", "notes",
                              "--filter", '{"colour": "red"}', *index])
    assert bad.exit_code != 0 and "colour" in bad.output
    revoked = runner.invoke(cli, ["keys", "revoke", key["id"], *index])
    assert revoked.exit_code == 0, revoked.output
    with sqlite3.connect(root / CATALOG_FILE) as db:
        (when,) = db.execute("SELECT revoked_at FROM api_keys").fetchone()
    assert when


# -- across workers --------------------------------------------------------------------------


@pytest.mark.slow
def test_a_revoked_key_is_refused_by_every_worker_within_two_seconds(
        root: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    made = runner.invoke(cli, ["keys", "create", "--role", "search", "--collection", "notes",
                               "--index", str(root)])
    secret = made.stdout.strip()
    question = {"question": "which volcano erupted in 1815?"}

    def statuses(url: str) -> list[int]:
        out = []
        for _ in range(20):  # a new connection each time: spread over both workers
            with httpx.Client(base_url=url, timeout=30) as fresh:
                out.append(fresh.post("/collections/notes/ask", json=question,
                                      headers=bearer(secret)).status_code)
        return out

    with qa_serve_workers(root, tmp_path / "serve.log", QA_ASK_RATE_LIMIT="") as (url, _):
        assert set(statuses(url)) == {200}
        key_id = secret.split("_")[1]
        revoked = runner.invoke(cli, ["keys", "revoke", key_id, "--index", str(root)])
        assert revoked.exit_code == 0, revoked.output
        revoked_at = time.monotonic()
        while True:  # the first round of 20 that all get 401, and when it began
            began = time.monotonic()
            if set(statuses(url)) == {401}:
                break
            assert began - revoked_at < 2.0, "a worker still accepts the revoked key"
        print(f"\nrevocation seen by every worker {began - revoked_at:.2f} s after it")
        assert began - revoked_at < 2.0


# -- isolation -------------------------------------------------------------------------------


@pytest.mark.slow
def test_no_question_of_one_collection_ever_returns_a_passage_of_another(
        tmp_path: Path, embedder: Embedder) -> None:
    """The Super Bowl article in one collection, the seed article in another: all 810 Super
    Bowl questions and the seed questions, asked of each, cite only that collection."""
    squad = load_dataset(SUPER_BOWL)
    seed = load_dataset(ROOT / "seeds" / "questions.jsonl")
    settings = Settings(index_dir=tmp_path / "index")
    with Catalog(settings, embedder) as catalog:
        for name in ("bowl", "seeds"):
            catalog.create_collection(name)
        catalog.get("bowl").add(list(squad.documents), progress=False)
        index_paths(catalog.get("seeds"), [ROOT / "seeds"], progress=False)
        own = {name: {d["id"] for d in _documents(catalog.get(name))}
               for name in ("bowl", "seeds")}
        assert own["bowl"] and own["seeds"] and not own["bowl"] & own["seeds"]
        questions = [q.text for q in (*squad.questions, *seed.questions)]
        assert len(questions) >= 810 + len(seed.questions)
        embedder.warm_queries(questions)
        for name in ("bowl", "seeds"):
            for mode in ("hybrid", "keyword"):
                for question in questions:
                    for passage in retrieve(catalog.get(name), question, 5, mode):
                        assert passage.citation.document_id in own[name], (name, question)


def _documents(collection: Collection) -> list[dict[str, Any]]:
    rows, _ = collection.list_documents(0, 10_000)
    return [{"id": r.id} for r in rows]


def test_qa_eval_judges_a_named_collection_of_an_index(root: Path, tmp_path: Path) -> None:
    questions = tmp_path / "notes.jsonl"
    questions.write_text(
        '{"question": "which volcano erupted in 1815?", "answers": ["Tambora"]}\n'
        '{"question": "how does the armadillo escape predators?", "answers": ["jumping"]}\n')
    runner = CliRunner()
    judged = runner.invoke(cli, ["eval", str(questions), "--index", str(root),
                                 "--collection", "notes", "--json"])
    assert judged.exit_code == 0, judged.output
    assert '"hit@1": 1.0' in judged.stdout
    # The same questions of `default` (the seed article) find neither answer.
    missed = runner.invoke(cli, ["eval", str(questions), "--index", str(root), "--json"])
    assert missed.exit_code == 0 and '"hit@1": 0.0' in missed.stdout
    unknown = runner.invoke(cli, ["eval", str(questions), "--index", str(root),
                                  "--collection", "nope"])
    assert unknown.exit_code == 1 and "nope" in unknown.output
