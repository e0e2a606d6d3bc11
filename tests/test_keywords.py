"""The keyword index held in memory (qa/keywords.py): the very answers FTS5 gives, for every
keyword call a question makes, and never an answer of a state the index has left."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from conftest import seed_paragraphs

from qa.collection import Collection
from qa.store import KeywordKeeper, Store
from qa.text import query_words
from qa.types import Document

SHARED = Path(__file__).resolve().parents[2] / "shared"
SUPER_BOWL = SHARED / "eval" / "squad-v1.1-dev-super-bowl-50.json"

# What the seed article does not hold: accents FTS5 folds, words its stemmer joins, a phrase
# said twice in one chunk, a word only here, and stopword-only and punctuation-only text.
EXTRA = [
    Document(id="cafe", title="Café", text=(
        "The café in Zürich served crème brûlée. Cafe owners said the cafés were running, and "
        "the runner ran while running shoes ran out. Running shoes, running shoes everywhere.")),
    Document(id="rare", title="Rare", text="A zymurgical note: zymurgy is the study of brewing."),
]


def squad_questions(count: int) -> list[str]:
    data = json.loads(SUPER_BOWL.read_text())
    questions = [qa["question"] for article in data["data"] for paragraph in article["paragraphs"]
                 for qa in paragraph["qas"]]
    return questions[:count] + ["café crème brûlée", "running shoes running", "zymurgy",
                                "what is the", "?!", "Zurich cafe runner", "brewing study"]


@pytest.fixture
def filled(collection: Collection) -> Collection:
    collection.add([*seed_paragraphs(20), *EXTRA])
    return collection


def every_call(store: Store, question: str, allowed: list[np.ndarray]) -> list[object]:
    """Every keyword call a question can make of the store, with their answers."""
    content, _ = query_words(question)
    answers: list[object] = [store.absent_words(content)]
    for budget in (None, 5, 40):  # 5 and 40: the postings budget binds on this small index
        for k in (3, 30, 1000):
            answers.append(store.keyword_search(question, k, budget=budget))
            answers += [store.keyword_search(question, k, budget=budget, allowed=a)
                        for a in allowed]
    return answers


def test_the_mirror_answers_every_keyword_call_exactly_as_fts5(filled: Collection) -> None:
    store = filled.store
    ids = store.chunk_ids()
    assert len(ids) > 12  # so that both budgets below bind on some questions
    allowed = [ids[::3], ids[-2:], ids[:0]]
    mirror = store.read_keyword_mirror(10**9)
    assert mirror is not None
    differ, asked, scored = [], 0, 0
    for question in squad_questions(60):
        store.use_keyword_mirror(None)
        fts5 = every_call(store, question, allowed)
        store.use_keyword_mirror(mirror)
        assert store.current_mirror() is mirror
        mine = every_call(store, question, allowed)
        asked += 1
        scored += sum(1 for answer in fts5[1:] if answer)
        if mine != fts5:  # chunks, order and float scores, bit for bit
            differ.append(question)
    assert not differ, differ
    assert scored > asked * 5  # most calls found something: the comparison compared scores
    # The words FTS5 folds and stems meet as FTS5 has them.
    store.use_keyword_mirror(mirror)
    assert [c for c, _ in store.keyword_search("cafe Zurich", 5)][:1] == [
        c for c, _ in filled.store.keyword_search("café zürich", 5)][:1]
    assert store.absent_words(["zymurgy", "qwertyuiop", "crème"]) == ["qwertyuiop"]


def test_a_mirror_behind_the_index_is_never_used(filled: Collection) -> None:
    store = filled.store
    store.use_keyword_mirror(store.read_keyword_mirror(10**9))
    assert store.current_mirror() is not None
    filled.add([Document(id="new", title="New", text="Quokkas live on Rottnest Island.")])
    assert store.current_mirror() is None  # a write changed the keyword index
    found = store.keyword_search("quokkas rottnest", 5)
    assert found and store.chunk_rows([found[0][0]])[found[0][0]].document_id == "new"
    assert store.absent_words(["quokkas"]) == []
    filled.delete("new")
    assert store.current_mirror() is None
    assert store.keyword_search("quokkas", 5) == []


def test_an_index_over_the_limit_is_not_held(filled: Collection) -> None:
    assert filled.store.read_keyword_mirror(10) is None
    keeper = KeywordKeeper(filled.store, 10, every_s=0.02).start()
    try:
        deadline = time.monotonic() + 10
        while keeper.state == "building" and time.monotonic() < deadline:
            time.sleep(0.01)
        assert keeper.state == "fts5"
        assert filled.store.current_mirror() is None
    finally:
        keeper.stop()


def test_a_server_collection_keeps_its_mirror_in_step_with_writes(filled: Collection) -> None:
    keeper = KeywordKeeper(filled.store, 10**9, every_s=0.05)
    filled._keeper = keeper.start()

    def settles(state: str) -> None:
        deadline = time.monotonic() + 20
        while filled.keywords != state and time.monotonic() < deadline:
            time.sleep(0.01)
        assert filled.keywords == state

    settles("memory")
    first = filled.store.current_mirror()
    assert first is not None
    filled.add([Document(id="new", title="New", text="Quokkas live on Rottnest Island.")])
    assert filled.store.current_mirror() is None  # FTS5 answers until the next read
    settles("fts5")
    settles("memory")  # read again once the index stayed still for a check
    again = filled.store.current_mirror()
    assert again is not None and again is not first
    found = filled.store.keyword_search("quokkas", 5)
    assert found and filled.store.chunk_rows([found[0][0]])[found[0][0]].document_id == "new"
    filled.close()  # stops the keeper
    assert not keeper._thread.is_alive()


def test_healthz_says_where_keyword_search_runs(http: httpx.Client) -> None:
    deadline = time.monotonic() + 20
    while (health := http.get("/healthz").json())["keywords"] == "building":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert health["keywords"] == "memory"
