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
    threads: int = 1
    max_wait_ms: float = 5.0
    max_batch_tokens: int = 4096
    max_queue_inputs: int = 4096
    max_inputs: int = 2048
    max_chars: int = 20_000
    max_body_bytes: int = 8 * 1024 * 1024
    # Request bodies being received at once, all connections together (declared lengths count
    # when the body starts): slow uploads cannot pin unbounded memory.
    max_buffered_bytes: int = 64 * 1024 * 1024
    max_connections: int = 1024
    header_timeout_s: float = 10.0  # from a connection's (or a request's) first byte to its blank line
    read_timeout_s: float = 30.0  # for a whole request body
    timeout_s: float = 30.0  # for the whole request, from its headers to its answer
    # Bearer keys; empty: no authentication. /health is always open, /metrics unless protect_metrics.
    api_keys: tuple[str, ...] = ()
    protect_metrics: bool = False
    access_log: bool = False  # one JSON line per request on stderr

    def __post_init__(self) -> None:
        # The CLI checks its arguments as it parses them; this covers the Python API.
        at_least = {"workers": 0, "threads": 1, "max_batch_tokens": 1, "max_queue_inputs": 1,
                    "max_inputs": 1, "max_chars": 1, "max_body_bytes": 1, "max_buffered_bytes": 1,
                    "max_connections": 1}
        for name, low in at_least.items():
            value = getattr(self, name)
            if not is_count(value, low):
                raise ValueError(f"ServeConfig.{name} must be an integer >= {low}, got {value!r}")
        if not 0 <= self.max_wait_ms < float("inf"):
            raise ValueError(f"ServeConfig.max_wait_ms must be >= 0, got {self.max_wait_ms!r}")
        for name in ("timeout_s", "header_timeout_s", "read_timeout_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < float("inf"):
                raise ValueError(f"ServeConfig.{name} must be a number of seconds > 0, got {value!r}")
        if self.max_queue_inputs < self.max_inputs:
            raise ValueError(f"ServeConfig.max_queue_inputs ({self.max_queue_inputs}, --max-queue) is below max_inputs "
                             f"({self.max_inputs}, --max-inputs): a full-size request could never be queued; raise "
                             "--max-queue or lower --max-inputs")
        if self.max_buffered_bytes < self.max_body_bytes:
            raise ValueError(f"ServeConfig.max_buffered_bytes ({self.max_buffered_bytes}) is below max_body_bytes "
                             f"({self.max_body_bytes}): a full-size body could never be received")
        self.api_keys = tuple(self.api_keys)
        bad = [i for i, k in enumerate(self.api_keys) if not isinstance(k, str) or not k.strip() or not k.isprintable()
               or " " in k or not k.isascii()]
        if bad:
            # HTTP headers are latin-1 and clients (the OpenAI SDK) send ASCII: any other key never matches.
            raise ValueError(f"ServeConfig.api_keys[{bad[0]}] must be a non-empty printable ASCII string without "
                             "spaces")

    def resolved_workers(self) -> int:
        return self.workers or max(1, available_cpus() // self.threads)


def read_api_keys(keys: list[str] | None, key_file: str | None, environ: dict[str, str]) -> tuple[str, ...]:
    """Keys from ``--api-key`` (repeatable), ``--api-key-file`` (one per line, ``#`` comments) and
    ``MSTSB_API_KEYS`` (comma-separated), in that order, without duplicates."""
    found = list(keys or [])
    if key_file:
        try:
            lines = open(key_file, encoding="utf-8").read().splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise ValueError(f"cannot read the API key file {key_file}: {e}") from e
        found += [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    found += [k.strip() for k in environ.get("MSTSB_API_KEYS", "").split(",") if k.strip()]
    return tuple(dict.fromkeys(found))
