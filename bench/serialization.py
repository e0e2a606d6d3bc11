"""What sending /ask as orjson bytes saves against FastAPI's default path for a returned model.

The old route returned an `AskResponse`; FastAPI then validated it again against
`response_model` (in a threadpool hop, the route being sync), ran `jsonable_encoder` and
`json.dumps`. The route now returns a `Response` of `orjson.dumps(ask_json(...))`. Both are
timed here on one real k=5 answer, alternating, in this process (no HTTP noise).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from qa.collection import Collection
from qa.embedding import Embedder
from qa.retrieval import answer_of, retrieve
from qa.settings import Settings


def measure_serialization(directory: Path, embedder: Embedder, question: str,
                          rounds: int = 2000) -> dict[str, Any]:
    from fastapi.responses import JSONResponse
    from fastapi.routing import serialize_response
    from fastapi.utils import create_model_field

    from qa.api.schemas import AskResponse, ask_response
    from qa.wire import ask_json

    collection = Collection.open(Settings(index_dir=directory), embedder)
    try:
        passages = retrieve(collection, question, 5, "hybrid")
    finally:
        collection.close()
    answer = answer_of(passages, 0.5)
    field = create_model_field(name="Response_ask", type_=AskResponse, mode="serialization")

    async def fastapi_model() -> bytes:
        model = ask_response(question, passages, answer, 12.3)
        content = await serialize_response(field=field, response_content=model,
                                           is_coroutine=False)
        return bytes(JSONResponse(content).body)

    async def orjson_bytes() -> bytes:
        return orjson.dumps(ask_json(question, passages, answer, 12.3))

    async def run() -> dict[str, list[float]]:
        samples: dict[str, list[float]] = {"fastapi_model": [], "orjson_response": []}
        for _ in range(rounds):
            for name, make in (("fastapi_model", fastapi_model),
                               ("orjson_response", orjson_bytes)):
                started = time.perf_counter()
                await make()
                samples[name].append(time.perf_counter() - started)
        return samples

    samples = asyncio.run(run())
    old, new = (float(np.median(samples[n])) * 1000 for n in ("fastapi_model", "orjson_response"))
    return {"passages": len(passages), "rounds": rounds,
            "fastapi_model_p50_ms": round(old, 4), "orjson_response_p50_ms": round(new, 4),
            "saved_ms": round(old - new, 4)}
