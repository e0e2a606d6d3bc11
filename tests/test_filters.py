"""Metadata filters: the language's rules and errors, and that a filter is applied inside the
search (every returned passage is allowed, and k come back whenever k chunks are allowed),
on a real collection: real model, real FAISS, real SQLite, the app over HTTP, the CLI."""

from __future__ import annotations

import json
import operator
import os
import random
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from conftest import LiveServer
from hypothesis import given, settings
from hypothesis import strategies as st

from qa.collection import Collection
from qa.embedding import Embedder
from qa.errors import InvalidInput
from qa.filters import (
    MAX_CONDITIONS,
    MAX_DEPTH,
    MAX_KEY_CHARS,
    MAX_LIST_ITEMS,
    MAX_STRING_CHARS,
    MAX_VALUES,
    all_of,
    parse_filter,
)
from qa.retrieval import retrieve
from qa.settings import Settings
from qa.types import Chunk, Document
from qa.vectors import ANN_THRESHOLD

MODES = ("hybrid", "dense", "keyword")
ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}
GAP = "\n\n~~~~~~\n\n"  # between chunks: wider than NEIGHBOUR_GAP, so no two chunks merge


def write(collection: Collection, documents: list[tuple[Document, list[str], list[int | None]]],
          vectors: Callable[[list[str]], np.ndarray]) -> None:
    """Commit documents whose chunks are the given texts (joined by GAP) on the given pages."""
    items = []
    for document, texts, pages in documents:
        chunks, start = [], 0
        for ordinal, (text, page) in enumerate(zip(texts, pages, strict=True)):
            chunks.append(Chunk(document.id, ordinal, start, start + len(text), text,
                                len(text.split()), page=page))
            start += len(text) + len(GAP)
        items.append((document, chunks, vectors([c.text for c in chunks])))
    collection.write_embedded(items)


def document(id: str, texts: list[str], **fields: Any) -> Document:
    return Document(id=id, text=GAP.join(texts), title=fields.pop("title", id), **fields)


def allowed_documents(collection: Collection, raw: Mapping[str, Any]) -> set[str]:
    ids = collection.allowed_ids(parse_filter(raw)).tolist()
    return {row.document_id for row in collection.chunk_rows(ids).values()}


# -- the language, on a small hand-written collection ----------------------------------------

SEMANTICS_DOCUMENTS = [
    ("a", {"tag": ["policy", "news"], "n": 5, "flag": True, "nested": {"level": "x"},
           "none": None}, {"date": "2025-01-02", "source": "seeds/a.txt"}),
    ("b", {"tag": "news", "n": "5", "flag": 1}, {"date": "2024-12-31", "url": "https://b.test"}),
    ("c", {"tag": "Policy", "n": 5.5, "nested": "x"}, {}),
    ("50%_d", {"tag": [], "n": [1, 7], "flag": False}, {"source": "seeds_x/d.txt"}),
]


