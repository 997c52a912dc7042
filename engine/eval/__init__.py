"""Measuring models: STS scoring (``sts``), ``mstsb-onnx eval-sts`` (``evaluation``) and the
timing harness behind ``mstsb-onnx bench`` and ``make bench`` (``benchmark``).

Nothing here is imported by the core runtime; the torch reference is imported only when asked for.
"""
