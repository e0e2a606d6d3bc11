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

    return Embedder.from_settings(settings)


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


collection_option = click.option(
    "--collection", "collection_name", default="default", show_default=True, metavar="NAME",
    help="Which collection of the index (see `qa collections`).",
)


def open_collection(settings: Any, name: str, embedder: Any = None, **options: Any) -> Any:
    """The collection `name` of the index at settings.index_dir, for the caller to close."""
    from qa.catalog import Catalog

    with Catalog(settings, embedder) as catalog:
        return catalog.open(name, **options)


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
@collection_option
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
def index(paths: tuple[Path, ...], index_dir: Path | None, collection_name: str, prune: bool,
          force: bool,
          rebuild: bool, follow_links: bool, print_ids: bool, ray_address: str | None) -> None:
    """Index files and folders (.txt, .md, .html, .pdf, .docx), recursively; unchanged files
    are skipped, and a file that cannot be read is reported while the rest are indexed.

    \b
    Example:
        qa index seeds/ notes/today.md --prune
        qa index corpus/ --ray=ray://head:10001
        qa index handbook/ --collection staff
    """
    from qa.indexing import index_paths

    settings = build_settings(index_dir=index_dir)
    check_index_dir(settings)
    # --rebuild refuses while a server (or any process) has the index open: see lock_index.
    collection = open_collection(settings, collection_name, load_embedder(settings),
                                 create=True, rebuild=rebuild)
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
    for message in summary.warnings:
        click.echo(f"warning: {message}", err=True)
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
@click.argument("paths", nargs=-1, required=True,
                type=click.Path(path_type=Path, exists=True))
@index_option
@collection_option
def watch(paths: tuple[Path, ...], index_dir: Path | None, collection_name: str) -> None:
    """Keep folders in step with the index until Ctrl-C: files created, changed, moved and
    deleted are indexed or removed as it happens, by the rules of `qa index --prune` (which
    runs first, to catch up). A file that cannot be read is reported and the watch goes on.

    \b
    Example:
        qa watch docs/ notes/
        qa watch handbook/ --collection staff
    """
    import signal
    import threading

    from qa.watch import describe, watch_folders

    settings = build_settings(index_dir=index_dir)
    check_index_dir(settings)
    collection = open_collection(settings, collection_name, load_embedder(settings),
                                 create=True)
    stop = threading.Event()

    def interrupt(*_: Any) -> None:
        # The first Ctrl-C (or a service manager's SIGTERM) lets the batch being written
        # finish and then stops; raising at once could cut a write (or a lock) in half.
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        click.echo("stopping once this batch is written (Ctrl-C again: at once)", err=True)

    signal.signal(signal.SIGINT, interrupt)
    signal.signal(signal.SIGTERM, interrupt)

    def report(summary: Any) -> None:
        for _, message in summary.errors:
            click.echo(f"error: {message}", err=True)
        for message in summary.warnings:
            click.echo(f"warning: {message}", err=True)
        click.echo(f"{time.strftime('%H:%M:%S')} {describe(summary)}", err=True)

    click.echo(f"watching {', '.join(map(str, paths))} (Ctrl-C stops)", err=True)
    try:
        watch_folders(lambda: collection, list(paths), stop=stop, on_summary=report,
                      progress=sys.stderr.isatty())
    except KeyboardInterrupt:
        pass  # Ctrl-C is how a watch ends: no error, the index is closed below
    finally:
        collection.close()
    click.echo("stopped watching", err=True)


@cli.command()
@click.argument("question")
@click.option("-k", "k", type=int, default=None, help="How many passages.")
@click.option("--mode", type=click.Choice(["hybrid", "dense", "keyword"]), default=None)
@click.option("--json", "as_json", is_flag=True, help="Print the HTTP /ask response body.")
@click.option("--filter", "filter_json", default=None, metavar="JSON",
              help="Only passages this filter allows, as on /ask (README \"Filters\").")
