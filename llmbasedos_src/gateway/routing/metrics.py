"""Prometheus metrics, kept in plain dicts and rendered as text exposition format by hand.

The hot path only does a dict lookup and a bisect per call; rendering happens when `/metrics` is scraped.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Callable, Iterable

__all__ = ["Metrics", "BUCKETS", "render_usage"]

# Seconds. Fine-grained at the low end, where a cheap routed call lives.
BUCKETS: tuple[float, ...] = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                              10.0, 30.0, 60.0, 120.0)


class _Histogram:
    __slots__ = ("counts", "sum")

    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)
        self.sum = 0.0


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


_USAGE_SERIES = (
    ("requests_today", "llmbasedos_client_requests_today", "Calls admitted today (UTC), by client."),
    ("llm_tokens_today", "llmbasedos_client_llm_tokens_today", "LLM tokens used today (UTC), by client."),
)


def render_usage(usage: dict[str, dict[str, object]]) -> str:
    """Today's use per client (`Policy.usage()`, or the part of it a client may see) as exposition text."""
    out: list[str] = []
    for key, series, help_text in _USAGE_SERIES:
        out += [f"# HELP {series} {help_text}", f"# TYPE {series} gauge"]
        for client_id, use in sorted(usage.items()):
            value = use.get(key)
            if isinstance(value, int):
                out.append(f'{series}{{client="{_escape(client_id)}",name="{_escape(str(use.get("name", "")))}"}} '
                           f"{value}")
    return "\n".join(out) + "\n"


class Metrics:
    def __init__(self) -> None:
        self.started = time.time()
        self._requests: dict[tuple[str, str], int] = {}
        self._latency: dict[str, _Histogram] = {}
        # Pulled at scrape time, so the registry never goes stale.
        self._upstreams: Callable[[], Iterable[tuple[str, str, int]]] = lambda: ()
        self._clients: Callable[[], dict[str, int]] = dict

    def bind(self, upstreams: Callable[[], Iterable[tuple[str, str, int]]],
             clients: Callable[[], dict[str, int]]) -> None:
        """`upstreams` yields (service, state, in_flight); `clients` maps transport -> connections."""
        self._upstreams = upstreams
        self._clients = clients

    def observe(self, method: str, outcome: str, seconds: float) -> None:
        key = (method, outcome)
        self._requests[key] = self._requests.get(key, 0) + 1
        hist = self._latency.get(method)
        if hist is None:
            hist = self._latency[method] = _Histogram()
        hist.counts[bisect.bisect_left(BUCKETS, seconds)] += 1
        hist.sum += seconds

    def requests(self) -> dict[tuple[str, str], int]:
        return dict(self._requests)

    def render(self) -> str:
        out: list[str] = [
            "# HELP llmbasedos_gateway_requests_total Calls handled by the gateway, by method and outcome.",
            "# TYPE llmbasedos_gateway_requests_total counter",
        ]
        for (method, outcome), n in sorted(self._requests.items()):
            out.append(f'llmbasedos_gateway_requests_total{{method="{_escape(method)}",'
                       f'outcome="{_escape(outcome)}"}} {n}')
        out += [
            "# HELP llmbasedos_gateway_request_duration_seconds Time from admission to answer, by method.",
            "# TYPE llmbasedos_gateway_request_duration_seconds histogram",
        ]
        for method, hist in sorted(self._latency.items()):
            m = _escape(method)
            cumulative = 0
            for bound, n in zip(BUCKETS, hist.counts, strict=False):
                cumulative += n
                out.append(f'llmbasedos_gateway_request_duration_seconds_bucket{{method="{m}",le="{bound:g}"}} '
                           f"{cumulative}")
            cumulative += hist.counts[-1]
            out.append(f'llmbasedos_gateway_request_duration_seconds_bucket{{method="{m}",le="+Inf"}} {cumulative}')
            out.append(f'llmbasedos_gateway_request_duration_seconds_sum{{method="{m}"}} {hist.sum:.6f}')
            out.append(f'llmbasedos_gateway_request_duration_seconds_count{{method="{m}"}} {cumulative}')
        upstreams = list(self._upstreams())
        out += [
            "# HELP llmbasedos_gateway_upstream_up 1 when the gateway holds a connection to the service.",
            "# TYPE llmbasedos_gateway_upstream_up gauge",
        ]
        for service, state, _ in upstreams:
            out.append(f'llmbasedos_gateway_upstream_up{{service="{_escape(service)}",state="{_escape(state)}"}} '
                       f"{1 if state == 'up' else 0}")
        out += [
            "# HELP llmbasedos_gateway_upstream_in_flight Calls waiting for an answer from the service.",
            "# TYPE llmbasedos_gateway_upstream_in_flight gauge",
        ]
        for service, _, in_flight in upstreams:
            out.append(f'llmbasedos_gateway_upstream_in_flight{{service="{_escape(service)}"}} {in_flight}')
        out += [
            "# HELP llmbasedos_gateway_connected_clients Open client connections, by front door.",
            "# TYPE llmbasedos_gateway_connected_clients gauge",
        ]
        for transport, n in sorted(self._clients().items()):
            out.append(f'llmbasedos_gateway_connected_clients{{transport="{_escape(transport)}"}} {n}')
        out += [
            "# HELP llmbasedos_gateway_start_time_seconds When the gateway started (Unix time).",
            "# TYPE llmbasedos_gateway_start_time_seconds gauge",
            f"llmbasedos_gateway_start_time_seconds {self.started:.3f}",
        ]
        return "\n".join(out) + "\n"
