"""What the query log teaches: questions per day, latency, the answered share, feedback, the
most frequent questions, the knowledge gaps (asked, and not found or marked 👎), and the
wordings of one question grouped by meaning.

`summarize` is the core: logged history in, one `Analytics` value out, with the embedding
passed in as a function so the numbers can be checked without a model. `read_history` and
`write_report` are the edges: the log file, and report.md with its plots.
"""

from __future__ import annotations

import math
import unicodedata
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from qa.errors import InvalidInput
from qa.querylog import LOG_FILE, Feedback, LoggedQuery, QueryLog, parse_since

__all__ = [
    "DUPLICATE_LIMIT", "DUPLICATE_THRESHOLD", "Analytics", "History", "format_summary",
    "group_near_duplicates", "normalize_question", "percentile", "read_history",
    "report_markdown", "summarize", "window_start", "write_report",
]

History = Sequence[tuple[LoggedQuery, Feedback | None]]
Embed = Callable[[list[str]], npt.NDArray[np.float32]]

TOP = 10
# Cosine at which two questions count as one asked in other words. Chosen on 35 paraphrase
# pairs and 30 near misses (tests/test_analytics.py, all-MiniLM-L6-v2): at 0.88, 54% of the
# paraphrases group and 10% of the near misses, and those are opposites the model cannot tell
# apart at any threshold that groups anything ("who won" / "who lost", 0.93). 0.85 groups 69%
# of paraphrases but also "who led the Russian delegation?" with "who is in the Russian
# delegation?" (0.87) and the Russian with the Ukrainian delegation in some wordings (0.86).
DUPLICATE_THRESHOLD = 0.88
# The most frequent distinct questions embedded and compared (all pairs: 2,000² cosines).
DUPLICATE_LIMIT = 2000
CONFIDENCE_BINS = 10
_TRAILING = "?？!！.。…,;:、 "


@dataclass(frozen=True)
class AskedQuestion:
    """A question as asked, however cased or spaced: its most common wording and count."""

    question: str
    count: int


@dataclass(frozen=True)
class Gap:
    """A question that went unanswered or was marked 👎: how often each, of how often asked."""

    question: str
    count: int  # askings that were not found or got 👎
    not_found: int
    down: int
    asked: int


@dataclass(frozen=True)
class DuplicateGroup:
    """Wordings of one question (cosine ≥ the threshold to the most asked of them)."""

    count: int
    questions: tuple[AskedQuestion, ...]


@dataclass(frozen=True)
class Analytics:
    """The whole summary; `to_dict` is the JSON `qa analytics --json` and GET /analytics give."""

    since: datetime | None
    questions: int
    note: str | None  # why there is nothing to show, when there is nothing
    per_day: dict[str, dict[str, float]]  # UTC date → questions, not_found, not_found_share
    latency_ms: dict[str, float]  # p50, p95
    answered: dict[str, float]  # found, not_found, found_share, not_found_share
    feedback: dict[str, float]  # up, down, rated, up_rate, down_rate, rated_share
    top_questions: tuple[AskedQuestion, ...]
    knowledge_gaps: tuple[Gap, ...]
    near_duplicates: dict[str, Any]
    collections: dict[str, int]  # questions per collection, when more than one appears
    confidence_histogram: dict[str, list[float]]  # edges (11) and counts (10)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = _plain(asdict(self))
        data["since"] = None if self.since is None else _stamp(self.since)
        return data


