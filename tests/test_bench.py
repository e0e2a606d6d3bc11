"""`python -m bench --smoke`: the benchmark itself runs end to end and reports every part.

The numbers of a smoke run mean little (tiny sizes, a shared machine), so this asserts what
was measured, never how fast: nothing else in CI runs bench/, and a rename once broke it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_smoke_bench_measures_every_part_and_writes_its_json(tmp_path: Path) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--json", "--results", str(tmp_path)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout)
    assert json.loads((tmp_path / "latest-smoke.json").read_text()) == out
    assert out["ingestion"]["chunks"] > 0 and out["ingestion"]["ratio_to_encode"] > 0
    small, large = (out["ask"][str(n)] for n in out["params"]["sizes"])
    assert small["layout"] == "flat" and large["chunks"] == out["params"]["sizes"][1]
    for mode in ("hybrid", "dense"):
        assert large[f"ask_{mode}"]["p50_ms"] > 0 and large[f"ask_{mode}"]["p50_over_floor"] > 0
    assert large["requests_per_s"]["failed"] == 0
    assert large["client_overhead"]["questions"] > 0  # what httpx would add, reported beside
    assert out["ann"]["vectors"] == out["params"]["ann_vectors"]
    assert 0.9 <= out["ann"]["recall_at_10"] <= 1.0
    assert "skipped" in out["peer"] or out["peer"]["query_p50_ms"]["txtai"] > 0
    assert out["backend"] == "onnx"
    backends = out["backends"]
    assert backends["cosine_min_onnx_to_torch"] >= 0.9999
    assert backends["query_embed_speedup"] > 0 and backends["ingest_speedup"] > 0
    assert min(backends["ingest_chunks_per_s"].values()) > 0
    int8 = out["embedder_int8"]
    assert 0 < int8["cosine_min"] <= 1 and 0 <= int8["hybrid_hit_at_1"]["int8"] <= 1
    assert int8["adopted"] == (int8["cosine_min"] >= 0.99
                               and int8["hybrid_hit_at_1"]["drop"] <= 0.005)
    assert "skipped" in out["peer"] or out["peer_at_scale"]["query_p50_ms"] > 0
    assert set(out["acceptance"]) >= {"ingestion_ge_0.85x_encode",
                                      "query_embed_p50_onnx_ge_2x_torch",
                                      "ingestion_onnx_ge_1.5x_torch"}
