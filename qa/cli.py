"""The `qa` command: thin subcommands that build settings, call the library and print."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any, NoReturn

import click
from pydantic import ValidationError

from qa.errors import QAError


def fail(message: str, code: int = 1) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def build_settings(**overrides: Any) -> Any:
    from qa.settings import Settings

    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "settings"
        fail(f"invalid setting {where}: {first['msg']}", 2)


def load_embedder(settings: Any) -> Any:
    from qa.embedding import Embedder

    return Embedder(settings.model, device=settings.device, batch_size=settings.batch_size)


class QAGroup(click.Group):
    """Turns library errors into one readable line and a non-zero exit."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except QAError as exc:
            fail(exc.detail)
        except KeyboardInterrupt:
            fail("interrupted", 130)
        except OSError as exc:  # a path the operator gave: missing, not a folder, no access
            from qa.loaders import shown

            where = f"{shown(str(exc.filename))}: " if exc.filename is not None else ""
            fail(f"{where}{exc.strerror or exc}")


def check_index_dir(settings: Any) -> None:
    """An index is a folder: say so plainly when --index names a file."""
    if settings.index_dir.exists() and not settings.index_dir.is_dir():
        fail(f"--index {settings.index_dir} is a file, not an index folder", 2)


index_option = click.option(
    "--index", "index_dir", type=click.Path(path_type=Path), default=None,
    help="Index directory (default: $QA_INDEX_DIR or ./index).",
)


@click.group(cls=QAGroup)
@click.version_option(package_name="qa")
def cli() -> None:
    """Answer questions over your documents with cited passages.

    \b
    Example:
        qa index seeds/
        qa ask "who led the Russian delegation?"
        qa serve --port 8000
    """


@cli.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@index_option
@click.option("--prune", is_flag=True, help="Remove documents whose files are gone.")
@click.option("--force", is_flag=True, help="Re-embed even unchanged documents.")
@click.option("--rebuild", is_flag=True, help="Delete the index first and build it anew.")
@click.option("--follow-links", is_flag=True,
              help="Follow symbolic links found in folders, if they stay inside the paths "
              "given (by default they are reported and skipped).")
@click.option("--print-ids", is_flag=True,
              help="Print each document id on stdout once its group is committed.")
@click.option("--ray", "ray_address", is_flag=False, flag_value="local", default=None,
              metavar="[ADDRESS]",
              help="Embed with Ray Data: a small local Ray, or the cluster at ADDRESS "
              "(give it as --ray=ADDRESS, after the paths). Needs the `ray` extra.")
def index(paths: tuple[Path, ...], index_dir: Path | None, prune: bool, force: bool,
          rebuild: bool, follow_links: bool, print_ids: bool, ray_address: str | None) -> None:
    """Index files and folders (.txt, .md, .html, .pdf, .docx), recursively; unchanged files
    are skipped, and a file that cannot be read is reported while the rest are indexed.

    \b
    Example:
        qa index seeds/ notes/today.md --prune
        qa index corpus/ --ray=ray://head:10001
    """
    from qa.collection import Collection
    from qa.indexing import index_paths

    settings = build_settings(index_dir=index_dir)
    check_index_dir(settings)
    # --rebuild refuses while a server (or any process) has the index open: see lock_index.
    collection = Collection.open(settings, load_embedder(settings), create=True,
                                 rebuild=rebuild)
    try:
        if ray_address is not None:
            from qa.distributed import index_paths_on_ray

            summary = index_paths_on_ray(
                collection, list(paths), settings, prune=prune, force=force,
                follow_links=follow_links,
                address=None if ray_address == "local" else ray_address,
                on_commit=print_committed if print_ids else None)
        else:
            summary = index_paths(collection, list(paths), prune=prune, force=force,
                                  follow_links=follow_links,
                                  on_commit=print_committed if print_ids else None)
    finally:
        collection.close()
    for _, message in summary.errors:
        click.echo(f"error: {message}", err=True)
    click.echo(
        f"{summary.files} files: {summary.added} added, {summary.replaced} replaced, "
        f"{summary.unchanged} unchanged, {summary.pruned} pruned, {len(summary.errors)} failed; "
        f"{summary.embedded} chunks embedded in {summary.seconds:.2f}s"
        + (" (nothing to embed: all unchanged)" if summary.embedded == 0 and summary.unchanged
           else ""),
        err=True,
    )
    if summary.errors:
        sys.exit(1)


def print_committed(ids: list[str]) -> None:
    """One id a line, flushed at once: a script that kills us knows what was committed."""
    for doc_id in ids:
        click.echo(doc_id)
    sys.stdout.flush()


