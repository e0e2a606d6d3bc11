"""The SQLite store on its own: keyword search over real FTS5 in tmp_path."""

from __future__ import annotations

from pathlib import Path

import pytest

from qa.chunking import split_document
from qa.store import Store
from qa.types import Document


def twelve_alike_and_one(path: Path, common: str, rare: Document) -> Store:
    """A store of twelve documents saying `common` (with `{i}` numbered) and one `rare`."""
    store = Store(path)
    documents = [Document(id=f"common-{i}", title=f"Common {i}", text=common.format(i=i))
                 for i in range(12)]
    store.replace_documents([(d, split_document(d, 200, 48), None)
                             for d in [*documents, rare]])
    return store


def test_a_large_collection_leaves_common_words_out_of_the_keyword_query(tmp_path: Path) -> None:
    store = twelve_alike_and_one(
        tmp_path / "qa.sqlite3", "Protein folding, study {i}. The protein was measured twice.",
        Document(id="zebrafish", title="Zebrafish",
                 text="Zebrafish protein drives fin regeneration."))
    question = "zebrafish protein"

    everything = store.keyword_search(question, 20)  # exact: keyword mode
    assert store.keyword_search(question, 20, budget=1000) == everything  # 13 chunks: unpruned
    pruned = store.keyword_search(question, 20, budget=5)  # "protein" alone costs 13 postings

    def documents_of(hits: list[tuple[int, float]]) -> list[str]:
        rows = store.chunk_rows([chunk_id for chunk_id, _ in hits])
        return [rows[chunk_id].document_id for chunk_id, _ in hits]

    assert len(everything) == 13 and documents_of(everything)[0] == "zebrafish"
    assert documents_of(pruned) == ["zebrafish"]
    # With nothing rare to keep, the rarest word still goes in rather than nothing at all.
    assert len(store.keyword_search("protein measured", 20, budget=5)) == 12
    store.close()


def test_the_postings_budget_counts_words_as_the_keyword_index_holds_them(
        tmp_path: Path) -> None:
    # "assembly" is indexed by FTS5's porter tokenizer under a stem that Snowball's Porter
    # does not give: counted through a stem of our own, it looked absent (0 postings), so
    # the rarest of all, and went into every query however common it was.
    store = twelve_alike_and_one(
        tmp_path / "qa.sqlite3", "Genome assembly number {i} joins the reads again.",
        Document(id="contigs", title="Contigs",
                 text="Unassembled contigs are shorter than assembled ones."))
    rows = store.chunk_rows([chunk_id for chunk_id, _ in store.keyword_search(
        "assembly of contigs", 20, budget=5)])
    assert [row.document_id for row in rows.values()] == ["contigs"]
    assert len(store.keyword_search("assembly of contigs", 20)) == 13  # exact: both words
    store.close()


def test_sentence_spans_stored_at_indexing_match_the_chunk_text(tmp_path: Path) -> None:
    from qa.chunking import split_sentences

    seed = next(p for p in sorted((Path(__file__).parent.parent / "seeds").iterdir())
                if p.suffix in (".txt", ".md"))
    document = Document(id="seed", title="Seed", text=seed.read_text(encoding="utf-8"))
    store = Store(tmp_path / "qa.sqlite3")
    (ids, _) = store.replace_documents([(document, split_document(document, 200, 48), None)])
    rows = store.chunk_rows(ids)
    assert len(rows) == len(ids) > 3
    for row in rows.values():
        assert row.sentences == split_sentences(row.text)
        assert all(row.text[a:b].strip() == row.text[a:b] != "" for a, b in row.sentences)
    store.close()


def test_absent_words_are_those_no_chunk_holds_as_the_keyword_index_stems_them(
        tmp_path: Path) -> None:
    store = Store(tmp_path / "qa.sqlite3")
    document = Document(id="talks", title="Talks",
                        text="The Russian delegation negotiated in Istanbul.")
    store.replace_documents([(document, split_document(document, 200, 48), None)])
    asked = ["delegations", "zebrafish", "negotiating", "zebrafish", "istanbul", "qwzx"]
    # Stemmed as FTS5 stems (delegations ~ delegation), each word once, in the asked order.
    assert store.absent_words(asked) == ["zebrafish", "qwzx"]
    many = [f"unheard{i}" for i in range(2000)] + ["russian"]  # more than one statement holds
    assert store.absent_words(many) == many[:-1]
    assert store.absent_words([]) == []
    store.close()


@pytest.mark.parametrize("writer_is", ["another connection", "the reading connection"])
def test_chunk_rows_kept_in_memory_follow_every_write(tmp_path: Path, writer_is: str) -> None:
    """Rows are kept by chunk id between reads: a details update still shows its source and
    metadata (through a filter), and a replaced or deleted document's chunks vanish, its new
    chunks reading the new text, whichever connection wrote."""
    from qa.filters import parse_filter

    reader = Store(tmp_path / "qa.sqlite3")
    writer = Store(tmp_path / "qa.sqlite3") if writer_is == "another connection" else reader
    first = Document(id="notes", title="Notes", text="Zebrafish regrow fins. They heal fast.",
                     source="a.txt", metadata={"team": "fish"})
    (ids, _) = writer.replace_documents([(first, split_document(first, 200, 48), None)])
    fish = parse_filter({"metadata.team": "fish"})
    assert {r.source for r in reader.chunk_rows(ids).values()} == {"a.txt"}
    assert set(reader.chunk_rows(ids, filter=fish)) == set(ids)

    moved = Document(id="notes", title="Notes", text=first.text, source="b.txt",
                     metadata={"team": "birds"})
    writer.replace_documents([], details=[moved])
    assert {r.source for r in reader.chunk_rows(ids).values()} == {"b.txt"}
    assert reader.chunk_rows(ids, filter=fish) == {}

    rewritten = Document(id="notes", title="Notes", text="Axolotls regrow limbs.")
    (new_ids, _) = writer.replace_documents(
        [(rewritten, split_document(rewritten, 200, 48), None)])
    assert reader.chunk_rows(ids) == {}
    assert [r.text for r in reader.chunk_rows(new_ids).values()] == ["Axolotls regrow limbs."]
    writer.delete_document("notes")
    assert reader.chunk_rows(new_ids) == {}
    reader.close()
    if writer is not reader:
        writer.close()
