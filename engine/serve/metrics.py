"""Counters, gauges and histograms rendered in the Prometheus text format, dependency-free.

Enough for the server's /metrics (requests, errors, queue depth, batch sizes, tokens, latency
histograms); not a general client library. Thread-safe: the server updates it from the event
loop and from worker threads.
"""

from __future__ import annotations

import bisect
import threading
from collections import defaultdict

BUCKETS = {
    "mstsb_request_seconds": (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
    "mstsb_batch_seconds": (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
    "mstsb_batch_inputs": (1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
    "mstsb_batch_workers": (1, 2, 4, 8, 16, 32, 64),
}
HELP = {
    "mstsb_requests_total": ("counter", "Embedding requests by HTTP status"),
    "mstsb_errors_total": ("counter", "Error responses by error code"),
    "mstsb_rejected_total": ("counter", "Requests refused: queue full, timeout, body budget (server_busy), key"),
    "mstsb_inputs_total": ("counter", "Texts embedded"),
    "mstsb_tokens_total": ("counter", "Tokens embedded (usage.prompt_tokens)"),
    "mstsb_queue_inputs": ("gauge", "Texts waiting or running"),
    "mstsb_body_bytes_reserved": ("gauge", "Request-body bytes being received (declared lengths included)"),
    "mstsb_requests_in_flight": ("gauge", "Embedding requests received and not yet answered (reading, tokenizing, queued, running)"),
    "mstsb_request_seconds": ("histogram", "Request latency"),
    "mstsb_batch_seconds": ("histogram", "Time to embed one merged batch"),
    "mstsb_batch_inputs": ("histogram", "Texts per merged batch"),
    "mstsb_batch_workers": ("histogram", "Workers a merged batch was shared among"),
}


def _labels(labels: dict[str, str]) -> str:
    return "{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}" if labels else ""


class Metrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[str, dict[str, float]] = defaultdict(dict)
        self._hist: dict[str, tuple[list[int], list[float]]] = {
            name: ([0] * (len(b) + 1), [0.0]) for name, b in BUCKETS.items()
        }

    def inc(self, name: str, value: float = 1.0, **labels: str) -> None:
        key = _labels(labels)
        with self._lock:
            self._values[name][key] = self._values[name].get(key, 0.0) + value

    def set(self, name: str, value: float) -> None:
        with self._lock:
            self._values[name][""] = float(value)

    def observe(self, name: str, value: float) -> None:
        counts, total = self._hist[name]
        with self._lock:
            counts[bisect.bisect_left(BUCKETS[name], value)] += 1
            total[0] += value

    def render(self) -> str:
        lines = []
        with self._lock:
            for name, (kind, text) in HELP.items():
                lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]
                if kind == "histogram":
                    counts, total = self._hist[name]
                    running = 0
                    for bound, count in zip(BUCKETS[name], counts):
                        running += count
                        lines.append(f'{name}_bucket{{le="{bound}"}} {running}')
                    running += counts[-1]
                    lines += [f'{name}_bucket{{le="+Inf"}} {running}', f"{name}_sum {total[0]}", f"{name}_count {running}"]
                else:
                    for key, value in sorted(self._values.get(name, {"": 0.0}).items()):
                        lines.append(f"{name}{key} {value:g}")
        return "\n".join(lines) + "\n"