@cli.command()
@click.argument("question")
@click.option("-k", "k", type=int, default=None, help="How many passages.")
@click.option("--mode", type=click.Choice(["hybrid", "dense", "keyword"]), default=None)
@click.option("--json", "as_json", is_flag=True, help="Print the HTTP /ask response body.")
@click.option("--filter", "filter_json", default=None, metavar="JSON",
              help="Only passages this filter allows, as on /ask (README \"Filters\").")
@index_option
def ask(question: str, k: int | None, mode: str | None, as_json: bool,
        filter_json: str | None, index_dir: Path | None) -> None:
    """Ask a question of the index.

    \b
    Example:
        qa ask "who led the Russian delegation?" -k 3
        qa ask "what changed?" --filter '{"date": {"$gte": "2025-01-01"}}'
    """
    from qa.api.schemas import ask_response
    from qa.collection import Collection
    from qa.errors import InvalidInput
    from qa.filters import parse_filter
    from qa.retrieval import answer_of, retrieve

    try:  # checked before the model loads: a typo costs nothing
        where = None if filter_json is None else parse_filter(json.loads(filter_json))
    except json.JSONDecodeError as exc:
        fail(f"--filter is not valid JSON: {exc}", 2)
    except InvalidInput as exc:
        fail(exc.detail, 2)
    settings = build_settings(index_dir=index_dir, mode=mode)
    check_index_dir(settings)
    k = settings.default_k if k is None else k
    if not 1 <= k <= settings.max_k:
        fail(f"-k must be between 1 and {settings.max_k}", 2)
    if len(question) > settings.max_question_chars:
        fail(f"question is longer than {settings.max_question_chars} characters", 2)
    if not question.strip():
        raise InvalidInput("question must not be empty or only whitespace")
    if any("\udc80" <= c <= "\udcff" for c in question):  # argv bytes that were not UTF-8
        fail("question is not valid UTF-8; check the terminal's encoding (e.g. LANG=C.UTF-8)",
             2)
    collection = Collection.open(settings, load_embedder(settings))
    started = time.perf_counter()
    passages = retrieve(collection, question, k, settings.mode, filter=where)
    answer = answer_of(passages, settings.min_confidence)
    body = ask_response(question.strip(), passages, answer,
                        (time.perf_counter() - started) * 1000)
    collection.close()
    if as_json:
        click.echo(json.dumps(body.model_dump(mode="json"), ensure_ascii=False))
        return
    if not passages:
        click.echo("No passages found.")
    elif not answer.found:
        click.secho(f"No passage in the index seems to answer this (confidence "
                    f"{answer.confidence:.2f}). Closest passages:", fg="yellow")
        click.echo()
    for p in passages:
        c = p.citation
        click.secho(f"{p.rank}. {c.title}", bold=True, nl=False)
        click.echo(f"  [{c.document_id} {c.start}:{c.end}]  score {p.score:.3f}"
                   + (f"  confidence {p.confidence:.2f}" if p.confidence is not None else ""))
        if p.highlight and answer.found:  # a sentence is shown as an answer only if found
            click.secho(f"   » {p.highlight.text}", fg="green")
        click.echo("   " + " ".join(p.text.split())[:600])
        click.echo()


@cli.command()
@click.option("--host", default=None, help="Bind address (default 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port (default 8000).")
@click.option("--workers", type=click.IntRange(1, 64), default=1, help="Worker processes.")
@index_option
def serve(host: str | None, port: int | None, workers: int, index_dir: Path | None) -> None:
    """Serve the HTTP API (and the widget demo at /).

    \b
    Example:
        qa serve --host 0.0.0.0 --port 8080 --workers 2
    """
    from qa.collection import MANIFEST

    settings = build_settings(index_dir=index_dir, host=host, port=port)
    if not (settings.index_dir / MANIFEST).exists():
        fail(f"no index at {settings.index_dir}: build one with `qa index PATH`")
    from qa.api import run_server

    run_server(settings, workers=workers)


@cli.command()
@index_option
@click.option("--repair", is_flag=True,
              help="Mend the drift found: vectors from SQLite (embedding chunks that lack "
              "one), the keyword index from the chunk rows.")
