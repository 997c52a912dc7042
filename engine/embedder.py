"""``Embedder``: texts in, float32 sentence embeddings out, with onnxruntime and numpy only.

    from mstsb_onnx import Embedder
    vectors = Embedder("models/mstsb-int8").encode(["Hola", "Hello"])   # [2, dim] float32

Loads only folders written by ``mstsb-onnx export`` (their manifest's sha256s are checked), and
follows sentence-transformers' ``encode`` conventions. Pooling happens inside the ONNX graph; this
class tokenizes, sorts by length, batches, feeds the graph by its input names, and restores order.
It never imports torch, transformers, optimum or onnx.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from mstsb_onnx.batching import plan_batches
from mstsb_onnx.errors import InputError, ModelFolderError, MstsbError
from mstsb_onnx.inputs import as_text, as_text_list, is_count
from mstsb_onnx.manifest import Manifest, Verify, read_manifest, verify_files
from mstsb_onnx.precision import check_precision, quantize
from mstsb_onnx.progress import batch_bar
from mstsb_onnx.runners import Layout, RunnerPool, resolve_layout
from mstsb_onnx.session import Provider, make_session
from mstsb_onnx.similarity import cosine_similarity, unit_rows
from mstsb_onnx.tokenizer import Tokenizer, TokenizerLike, pad_batch, unencodable

OUTPUT_NAME = "sentence_embedding"
MODEL_FILE = "model.onnx"
TOKENIZER_FILE = "tokenizer.json"
_KNOWN_INPUTS = {"input_ids", "attention_mask", "token_type_ids"}
# Padded tokens per batch: capping long batches lowers peak memory and is faster; batches up to
# 32 x 32 are untouched (docs/performance.md, "What won").
DEFAULT_MAX_BATCH_TOKENS = 1024


def _check_options(max_batch_tokens: int | None, spin: object) -> None:
    if max_batch_tokens is not None and not is_count(max_batch_tokens):
        raise ValueError(f"max_batch_tokens must be a positive int or None, got {max_batch_tokens!r}")
    if not isinstance(spin, bool):
        raise ValueError(f"spin must be True or False, got {spin!r}")


class Embedder:
    """Embed sentences with an exported model folder.

    ``threads`` defaults to the cores this process may use (affinity and cgroup quota).
    ``verify`` is "cached" (hash once, then trust unchanged size/mtime/inode), "full" or "off".
    ``max_batch_tokens`` bounds padded tokens per batch (None: only ``batch_size`` bounds it);
    ``spin=False`` stops idle threads from spinning. ``Embedder.from_parts`` takes a ready-made
    tokenizer, session and manifest instead of a folder (tests pass fakes that way).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        threads: int | None = None,
        providers: Sequence[Provider] | None = None,
        *,
        runners: int | None = None,
        verify: Verify = "cached",
        spin: bool = True,
        max_batch_tokens: int | None = DEFAULT_MAX_BATCH_TOKENS,
    ) -> None:
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"Embedder needs a model folder path, got {type(path).__name__} "
                            "(use Embedder.from_parts for a ready-made tokenizer and session)")
        _check_options(max_batch_tokens, spin)
        layout = resolve_layout(threads, runners)
        folder = Path(path)
        manifest = read_manifest(folder)
        verify_files(folder, manifest, "off")  # fail fast on missing files, hash below
        # Cold start: tokenizers holds the GIL while it builds a Unigram model; hashing and most
        # of onnxruntime's session creation release it. The tokenizer is parsed only once the
        # session is in its long GIL-free step, so the two overlap (docs/performance.md).
        with ThreadPoolExecutor(2) as pool:
            checked = pool.submit(verify_files, folder, manifest, verify)
            entering = threading.Event()
            made = pool.submit(make_session, folder / MODEL_FILE, layout.threads, providers, spin, entering)
            entering.wait()  # make_session sets it on every path, errors included
            tokenizer = Tokenizer.from_file(folder / TOKENIZER_FILE, manifest.max_seq_length,
                                            int(manifest.raw.get("pad_token_id", 1)))
            checked.result()  # a changed file is the error to report, before any other
            session = made.result()
        self._setup(tokenizer, session, manifest, folder, max_batch_tokens, layout)
        self._check_graph()
        if layout.threads > 1 and layout.runners > 1:
            # The runners' one-thread session, made on the first call with several batches.
            self._make_runner_session = lambda: make_session(folder / MODEL_FILE, 1, providers, spin=False)

    @classmethod
    def from_parts(
        cls,
        tokenizer: TokenizerLike,
        session: Any,
        manifest: Manifest,
        *,
        path: str | os.PathLike[str] | None = None,
        max_batch_tokens: int | None = DEFAULT_MAX_BATCH_TOKENS,
        runners: int | None = None,
        runner_session: Any = None,
    ) -> Embedder:
        """An Embedder over a ready-made tokenizer, onnxruntime-like session and manifest.

        ``runner_session`` is what the runners call concurrently (default: ``session`` itself).
        """
        _check_options(max_batch_tokens, True)
        self = cls.__new__(cls)
        layout = resolve_layout(None, runners)
        self._setup(tokenizer, session, manifest, Path(path) if path is not None else None, max_batch_tokens, layout)
        if runner_session is not None:
            self._make_runner_session = lambda: runner_session
        return self

    def _setup(self, tokenizer: TokenizerLike, session: Any, manifest: Manifest, path: Path | None,
               max_batch_tokens: int | None, layout: Layout) -> None:
        self.path = path
        self.layout = layout
        self._pool = RunnerPool(layout.runners)
        self._runner_session: Any = None
        self._make_runner_session: Callable[[], Any] = lambda: session
        self._runner_lock = threading.Lock()
        self.manifest = manifest
        self.tokenizer = tokenizer
        self.session = session
        self.max_batch_tokens = max_batch_tokens
        self._input_names = [i.name for i in session.get_inputs()]
        unknown = set(self._input_names) - _KNOWN_INPUTS
        if unknown or "input_ids" not in self._input_names:
            raise ModelFolderError(
                f"the ONNX graph takes inputs {self._input_names}; expected input_ids, attention_mask "
                "(and optionally token_type_ids) -- was it written by `mstsb-onnx export`?"
            )
        outputs = [o.name for o in session.get_outputs()]
        if OUTPUT_NAME not in outputs:
            raise ModelFolderError(f"the ONNX graph has outputs {outputs}, not {OUTPUT_NAME!r}")

    def _check_graph(self) -> None:
        """Run one text of ``max_seq_length`` tokens: the manifest's length and dim must be the graph's.

        A manifest is only text: a length past the graph's position table would fail every batch
        that holds a long text (and its batch-mates), a wrong dim every request. Checked once, at
        load, where the error can name the folder.
        """
        ids = [0 if self.tokenizer.pad_id != 0 else 1] * self.max_seq_length  # an id every model has, not the pad
        try:
            (emb,) = self.session.run([OUTPUT_NAME], self._feeds([ids]))
        except Exception as e:  # onnxruntime raises its own Fail / InvalidArgument types
            raise ModelFolderError(
                f"{self.path}: the graph cannot embed a text of the manifest's max_seq_length {self.max_seq_length} "
                f"tokens ({type(e).__name__}: {str(e)[:200]}); the manifest does not match model.onnx -- export again"
            ) from e
        if emb.shape != (1, self.dim):
            raise ModelFolderError(f"{self.path}: the graph returns vectors of shape {emb.shape[1:]}, the manifest "
                                   f"says dim {self.dim}; the manifest does not match model.onnx -- export again")

    @property
    def dim(self) -> int:
        return self.manifest.dim

    @property
    def max_seq_length(self) -> int:
        return self.manifest.max_seq_length

    def _prefix(self, prompt: str | None, prompt_name: str | None) -> str:
        # sentence-transformers: an explicit prompt wins, then prompt_name, then the default.
        if prompt is not None:
            if not isinstance(prompt, str):
                raise TypeError(f"prompt must be a str, got {type(prompt).__name__}")
            return prompt
        if prompt_name is not None:
            if prompt_name not in self.manifest.prompts:
                raise ValueError(
                    f"prompt_name {prompt_name!r} is not one of this model's prompts {sorted(self.manifest.prompts)}"
                )
            return self.manifest.prompts[prompt_name]
        return self.manifest.default_prompt

    def tokenize(self, texts: object, prompt: str | None = None, prompt_name: str | None = None) -> list[list[int]]:
        """Token ids per text, truncated to max_seq_length, prompt applied; no padding."""
        items, _ = as_text_list(texts)
        return self._tokenize(items, prompt, prompt_name)

    def tokenize_flagged(self, texts: object, prompt: str | None = None, prompt_name: str | None = None,
                         what: str = "texts") -> tuple[list[list[int]], list[bool]]:
        """``tokenize``, and for each text whether it was longer than max_seq_length (and cut).
        Errors name the texts ``what`` (the server passes its request field)."""
        items = as_text_list(texts)[0]
        if not items:
            return [], []
        return self._explained(items, what, lambda: self.tokenizer.encode_flagged(self._prefixed(items, prompt,
                                                                                                prompt_name)))

    def _prefixed(self, items: list[str], prompt: str | None, prompt_name: str | None) -> list[str]:
        prefix = self._prefix(prompt, prompt_name)
        return [prefix + t for t in items] if prefix else items

    def _tokenize(self, items: list[str], prompt: str | None, prompt_name: str | None) -> list[list[int]]:
        if not items:
            return []
        return self._explained(items, "texts", lambda: self.tokenizer.encode(self._prefixed(items, prompt, prompt_name)))

    @staticmethod
    def _explained(items: list[str], what: str, tokenize: Callable[[], Any]) -> Any:
        """``tokenize()``; a failure is explained on the caller's own texts (positions without the prompt)."""
        try:
            return tokenize()
        except InputError as e:
            raise InputError(unencodable(items, what) or str(e)) from e

    def _feeds(self, seqs: list[list[int]]) -> dict[str, np.ndarray]:
        ids, mask = pad_batch(seqs, self.tokenizer.pad_id)
        available = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        return {name: available[name] for name in self._input_names}

    def unembeddable(self, seq: list[int]) -> str | None:
        """Why the model cannot embed these token ids, or None when it can.

        A tokenizer may know tokens that were added without resizing the model's embeddings;
        onnxruntime would fail on the whole batch deep in a Gather. Manifests written before the
        table size was recorded (no ``vocab_size``) cannot be checked.
        """
        rows = self.manifest.vocab_size
        token_id = max(seq, default=-1)
        if rows is None or token_id < rows:
            return None
        name = getattr(self.tokenizer, "id_to_token", lambda _: None)(token_id)
        return (f"has token {name!r} (id {token_id}), which the model has no embedding for (its table has {rows} "
                "rows): the tokenizer was extended without resizing the model; remove that token from the text, "
                "or re-export a model whose embeddings cover the tokenizer")

    def check_token_ids(self, seqs: list[list[int]], what: str = "texts") -> None:
        """InputError naming the first text ``unembeddable`` refuses; ``encode`` checks every call."""
        for i, seq in enumerate(seqs):
            why = self.unembeddable(seq)
            if why:
                raise InputError(f"{what}[{i}] {why}")

    def encode(
        self,
        texts: str | Sequence[str],
        batch_size: int = 32,
        normalize: bool = False,
        prompt: str | None = None,
        prompt_name: str | None = None,
        *,
        normalize_embeddings: bool = False,
        show_progress_bar: bool | None = None,
        convert_to_numpy: bool = True,
        precision: str = "float32",
    ) -> np.ndarray | list[np.ndarray]:
        """Embed ``texts``: a str gives a [dim] vector, a list gives [n, dim] -- sentence-transformers'
        ``encode`` arguments and meanings.

        ``normalize_embeddings=True`` (or the older ``normalize=True``) L2-normalises; a model
        exported with a Normalize module always is. ``prompt`` is prepended to every text; by
        default the model's default prompt is. ``precision`` is "float32", or "int8", "uint8",
        "binary", "ubinary" as sentence-transformers' ``quantize_embeddings`` computes them (ranges
        from this call's embeddings). ``convert_to_numpy=False`` gives a list of 1-D arrays.
        ``show_progress_bar`` shows one over the texts (off unless asked for).
        """
        check_precision(precision)  # before the work, not after it
        items, single = as_text_list(texts)
        seqs = self._tokenize(items, prompt, prompt_name)
        with batch_bar(len(seqs), bool(show_progress_bar)) as update:
            out = self.encode_tokens(seqs, batch_size, normalize or normalize_embeddings, on_batch=update)
        out = quantize(out, precision)
        result = out if convert_to_numpy else list(out)
        return result[0] if single else result

    def encode_query(self, texts: str | Sequence[str], **kwargs: Any) -> np.ndarray | list[np.ndarray]:
        """``encode`` with the model's "query" prompt (none if it has none), unless a prompt is given.

        As sentence-transformers 5 does: its models always hold "query" and "document" prompts
        (empty unless the model sets them), and ``encode_query`` picks "query" over the default prompt.
        """
        if kwargs.get("prompt") is None and kwargs.get("prompt_name") is None:
            kwargs["prompt"] = self.manifest.prompts.get("query", "")
        return self.encode(texts, **kwargs)

    def encode_document(self, texts: str | Sequence[str], **kwargs: Any) -> np.ndarray | list[np.ndarray]:
        """``encode`` with the model's "document" prompt (none if it has none), unless a prompt is given.

        sentence-transformers 5 looks for "document", "passage", "corpus" in that order, but its
        prompts always hold "document" (empty unless the model sets one), so that is what it uses.
        """
        if kwargs.get("prompt") is None and kwargs.get("prompt_name") is None:
            kwargs["prompt"] = self.manifest.prompts.get("document", "")
        return self.encode(texts, **kwargs)

    def embed(self, documents: Iterable[object], batch_size: int = 32, chunk_size: int = 4096,
              **encode_kwargs: Any) -> Iterator[np.ndarray]:
        """Stream ``documents`` (any iterable, read ``chunk_size`` at a time): one vector per text, in order.

        For inputs that do not fit in memory; memory stays at one chunk. ``encode_kwargs`` go to
        ``encode`` (``normalize_embeddings``, ``prompt_name``...); ``precision`` is refused, since
        its int8 ranges would differ from chunk to chunk.
        """
        if not is_count(chunk_size):
            raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
        if encode_kwargs.get("precision", "float32") != "float32":
            raise ValueError("embed streams float32 vectors; quantize them yourself with ranges you choose")
        chunk: list[str] = []
        for i, item in enumerate(documents):
            chunk.append(as_text(item, f"documents[{i}]"))
            if len(chunk) == chunk_size:
                yield from self.encode(chunk, batch_size, **encode_kwargs)
                chunk = []
        if chunk:
            yield from self.encode(chunk, batch_size, **encode_kwargs)

    def encode_tokens(self, seqs: list[list[int]], batch_size: int = 32, normalize: bool = False,
                      on_batch: Callable[[int], None] | None = None, *, runners: int | None = None) -> np.ndarray:
        """Embed texts already tokenized by ``tokenize`` (prompt applied there): [n, dim] float32.

        For callers that need the ids first (the server counts tokens to form batches) and should
        not tokenize twice. One batch runs in the calling thread on the ``threads``-thread session;
        several go to the runners (``runners=1``: all in the calling thread, as the server's own
        workers ask). When there are fewer batches than runners, batches are cut smaller so that
        every runner gets one.
        """
        if not is_count(batch_size):
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        if runners is not None and not is_count(runners):
            raise ValueError(f"runners must be a positive int or None, got {runners!r}")
        self.check_token_ids(seqs)
        out = np.empty((len(seqs), self.dim), dtype=np.float32)
        if not seqs:
            return out
        runners = min(runners or self.layout.runners, self.layout.runners)
        lengths = np.fromiter(map(len, seqs), dtype=np.int64, count=len(seqs))
        order = np.argsort(-lengths, kind="stable")
        parts = plan_batches(lengths[order], batch_size, self.max_batch_tokens)
        if runners > 1 and len(parts) < min(runners, len(seqs)):
            # Idle runners would outweigh the fixed cost of more calls: give each one a share.
            parts = plan_batches(lengths[order], -(-len(seqs) // runners), self.max_batch_tokens)
        batches = [order[part] for part in parts]
        if runners == 1 or len(batches) == 1:
            results: Iterator[np.ndarray] = (self._run(self.session, seqs, idx) for idx in batches)
        else:
            session = self._runner()
            results = self._pool.map(lambda idx: self._run(session, seqs, idx), batches)
        for idx, emb in zip(batches, results):
            out[idx] = emb
            if on_batch is not None:
                on_batch(len(idx))
        bad = ~np.isfinite(out).all(axis=1)
        if bad.any():
            raise MstsbError(f"the model produced non-finite values for texts at {np.flatnonzero(bad)[:10].tolist()}")
        if normalize or self.manifest.normalize:
            out = unit_rows(out)
        return out

    def _run(self, session: Any, seqs: list[list[int]], idx: np.ndarray) -> np.ndarray:
        (emb,) = session.run([OUTPUT_NAME], self._feeds([seqs[i] for i in idx]))
        if emb.shape != (len(idx), self.dim):
            raise ModelFolderError(
                f"the ONNX graph returned shape {emb.shape} for a batch of {len(idx)}; expected dim {self.dim}"
            )
        return emb

    def _runner(self) -> Any:
        """The session the runners share, made once (under a lock: callers may be threads too)."""
        with self._runner_lock:
            if self._runner_session is None:
                self._runner_session = self._make_runner_session()
            return self._runner_session

    @staticmethod
    def similarity(a: object, b: object) -> np.ndarray:
        """Cosine similarity matrix [len(a), len(b)] of two ``encode`` results (a vector is one row).

        Like sentence-transformers' ``model.similarity``, but numpy float32.
        """
        return cosine_similarity(a, b)

    def __repr__(self) -> str:
        return f"Embedder({str(self.path)!r}, dim={self.dim}, max_seq_length={self.max_seq_length})"
