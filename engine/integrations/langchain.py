"""LangChain ``Embeddings`` over an exported folder (extra ``langchain``: langchain-core only).

    from mstsb_onnx.integrations.langchain import MstsbEmbeddings
    embeddings = MstsbEmbeddings(model_dir="models/mstsb-int8")
    embeddings.embed_documents(["Hola", "Hello"]); embeddings.embed_query("¿Qué tal?")

Vectors are ``Embedder.encode``'s (the model's default prompt unless a prompt name is given for
queries or documents), as lists of floats. The async forms run the same work on a thread.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from mstsb_onnx.errors import MissingExtraError

try:
    from langchain_core.embeddings import Embeddings
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise MissingExtraError('the LangChain adapter needs the langchain extra: pip install "mstsb-onnx[langchain]"') from e


class MstsbEmbeddings(Embeddings):
    """``Embeddings`` backed by one ``Embedder`` (thread-safe, so async calls may overlap)."""

    def __init__(self, model_dir: str | os.PathLike[str] | None = None, *, embedder: Any = None,
                 batch_size: int = 32, normalize_embeddings: bool = False, query_prompt_name: str | None = None,
                 document_prompt_name: str | None = None, threads: int | None = None) -> None:
        if (model_dir is None) == (embedder is None):
            raise ValueError("MstsbEmbeddings needs exactly one of model_dir (an exported folder) or embedder")
        if embedder is None:
            from mstsb_onnx.embedder import Embedder

            embedder = Embedder(model_dir, threads=threads)
        self.embedder = embedder
        self.batch_size, self.normalize_embeddings = batch_size, normalize_embeddings
        self.query_prompt_name, self.document_prompt_name = query_prompt_name, document_prompt_name

    def _encode(self, texts: list[str], prompt_name: str | None) -> list[list[float]]:
        vectors = self.embedder.encode(list(texts), self.batch_size, prompt_name=prompt_name,
                                       normalize_embeddings=self.normalize_embeddings)
        return vectors.tolist()

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return self._encode(texts, self.document_prompt_name)

    def embed_query(self, text: str) -> list[float]:
        return self._encode([text], self.query_prompt_name)[0]

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        return await asyncio.to_thread(self.embed_documents, texts)

    async def aembed_query(self, text: str) -> list[float]:
        return await asyncio.to_thread(self.embed_query, text)
