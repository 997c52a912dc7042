"""``python -m mstsb_onnx``: the ``mstsb-onnx`` command line."""

from __future__ import annotations

import sys

from mstsb_onnx.cli import main

sys.exit(main())