@index_option
@collection_option
def ask(question: str, k: int | None, mode: str | None, as_json: bool,
        filter_json: str | None, index_dir: Path | None, collection_name: str) -> None:
    """Ask a question of the index.

    \b
    Example:
        qa ask "who led the Russian delegation?" -k 3
        qa ask "what changed?" --filter '{"date": {"$gte": "2025-01-01"}}'
    """
    from qa.errors import InvalidInput
    from qa.filters import parse_filter
    from qa.retrieval import answer_of, retrieve
    from qa.wire import ask_json

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
    collection = open_collection(settings, collection_name, load_embedder(settings))
    started = time.perf_counter()
    passages = retrieve(collection, question, k, settings.mode, filter=where)
    answer = answer_of(passages, settings.min_confidence)
    took_ms = (time.perf_counter() - started) * 1000
    collection.close()
    if as_json:
        body = ask_json(question.strip(), passages, answer, took_ms)
        click.echo(json.dumps(body, ensure_ascii=False))
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
@click.argument("urls", nargs=-1)
@index_option
@collection_option
@click.option("--sitemap", "sitemaps", multiple=True, metavar="URL",
              help="A sitemap (or sitemap index, gzipped or not) listing pages; repeatable. "
              "Sitemaps named in robots.txt are read too.")
@click.option("--include", multiple=True, metavar="GLOB",
              help="Only URLs whose path matches, e.g. '/docs/*'; repeatable.")
@click.option("--exclude", multiple=True, metavar="GLOB",
              help="Leave out URLs whose path matches, e.g. '*/print/*'; repeatable.")
@click.option("--max-pages", type=int, default=None,
              help="Pages asked for at most (default 1000).")
@click.option("--delay", type=float, default=None, metavar="SECONDS",
              help="Pause between two requests to the site (default 0.5; robots.txt's "
              "Crawl-delay wins when longer).")
@click.option("--prune", is_flag=True,
              help="Delete pages that now answer 404/410, left the sitemap, or robots.txt or "
              "the patterns now rule out.")
@click.option("--user-agent", default=None, help="User-Agent sent, and matched in robots.txt.")
def crawl(urls: tuple[str, ...], index_dir: Path | None, collection_name: str,
          sitemaps: tuple[str, ...], include: tuple[str, ...], exclude: tuple[str, ...],
          max_pages: int | None, delay: float | None, prune: bool, user_agent: str | None
          ) -> None:
    """Crawl a web site into the index: pages from the URLs, sitemaps and links within the
    site (robots.txt obeyed), HTML, PDF and DOCX; unchanged pages cost one 304. With no URL
    and no --sitemap, the collection's last crawl is repeated.

    \b
    Example:
        qa crawl https://docs.example.com/ --sitemap https://docs.example.com/sitemap.xml
        qa crawl https://example.com/blog/ --include '/blog/*' --prune
        qa crawl --prune
    """
    from qa.crawl import CrawlOptions, crawl_site, saved_options

    given: dict[str, Any] = {
        k: v for k, v in {"include": include, "exclude": exclude, "max_pages": max_pages,
                          "delay": delay, "user_agent": user_agent}.items()
        if v is not None and v != ()} | {"prune": prune}
    # Checked before the index is opened (or made): a bad URL costs nothing.
    options = (CrawlOptions.from_dict({"seeds": urls, "sitemaps": sitemaps} | given)
               if urls or sitemaps else None)
    settings = build_settings(index_dir=index_dir)
    check_index_dir(settings)
    collection = open_collection(settings, collection_name, load_embedder(settings),
                                 create=True)
    try:
        if options is None:
            last = saved_options(collection.directory)
            if last is None:
                fail("nothing to crawl: give page URLs or --sitemap (this collection has no "
                     "earlier crawl to repeat)", 2)
            options = CrawlOptions.from_dict(last.to_dict() | given)
        summary = crawl_site(collection, options)
    finally:
        collection.close()
    for url, reason in summary.errors:
        click.echo(f"error: {url}: {reason}", err=True)
    click.echo(summary.line(), err=True)
    if summary.errors:
        sys.exit(1)