def check(index_dir: Path | None, repair: bool) -> None:
    """Check that vectors, keyword index and chunk rows agree, before anything is repaired;
    print the counts as JSON, exit 1 on drift unless --repair mends it.

    \b
    Example:
        qa check --index index/
        qa check --repair
    """
    from qa.collection import Collection, drift_in

    settings = build_settings(index_dir=index_dir)
    check_index_dir(settings)
    embedder = load_embedder(settings) if repair else None  # only a repair may need to embed
    collection = Collection.open(settings, embedder, reconcile=False)
    try:
        report = collection.check()
        click.echo(json.dumps(report))
        drift = drift_in(report)
        if drift and repair:
            collection.repair()
            drift = drift_in(collection.check())
            click.echo(f"repaired: {', '.join(drift_in(report))}", err=True)
    finally:
        collection.close()
    if drift:
        fail(f"the index has drifted ({', '.join(drift)})"
             + ("" if repair else "; run `qa check --repair` to mend it"))


@cli.command("eval")
@click.argument("dataset", type=click.Path(path_type=Path))
@index_option
@click.option("--url", default=None, help="Evaluate a running service (POST URL/ask).")
@click.option("--mode", type=click.Choice(["hybrid", "dense", "keyword"]), default=None,
              help="Retrieval mode (default: $QA_MODE or hybrid).")
@click.option("--compare", default=None, help="Several modes side by side: dense,keyword,hybrid.")
@click.option("-k", "k", type=click.IntRange(1, 1000), default=10, show_default=True,
              help="Cut-off for recall@k and the largest hit@k.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
@click.option("--report", "report_dir", type=click.Path(path_type=Path), default=None,
              help="Write metrics.json, report.md and hit_at_k.png here (and reliability.png "
                   "when some questions are unanswerable).")
@click.option("--run-file", type=click.Path(path_type=Path), default=None,
              help="Write a TREC run file.")
@click.option("--cache-dir", type=click.Path(path_type=Path), default=Path(".cache/eval"),
              show_default=True, help="Where indexes built for SQuAD/BEIR data are kept.")
@click.option("--no-cache", is_flag=True, help="Build the dataset's index afresh, keep nothing.")
@click.option("--doc-length", type=click.Choice(["model", "full"]), default=None,
              help="BEIR: index each document cut to what the embedding model reads in one pass"
                   " (model, the default: the protocol of published BEIR/MTEB scores) or whole"
                   " (full: chunked as the service indexes any document).")
@click.option("--unanswerable", type=click.Path(path_type=Path), default=None,
              help="Also ask this dataset's questions, as ones DATASET's documents cannot "
                   "answer, and report no_answer_auroc, ece and answered_precision/coverage.")
@click.option("--batch-queries", is_flag=True,
              help="Embed all questions in batches first: much faster, but latency is then "
                   "not reported (it would leave out embedding the question).")
def eval_(dataset: Path, index_dir: Path | None, url: str | None, mode: str | None,
          compare: str | None, k: int, as_json: bool, report_dir: Path | None,
          run_file: Path | None, cache_dir: Path, no_cache: bool,
          doc_length: str | None, unanswerable: Path | None, batch_queries: bool) -> None:
    """Evaluate retrieval on a labelled question set: SQuAD JSON, a BEIR folder, or JSONL of
    {"question", "answers": [...]} lines (judged against --index or --url).

    \b
    Example:
        qa eval ../shared/eval/squad-v1.1-dev-super-bowl-50.json --compare dense,keyword,hybrid
        qa eval ../shared/eval/squad-v1.1-dev-super-bowl-50.json \\
            --unanswerable ../shared/eval/beir-scifact
        qa eval seeds/questions.jsonl --url http://127.0.0.1:8000 --json
    """
    from qa.eval import DatasetError, OptionError, plan_evaluation, run_evaluation
    from qa.eval.report import format_table, metrics_object, write_report, write_run_file

    settings = build_settings(index_dir=index_dir)
    try:
        plan = plan_evaluation(dataset, mode=mode or settings.mode, compare=compare, k=k,
                               index_dir=index_dir, url=url,
                               cache_dir=None if no_cache else cache_dir, doc_length=doc_length,
                               unanswerable=unanswerable, batch_queries=batch_queries)
    except (OptionError, DatasetError) as exc:
        fail(exc.detail, 2)
    results = run_evaluation(plan, settings, progress=sys.stderr.isatty(),
                             log=lambda line: click.echo(line, err=True))
    data = plan.dataset
    if run_file is not None:
        for path in write_run_file(run_file, results):
            click.echo(f"wrote {path}", err=True)
    if report_dir is not None:
        for path in write_report(report_dir, data, results, k, compare=plan.compare):
            click.echo(f"wrote {path}", err=True)
    if as_json:
        click.echo(json.dumps(metrics_object(data, results, compare=plan.compare)))
    else:
        click.echo(f"{data.name}: {len(data.questions)} questions")
        click.echo(format_table(results))


def main() -> None:
    cli(prog_name="qa")


if __name__ == "__main__":
    main()
