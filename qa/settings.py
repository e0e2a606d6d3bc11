"""Settings, built once from `QA_*` environment variables and passed explicitly."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

Mode = Literal["hybrid", "dense", "keyword"]
CRAWL_EVERY_MIN_S = 60  # `qa serve --crawl-every`: oftener is load on a site, not freshness
CRAWL_EVERY_MAX_S = 30 * 86400


class Settings(BaseSettings):
    """Every knob of the service; each field is documented in the README (a test checks)."""

    model_config = SettingsConfigDict(env_prefix="QA_", frozen=True, extra="ignore")

    index_dir: Path = Field(Path("index"), description="Where the index lives.")
    model: str | None = Field(
        None,
        description="A sentence-transformers model directory; unset means the bundled "
        "all-MiniLM-L6-v2.",
    )
    backend: Literal["onnx", "torch"] = Field(
        "onnx",
        description="Embedding runtime: `onnx` (ONNX Runtime on the CPU, the model exported "
        "once to ~/.cache/qa/onnx; no torch at run time) or `torch` (sentence-transformers).",
    )
    onnx_precision: Literal["fp32", "int8", "int8-documents"] = Field(
        "int8-documents",
        description="ONNX weights: `int8-documents` (documents through the int8 graph, ~2-3x "
        "the chunks/s, cosine >= 0.99 to fp32; questions fp32, equal to torch's), `fp32` (both "
        "equal to torch's vectors) or `int8` (both int8: short questions a little less alike).",
    )
    device: str = Field("cpu", description="Torch device for the embedder (QA_BACKEND=torch).")
    batch_size: int = Field(32, ge=1, le=4096,
                            description="Embedding batch size (torch; ONNX runs one text a call).")
    chunk_tokens: int = Field(
        200, ge=16, le=2048, description="Chunk size in cl100k tokens (tiktoken)."
    )
    chunk_overlap: int = Field(
        48, ge=0, description="Tokens shared by consecutive chunks of a document."
    )
    default_k: int = Field(5, ge=1, description="Passages returned when a request gives no k.")
    max_k: int = Field(50, ge=1, le=1000, description="Largest k a request may ask for.")
    max_question_chars: int = Field(
        1000, ge=1, description="Longest question accepted, in characters."
    )
    mode: Mode = Field("hybrid", description="Default retrieval mode.")
    min_confidence: float = Field(
        0.5, ge=0.0, le=1.0,
        description="Confidence an answer needs to count as found (`answer.found`); below "
        "it, passages are still returned, marked as not answering.",
    )
    read_only: bool = Field(
        False,
        description="Open the index read-only (a published replica): questions are answered, "
        "writes are refused (HTTP 503), nothing in the index folder is written. Also chosen "
        "when the folder is on a read-only mount or not writable.",
    )
    default_public: bool = Field(
        True,
        description="Whether the collection `default` can be asked without a key (other "
        "collections are made public or private when created).",
    )
    query_log: bool = Field(
        True,
        description="Keep a log of questions, answers and feedback beside the index "
        "(querylog.sqlite3), for `qa analytics` and `qa feedback export`; `off` writes nothing.",
    )
    query_log_days: int = Field(
        30, ge=1, le=36500, description="Days a logged question (and its feedback) is kept.",
    )
    host: str = Field("127.0.0.1", description="Address `qa serve` binds.")
    port: int = Field(8000, ge=1, le=65535, description="Port `qa serve` binds.")
    watch_paths: Annotated[list[Path], NoDecode] = Field(
        default_factory=list,
        description="Folders `qa serve` keeps in step with the `default` collection in the "
        "background, as `qa watch` does (`qa serve --watch PATH`); separated by `:` as in PATH.",
    )
    crawl_every_s: float | None = Field(
        None, ge=CRAWL_EVERY_MIN_S, le=CRAWL_EVERY_MAX_S,
        description="`qa serve` crawls its site into the `default` collection at start and then "
        "every this many seconds, pruning what went away (`qa serve --crawl-every 6h`).",
    )
    crawl_urls: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated start URLs of those crawls (`--crawl URL`); none: the "
        "start URLs and options of the collection's last `qa crawl`.",
    )
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated origins allowed to call the API from a browser.",
    )

    api_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated admin keys (everything, every collection), beside the "
        "scoped keys of `qa keys`; with neither, HTTP writes are refused.",
    )
    ask_rate_limit: str | None = Field(
        default="60/minute",
        description="Per-client limit on POST /ask, per worker process, in `limits` notation "
        "(`N/second`, `N/minute`, `N/hour`); empty turns it off.",
    )
    forwarded_allow_ips: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated addresses or networks of reverse proxies whose "
        "X-Forwarded-For/-Proto `qa serve` believes (`*`: any); none means the client is the "
        "connecting address, so a client cannot choose its own rate-limit bucket.",
    )
    keywords_in_memory: int = Field(
        default=30_000_000, ge=0,
        description="Term instances of a collection's keyword index a server (or MCP) holds in "
        "memory, 8 bytes each, to rank keyword matches without FTS5's per-row work; a larger "
        "index, or 0, is searched on disk only. Answers are the same either way.",
    )
    max_body_bytes: int = Field(
        default=10 * 1024 * 1024, ge=1024, description="Largest request body accepted, in bytes."
    )
    max_batch_documents: int = Field(
        default=100, ge=1, le=10_000, description="Most documents one POST /documents may carry."
    )

    @field_validator("api_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: object) -> object:
        if isinstance(value, str):
            value = [k.strip() for k in value.split(",") if k.strip()]
        if isinstance(value, list):
            for key in value:
                raw = key.get_secret_value() if isinstance(key, SecretStr) else str(key)
                if not raw or any(c.isspace() or c == "," for c in raw):
                    raise ValueError("each API key must be non-empty, without spaces or commas")
                if not (raw.isascii() and raw.isprintable()):
                    # An Authorization header carries ASCII: such a key could never match.
                    raise ValueError("each API key must be printable ASCII (a header cannot "
                                     "carry other characters, so the key could never match)")
        return value

    @field_validator("ask_rate_limit", mode="before")
    @classmethod
    def _parse_rate(cls, value: object) -> object:
        if value is None or (isinstance(value, str) and value.strip().lower() in {"", "off"}):
            return None
        from limits import parse

        try:
            parse(str(value))
        except ValueError:
            raise ValueError(
                f"{value!r} is not a rate such as '60/minute' or '5/second'"
            ) from None
        return str(value).strip()

    @field_validator("forwarded_allow_ips", mode="before")
    @classmethod
    def _split_proxies(cls, value: object) -> object:
        import ipaddress

        if isinstance(value, str):
            value = [p.strip() for p in value.split(",") if p.strip()]
        for proxy in value if isinstance(value, list) else ():
            try:
                if proxy != "*":
                    ipaddress.ip_network(proxy, strict=False)
            except ValueError:
                raise ValueError(f"{proxy!r} is not an IP address, a network such as "
                                 "10.0.0.0/8, or *") from None
        return value

    @field_validator("watch_paths", mode="before")
    @classmethod
    def _split_watch_paths(cls, value: object) -> object:
        if isinstance(value, str):
            return [p for p in value.split(os.pathsep) if p.strip()]
        return value

    @field_validator("crawl_urls", mode="before")
    @classmethod
    def _split_crawl_urls(cls, value: object) -> object:
        if isinstance(value, str):
            return [u.strip() for u in value.split(",") if u.strip()]
        return value

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        if isinstance(value, str):
            return [o.strip().rstrip("/") for o in value.split(",") if o.strip()]
        return value

    @model_validator(mode="after")
    def _check_combinations(self) -> Settings:
        if self.chunk_overlap >= self.chunk_tokens:
            raise ValueError(
                f"chunk_overlap ({self.chunk_overlap}) must be smaller than "
                f"chunk_tokens ({self.chunk_tokens})"
            )
        if self.default_k > self.max_k:
            raise ValueError(f"default_k ({self.default_k}) exceeds max_k ({self.max_k})")
        return self