def _plain(value: Any) -> Any:
    """Tuples as lists, all the way down: the dict reads back from its JSON unchanged."""
    if isinstance(value, dict):
        return {key: _plain(v) for key, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def window_start(since: str, now: datetime | None = None) -> datetime:
    """`--since` / `?since=` as a UTC time (querylog.parse_since), and InvalidInput, not a
    crash, for one past the calendar's ends ("999999d", "0001-01-01T00:00+01:00")."""
    try:
        return parse_since(since, now).astimezone(UTC)
    except OverflowError:
        raise InvalidInput(f"since: {since!r} reaches past the year 1") from None


def normalize_question(text: str) -> str:
    """The form two askings of one question share: NFKC, case folded, spaces collapsed,
    trailing punctuation dropped ("Who led it?" and "who  led it" are one question)."""
    folded = " ".join(unicodedata.normalize("NFKC", text).casefold().split())
    return folded.rstrip(_TRAILING) or folded


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest rank: the smallest value with at least p% of the values at or below it, so
    p95 is a latency that 95% of questions did not exceed; 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return float(ordered[max(1, math.ceil(p / 100 * len(ordered))) - 1])


def _share(part: int, whole: int) -> float:
    return round(part / whole, 4) if whole else 0.0


def _stamp(at: datetime) -> str:
    return at.astimezone(UTC).isoformat(timespec="seconds")


def _utc_day(at: datetime) -> date:
    return (at if at.tzinfo else at.replace(tzinfo=UTC)).astimezone(UTC).date()


def group_near_duplicates(questions: Sequence[str], counts: Sequence[int],
                          vectors: npt.NDArray[np.float32],
                          threshold: float = DUPLICATE_THRESHOLD) -> list[DuplicateGroup]:
    """Groups of two or more questions asked in other words, the most asked group first.

    `questions` come most asked first, with normalized `vectors` (cosine = inner product).
    Each question joins the nearest group whose leader (its most asked wording) is within
    `threshold`, else leads a group of its own: every member is that close to its leader, so
    a chain of small steps never joins two different questions (single linkage would).
    """
    if not len(questions):
        return []
    similarity = vectors @ vectors.T
    leaders: list[int] = []
    members: dict[int, list[int]] = {}
    for i in range(len(questions)):
        to_leaders = similarity[i, leaders]
        nearest = int(np.argmax(to_leaders)) if leaders else -1
        if nearest >= 0 and to_leaders[nearest] >= threshold:
            members[leaders[nearest]].append(i)
        else:
            leaders.append(i)
            members[i] = [i]
    groups = [DuplicateGroup(count=sum(counts[i] for i in group),
                             questions=tuple(AskedQuestion(questions[i], counts[i])
                                             for i in group))
              for group in members.values() if len(group) > 1]
    return sorted(groups, key=lambda g: -g.count)


def summarize(history: History, *, since: datetime | None = None,
              now: datetime | None = None, embed: Embed | None = None,
              threshold: float = DUPLICATE_THRESHOLD, limit: int = DUPLICATE_LIMIT,
              top: int = TOP) -> Analytics:
    """The analytics of `history` (the log from `since` on). `embed` turns questions into
    normalized rows (Embedder.embed); without it, near-duplicates are not grouped."""
    now = now or datetime.now(UTC)
    queries = [q for q, _ in history]
    ratings = [f.rating if f is not None else None for _, f in history]
    n = len(queries)

    found = sum(q.found for q in queries)
    up, down = ratings.count("up"), ratings.count("down")
    latencies = [q.latency_ms for q in queries]

    # One entry per question however it was typed, shown in its most common wording.
    keys = [normalize_question(q.question) for q in queries]
    asked = Counter(keys)
    wordings: dict[str, Counter[str]] = {}
    for key, q in zip(keys, queries, strict=True):
        wordings.setdefault(key, Counter())[" ".join(q.question.split())] += 1
    shown = {key: c.most_common(1)[0][0] for key, c in wordings.items()}
    ranked = sorted(asked, key=lambda key: (-asked[key], key))

    unfound = Counter(key for key, q in zip(keys, queries, strict=True) if not q.found)
    downed = Counter(key for key, r in zip(keys, ratings, strict=True) if r == "down")
    failed = Counter(key for key, q, r in zip(keys, queries, ratings, strict=True)
                     if not q.found or r == "down")
    gaps = sorted(failed, key=lambda key: (-failed[key], -asked[key], key))[:top]

    by_collection = Counter(q.collection for q in queries)
    counts, edges = np.histogram([q.confidence for q in queries], bins=CONFIDENCE_BINS,
                                 range=(0.0, 1.0))
    note = None
    if not n:
        note = ("no questions logged" + (f" since {_stamp(since)}" if since else "")
                + ": the query log is empty or missing (QA_QUERY_LOG=off, or nothing asked)")
    return Analytics(
        since=since, questions=n, note=note, per_day=_per_day(queries, now),
        latency_ms={"p50": percentile(latencies, 50), "p95": percentile(latencies, 95)},
        answered={"found": found, "not_found": n - found, "found_share": _share(found, n),
                  "not_found_share": _share(n - found, n)},
        feedback={"up": up, "down": down, "rated": up + down,
                  "up_rate": _share(up, up + down), "down_rate": _share(down, up + down),
                  "rated_share": _share(up + down, n)},
        top_questions=tuple(AskedQuestion(shown[key], asked[key]) for key in ranked[:top]),
        knowledge_gaps=tuple(Gap(shown[key], failed[key], unfound[key], downed[key],
                                 asked[key]) for key in gaps),
        near_duplicates=_near_duplicates([shown[key] for key in ranked],
                                         [asked[key] for key in ranked],
                                         embed, threshold, limit),
        collections=dict(by_collection.most_common()) if len(by_collection) > 1 else {},
        confidence_histogram={"edges": [round(float(e), 2) for e in edges],
                              "counts": [int(c) for c in counts]},
    )


def _per_day(queries: Sequence[LoggedQuery], now: datetime) -> dict[str, dict[str, float]]:
    """Every UTC day from the first question to today (quiet days as 0): its questions and
    the share not found."""
    per_day: dict[str, dict[str, float]] = {}
    if not queries:
        return per_day
    days = Counter(_utc_day(q.at) for q in queries)
    missed = Counter(_utc_day(q.at) for q in queries if not q.found)
    day, last = min(days), max(max(days), _utc_day(now))
    while day <= last:
        per_day[day.isoformat()] = {"questions": days[day], "not_found": missed[day],
                                    "not_found_share": _share(missed[day], days[day])}
        day += timedelta(days=1)
    return per_day


def _near_duplicates(questions: list[str], counts: list[int], embed: Embed | None,
                     threshold: float, limit: int) -> dict[str, Any]:
    considered = min(len(questions), limit)
    result: dict[str, Any] = {"threshold": threshold, "limit": limit,
                              "distinct": len(questions), "considered": considered,
                              "groups": [], "note": None}
    if embed is None:
        result["note"] = "not grouped: no embedding model"
        return result
    if considered < len(questions):
        result["note"] = (f"grouped the {considered:,} most frequent of {len(questions):,} "
                          "distinct questions")
    if considered > 1:
        vectors = embed(questions[:considered])
        result["groups"] = [_plain(asdict(g)) for g in group_near_duplicates(
            questions[:considered], counts[:considered], vectors, threshold)]
    return result


def read_history(index_dir: Path, since: datetime | None = None) -> list[
        tuple[LoggedQuery, Feedback | None]]:
    """The log beside the index at `index_dir`, read-only; a missing log reads as empty."""
    log = QueryLog(index_dir / LOG_FILE, read_only=True)
    try:
        return log.history(since)
    finally:
        log.close()


# -- showing it ------------------------------------------------------------------------------


def _md(text: str) -> str:
    return " ".join(text.replace("|", "\\|").split())


def _pct(share: float) -> str:
    return f"{100 * share:.0f}%"


def format_summary(a: Analytics) -> str:
    """The terminal view: the numbers, then the lists, ten lines each at most."""
    window = f"since {_stamp(a.since)}" if a.since else "all logged"
    if not a.questions:
        return f"{a.note}\n"
    fb, ans = a.feedback, a.answered
    lines = [
        f"{a.questions} questions ({window}); "
        f"answered {_pct(ans['found_share'])}, not found {_pct(ans['not_found_share'])}",
        f"latency p50 {a.latency_ms['p50']:.0f} ms, p95 {a.latency_ms['p95']:.0f} ms",
        f"feedback: {fb['up']:.0f} 👍, {fb['down']:.0f} 👎 "
        f"({_pct(fb['up_rate'])} 👍 of {fb['rated']:.0f} rated; "
        f"{_pct(fb['rated_share'])} of questions rated)",
    ]
    if a.collections:
        lines.append("per collection: " + ", ".join(f"{name} {count}"
                                                    for name, count in a.collections.items()))
    lines += ["", "questions per day (not found):"]
    lines += [f"  {day}  {row['questions']:>5.0f}  ({_pct(row['not_found_share'])})"
              for day, row in list(a.per_day.items())[-14:]]
    lines += ["", "most asked:"]
    lines += [f"  {q.count:>5}  {q.question}" for q in a.top_questions]
    lines += ["", "knowledge gaps (not found or 👎, of asked):"]
    lines += [f"  {g.count:>5}  {g.question}  ({g.not_found} not found, {g.down} 👎, "
              f"asked {g.asked})" for g in a.knowledge_gaps] or ["  none"]
    dup = a.near_duplicates
    lines += ["", f"asked in other words (cosine ≥ {dup['threshold']}):"]
    for group in dup["groups"][:TOP]:
        lines.append(f"  {group['count']:>5}  " + " | ".join(
            f"{q['question']} ({q['count']})" for q in group["questions"]))
    if not dup["groups"]:
        lines.append("  none")
    if dup["note"]:
        lines.append(f"  ({dup['note']})")
    return "\n".join(lines) + "\n"


PER_DAY_PNG = "questions_per_day.png"
CONFIDENCE_PNG = "confidence.png"


def report_markdown(a: Analytics) -> str:
    window = f"since {_stamp(a.since)}" if a.since else "everything logged"
    lines = [f"# Questions asked, {window}", ""]
    if not a.questions:
        return "\n".join([*lines, f"{a.note}.", ""])
    fb, ans = a.feedback, a.answered
    lines += [
        "| | |", "|---|---|",
        f"| questions | {a.questions} |",
        f"| answered / not found | {_pct(ans['found_share'])} / "
        f"{_pct(ans['not_found_share'])} |",
        f"| latency p50 / p95 | {a.latency_ms['p50']:.0f} ms / {a.latency_ms['p95']:.0f} ms |",
        f"| 👍 / 👎 | {fb['up']:.0f} / {fb['down']:.0f} ({_pct(fb['up_rate'])} 👍 of "
        f"{fb['rated']:.0f} rated) |",
        *(f"| collection {_md(name)} | {count} |" for name, count in a.collections.items()),
        "", f"![questions per day]({PER_DAY_PNG})", "",
        f"![answer confidence]({CONFIDENCE_PNG})", "",
        "## Most asked", "", "| asked | question |", "|---|---|",
        *(f"| {q.count} | {_md(q.question)} |" for q in a.top_questions),
        "", "## Knowledge gaps", "",
        "Questions that were not found or marked 👎, the most frequent first: what the "
        "documents may be missing.", "",
    ]
    if a.knowledge_gaps:
        lines += ["| failed | not found | 👎 | asked | question |", "|---|---|---|---|---|",
                  *(f"| {g.count} | {g.not_found} | {g.down} | {g.asked} | {_md(g.question)} |"
                    for g in a.knowledge_gaps)]
    else:
        lines.append("None.")
    dup = a.near_duplicates
    lines += ["", "## Asked in other words", "",
              f"Questions whose meaning is one (cosine ≥ {dup['threshold']} to the most asked "
              f"wording); {dup['considered']} of {dup['distinct']} distinct "
              "questions compared" + (f" ({dup['note']})" if dup["note"] else "") + ".", ""]
    lines += [f"- **{group['count']}**: " + "; ".join(
        f"{_md(q['question'])} ({q['count']})" for q in group["questions"])
        for group in dup["groups"]] or ["None."]
    return "\n".join(lines) + "\n"


def plot_per_day(a: Analytics, path: Path) -> None:
    """Questions per day as bars, the share not found as a line on its own axis."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    days = list(a.per_day)
    fig, ax = plt.subplots(figsize=(7, 3.8), dpi=120)
    x = np.arange(len(days))
    ax.bar(x, [a.per_day[d]["questions"] for d in days], color="#4c72b0", label="questions")
    ax.set_ylabel("questions")
    share = ax.twinx()
    # A day without questions has no share: a gap in the line, not a fall to 0%.
    share.plot(x, [100 * a.per_day[d]["not_found_share"] if a.per_day[d]["questions"]
                   else np.nan for d in days], color="#c44e52",
               marker="o", markersize=3, label="not found")
    share.set_ylabel("not found (%)")
    share.set_ylim(0, 105)
    step = max(1, len(days) // 10)
    ax.set_xticks(x[::step], [d[5:] for d in days[::step]], rotation=45, ha="right")
    ax.set_xlabel("day (UTC)")
    ax.set_title("Questions per day, and the share not found")
    bars, bar_labels = ax.get_legend_handles_labels()
    line, line_labels = share.get_legend_handles_labels()
    ax.legend(bars + line, bar_labels + line_labels, loc="upper left", fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_confidence(a: Analytics, path: Path) -> None:
    """How sure the answers were: the top passage's confidence, in tenths."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    edges = a.confidence_histogram["edges"]
    fig, ax = plt.subplots(figsize=(6, 3.8), dpi=120)
    ax.bar(edges[:-1], a.confidence_histogram["counts"], width=edges[1] - edges[0],
           align="edge", edgecolor="black", color="#55a868", alpha=0.8)
    ax.set_xlim(0, 1)
    ax.set_xlabel("answer confidence")
    ax.set_ylabel("questions")
    ax.set_title("Answer confidence")
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_report(directory: Path, a: Analytics) -> list[Path]:
    """report.md, with its two plots when there is anything to plot."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = [directory / "report.md"]
    paths[0].write_text(report_markdown(a), encoding="utf-8")
    if a.questions:
        paths += [directory / PER_DAY_PNG, directory / CONFIDENCE_PNG]
        plot_per_day(a, paths[1])
        plot_confidence(a, paths[2])
    return paths
