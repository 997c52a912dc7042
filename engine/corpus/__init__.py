"""Corpora: ``mstsb-onnx embed`` and Ray Data.

``readers`` (text lines, JSONL, CSV/TSV, stdin -> rows or bad rows with line numbers), ``sinks``
(atomic .npy / Parquet writers), ``bulk`` (one process: chunks through an ``Embedder``), ``ray``
(the same on a Ray cluster, extra ``ray``). Nothing here is imported by the core runtime.
"""
