"""What the HTTP layer adds to POST /ask: two servers side by side on one index, one running
`qa` as of a git revision and one the working tree, asked the same questions by turns.

For each server it reports the wall time a client sees, the server's own `took_ms`
(retrieval and ranking), and their difference per request: the share of everything around
retrieval (uvicorn, middleware, validation, dependencies, serialization, metrics, the
query-log row). Use a small index (the seed one) so that share is visible.

    python -m bench.http_overhead --index index --base HEAD -n 600
    python -m bench.http_overhead --base HEAD --only qa/api/guards.py qa/telemetry.py
    python -m bench.http_overhead --writable --base-env QA_QUERY_LOG=off  # what the log costs

The baseline is `git archive REV qa` in a temporary folder, put first on PYTHONPATH (which
wins over the editable install) and run from another folder; `--only` takes just those files
from REV and the rest from the working tree, to isolate one change from others in progress.
Both servers run read-only with no rate limit. Servers take turns by blocks of BLOCK
questions (first server alternating), over keep-alive connections; on a shared, noisy box
only medians of several hundred requests side by side mean anything.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from bench.corpus import scifact_questions
from bench.measure import ROOT, extract_package, revision
from bench.serving import LeanClient, settled

BLOCK = 10
PORT = 8790  # baseline; the working tree's server gets PORT + 1


def baseline_tree(rev: str, into: Path, only: list[str]) -> Path:
    """`qa` as of `rev` under `into` (whole, or the working tree's with `only` from rev)."""
    if only:
        shutil.copytree(ROOT / "qa", into / "qa", ignore=shutil.ignore_patterns("__pycache__"))
        for path in only:
            shown = subprocess.run(["git", "show", f"{rev}:{path}"], cwd=ROOT, check=True,
                                   capture_output=True).stdout
            (into / path).write_bytes(shown)
        return into
    extract_package(rev, into)
    return into


def start_server(tree: Path, index: Path, port: int, cwd: Path, extra: dict[str, str]
                 ) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(tree), "QA_INDEX_DIR": str(index.resolve()),
           "QA_ASK_RATE_LIMIT": "off", "QA_READ_ONLY": "1", "HF_HUB_OFFLINE": "1", **extra}
    return subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "qa.api:app_from_env", "--factory",
         "--port", str(port), "--log-level", "warning"], env=env, cwd=cwd)


def connect(port: int, deadline_s: float = 300.0) -> LeanClient:
    """A keep-alive client once the server answers /healthz, its keyword index read (see
    bench.serving.settled)."""
    stop = time.monotonic() + deadline_s
    while True:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            conn.request("GET", "/healthz")
            health = json.loads(conn.getresponse().read())
            conn.close()
            if settled(health):
                return LeanClient(f"http://127.0.0.1:{port}")
        except OSError:
            if time.monotonic() > stop:
                raise
        if time.monotonic() > stop:
            raise TimeoutError(f"the server on port {port} did not settle in {deadline_s} s")
        time.sleep(0.5)


def ask(client: LeanClient, question: str, mode: str) -> tuple[float, float]:
    """(wall seconds, the server's took_ms in seconds) of one /ask."""
    started = time.perf_counter()
    answer = client.ask({"question": question, "k": 5, "mode": mode})
    return time.perf_counter() - started, answer["took_ms"] / 1000


def by_turns(conns: dict[str, LeanClient], questions: list[str], n: int, mode: str
             ) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Walls and tooks (seconds) of `n` questions asked of each of two servers, which take
    turns by blocks of BLOCK questions, the first one alternating (after 5 warm-up questions
    each)."""
    first, second = conns
    for conn in conns.values():  # warm: model, index, caches, first-request imports
        for q in questions[:5]:
            ask(conn, q + " (warm)", mode)
    walls: dict[str, list[float]] = {name: [] for name in conns}
    tooks: dict[str, list[float]] = {name: [] for name in conns}
    for block, start in enumerate(range(5, 5 + n, BLOCK)):
        for name in ([first, second] if block % 2 == 0 else [second, first]):
            for q in questions[start:start + BLOCK]:
                wall, took = ask(conns[name], q, mode)
                walls[name].append(wall)
                tooks[name].append(took)
    return walls, tooks


def summary(walls: list[float], tooks: list[float]) -> dict[str, float]:
    wall, took = np.asarray(walls) * 1000, np.asarray(tooks) * 1000
    return {"requests": len(walls), "wall_p50_ms": round(float(np.median(wall)), 3),
            "took_p50_ms": round(float(np.median(took)), 3),
            "http_p50_ms": round(float(np.median(wall - took)), 3)}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--index", type=Path, default=ROOT / "index")
    parser.add_argument("--base", default="HEAD", help="git revision of the baseline server")
    parser.add_argument("--only", nargs="*", default=[],
                        help="files taken from --base; the rest from the working tree")
    parser.add_argument("-n", type=int, default=600, help="questions per server")
    parser.add_argument("--mode", default="hybrid", choices=["dense", "keyword", "hybrid"])
    parser.add_argument("--writable", action="store_true",
                        help="serve a copy of the index, writable: the query log is on")
    parser.add_argument("--base-env", nargs="*", default=[], metavar="KEY=VALUE",
                        help="QA_* settings of the baseline server only")
    parser.add_argument("--new-env", nargs="*", default=[], metavar="KEY=VALUE",
                        help="QA_* settings of the working tree's server only")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args(argv)
    envs = {name: dict(pair.split("=", 1) for pair in pairs)
            for name, pairs in (("base", args.base_env), ("new", args.new_env))}

    questions = scifact_questions()
    if len(questions) < args.n + 5:
        parser.error(f"only {len(questions)} questions")
    scratch = Path(tempfile.mkdtemp(prefix="qa-http-overhead-"))
    servers: dict[str, subprocess.Popen[bytes]] = {}
    try:
        (scratch / "base").mkdir()
        base_tree = baseline_tree(args.base, scratch / "base", args.only)
        index = args.index
        if args.writable:  # both servers log to one copy (WAL: one writer at a time, briefly)
            index = Path(shutil.copytree(args.index, scratch / "index",
                                         ignore=shutil.ignore_patterns("qa.lock")))
            for env in envs.values():
                env.setdefault("QA_READ_ONLY", "0")
        servers["base"] = start_server(base_tree, index, PORT, scratch, envs["base"])
        servers["new"] = start_server(ROOT, index, PORT + 1, scratch, envs["new"])
        conns = {"base": connect(PORT), "new": connect(PORT + 1)}
        walls, tooks = by_turns(conns, questions, args.n, args.mode)
    finally:
        for server in servers.values():
            server.terminate()
            server.wait(timeout=30)
        shutil.rmtree(scratch, ignore_errors=True)

    result = {"bench": "http_overhead", "at": datetime.now(UTC).isoformat(timespec="seconds"),
              "revision": revision(), "base": args.base, "only": args.only,
              "index": str(args.index), "mode": args.mode, "writable": args.writable,
              "env": envs,
              **{name: summary(walls[name], tooks[name]) for name in walls}}
    for name in ("base", "new"):
        s = result[name]
        print(f"{name:4s} wall p50 {s['wall_p50_ms']:7.3f} ms  took p50 {s['took_p50_ms']:7.3f} ms"
              f"  wall-took p50 {s['http_p50_ms']:6.3f} ms  ({s['requests']} requests)")
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = args.out / f"http-overhead-{stamp}.json"
    path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {path}")
    return result


if __name__ == "__main__":
    main()
