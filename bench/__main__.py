"""`python -m bench [--quick] [--json]`: run every measurement, print a table, save JSON.

Timings on a shared machine are noisy, so every claim is a ratio of two things measured side by
side in the same run (our /ask against the floor, our ingestion against raw encode, qa against
txtai), and every latency is a median or percentile over many single requests.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from bench.corpus import chunked, grown, scifact_corpus, scifact_questions  # noqa: E402
from bench.measure import machine, revision  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"

PLANS: dict[str, dict[str, Any]] = {
    # real: SciFact chunks with real embeddings; sizes: collections served over HTTP.
    "full": {"real": 10_000, "sizes": [10_000, 100_000], "ask_questions": 300,
             "throughput_questions": 200, "concurrency": 4, "ingest_chunks": 1000,
             "ingest_rounds": 2, "int8_texts": 256, "peer_chunks": 1000, "peer_questions": 100,
             "ann_vectors": 1_000_000, "ann_queries": 200, "filtered_questions": 450},
    "quick": {"real": 2_000, "sizes": [2_000, 20_000], "ask_questions": 60,
              "throughput_questions": 40, "concurrency": 4, "ingest_chunks": 150,
              "ingest_rounds": 1, "int8_texts": 64, "peer_chunks": 150, "peer_questions": 30,
              "ann_vectors": 200_000, "ann_queries": 100, "filtered_questions": 300},
    # Checks that the bench itself runs end to end; its numbers mean little.
    "smoke": {"real": 300, "sizes": [300, 3_000], "ask_questions": 20,
              "throughput_questions": 12, "concurrency": 2, "ingest_chunks": 40,
              "ingest_rounds": 1, "int8_texts": 16, "int8_questions": 40, "peer_chunks": 40,
              "peer_questions": 10,
              "ann_vectors": 30_000, "ann_queries": 20, "filtered_questions": 30},
}


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run(plan_name: str, skip: set[str], sizes: list[int] | None = None) -> dict[str, Any]:
    from bench.ann import measure_ann
    from bench.backends import measure_backends, measure_int8
    from bench.ingest import measure_ingestion
    from bench.peer import measure_peer, measure_peer_at_scale, txtai_available
    from bench.serialization import measure_serialization
    from bench.serving import build_collection, measure_size
    from qa.embedding import Backend, Embedder
    from qa.settings import Settings

    plan = dict(PLANS[plan_name], **({"sizes": sizes} if sizes else {}))
    settings = Settings()
    embedder = Embedder.from_settings(settings)
    questions = scifact_questions()
    out: dict[str, Any] = {
        "plan": plan_name, "params": plan, "revision": revision(), "machine": machine(),
        "backend": settings.backend,
        # Secrets (API keys) never go into a results file.
        "settings": {k: ("<redacted>" if "key" in k and v else v)
                     for k, v in settings.model_dump(mode="json").items()},
        "server": "uvicorn qa.api:app_from_env, 1 worker, QA_ASK_RATE_LIMIT=off",
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "data": "SciFact corpus (../shared/eval/beir-scifact) chunked with the default chunker;"
                " questions are SciFact queries",
    }

    log(f"real corpus: {plan['real']} chunks of SciFact (embeddings cached)")
    base = scifact_corpus(embedder, plan["real"])
    documents, chunks, real = base.documents, base.chunks, base.vectors
    texts = [c.text for cs in chunks for c in cs]

    def subset(n: int) -> tuple[list[Any], list[str]]:
        docs, parts = chunked(documents, settings.chunk_tokens, settings.chunk_overlap, n)
        return docs, [c.text for cs in parts for c in cs]

    if "ingest" not in skip:
        log("ingestion vs model.encode alone")
        docs, sub = subset(plan["ingest_chunks"])
        out["ingestion"] = measure_ingestion(docs, sub, embedder, plan["ingest_rounds"])
        log("embedding backends: onnx vs torch, same chunks and questions")
        other: Backend = "torch" if settings.backend == "onnx" else "onnx"
        second = Embedder(settings.model, backend=other, batch_size=settings.batch_size,
                          precision=settings.onnx_precision)
        pair = (embedder, second) if settings.backend == "onnx" else (second, embedder)
        out["backends"] = measure_backends(docs, sub, questions[:plan["ask_questions"]], *pair,
                                           rounds=plan["ingest_rounds"])
        del second, pair
        log("int8-quantized ONNX embedder vs fp32 (speed, cosine, Super Bowl hybrid hit@1)")
        out["embedder_int8"] = measure_int8(texts[: plan["int8_texts"]],
                                            embedder if settings.backend == "onnx" else
                                            Embedder(settings.model,
                                                     batch_size=settings.batch_size,
                                                     precision=settings.onnx_precision),
                                            plan.get("int8_questions"))

    if "ask" not in skip:
        out["ask"] = {}
        ask_q = questions[: plan["ask_questions"]]
        tput_q = questions[plan["ask_questions"] : plan["ask_questions"]
                           + plan["throughput_questions"] + 5]
        # Filtered /ask (at the largest size) asks questions no other case asked the server.
        seen = plan["ask_questions"] + plan["throughput_questions"] + 5
        filtered_q = questions[seen : seen + plan["filtered_questions"]]
        with tempfile.TemporaryDirectory(prefix="qa-bench-") as tmp:
            for size in plan["sizes"]:
                corpus = base if size <= base.size else grown(base, size)
                log(f"/ask at {corpus.size} chunks ({corpus.synthetic_vectors} synthetic vectors):"
                    " building")
                directory = Path(tmp) / f"index-{size}"
                built = build_collection(corpus, directory, embedder)
                log(f"/ask at {corpus.size} chunks: serving and measuring")
                measured = measure_size(directory, embedder, ask_q, port=free_port(),
                                        concurrency=plan["concurrency"],
                                        throughput_questions=tput_q,
                                        filtered_questions=filtered_q
                                        if size == plan["sizes"][-1] else ())
                measured.update(built)
                if size == plan["sizes"][0]:
                    out["ask_serialization"] = measure_serialization(directory, embedder,
                                                                     ask_q[0])
                if size == plan["sizes"][-1] and "peer" not in skip and not txtai_available():
                    log(f"peer at {corpus.size} chunks: txtai hybrid, the same questions")
                    out["peer_at_scale"] = measure_peer_at_scale(corpus, ask_q)
                measured["synthetic_vectors"] = corpus.synthetic_vectors
                if corpus.synthetic_vectors:
                    measured["synthetic"] = ("copies of real SciFact documents (real text, ids"
                                             " ID~j); their vectors are the real ones + noise")
                out["ask"][str(size)] = measured
        small, large = (out["ask"][str(s)] for s in plan["sizes"])
        out["memory_per_chunk_bytes"] = round(
            (large["server_rss_bytes_after"] - small["server_rss_bytes_after"])
            / (large["chunks"] - small["chunks"]))
        out["disk_per_chunk_bytes"] = round(large["disk_bytes"] / large["chunks"])

    if "peer" not in skip:
        missing = txtai_available()
        if missing:
            out["peer"] = {"skipped": missing}
        else:
            log("peer: txtai, same chunks and questions")
            docs, sub = subset(plan["peer_chunks"])
            peer_q = questions[700 : 700 + plan["peer_questions"]]
            out["peer"] = measure_peer(docs, sub, peer_q, embedder)

    if "ann" not in skip:
        log(f"ANN: {plan['ann_vectors']} synthetic vectors")
        queries = embedder.embed_questions(questions[-plan["ann_queries"] :], progress=False)
        out["ann"] = measure_ann(real, queries, plan["ann_vectors"])

    out["acceptance"] = acceptance(out, plan)
    out["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
    return out


def acceptance(out: dict[str, Any], plan: dict[str, Any]) -> dict[str, Any]:
    checks: dict[str, Any] = {}
    if "ask" in out:
        large = out["ask"][str(plan["sizes"][-1])]
        for mode in ("hybrid", "dense"):
            ratio = large[f"ask_{mode}"]["p50_over_floor"]
            checks[f"ask_{mode}_p50_le_2x_floor_at_{large['chunks']}"] = {
                "value": ratio, "pass": ratio <= 2.0}
        for name, case in large.get("ask_filtered", {}).items():
            if name != "unfiltered":
                ratio = case["p50_over_unfiltered"]
                checks[f"ask_filtered_{name}_p50_le_1.3x_unfiltered_at_{large['chunks']}"] = {
                    "value": ratio, "pass": ratio <= 1.3}
        if "ask_query_log" in large:
            ratio = large["ask_query_log"]["p50_on_over_off"]
            checks[f"ask_query_log_on_p50_le_1.05x_off_at_{large['chunks']}"] = {
                "value": ratio, "pass": ratio <= 1.05}
        if "peer_at_scale" in out:
            ratio = round(large["ask_hybrid"]["p50_ms"] / out["peer_at_scale"]["query_p50_ms"], 3)
            checks[f"ask_hybrid_http_p50_le_0.6x_txtai_inprocess_at_{large['chunks']}"] = {
                "value": ratio, "pass": ratio <= 0.6}
    if "ingestion" in out:
        ratio = out["ingestion"]["ratio_to_encode"]
        checks["ingestion_ge_0.85x_encode"] = {"value": ratio, "pass": ratio >= 0.85}
    if "backends" in out:
        b = out["backends"]
        checks["onnx_cosine_to_torch_ge_0.9999"] = {
            "value": b["cosine_min_onnx_to_torch"], "pass": b["cosine_min_onnx_to_torch"] >= 0.9999}
        checks["query_embed_p50_onnx_ge_2x_torch"] = {
            "value": b["query_embed_speedup"], "pass": b["query_embed_speedup"] >= 2.0}
        checks["ingestion_onnx_ge_1.5x_torch"] = {
            "value": b["ingest_speedup"], "pass": b["ingest_speedup"] >= 1.5}
    if "ann" in out:
        ann = out["ann"]
        checks[f"ann_{ann['vectors']}_p50_le_5ms_recall_ge_0.98"] = {
            "value": [ann["search_p50_ms"], ann["recall_at_10"]],
            "pass": ann["search_p50_ms"] <= 5.0 and ann["recall_at_10"] >= 0.98}
    return checks


def table(out: dict[str, Any]) -> str:
    rows: list[tuple[str, str]] = []
    if "ingestion" in out:
        i = out["ingestion"]
        rows.append(("ingestion chunks/s (qa / encode alone)",
                     f"{i['chunks_per_s']} / {i['encode_only_chunks_per_s']}"
                     f"  ratio {i['ratio_to_encode']}"))
    if "backends" in out:
        b = out["backends"]
        for label, key, speedup in (("query embed p50 ms", "query_embed_p50_ms",
                                     "query_embed_speedup"),
                                    ("encode chunks/s", "encode_chunks_per_s", "encode_speedup"),
                                    ("ingestion chunks/s", "ingest_chunks_per_s",
                                     "ingest_speedup")):
            rows.append((f"{label} onnx / torch",
                         f"{b[key]['onnx']} / {b[key]['torch']}  = {b[speedup]}x"))
        rows.append(("min cosine onnx fp32 / default to torch",
                     f"{b['cosine_min_onnx_to_torch']} / {b['cosine_min_default_onnx_to_torch']}"))
    if "embedder_int8" in out:
        q = out["embedder_int8"]
        hit = q["hybrid_hit_at_1"]
        rows.append(("int8 ONNX embedder: speed-up, cosine min, hit@1 fp32→int8",
                     f"{q['speedup']}x, {q['cosine_min']}, {hit['fp32']}→{hit['int8']} → "
                     + ("adopted" if q["adopted"] else "not adopted")))
    for size, a in out.get("ask", {}).items():
        tag = f"{a['chunks']} chunks" + (" (synthetic vectors)" if a["synthetic_vectors"] else "")
        for mode in ("hybrid", "dense"):
            m = a[f"ask_{mode}"]
            rows.append((f"/ask {mode} @ {tag} p50/p95/p99 ms",
                         f"{m['p50_ms']} / {m['p95_ms']} / {m['p99_ms']}"
                         f"  = {m['p50_over_floor']}x floor"))
        filtered = a.get("ask_filtered", {})
        for name, case in filtered.items():
            if name != "unfiltered":
                rows.append((f"/ask hybrid filtered {name} ({case['allowed_share']:.2%} of "
                             f"chunks) @ {a['chunks']} p50 ms",
                             f"{case['p50_ms']} vs {filtered['unfiltered']['p50_ms']} "
                             f"unfiltered = {case['p50_over_unfiltered']}x"))
        if "ask_query_log" in a:
            logged = a["ask_query_log"]
            rows.append((f"/ask hybrid query log on / off @ {a['chunks']} p50 ms",
                         f"{logged['on']['p50_ms']} / {logged['off']['p50_ms']}"
                         f" = {logged['p50_on_over_off']}x"))
        rows.append((f"floor @ {size} (embed + {a['layout']} search) p50 ms",
                     str(a["floor"]["p50_ms"])))
        if "client_overhead" in a:
            rows.append((f"httpx over http.client (the bench's client) @ {size} ms",
                         str(a["client_overhead"]["httpx_minus_http_client_p50_ms"])))
        rows.append((f"req/s @ {size} (hybrid, {a['requests_per_s']['concurrency']} clients)",
                     str(a["requests_per_s"]["hybrid"])))
        rows.append((f"index open @ {size} ms", str(a["index_open_ms"])))
        if a["recall_at_10_vs_exact"] is not None:
            rows.append((f"HNSW recall@10 vs exact @ {size}", str(a["recall_at_10_vs_exact"])))
    if "memory_per_chunk_bytes" in out:
        rows.append(("server memory per chunk (bytes)", str(out["memory_per_chunk_bytes"])))
        rows.append(("disk per chunk (bytes)", str(out["disk_per_chunk_bytes"])))
    if "ann" in out:
        n = out["ann"]
        rows.append((f"ANN {n['vectors']} synthetic vectors: p50 ms, recall@10",
                     f"{n['search_p50_ms']}, {n['recall_at_10']}"
                     f"  (exact p50 {n['exact_search_p50_ms']} ms)"))
    if "ask_serialization" in out:
        s = out["ask_serialization"]
        rows.append(("/ask body: FastAPI model path / orjson Response p50 ms",
                     f"{s['fastapi_model_p50_ms']} / {s['orjson_response_p50_ms']}"
                     f"  (saves {s['saved_ms']} ms)"))
    if "peer_at_scale" in out:
        p = out["peer_at_scale"]
        rows.append((f"txtai in-process hybrid @ {p['chunks']} chunks p50 ms",
                     str(p["query_p50_ms"])))
    if "peer" in out and "skipped" not in out["peer"]:
        p = out["peer"]
        rows.append((f"vs txtai @ {p['chunks']} chunks: ingestion speed qa/txtai",
                     str(p["ingest_speed_ratio_qa_over_txtai"])))
        rows.append(("vs txtai: query p50 ms qa / txtai",
                     f"{p['query_p50_ms']['qa']} / {p['query_p50_ms']['txtai']}"))
    for name, check in out.get("acceptance", {}).items():
        verdict = "PASS" if check["pass"] else "FAIL"
        rows.append((f"acceptance {name}", f"{check['value']} {verdict}"))
    rows.insert(0, ("embedding backend", str(out.get("backend"))))
    width = max(len(r[0]) for r in rows) if rows else 0
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true",
                        help="Smaller sizes (2k/20k chunks, 200k ANN vectors): a few minutes.")
    parser.add_argument("--smoke", action="store_true",
                        help="Tiny sizes: checks the bench runs end to end, numbers mean little.")
    parser.add_argument("--json", action="store_true", help="Print one JSON object on stdout.")
    parser.add_argument("--skip", default="", help="Comma-separated: ingest,ask,peer,ann.")
    parser.add_argument("--results", type=Path, default=RESULTS,
                        help=f"Where the JSON results go (default: {RESULTS}).")
    parser.add_argument("--sizes", default="",
                        help="Comma-separated /ask sizes in chunks, instead of the plan's "
                        "(e.g. --quick --sizes 2000,100000: the big size's HNSW and filtered "
                        "cases without the full plan's 10k real embeddings).")
    args = parser.parse_args(argv)
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    unknown = skip - {"ingest", "ask", "peer", "ann"}
    if unknown:
        parser.error(f"unknown --skip part(s): {', '.join(sorted(unknown))}")
    sizes = [int(n) for n in args.sizes.split(",") if n.strip()] or None
    if sizes is not None and len(sizes) != 2:
        parser.error("--sizes takes two sizes: a small one and a large one")
    out = run("smoke" if args.smoke else "quick" if args.quick else "full", skip, sizes)
    args.results.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = args.results / f"bench-{out['plan']}-{stamp}-{out['revision']['commit'][:8]}.json"
    text = json.dumps(out, indent=2)
    path.write_text(text + "\n")
    (args.results / f"latest-{out['plan']}.json").write_text(text + "\n")
    if args.json:
        print(json.dumps(out))
    else:
        print(table(out))
    log(f"results written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
