"""``ServeConfig``: the server's settings and their limits, checked once, in one place.

The CLI's ``serve`` options take their defaults from here. Light on purpose (standard library
only), so ``mstsb-onnx --help`` can read the defaults without loading onnxruntime or starlette.
"""

from __future__ import annotations

from dataclasses import dataclass

from mstsb_onnx.cpus import available_cpus
from mstsb_onnx.inputs import is_count


@dataclass
class ServeConfig:
    model_dir: str
    model_name: str = "mstsb"
    workers: int = 0  # 0: one per available core
    threads_per_worker: int = 1
    max_wait_ms: float = 5.0
    max_batch_tokens: int = 4096
    max_queue_inputs: int = 4096
    max_inputs: int = 2048
    max_chars: int = 20_000
    max_body_bytes: int = 8 * 1024 * 1024
    timeout_s: float = 30.0

    def __post_init__(self) -> None:
        # The CLI checks its arguments as it parses them; this covers the Python API.
        at_least = {"workers": 0, "threads_per_worker": 1, "max_batch_tokens": 1, "max_queue_inputs": 1,
                    "max_inputs": 1, "max_chars": 1, "max_body_bytes": 1}
        for name, low in at_least.items():
            value = getattr(self, name)
            if not is_count(value, low):
                raise ValueError(f"ServeConfig.{name} must be an integer >= {low}, got {value!r}")
        if not 0 <= self.max_wait_ms < float("inf"):
            raise ValueError(f"ServeConfig.max_wait_ms must be >= 0, got {self.max_wait_ms!r}")
        if not 0 < self.timeout_s < float("inf"):
            raise ValueError(f"ServeConfig.timeout_s must be > 0, got {self.timeout_s!r}")

    def resolved_workers(self) -> int:
        return self.workers or max(1, available_cpus() // self.threads_per_worker)
