"""Prometheus metrics for the HTTP service, written in the text exposition format (version 0.0.4).

Counters and histograms are updated from the server's event loop and its reload thread; a lock keeps
the few increments consistent. No client library: the format is a few lines of text.
"""

from __future__ import annotations

import bisect
import threading
from collections import defaultdict
from collections.abc import Callable

BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _labels(pairs: tuple[tuple[str, str], ...]) -> str:
    if not pairs:
        return ""
    inner = ",".join(f'{k}="{v.replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'
                     for k, v in pairs)
    return "{" + inner + "}"


class Metrics:
    """Request counts and latencies by endpoint and status, reload outcomes, and gauges."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: dict[tuple[tuple[str, str], ...], int] = defaultdict(int)
        self.latency: dict[str, list[int]] = {}
        self.latency_sum: dict[str, float] = defaultdict(float)
        self.latency_count: dict[str, int] = defaultdict(int)
        self.items: dict[tuple[tuple[str, str], ...], int] = defaultdict(int)
        self.reloads: dict[tuple[tuple[str, str], ...], int] = defaultdict(int)
        self.gauges: list[Callable[[], list[tuple[str, str, tuple[tuple[str, str], ...], float]]]] = []

    def observe(self, endpoint: str, group: str, status: int, seconds: float, items: int = 0) -> None:
        with self._lock:
            self.requests[(("endpoint", endpoint), ("feature_group", group), ("status", str(status)))] += 1
            counts = self.latency.get(endpoint)
            if counts is None:
                counts = self.latency[endpoint] = [0] * (len(BUCKETS) + 1)
            counts[bisect.bisect_left(BUCKETS, seconds)] += 1
            self.latency_sum[endpoint] += seconds
            self.latency_count[endpoint] += 1
            if items:
                self.items[(("endpoint", endpoint), ("feature_group", group))] += items

    def reload(self, group: str, outcome: str) -> None:
        with self._lock:
            self.reloads[(("feature_group", group), ("outcome", outcome))] += 1

    def render(self) -> str:
        lines: list[str] = []
        with self._lock:
            lines += ["# HELP featurestore_requests_total HTTP requests by endpoint, feature group and status.",
                      "# TYPE featurestore_requests_total counter"]
            lines += [f"featurestore_requests_total{_labels(k)} {v}" for k, v in sorted(self.requests.items())]
            lines += ["# HELP featurestore_request_seconds Time to answer a request, in the handler.",
                      "# TYPE featurestore_request_seconds histogram"]
            for endpoint, counts in sorted(self.latency.items()):
                cum = 0
                for le, c in zip((*BUCKETS, float("inf")), counts):
                    cum += c
                    bound = "+Inf" if le == float("inf") else repr(le)
                    lines.append(f"featurestore_request_seconds_bucket"
                                 f"{_labels((('endpoint', endpoint), ('le', bound)))} {cum}")
                ep = _labels((("endpoint", endpoint),))
                lines.append(f"featurestore_request_seconds_sum{ep} {self.latency_sum[endpoint]:.9f}")
                lines.append(f"featurestore_request_seconds_count{ep} {self.latency_count[endpoint]}")
            lines += ["# HELP featurestore_items_total Keys looked up or neighbours returned.",
                      "# TYPE featurestore_items_total counter"]
            lines += [f"featurestore_items_total{_labels(k)} {v}" for k, v in sorted(self.items.items())]
            lines += ["# HELP featurestore_reloads_total View reloads by outcome (success, failure).",
                      "# TYPE featurestore_reloads_total counter"]
            lines += [f"featurestore_reloads_total{_labels(k)} {v}" for k, v in sorted(self.reloads.items())]
        seen: set[str] = set()
        for gauge in self.gauges:
            for name, help_text, labels, value in gauge():
                if name not in seen:
                    lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge"]
                    seen.add(name)
                lines.append(f"{name}{_labels(labels)} {value}")
        return "\n".join(lines) + "\n"
