# Two commands do all set-up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
SEEDS  := $(shell find seeds -type f \( -name '*.txt' -o -name '*.md' \) 2>/dev/null)
INDEX  := index
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: install index run test test-fast eval bench lint clean

install: $(STAMP)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# torch first and pinned: the CPU wheel on disk. An unpinned torch pulls a multi-GB CUDA build.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q --disable-pip-version-check torch==2.13.0
	$(BIN)/pip install -q --disable-pip-version-check -e '.[dev]'
	$(BIN)/python -m qa.onnx_embedding  # QA_BACKEND=onnx: export the model once (~/.cache/qa)
	touch $@

# Re-indexing is incremental (content hashes), so this only embeds what changed in seeds/.
$(INDEX)/.seeds-indexed: $(STAMP) $(SEEDS)
	$(BIN)/qa index seeds --prune --index $(INDEX)
	touch $@

index: $(INDEX)/.seeds-indexed

run: index
	$(BIN)/qa serve --host 127.0.0.1 --port 8000 --index $(INDEX)

test: index
	$(BIN)/lint-imports
	$(BIN)/python -m pytest

test-fast: install
	$(BIN)/python -m pytest -m "not slow"

eval: index
	$(BIN)/qa eval seeds/questions.jsonl --index $(INDEX)
	$(BIN)/qa eval ../shared/eval/squad-v1.1-dev-super-bowl-50.json --compare dense,keyword,hybrid
	$(BIN)/qa eval ../shared/eval/squad-v1.1-dev-super-bowl-50.json --unanswerable ../shared/eval/beir-scifact
	$(BIN)/qa eval ../shared/eval/beir-scifact --compare dense,keyword,hybrid
	$(BIN)/qa eval ../shared/eval/beir-scifact --compare dense,keyword,hybrid --doc-length full

bench: install
	$(BIN)/pip install -q --disable-pip-version-check -e '.[bench]'
	$(BIN)/python -m bench $(ARGS)

lint: install
	$(BIN)/ruff check qa tests bench
	$(BIN)/mypy qa
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) $(INDEX)/*.sqlite3* $(INDEX)/collections $(INDEX)/*.faiss $(INDEX)/manifest.json $(INDEX)/.seeds-indexed