@pytest.fixture(scope="module")
def semantics(tmp_path_factory: pytest.TempPathFactory, embedder: Embedder
              ) -> Iterator[Collection]:
    settings = Settings(index_dir=tmp_path_factory.mktemp("semantics") / "index")
    collection = Collection.open(settings, embedder, create=True)
    rng = np.random.default_rng(0)

    def noise(texts: list[str]) -> np.ndarray:
        v = rng.normal(size=(len(texts), embedder.dimension)).astype(np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    write(collection, [(document(i, [f"text of {i}"], metadata=m, **f), [f"text of {i}"],
                        [None]) for i, m, f in SEMANTICS_DOCUMENTS], noise)
    yield collection
    collection.close()


@pytest.mark.parametrize(("raw", "expected"), [
    ({}, {"a", "b", "c", "50%_d"}),
    ({"metadata.tag": "policy"}, {"a"}),  # a list matches when any element does
    ({"metadata.tag": {"$eq": "policy"}}, {"a"}),  # a bare value is $eq
    ({"metadata.tag": {"$ne": "policy"}}, {"b", "c", "50%_d"}),  # case counts
    ({"metadata.tag": {"$in": ["news", "Policy"]}}, {"a", "b", "c"}),
    ({"metadata.tag": {"$nin": ["news"]}}, {"c", "50%_d"}),
    ({"metadata.n": 5}, {"a"}),  # "5" is not 5
    ({"metadata.n": "5"}, {"b"}),
    ({"metadata.n": {"$gt": 4}}, {"a", "c", "50%_d"}),  # numbers only; list: any element
    ({"metadata.n": {"$gte": "0"}}, {"b"}),  # strings only
    ({"metadata.n": {"$lt": 2}}, {"50%_d"}),
    ({"metadata.flag": True}, {"a"}),  # true is not 1
    ({"metadata.flag": 1}, {"b"}),
    ({"metadata.flag": False}, {"50%_d"}),
    ({"metadata.nested.level": "x"}, {"a"}),  # nested keys; "x" at metadata.nested is not it
    ({"metadata.nested": "x"}, {"c"}),
    ({"metadata.none": {"$exists": True}}, {"a"}),  # present, even as null
    ({"metadata.none": {"$ne": "x"}}, {"a", "b", "c", "50%_d"}),
    ({"metadata.tag": {"$exists": False}}, set()),
    ({"metadata.missing": {"$exists": False}}, {"a", "b", "c", "50%_d"}),
    ({"metadata.missing": "x"}, set()),  # a missing field matches nothing...
    ({"metadata.missing": {"$ne": "x"}}, {"a", "b", "c", "50%_d"}),  # ...but $ne
    ({"metadata.missing": {"$nin": ["x"]}}, {"a", "b", "c", "50%_d"}),  # ...and $nin
    ({"metadata.tag": {"$prefix": "pol"}}, {"a"}),
    ({"date": {"$gte": "2025-01-01"}}, {"a"}),
    ({"date": {"$lt": "2025-01-01"}}, {"b"}),  # a NULL date is in no range
    ({"date": {"$ne": "2025-01-02"}}, {"b", "c", "50%_d"}),  # ...but is not-equal
    ({"date": {"$exists": False}}, {"c", "50%_d"}),
    ({"url": {"$prefix": "https://"}}, {"b"}),
    ({"source": {"$prefix": "seeds/"}}, {"a"}),
    ({"source": {"$prefix": "seeds_"}}, {"50%_d"}),  # _ is no wildcard
    ({"document_id": {"$prefix": "50%"}}, {"50%_d"}),  # nor is %
    ({"document_id": {"$prefix": "5_%"}}, set()),
    ({"document_id": {"$in": ["a", "c"]}}, {"a", "c"}),
    ({"page": {"$exists": False}}, {"a", "b", "c", "50%_d"}),
    ({"page": 1}, set()),
    ({"$or": [{"metadata.flag": True}, {"metadata.flag": False}]}, {"a", "50%_d"}),
    ({"$and": [{"metadata.tag": "news"}, {"date": {"$exists": True}}]}, {"a", "b"}),
    ({"$not": {"metadata.tag": "news"}}, {"c", "50%_d"}),
    ({"metadata.tag": "news", "metadata.n": 5}, {"a"}),  # fields of one object are ANDed
    ({"metadata.n": {"$gt": 1, "$lt": 6}}, {"a", "c", "50%_d"}),  # as are operators of one
    # field, each on its own: [1, 7] has an element above 1 and one below 6 (as in Mongo)
])
def test_the_filter_language_allows_exactly_these_documents(
    semantics: Collection, raw: dict[str, Any], expected: set[str]
) -> None:
    assert allowed_documents(semantics, raw) == expected


@pytest.mark.parametrize(("raw", "named"), [
    ({"metadata.tag": {"$inn": ["a"]}}, 'filter.metadata.tag: unknown operator "$inn" (known: '
                                        "$eq, $ne, $in, $nin, $gt, $gte, $lt, $lte, $prefix, "
                                        "$exists)"),
    ({"auther": "x"}, 'filter.auther: unknown field "auther"'),
    ({"$nor": [{"page": 1}]}, 'filter: unknown operator "$nor"'),
    ({"$eq": 1}, 'filter: unknown operator "$eq"'),
    ({"page": "x"}, "filter.page: expected an integer"),
    ({"page": True}, "filter.page: expected an integer"),
    ({"page": 1.5}, "filter.page: expected an integer"),
    ({"page": {"$prefix": "1"}}, "filter.page.$prefix: $prefix applies to text"),
    ({"date": 5}, "filter.date: expected a string"),
    ({"date": {"$gte": 20250101}}, "filter.date.$gte: expected a string"),
    ({"metadata.tag": {"$in": "a"}}, "filter.metadata.tag.$in: expected a list"),
    ({"metadata.tag": {"$in": ["a", {"b": 1}]}}, "filter.metadata.tag.$in[1]: expected a "
                                                 "string, number or boolean"),
    ({"metadata.tag": {"$in": ["a", None]}}, "filter.metadata.tag.$in[1]: null"),
    ({"metadata.tag": {"kind": "a"}}, "filter.metadata.tag: an object where a value is "
                                      "expected"),
    ({"metadata.tag": ["a", "b"]}, "filter.metadata.tag: expected a string, number or boolean"
                                   ", got a list (for any of several values, use $in)"),
    ({"metadata.tag": {}}, "filter.metadata.tag: an empty condition"),
    ({"metadata.tag": {"$exists": "yes"}}, "filter.metadata.tag.$exists: $exists takes true "
                                           "or false"),
    ({"metadata.tag": {"$prefix": 1}}, "filter.metadata.tag.$prefix: $prefix takes a string"),
    ({"metadata.tag": {"$gt": True}}, "filter.metadata.tag.$gt: $gt takes a string or a "
                                      "number"),
    ({"metadata.n": float("nan")}, "filter.metadata.n: numbers must be finite"),
    ({"metadata.n": 2**64}, "filter.metadata.n: integer out of range"),
    ({"metadata.t": "a\x00b"}, "filter.metadata.t: a string with NUL"),
    ({"metadata.t": "\ud800"}, "filter.metadata.t: a string with NUL or a lone surrogate"),
    ({"$and": []}, "filter.$and: $and takes a non-empty list of filters, got an empty list"),
    ({"$or": {"page": 1}}, "filter.$or: $or takes a non-empty list of filters"),
    ({"$or": [1]}, "filter.$or[0]: a filter is a JSON object"),
    ({"$and": [{"page": 1}, {}]}, "filter.$and[1]: an empty filter"),
    ({"$not": [{"page": 1}]}, "filter.$not: $not takes one filter"),
    ({"$not": {"page": {"$inn": 1}}}, 'filter.$not.page: unknown operator "$inn"'),
    ({"$or": [{"page": 1}, {"$and": [{"date": 5}]}]}, "filter.$or[1].$and[0].date: expected "
                                                       "a string"),
    ({"page": {"$not": {"$gt": 1}}}, 'filter.page: $not applies to a whole filter: write '
                                     '{"$not": {"page": {...}}}'),
    ({"metadata": "x"}, "filter.metadata: name a metadata key"),
    ({"metadata.": "x"}, "filter.metadata.: name a metadata key"),
    ({"metadata.a..b": "x"}, 'filter.metadata.a..b: an empty key in "metadata.a..b"'),
    ({'metadata.a"b': "x"}, "filter.metadata.a\"b: metadata keys cannot hold '\"'"),
    ({"metadata.a\\b": "x"}, "filter.metadata.a\\b: metadata keys cannot hold '\\\\'"),
    ([{"page": 1}], "filter: a filter is a JSON object, got a list"),
])
def test_a_bad_filter_is_invalid_input_naming_where_and_what(raw: Any, named: str) -> None:
    with pytest.raises(InvalidInput) as error:
        parse_filter(raw)
    assert error.value.status == 422
    assert named in error.value.detail


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8)
    | st.sampled_from(["$eq", "$in", "$and", "$or", "$not", "$prefix", "page", "date"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.sampled_from(["page", "date", "title", "metadata.tag", "metadata.a.b", "$and",
                         "$or", "$not", "$eq", "$ne", "$in", "$nin", "$gt", "$prefix",
                         "$exists", "x", "metadata", ""]) | st.text(max_size=6),
        inner, max_size=3),
    max_leaves=12)


