"""What the server counts for Prometheus: the metric objects, made once per process at import
(so any number of apps in one process share them), recorded by whoever does the work, and
gathered for GET /metrics (qa/api/metrics.py).

With `qa serve --workers N` each worker is its own process: prometheus_client's multiprocess
mode then keeps every value in a file per process under PROMETHEUS_MULTIPROC_DIR (a private
folder `run_server` makes before the workers start), and a scrape sums them all, whichever
worker answers it. prometheus_client reads that variable itself, when it is imported.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

__all__ = ["ASK_SECONDS", "EMBEDDING_SECONDS", "FEEDBACK", "HTTP_REQUESTS", "MULTIPROCESS_DIR",
           "QUESTIONS", "gather", "record_feedback", "record_question", "record_request"]

MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"  # prometheus_client's variable, not a setting
# Read once, when prometheus_client decides (at its import) where values are kept.
_shared_directory = os.environ.get(MULTIPROCESS_DIR) or None

# This process's metrics, apart from prometheus_client's default registry (which also holds
# process and platform collectors that mean nothing summed over workers).
REGISTRY = CollectorRegistry()

HTTP_REQUESTS = Counter(
    "qa_http_requests", "HTTP responses by method, route template (never the raw path, so "
    "label values stay few) and status; HEAD counts as GET.",
    ["method", "route", "status"], registry=REGISTRY)
QUESTIONS = Counter(
    "qa_questions", "Questions /ask answered, by collection and outcome: `answered` when "
    "answer.found, else `not_found`.", ["collection", "outcome"], registry=REGISTRY)
ASK_SECONDS = Histogram(
    "qa_ask_duration_seconds", "Time /ask took to retrieve and rank (its took_ms), by "
    "collection.", ["collection"], registry=REGISTRY,
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0))
EMBEDDING_SECONDS = Histogram(
    "qa_embedding_duration_seconds", "Time the model took per call: one question (cached "
    "questions are not embedded again), or a batch of chunks being indexed.",
    registry=REGISTRY,
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
             30.0, 60.0))
FEEDBACK = Counter(
    "qa_feedback", "Votes received on answers (POST /feedback), by rating: up or down; a "
    "vote that replaces an earlier one counts too.", ["rating"], registry=REGISTRY)


# Each label set's children, found once: `labels()` takes a lock and rebuilds its key on every
# call, 11 µs of every /ask here. They hold as many entries as the metrics hold series (label
# values stay few: route templates, collections), and nothing here ever removes a series.
_request_counts: dict[tuple[str, str, int], Counter] = {}
_question_metrics: dict[tuple[str, bool], tuple[Counter, Histogram]] = {}


def record_request(method: str, route: str, status: int) -> None:
    key = (method, route, status)
    counter = _request_counts.get(key)
    if counter is None:  # two threads may both look it up: `labels()` gives both the same
        counter = _request_counts[key] = HTTP_REQUESTS.labels(method, route, str(status))
    counter.inc()


def record_question(collection: str, found: bool, seconds: float) -> None:
    key = (collection, found)
    metrics = _question_metrics.get(key)
    if metrics is None:
        metrics = _question_metrics[key] = (
            QUESTIONS.labels(collection, "answered" if found else "not_found"),
            ASK_SECONDS.labels(collection))
    questions, seconds_taken = metrics
    questions.inc()
    seconds_taken.observe(seconds)


def record_feedback(rating: str) -> None:
    FEEDBACK.labels(rating).inc()


class _Gathered:
    """The values to expose: every worker's files in multiprocess mode, else this process's."""

    def __init__(self, directory: str | None) -> None:
        self.directory = directory

    def collect(self) -> Iterable[Metric]:
        if self.directory is None:
            return REGISTRY.collect()
        return MultiProcessCollector(None, path=self.directory).collect()


def gather(*extra: Collector) -> CollectorRegistry:
    """A registry for one scrape: the counted metrics, plus `extra` collectors computed now."""
    registry = CollectorRegistry()
    registry.register(_Gathered(_shared_directory))
    for collector in extra:
        registry.register(collector)
    return registry
