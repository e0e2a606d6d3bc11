"""Evaluation results → the JSON object, a terminal table, report.md, PNG plots, a TREC run."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from qa.eval.datasets import Dataset
from qa.eval.runner import ModeResult, Outcome

WORST_MISSED = 10


def metrics_object(dataset: Dataset, results: Sequence[ModeResult], *, compare: bool
                   ) -> dict[str, Any]:
    """One mode: its metrics flat; with --compare, one metrics object per mode under "modes"."""
    if compare:
        return {"dataset": dataset.name, "modes": {r.mode: r.metrics for r in results}}
    return {"dataset": dataset.name, "mode": results[0].mode, **results[0].metrics}


def _cell(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.3f}" if value < 10 else f"{value:.1f}"
    return str(value)


def metric_rows(results: Sequence[ModeResult]) -> list[list[str]]:
    """Metrics down, modes across: the side-by-side view."""
    keys = list(dict.fromkeys(key for r in results for key in r.metrics))
    return [[key, *(_cell(r.metrics.get(key)) for r in results)] for key in keys]


def format_table(results: Sequence[ModeResult]) -> str:
    rows = [["metric", *(r.mode for r in results)], *metric_rows(results)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w)
                       for i, (cell, w) in enumerate(zip(row, widths, strict=True)))
             for row in rows]
    return "\n".join(lines)


def _snippet(text: str, limit: int = 160) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _md(text: str) -> str:
    return text.replace("|", "\\|")


def worst_missed(result: ModeResult, k: int, limit: int = WORST_MISSED) -> list[Outcome]:
    """Questions without a hit in the top k, the most confidently wrong first."""
    missed = [o for o in result.outcomes
              if not o.question.impossible and (o.first_hit is None or o.first_hit > k)]

    def top_confidence(o: Outcome) -> float:
        if not o.passages:
            return -1.0
        top = o.passages[0]
        return top.confidence if top.confidence is not None else 0.0

    return sorted(missed, key=top_confidence, reverse=True)[:limit]


def _expected(dataset: Dataset, outcome: Outcome) -> str:
    q = outcome.question
    if dataset.kind == "beir":
        titles = {d.id: d.title for d in dataset.documents}
        wanted = [d for d, r in dataset.qrels.get(q.id, {}).items() if r > 0]
        return "; ".join(f"{d} ({_snippet(titles.get(d, '?'), 80)})" for d in wanted)
    return " / ".join(f"“{a}”" for a in q.answers)


def report_markdown(dataset: Dataset, results: Sequence[ModeResult], k: int) -> str:
    header = ["metric", *(r.mode for r in results)]
    lines = [
        f"# Evaluation: {dataset.name}",
        "",
        f"{len(dataset.questions)} questions ({dataset.kind}); hit@k counts a question when a "
        + ("relevant document is among the top k (documents scored by their best passage)."
           if dataset.kind == "beir" else "passage among the top k contains a gold answer."),
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(row) + " |" for row in metric_rows(results)),
        "",
        "![hit@k against k](hit_at_k.png)",
    ]
    if any(r.calibration for r in results):
        lines += ["", "Calibration over every question (an unanswerable one counts as a miss): "
                  "the top passage's confidence, binned, against how often it was a hit.", "",
                  "![reliability diagram](reliability.png)"]
    for result in results:
        missed = worst_missed(result, k)
        lines += ["", f"## Worst missed at k={k}: {result.mode}", ""]
        if not missed:
            lines.append("None: every question had a hit.")
        for o in missed:
            lines += [f"- **{_md(o.question.text)}** (id {o.question.id})",
                      f"  - expected: {_md(_expected(dataset, o))}"]
            for p in o.passages[:3]:
                c = p.citation
                conf = f", confidence {p.confidence:.2f}" if p.confidence is not None else ""
                lines.append(f"  - got #{p.rank}: {_md(c.title or c.document_id)} "
                             f"[{c.start}:{c.end}]{conf}: {_md(_snippet(p.text))}")
    return "\n".join(lines) + "\n"


def plot_hit_curve(results: Sequence[ModeResult], path: Path, title: str) -> None:
    """hit@k against k, one line per mode."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for r in results:
        ks = sorted(r.hit_curve)
        ax.plot(ks, [r.hit_curve[x] for x in ks], marker="o", markersize=3, label=r.mode)
    ax.set_xlabel("k (passages or documents)")
    ax.set_ylabel("hit@k")
    ax.set_ylim(0, 1.02)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_reliability(results: Sequence[ModeResult], path: Path, title: str) -> None:
    """Reliability diagram, one panel per mode: each confidence bin's observed hit rate as a
    bar at the bin, its question count above it; a calibrated mode follows the diagonal."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    shown = [r for r in results if r.calibration]
    fig, axes = plt.subplots(1, len(shown), figsize=(max(4.5 * len(shown), 6.5), 4.2),
                             dpi=120, squeeze=False)
    for ax, r in zip(axes[0], shown, strict=True):
        width = r.calibration[0].high - r.calibration[0].low
        filled = [b for b in r.calibration if b.count]
        ax.bar([b.low for b in filled], [b.hit_rate or 0.0 for b in filled], width=width,
               align="edge", edgecolor="black", alpha=0.7, label="observed hit rate")
        ax.plot([b.mean_confidence for b in filled], [b.hit_rate for b in filled], "o",
                color="black", markersize=3, label="bin mean confidence")
        for b in filled:
            ax.annotate(str(b.count), (b.low + width / 2, (b.hit_rate or 0.0) + 0.01),
                        ha="center", va="bottom", fontsize=7)
        ax.plot([0, 1], [0, 1], "--", color="grey", label="perfect calibration")
        ece = r.metrics.get("ece")
        ax.set_title(r.mode + (f" (ECE {ece:.3f})" if isinstance(ece, float) else ""))
        ax.set_xlabel("top passage confidence")
        ax.set_ylabel("top passage is a hit")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.08)
        ax.grid(alpha=0.3)
        ax.legend(loc="upper left", fontsize=7)
    fig.suptitle(title, fontsize=9)  # dataset names run long with --unanswerable
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_report(directory: Path, dataset: Dataset, results: Sequence[ModeResult], k: int,
                 *, compare: bool) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = [directory / "metrics.json", directory / "report.md", directory / "hit_at_k.png"]
    paths[0].write_text(json.dumps(metrics_object(dataset, results, compare=compare), indent=2)
                        + "\n", encoding="utf-8")
    paths[1].write_text(report_markdown(dataset, results, k), encoding="utf-8")
    plot_hit_curve(results, paths[2], f"{dataset.name}: hit@k")
    if any(r.calibration for r in results):
        paths.append(directory / "reliability.png")
        plot_reliability(results, paths[3], f"{dataset.name}: reliability (counts above bars)")
    return paths


def write_run_file(path: Path, results: Sequence[ModeResult]) -> list[Path]:
    """TREC run format, `qid Q0 docid rank score tag`; several modes go to one file each
    (`run.trec` → `run.dense.trec`, ...) since trec_eval reads one run per file."""
    written = []
    for result in results:
        target = path if len(results) == 1 else path.with_name(
            f"{path.stem}.{result.mode}{path.suffix}")
        target.parent.mkdir(parents=True, exist_ok=True)
        with target.open("w", encoding="utf-8") as fh:
            for qid, scores in result.run.items():
                qid_token = "_".join(qid.split()) or "_"
                for rank, doc in enumerate(scores, start=1):
                    doc_token = "_".join(doc.split())
                    fh.write(f"{qid_token} Q0 {doc_token} {rank} {scores[doc]:.6f} "
                             f"qa-{result.mode}\n")
        written.append(target)
    return written