@cli.command()
@click.option("--host", default=None, help="Bind address (default 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port (default 8000).")
@click.option("--workers", type=click.IntRange(1, 64), default=1, help="Worker processes.")
@click.option("--watch", "watch_paths", multiple=True, metavar="PATH",
              type=click.Path(path_type=Path, exists=True),
              help="Keep this folder in step with the `default` collection in the background, "
              "as `qa watch` does (repeat for several).")
@click.option("--crawl-every", "crawl_every", default=None, metavar="DURATION",
              help="Crawl the site into the `default` collection at start and then every "
              "DURATION (30m, 6h, 1d), pruning pages that went away.")
@click.option("--crawl", "crawl_urls", multiple=True, metavar="URL",
              help="A start URL for --crawl-every (repeat for several; default: those of the "
              "last `qa crawl`).")
@index_option
def serve(host: str | None, port: int | None, workers: int, watch_paths: tuple[Path, ...],
          crawl_every: str | None, crawl_urls: tuple[str, ...],
          index_dir: Path | None) -> None:
    """Serve the HTTP API (and the widget demo at /).

    \b
    Example:
        qa serve --host 0.0.0.0 --port 8080 --workers 2
        qa serve --watch docs/
        qa serve --crawl-every 6h --crawl https://docs.example.com/
    """
    from qa.collection import MANIFEST
    from qa.crawl import CrawlOptions, parse_duration
    from qa.settings import CRAWL_EVERY_MAX_S, CRAWL_EVERY_MIN_S

    if crawl_urls and not crawl_every:
        fail("--crawl needs --crawl-every DURATION", 2)
    if crawl_every and workers > 1:  # each worker would crawl: run `qa crawl` from cron instead
        fail("--crawl-every needs --workers 1; with several workers run `qa crawl` on a "
             "schedule (cron) beside `qa serve`", 2)
    every = parse_duration(crawl_every) if crawl_every else None
    if every is not None and not CRAWL_EVERY_MIN_S <= every <= CRAWL_EVERY_MAX_S:
        fail(f"--crawl-every must be between {CRAWL_EVERY_MIN_S // 60}m and "
             f"{CRAWL_EVERY_MAX_S // 86400}d (got {crawl_every})", 2)
    if crawl_urls:
        CrawlOptions(seeds=crawl_urls)  # a bad URL is refused now, not at the first crawl

    if watch_paths and workers > 1:  # each worker would watch: run one `qa watch` beside them
        fail("--watch needs --workers 1; with several workers run `qa watch PATH` beside "
             "`qa serve`", 2)
    settings = build_settings(index_dir=index_dir, host=host, port=port,
                              watch_paths=list(watch_paths) or None,
                              crawl_every_s=every, crawl_urls=list(crawl_urls) or None)
    if not (settings.index_dir / MANIFEST).exists():
        fail(f"no index at {settings.index_dir}: build one with `qa index PATH`")
    from qa.api import run_server

    run_server(settings, workers=workers)


@cli.command()
@index_option
@collection_option
def mcp(index_dir: Path | None, collection_name: str) -> None:
    """Serve the index to AI agents over MCP on stdin/stdout (for desktop clients; the HTTP
    server has it at /mcp). Tools: search, get_document, list_collections.

    \b
    Example (an MCP client's config runs it):
        qa mcp --index /path/to/index --collection default
    """
    import contextlib

    from qa.catalog import Catalog
    from qa.mcp import LocalGate, build_server

    settings = build_settings(index_dir=index_dir)
    check_index_dir(settings)
    # stdout carries protocol messages only: anything a library prints while loading goes to
    # stderr (the SDK diverts file descriptor 1 itself once it serves).
    with Catalog(settings) as catalog:  # a missing index or collection: one line, no model
        catalog.info(collection_name)
    with contextlib.redirect_stdout(sys.stderr):
        catalog = Catalog(settings, load_embedder(settings))
        catalog.get(collection_name)
    with catalog:
        build_server(settings, LocalGate(catalog, collection_name)).run("stdio")


