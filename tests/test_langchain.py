"""The LangChain adapter: langchain-core's own standard tests, and vectors equal to Embedder.encode."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest
from langchain_core.embeddings import Embeddings
from langchain_tests.integration_tests import EmbeddingsIntegrationTests
from langchain_tests.unit_tests import EmbeddingsUnitTests

from mstsb_onnx import Embedder
from mstsb_onnx.integrations.langchain import MstsbEmbeddings

TEXTS = ["Hello world", "Hola mundo", "你好，世界", "Grüß Gott"]


class TestStandardUnit(EmbeddingsUnitTests):
    folder: Path | None = None

    @pytest.fixture(autouse=True)
    def _folder(self, tiny_int8: Path) -> None:
        type(self).folder = tiny_int8  # the standard tests build the class from embedding_model_params

    @property
    def embeddings_class(self) -> type[MstsbEmbeddings]:
        return MstsbEmbeddings

    @property
    def embedding_model_params(self) -> dict:
        return {"model_dir": str(self.folder)}


class TestStandardIntegration(EmbeddingsIntegrationTests):
    @property
    def embeddings_class(self) -> type[MstsbEmbeddings]:
        return MstsbEmbeddings

    @pytest.fixture
    def model(self, tiny_int8: Path) -> MstsbEmbeddings:
        return MstsbEmbeddings(model_dir=tiny_int8)


@pytest.mark.parametrize("normalize", [False, True], ids=["raw", "normalized"])
def test_vectors_equal_embedder_encode(tiny_fp32: Path, normalize: bool) -> None:
    emb = Embedder(tiny_fp32, threads=1)
    lc = MstsbEmbeddings(embedder=emb, normalize_embeddings=normalize)
    assert isinstance(lc, Embeddings)
    want = emb.encode(TEXTS, normalize_embeddings=normalize)
    np.testing.assert_array_equal(np.asarray(lc.embed_documents(TEXTS), dtype=np.float32), want)
    np.testing.assert_array_equal(np.asarray(lc.embed_query(TEXTS[1]), dtype=np.float32),
                                  emb.encode(TEXTS[1], normalize_embeddings=normalize))
    got = asyncio.run(lc.aembed_documents(TEXTS))
    np.testing.assert_array_equal(np.asarray(got, dtype=np.float32), want)


def test_needs_exactly_one_source() -> None:
    with pytest.raises(ValueError, match="exactly one of model_dir"):
        MstsbEmbeddings()