@settings(max_examples=300, deadline=None)
@given(raw=json_values)
def test_any_json_is_either_refused_as_invalid_input_or_runs(
    semantics: Collection, raw: object
) -> None:
    try:
        where = parse_filter(raw)
    except InvalidInput as error:
        assert error.detail.startswith("filter")
        return
    semantics.allowed_ids(where)  # the SQL it compiled to runs
    assert parse_filter(json.loads(where.key)) == where


def test_errors_say_where_the_filter_came_from() -> None:
    with pytest.raises(InvalidInput, match=r"^key filter\.page: expected an integer"):
        parse_filter({"page": "1"}, where="key filter")


def nested(depth: int) -> dict[str, Any]:
    raw: dict[str, Any] = {"page": 1}
    for _ in range(depth - 1):
        raw = {"$not": raw}
    return raw


@pytest.mark.parametrize(("fits", "too_much", "named"), [
    (nested(MAX_DEPTH), nested(MAX_DEPTH + 1), f"nested more than {MAX_DEPTH} deep"),
    ({"$or": [{"page": i} for i in range(MAX_CONDITIONS)]},
     {"$or": [{"page": i} for i in range(MAX_CONDITIONS + 1)]},
     f"filter.$or[{MAX_CONDITIONS}].page: more than {MAX_CONDITIONS} conditions"),
    ({"page": {"$in": list(range(MAX_LIST_ITEMS))}},
     {"page": {"$in": list(range(MAX_LIST_ITEMS + 1))}},
     f"filter.page.$in: more than {MAX_LIST_ITEMS} values"),
    ({"$or": [{f"metadata.k{i}": {"$in": list(range(MAX_LIST_ITEMS))}}
              for i in range(MAX_VALUES // MAX_LIST_ITEMS)]},
     {"$or": [{f"metadata.k{i}": {"$in": list(range(MAX_LIST_ITEMS))}}
              for i in range(MAX_VALUES // MAX_LIST_ITEMS)] + [{"page": 1}]},
     f"more than {MAX_VALUES} values in one filter"),
    ({"title": "x" * MAX_STRING_CHARS}, {"title": "x" * (MAX_STRING_CHARS + 1)},
     f"filter.title: a string longer than {MAX_STRING_CHARS} characters"),
    ({"metadata." + "k" * (MAX_KEY_CHARS - 9): 1}, {"metadata." + "k" * (MAX_KEY_CHARS - 8): 1},
     f"a field name longer than {MAX_KEY_CHARS} characters"),
])
def test_caps_hold_at_the_edge_and_the_error_names_them(
    semantics: Collection, fits: dict[str, Any], too_much: dict[str, Any], named: str
) -> None:
    semantics.allowed_ids(parse_filter(fits))  # at the cap: accepted, and SQLite runs it
    with pytest.raises(InvalidInput) as error:
        parse_filter(too_much)
    assert named in error.value.detail


def test_equal_filters_have_equal_keys_whatever_the_order() -> None:
    one = parse_filter({"date": {"$lt": "2026", "$gte": "2025"}, "metadata.tag": "news"})
    two = parse_filter({"metadata.tag": "news", "date": {"$gte": "2025", "$lt": "2026"}})
    assert one.key == two.key and one == two
    assert parse_filter({"page": 1}).key != parse_filter({"page": 2}).key


def test_all_of_narrows_and_none_means_no_filter(semantics: Collection) -> None:
    news = parse_filter({"metadata.tag": "news"})
    dated = parse_filter({"date": {"$gte": "2025-01-01"}})
    both = all_of(news, None, dated)
    assert both is not None
    assert set(semantics.allowed_ids(both).tolist()) == (
        set(semantics.allowed_ids(news).tolist()) & set(semantics.allowed_ids(dated).tolist()))
    assert all_of(None, None) is None
    assert all_of(None, news) is news
    assert all_of(parse_filter({}), news) is news
    # A request's $or cannot widen a fixed filter: it is ANDed, never merged.
    widened = all_of(news, parse_filter({"$or": [{"metadata.tag": {"$exists": True}},
                                                 {"metadata.tag": {"$exists": False}}]}))
    assert widened is not None
    assert allowed_documents(semantics, json.loads(widened.key)) == {"a", "b"}


# -- exact, whatever the filter: a property test against a plain-Python oracle ---------------

QUESTION = "lighthouse log of the harbor"
WORDS = ["harbor", "storm", "ledger", "signal", "tide", "beacon", "cargo", "pilot", "fog"]
# Operands drawn from the values the documents hold (and near misses), so that filters
# allow some chunks, not mostly none or all.
STRINGS = {
    "document_id": ["seeds/doc3", "web/doc7", "50%/doc1", "seeds/", "seeds_", "50%/", "50_",
                    "Seeds/", "web/", "s", ""],
    "source": ["seeds/a.txt", "seeds_b.txt", "web", "seeds", "seeds_", "w"],
    "title": ["Alpha", "alpha", "Beta_1", "Beta%", "Beta", "B"],
    "date": ["2024-12-31", "2025-01-01", "2025-05-15", "2025", "2025-02"],
    "url": ["https://a.test/x", "https://", "http://"],
    "metadata": ["policy", "news", "Policy", "pol", "5", "true", "x", "y", ""],
}
NUMBERS = [0, 1, 5, 5.5, -2, 2.5, 7]
DOCUMENT_FIELDS = ["document_id", "source", "title", "date", "url"]
METADATA_FIELDS = ["metadata.tag", "metadata.n", "metadata.flag", "metadata.nested",
                   "metadata.nested.level", "metadata.tags", "metadata.none", "metadata.absent"]


def random_documents(seed: int = 15, count: int = 45
                     ) -> list[tuple[Document, list[str], list[int | None]]]:
    rng = random.Random(seed)
    pick = rng.choice
    out = []
    for i in range(count):
        metadata: dict[str, Any] = {}
        choices: dict[str, list[Any]] = {
            "tag": ["policy", "news", "Policy", "pol", ["policy", "news"], ["news"], [], 5,
                    "5"],
            "n": [0, 1, 5, 5.5, -2, "5", True, [1, 7], None, 2.5],
            "flag": [True, False, 1, 0, "true"],
            "nested": [{"level": "x"}, {"level": 1}, {"other": "x"}, "x", ["x", {"level": "x"}]],
            "tags": [["x", 1, True], [2.5, "y"], ["y", [1]], []],
            "none": [None],
        }
        for key, values in choices.items():
            if rng.random() < 0.7:
                metadata[key] = pick(values)
        n_chunks = pick([1, 1, 2, 3])
        pages = ([rng.randint(1, 4) for _ in range(n_chunks)] if rng.random() < 0.4
                 else [None] * n_chunks)
        texts = [f"Lighthouse log {i}.{j}: " + " ".join(rng.sample(WORDS, 3)) + "."
                 for j in range(n_chunks)]
        prefix = pick(["seeds/", "seeds_", "web/", "50%/", "Seeds/"])
        out.append((document(f"{prefix}doc{i}", texts, metadata=metadata,
                             title=pick(["Alpha", "alpha", "Beta_1", "Beta%"]),
                             date=pick(["2024-12-31", "2025-01-01", "2025-05-15", None]),
                             source=pick(["seeds/a.txt", "seeds_b.txt", "web", None]),
                             url=pick(["https://a.test/x", None])), texts, pages))
    return out


def kind(value: object) -> str | None:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    return "string" if isinstance(value, str) else None


def lookup(doc: Document, page: int | None, name: str) -> tuple[bool, object]:
    """(present, value) of a field for one chunk, by reading the Document itself."""
    if name == "page":
        return page is not None, page
    if name in DOCUMENT_FIELDS:
        value = {"document_id": doc.id, "source": doc.source, "title": doc.title,
                 "date": doc.date, "url": doc.url}[name]
        return value is not None, value
    node: object = dict(doc.metadata)
    for key in name.split(".")[1:]:
        if not isinstance(node, dict) or key not in node:
            return False, None
        node = node[key]
    return True, node


COMPARE = {"$gt": operator.gt, "$gte": operator.ge, "$lt": operator.lt, "$lte": operator.le}


def holds(op: str, operand: Any, present: bool, value: object) -> bool:
    elements = [] if not present else [e for e in value if kind(e)] if isinstance(
        value, list) else [value] if kind(value) else []
    if op == "$exists":
        return present is operand
    if op == "$eq":
        return any(kind(e) == kind(operand) and e == operand for e in elements)
    if op == "$ne":
        return not holds("$eq", operand, present, value)
    if op == "$in":
        return any(holds("$eq", o, present, value) for o in operand)
    if op == "$nin":
        return not holds("$in", operand, present, value)
    if op == "$prefix":
        return any(isinstance(e, str) and e.startswith(operand) for e in elements)
    return any(kind(e) == kind(operand) and COMPARE[op](e, operand) for e in elements)


def oracle(raw: Mapping[str, Any], doc: Document, page: int | None) -> bool:
    for name, operand in raw.items():
        if name == "$and":
            ok = all(oracle(f, doc, page) for f in operand)
        elif name == "$or":
            ok = any(oracle(f, doc, page) for f in operand)
        elif name == "$not":
            ok = not oracle(operand, doc, page)
        else:
            conditions = operand.items() if isinstance(operand, dict) else [("$eq", operand)]
            ok = all(holds(op, v, *lookup(doc, page, name)) for op, v in conditions)
        if not ok:
            return False
    return True


def operands(name: str, op: str) -> st.SearchStrategy[Any]:
    strings = st.sampled_from(STRINGS.get(name, STRINGS["metadata"]))
    typed: st.SearchStrategy[Any] = (
        strings if name in DOCUMENT_FIELDS else st.integers(0, 5) if name == "page"
        else st.one_of(strings, st.sampled_from(NUMBERS), st.booleans()))
    if op == "$exists":
        return st.booleans()
    if op in ("$in", "$nin"):
        return st.lists(typed, max_size=4)
    if op == "$prefix":
        return strings
    if op in COMPARE and name.startswith("metadata."):
        return st.one_of(strings, st.sampled_from(NUMBERS))
    return typed


def conditions_of(name: str) -> st.SearchStrategy[Any]:
    # The narrowing operators twice as often: $ne, $nin and $exists mostly allow all or none.
    ops = ["$eq", "$eq", "$in", "$in", "$gt", "$gte", "$lt", "$lte", "$ne", "$nin", "$exists"]
    if name != "page":
        ops += ["$prefix", "$prefix"]
    one = st.sampled_from(ops).flatmap(lambda op: operands(name, op).map(lambda v: (op, v)))
    return st.one_of(
        operands(name, "$eq"),  # a bare value
        st.lists(one, min_size=1, max_size=2).map(dict),
    )


fields = st.sampled_from(DOCUMENT_FIELDS + ["page"] + METADATA_FIELDS)
single = fields.flatmap(lambda f: conditions_of(f).map(lambda c: {f: c}))
leaf_filters = st.lists(fields.flatmap(lambda f: conditions_of(f).map(lambda c: (f, c))),
                        min_size=1, max_size=2).map(dict)
filters = st.recursive(leaf_filters, lambda inner: st.one_of(
    st.lists(inner, min_size=1, max_size=3).map(lambda fs: {"$and": fs}),
    st.lists(inner, min_size=1, max_size=3).map(lambda fs: {"$or": fs}),
    inner.map(lambda f: {"$not": f}),
    st.tuples(leaf_filters, inner).map(lambda t: {**t[0], "$or": [t[1]]}),
), max_leaves=6)


@pytest.fixture(scope="module")
def random_collection(tmp_path_factory: pytest.TempPathFactory, embedder: Embedder
                      ) -> Iterator[tuple[Collection, dict[int, tuple[Document, int | None]]]]:
    settings = Settings(index_dir=tmp_path_factory.mktemp("random") / "index")
    collection = Collection.open(settings, embedder, create=True)
    documents = random_documents()
    write(collection, documents, lambda texts: embedder.embed(texts, progress=False))
    by_id = {d.id: d for d, _, _ in documents}
    rows = collection.chunk_rows(collection.store.chunk_ids().tolist())
    chunks = {cid: (by_id[row.document_id], row.page) for cid, row in rows.items()}
    yield collection, chunks
    collection.close()


@settings(max_examples=60, deadline=None)
# Half the examples one field's condition: composed filters mostly allow all chunks or none,
# and it is a filter allowing a few that tests "k come back".
@given(raw=st.one_of(single, filters), k=st.integers(1, 6))
def test_every_passage_satisfies_the_filter_and_k_come_back_when_k_chunks_match(
    random_collection: tuple[Collection, dict[int, tuple[Document, int | None]]],
    raw: dict[str, Any], k: int,
) -> None:
    collection, chunks = random_collection
    where = parse_filter(raw)
    allowed = {cid for cid, (doc, page) in chunks.items() if oracle(raw, doc, page)}
    assert set(collection.allowed_ids(where).tolist()) == allowed
    for mode in MODES:
        passages = retrieve(collection, QUESTION, k, mode, filter=where)
        for p in passages:
            doc, page = chunks[p.citation.chunk_id]
            assert oracle(raw, doc, p.citation.page) and p.citation.page == page
            assert p.citation.document_id == doc.id
        # Every chunk holds the question's words and none overlaps another: each allowed
        # chunk can be a passage, in every mode.
        assert len(passages) == min(k, len(allowed)), mode


# -- neighbours, the cache ------------------------------------------------------------------


def test_a_passage_merges_only_allowed_neighbours(collection: Collection) -> None:
    words = [f"{w} harbor lighthouse" for w in ("alpha", "beta", "gamma", "delta")]
    text = " ".join(words)
    spans = [(0, 40), (20, 62), (46, len(text))]  # overlapping windows, one per page
    chunks = [Chunk("log", i, s, e, text[s:e], 5, page=i + 1) for i, (s, e) in enumerate(spans)]
    vectors = collection.embedder.embed([c.text for c in chunks], progress=False)
    collection.write_embedded([(Document(id="log", text=text, title="Log"), chunks, vectors)])
    merged = retrieve(collection, "harbor lighthouse", 3, "keyword")
    assert any(p.citation.end - p.citation.start > 42 for p in merged), "unfiltered: merged"
    for mode in MODES:
        only = retrieve(collection, "harbor lighthouse", 3, mode, filter=parse_filter(
            {"page": 2}))
        assert [(p.citation.start, p.citation.end, p.citation.page) for p in only] == [
            (20, 62, 2)]
        ends = retrieve(collection, "harbor lighthouse", 3, mode, filter=parse_filter(
            {"page": {"$in": [1, 3]}}))
        assert sorted((p.citation.start, p.citation.end) for p in ends) == [(0, 40),
                                                                           (46, len(text))]


def test_a_write_here_or_in_another_process_changes_what_a_cached_filter_allows(
    collection: Collection, settings: Settings, embedder: Embedder
) -> None:
    news = parse_filter({"metadata.tag": "news"})
    collection.add([Document(id="one", text="The harbor opened.", title="One",
                             metadata={"tag": "news"})])
    assert len(collection.allowed_ids(news)) == 1
    assert collection.allowed_ids(news) is collection.allowed_ids(news), "cached"
    collection.add([Document(id="two", text="The harbor closed.", title="Two",
                             metadata={"tag": "news"})])
    assert len(collection.allowed_ids(news)) == 2
    # Metadata alone changes (nothing re-embedded): the allowed chunks change all the same.
    collection.add([Document(id="one", text="The harbor opened.", title="One",
                             metadata={"tag": "old"})])
    assert len(collection.allowed_ids(news)) == 1
    other = Collection.open(settings, embedder)  # another connection, as another process has
    try:
        other.delete("two")
    finally:
        other.close()
    assert len(collection.allowed_ids(news)) == 0
    assert retrieve(collection, "harbor", 3, filter=news) == []


# -- a selective filter on a large (HNSW) collection ----------------------------------------


@pytest.mark.slow
def test_a_filter_keeping_half_a_percent_of_20k_chunks_still_returns_k_in_every_mode(
    collection: Collection, monkeypatch: pytest.MonkeyPatch
) -> None:
    per_document, total = 5, ANN_THRESHOLD
    rng = np.random.default_rng(15)
    documents = []
    for i in range(total // per_document):
        texts = [f"Harbor report {i}.{j} on {WORDS[(i + j) % len(WORDS)]} and tides."
                 for j in range(per_document)]
        group = "rare" if i < total // per_document // 200 else "common"  # 0.5% of chunks
        documents.append((document(f"report/{i}", texts,
                                   metadata={"group": group, "half": i % 2}),
                          texts, [None] * per_document))

    def vectors(texts: list[str]) -> np.ndarray:
        v = rng.normal(size=(len(texts), collection.manifest.dimension)).astype(np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    for start in range(0, len(documents), 400):
        write(collection, documents[start : start + 400], vectors)
    assert collection._vectors.layout == "hnsw" and collection.counts()[1] == total

    rare = parse_filter({"metadata.group": "rare"})
    assert len(collection.allowed_ids(rare)) == total // 200
    half = parse_filter({"metadata.half": 0})
    # Half the chunks walk the graph (not exact scoring) when the crossover is below them.
    monkeypatch.setattr("qa.vectors.EXACT_BELOW", len(collection.allowed_ids(half)) // 2)
    for where, expected in ((rare, "rare"), (half, None)):
        for mode in MODES:
            passages = retrieve(collection, "harbor report on tides", 5, mode, filter=where)
            assert len(passages) == 5, (mode, expected)
            for p in passages:
                number = int(p.citation.document_id.split("/")[1])
                assert (number < total // per_document // 200 if expected == "rare"
                        else number % 2 == 0)
    dense = collection.dense_search("harbor report", 30, filter=half)
    assert len(dense) == 30
    assert set(i for i, _ in dense) <= set(collection.allowed_ids(half).tolist())


# -- over HTTP and from the command line ----------------------------------------------------


@pytest.fixture
def filtered_server(collection: Collection, settings: Settings, embedder: Embedder
                    ) -> Iterator[httpx.Client]:
    collection.add([
        Document(id="notes/policy.md", title="Policy", date="2025-03-01",
                 text="The harbor policy: ships dock at the north pier after dusk.",
                 metadata={"tag": "policy"}),
        Document(id="notes/news.md", title="News", date="2024-11-20",
                 text="Harbor news: ships docked at the north pier during the storm.",
                 metadata={"tag": "news"}),
    ])
    collection.close()
    with LiveServer(settings, embedder) as server, httpx.Client(base_url=server.url,
                                                                timeout=30) as http:
        yield http


def test_a_filter_on_ask_narrows_the_passages(filtered_server: httpx.Client) -> None:
    question = {"question": "where do ships dock?", "k": 5}
    everything = filtered_server.post("/ask", json=question).json()["passages"]
    assert {p["citation"]["document_id"] for p in everything} == {"notes/policy.md",
                                                                  "notes/news.md"}
    for raw, only in (({"metadata.tag": {"$in": ["news"]}}, "notes/news.md"),
                      ({"date": {"$gte": "2025-01-01"}}, "notes/policy.md")):
        response = filtered_server.post("/ask", json={**question, "filter": raw})
        assert response.status_code == 200
        assert [p["citation"]["document_id"] for p in response.json()["passages"]] == [only]


@pytest.mark.parametrize(("raw", "named"), [
    ({"metadata.tag": {"$inn": ["news"]}}, 'filter.metadata.tag: unknown operator "$inn"'),
    ({"page": "one"}, "filter.page: expected an integer"),
    ({"auther": "x"}, 'filter.auther: unknown field "auther"'),
])
def test_a_bad_filter_on_ask_is_a_422_problem_naming_it(
    filtered_server: httpx.Client, raw: dict[str, Any], named: str
) -> None:
    response = filtered_server.post("/ask", json={"question": "ships?", "filter": raw})
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert named in response.json()["detail"]


def test_a_filter_that_is_not_an_object_is_a_422(filtered_server: httpx.Client) -> None:
    response = filtered_server.post("/ask", json={"question": "ships?", "filter": ["page"]})
    assert response.status_code == 422
    assert "filter" in response.json()["detail"]


def qa(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "qa.cli", *args], cwd=cwd, env=ENV,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize(("given", "said"), [
    ('{"page": ', "error: --filter is not valid JSON"),
    ('{"metadata.tag": {"$inn": 1}}', 'error: filter.metadata.tag: unknown operator "$inn"'),
])
def test_ask_with_a_bad_filter_says_so_in_one_line_and_exits_2(
    tmp_path: Path, given: str, said: str
) -> None:
    done = qa("ask", "ships?", "--filter", given, "--index", "nowhere", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.startswith(said) and done.stderr.count("\n") == 1


@pytest.mark.slow
def test_ask_with_a_filter_answers_from_allowed_documents_only(
    built_index: Collection, settings: Settings, tmp_path: Path
) -> None:
    built_index.add([Document(id="other.txt", text="The Russian delegation met in Minsk.",
                              title="Other", metadata={"tag": "other"})])
    built_index.close()
    done = qa("ask", "--json", "who led the Russian delegation?", "--filter",
              '{"metadata.tag": "other"}', "--index", str(settings.index_dir), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert [p["citation"]["document_id"] for p in json.loads(done.stdout)["passages"]] == [
        "other.txt"]