@cli.command()
@index_option
@collection_option
@click.option("--repair", is_flag=True,
              help="Mend the drift found: vectors from SQLite (embedding chunks that lack "
              "one), the keyword index from the chunk rows.")
def check(index_dir: Path | None, collection_name: str, repair: bool) -> None:
    """Check that vectors, keyword index and chunk rows agree, before anything is repaired;
    print the counts as JSON, exit 1 on drift unless --repair mends it.

    \b
    Example:
        qa check --index index/
        qa check --repair
    """
    from qa.collection import drift_in

    settings = build_settings(index_dir=index_dir)
    check_index_dir(settings)
    embedder = load_embedder(settings) if repair else None  # only a repair may need to embed
    collection = open_collection(settings, collection_name, embedder, reconcile=False)
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
@click.option("--collection", "collection_name", default=None, metavar="NAME",
              help="With --index: evaluate this collection of it (default: default).")
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
def eval_(dataset: Path, index_dir: Path | None, collection_name: str | None, url: str | None,
          mode: str | None,
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
    if collection_name is not None:
        if index_dir is None:
            fail("--collection needs --index (the index that holds it)", 2)
        from qa.catalog import Catalog

        with Catalog(settings) as catalog:
            catalog.info(collection_name)  # CollectionNotFound names the ones there are
            index_dir = catalog.directory(collection_name)
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


@cli.group()
def feedback() -> None:
    """Turn readers' feedback on answers (the widget's 👍/👎 and "This answered it", POST
    /feedback) into data: the approved answers as an evaluation set, the 👎 as failures.

    \b
    Example:
        qa feedback export --since 7d --output judged.jsonl
        qa eval judged.jsonl --index index/
        qa feedback export --rating down --output failures.jsonl
    """


@feedback.command("export")
@click.option("--since", default=None, metavar="WHEN",
              help="Only questions asked since: a duration (7d, 24h, 90m) or an ISO date.")
@click.option("--rating", type=click.Choice(["up", "down"]), default="up", show_default=True,
              help="up: the approved answers, as {question, relevant spans} for `qa eval`; "
              "down: the failures, with the passages they got.")
@click.option("--output", type=click.Path(path_type=Path, dir_okay=False), required=True,
              help="The JSONL file to write, one judged question a line.")
@index_option
def feedback_export(since: str | None, rating: str, output: Path, index_dir: Path | None
                    ) -> None:
    """Write the questions readers judged as JSONL (a summary line on stderr)."""
    from qa.errors import InvalidInput
    from qa.querylog import LOG_FILE, QueryLog, judged_questions, parse_since

    try:
        start = None if since is None else parse_since(since)
    except InvalidInput as exc:
        fail(f"--{exc.detail}", 2)
    settings = build_settings(index_dir=index_dir)
    check_index_dir(settings)
    path = settings.index_dir / LOG_FILE
    log = QueryLog(path, read_only=True)
    try:
        history = log.history(start)
    finally:
        log.close()
    lines = judged_questions(history, "up" if rating == "up" else "down")
    with output.open("w", encoding="utf-8") as out:
        for line in lines:
            out.write(json.dumps(line, ensure_ascii=False) + "\n")
    judged = sum(1 for _, f in history if f is not None)
    where = "" if path.exists() else f" (no query log at {path} yet)"
    click.echo(f"{len(lines)} questions rated {rating} written to {output}; {judged} of "
               f"{len(history)} logged questions have feedback{where}", err=True)


@cli.group()
def collections() -> None:
    """List, make and delete the collections of an index (each searched, rebuilt and keyed
    alone; `default` is the index folder itself).

    \b
    Example:
        qa collections create handbook --private
        qa index staff-handbook/ --collection handbook
        qa collections list
    """


@collections.command("list")
@index_option
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
def collections_list(index_dir: Path | None, as_json: bool) -> None:
    """Each collection with its documents, chunks and whether it is public."""
    from qa.catalog import Catalog

    settings = build_settings(index_dir=index_dir)
    check_index_dir(settings)
    rows = []
    with Catalog(settings) as catalog:
        for name in catalog.names():
            info = catalog.info(name)
            collection = catalog.open(name)
            try:
                documents, chunks = collection.counts()
            finally:
                collection.close()
            rows.append({"name": name, "documents": documents, "chunks": chunks,
                         "public": info.public})
    if as_json:
        click.echo(json.dumps(rows))
        return
    for row in rows:
        click.echo(f"{row['name']}\t{row['documents']} documents\t{row['chunks']} chunks\t"
                   + ("public" if row["public"] else "private"))


@collections.command("create")
@click.argument("name")
@click.option("--public/--private", default=False, show_default=True,
              help="Public: anyone may ask it. Private: asking needs a search key.")
@index_option
def collections_create(name: str, public: bool, index_dir: Path | None) -> None:
    """Make an empty collection NAME (a-z, 0-9, '_', '-'; at most 64)."""
    from qa.catalog import Catalog

    settings = build_settings(index_dir=index_dir)
    check_index_dir(settings)
    with Catalog(settings, load_embedder(settings)) as catalog:
        catalog.create_collection(name, public=public)
    click.echo(f"created {'public' if public else 'private'} collection {name}", err=True)


@collections.command("delete")
@click.argument("name")
@index_option
def collections_delete(name: str, index_dir: Path | None) -> None:
    """Delete collection NAME and everything indexed in it."""
    from qa.catalog import Catalog

    settings = build_settings(index_dir=index_dir)
    check_index_dir(settings)
    with Catalog(settings) as catalog:
        catalog.delete_collection(name)
    click.echo(f"deleted collection {name}", err=True)


@cli.group()
def keys() -> None:
    """Make, list and revoke API keys, stored hashed in the index (the secret is shown once).

    \b
    Example:
        qa keys create --role search --collection docs --origin https://docs.example.com
        qa keys list
        qa keys revoke 3f9a1c2b7d0e
    """


def open_keys(index_dir: Path | None) -> Any:
    from qa.catalog import CATALOG_FILE
    from qa.keys import KeyStore

    settings = build_settings(index_dir=index_dir)
    check_index_dir(settings)
    settings.index_dir.mkdir(parents=True, exist_ok=True)
    return KeyStore(settings.index_dir / CATALOG_FILE, read_only=settings.read_only)


@keys.command("create")
@click.option("--role", type=click.Choice(["search", "write", "admin"]), required=True,
              help="search: ask and read; write: also change documents; admin: everything.")
@click.option("--collection", "collections_", multiple=True, metavar="NAME",
              help="A collection the key is for (repeat; '*' for all).")
@click.option("--name", default="", help="A label for people.")
@click.option("--filter", "filter_json", default=None, metavar="JSON",
              help="Search keys: a filter ANDed with every question's (cannot be widened).")
@click.option("--origin", "origins", multiple=True, metavar="URL",
              help="Only from this browser Origin, e.g. https://docs.example.com (repeat).")
@click.option("--expires", default=None, metavar="WHEN",
              help="Expiry: a duration (30d, 12h, 90m) or an ISO 8601 time.")
@index_option
def keys_create(role: str, collections_: tuple[str, ...], name: str, filter_json: str | None,
                origins: tuple[str, ...], expires: str | None, index_dir: Path | None) -> None:
    """Make a key; prints its secret once, on stdout (nothing stores it in plain text)."""
    filter_value = None
    if filter_json is not None:
        try:
            filter_value = json.loads(filter_json)
        except ValueError as exc:
            fail(f"--filter is not valid JSON: {exc}", 2)
    store = open_keys(index_dir)
    try:
        key, secret = store.create(role, collections_, name=name, filter=filter_value,  # type: ignore[arg-type]
                                   origins=origins, expires_at=parse_expiry(expires))
    finally:
        store.close()
    click.echo(secret)
    click.echo(f"key {key.id} ({key.role}) made; the secret above is shown only now", err=True)


def parse_expiry(value: str | None) -> Any:
    """`30d`, `12h`, `90m` from now, or an ISO 8601 time (UTC when it names no zone)."""
    import re
    from datetime import UTC, datetime, timedelta

    if value is None:
        return None
    found = re.fullmatch(r"(\d{1,6})([dhm])", value.strip())
    if found:
        unit = {"d": "days", "h": "hours", "m": "minutes"}[found[2]]
        return datetime.now(UTC) + timedelta(**{unit: int(found[1])})
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        fail(f"--expires {value!r} is neither a duration (30d, 12h, 90m) nor an ISO time", 2)
    return when if when.tzinfo else when.replace(tzinfo=UTC)


@keys.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
@index_option
def keys_list(as_json: bool, index_dir: Path | None) -> None:
    """Every key: id, role, collections, expiry, revoked (never a secret)."""
    store = open_keys(index_dir)
    try:
        rows = [key.to_dict() for key in store.list()]
    finally:
        store.close()
    if as_json:
        click.echo(json.dumps(rows))
        return
    for row in rows:
        state = "revoked" if row.get("revoked_at") else (
            f"expires {row['expires_at']}" if row.get("expires_at") else "no expiry")
        click.echo(f"{row['id']}\t{row['role']}\t{','.join(row['collections'])}\t{state}"
                   f"\t{row.get('name') or ''}")


@keys.command("revoke")
@click.argument("key_id")
@index_option
def keys_revoke(key_id: str, index_dir: Path | None) -> None:
    """Revoke a key at once, in every server process."""
    store = open_keys(index_dir)
    try:
        store.revoke(key_id)
    finally:
        store.close()
    click.echo(f"revoked key {key_id}", err=True)


@cli.command()
@click.option("--since", default="30d", show_default=True, metavar="WHEN",
              help="Questions asked since: a duration (7d, 24h, 90m) or an ISO date.")
@click.option("--report", "report_dir", type=click.Path(path_type=Path, file_okay=False),
              default=None, help="Write report.md and its PNG plots to this folder.")
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON object (the body of GET /analytics).")
@index_option
def analytics(since: str, report_dir: Path | None, as_json: bool, index_dir: Path | None
              ) -> None:
    """What the query log shows: questions per day, latency, the share answered, 👍/👎, the
    most asked questions, the knowledge gaps, and questions asked in other words.

    \b
    Example:
        qa analytics --since 7d
        qa analytics --report analytics/ --json
    """
    from qa.analytics import format_summary, read_history, summarize, window_start, write_report
    from qa.errors import InvalidInput

    try:
        start = window_start(since)
    except InvalidInput as exc:
        fail(f"--{exc.detail}", 2)
    settings = build_settings(index_dir=index_dir)
    check_index_dir(settings)
    # The model loads only when there are questions to group.
    result = summarize(read_history(settings.index_dir, start), since=start,
                       embed=lambda texts: load_embedder(settings).embed_questions(
                           texts, progress=False))
    if report_dir is not None:
        for path in write_report(report_dir, result):
            click.echo(f"wrote {path}", err=True)
    if as_json:
        click.echo(json.dumps(result.to_dict(), ensure_ascii=False))
    else:
        click.echo(format_summary(result), nl=False)


def main() -> None:
    cli(prog_name="qa")


if __name__ == "__main__":
    main()
