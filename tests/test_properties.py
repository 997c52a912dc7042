"""Property-based: arbitrary Unicode text and lists never crash encode.

Always finite float32 of the right shape, or the documented error (TypeError / InputError).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mstsb_onnx import Embedder, InputError

_EMB: dict[str, Embedder] = {}

# Text including surrogates (invalid in UTF-8) so the error path is exercised too.
any_text = st.text(alphabet=st.characters(codec=None, exclude_categories=()), max_size=300)
items = st.one_of(any_text, any_text.map(lambda t: t.encode("utf-8", "surrogatepass")), st.none(), st.integers())


@pytest.fixture(scope="module")
def emb(tiny_int8: Path) -> Embedder:
    return Embedder(tiny_int8, threads=1)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(texts=st.lists(any_text, max_size=12), batch_size=st.integers(1, 8))
def test_text_lists(emb: Embedder, texts: list[str], batch_size: int) -> None:
    try:
        out = emb.encode(texts, batch_size=batch_size)
    except InputError as e:
        assert any(not _utf8_ok(t) for t in texts), e
        return
    assert out.dtype == np.float32 and out.shape == (len(texts), emb.dim)
    assert np.isfinite(out).all()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(values=st.lists(items, min_size=1, max_size=6))
def test_mixed_items(emb: Embedder, values: list) -> None:
    try:
        out = emb.encode(values)
    except TypeError as e:
        assert any(v is None or isinstance(v, int) for v in values)
        assert "texts[" in str(e)
        return
    except InputError as e:
        assert "texts[" in str(e)
        return
    assert out.shape == (len(values), emb.dim) and np.isfinite(out).all()


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=any_text)
def test_single_text(emb: Embedder, text: str) -> None:
    try:
        out = emb.encode(text)
    except InputError:
        assert not _utf8_ok(text)
        return
    assert out.shape == (emb.dim,) and out.dtype == np.float32 and np.isfinite(out).all()


def _utf8_ok(text: str) -> bool:
    try:
        text.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False
